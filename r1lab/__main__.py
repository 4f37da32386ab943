"""`python -m r1lab ...` (also `torchrun -m r1lab ...`): the same command as `r1lab ...`."""

import sys

from r1lab.ui.cli import main

sys.exit(main())
