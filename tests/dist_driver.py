"""The distributed tests' child: train_rl on a model directory with helpers' EchoTask and `digits` reward,
in one process (python tests/dist_driver.py ...) or as one rank of several
(python -m torch.distributed.run --nproc-per-node 2 tests/dist_driver.py ...).

    dist_driver.py MODEL_DIR RUN_DIR [seed=S] [die_in_step=K] [dtype=fp32|bf16] [RLConfig field=value ...]

die_in_step=K: rank 1 kills itself (SIGKILL, as a crashed machine) while it samples step K.
"""

import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from helpers import digits, rl_config, train

from r1lab import dist
from r1lab.engines import make_engine
from r1lab.models.io import load_model
from r1lab.recipes.load import parse_overrides
from r1lab.rewards.registry import REWARD_FUNCTIONS


class DiesInStep:
    """The engine, until rank 1's `step`-th generate call: there the process is killed."""

    def __init__(self, engine, step: int):
        self.engine, self.calls_left = engine, step

    def generate(self, prompts, sampling, n=1, **seeds):
        self.calls_left -= 1
        if self.calls_left == 0 and dist.rank() == 1:
            os.kill(os.getpid(), signal.SIGKILL)
        return self.engine.generate(prompts, sampling, n, **seeds)

    def __getattr__(self, name):
        return getattr(self.engine, name)


def main() -> None:
    model_dir, run_dir, *items = sys.argv[1:]
    settings = parse_overrides(items)
    seed, die_in_step, dtype = settings.pop("seed", 0), settings.pop("die_in_step", 0), settings.pop("dtype", "fp32")
    REWARD_FUNCTIONS["digits"] = lambda task, **_: digits  # every process registers it (before the config checks names)
    with dist.process_group():
        model, tokenizer = load_model(model_dir, device="cpu", dtype=dtype, master_weights=True)
        engine = make_engine("torch", model, tokenizer, seed=seed)
        train(model, tokenizer, rl_config(**settings), Path(run_dir), seed=seed,
              engine=DiesInStep(engine, die_in_step) if die_in_step else engine)


if __name__ == "__main__":
    main()
