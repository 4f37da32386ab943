"""One process per run directory: `with run_lock(RUN):` holds an exclusive fcntl.flock on RUN/.lock.
The kernel drops the lock when the process dies (even by kill -9), so a stale lock never blocks a resume;
a second process on the same directory fails at once, naming the holder's pid, instead of two runs
interleaving their checkpoints and logs."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from pathlib import Path


class RunLockedError(OSError):
    """Another live process holds the run directory (an OSError: the CLI reports it without a traceback)."""


@contextlib.contextmanager
def run_lock(run_dir: str | Path):
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            locked = RunLockedError(f"run directory '{run_dir}' is in use by another r1lab process (pid {holder}); "
                                    "wait for it to finish or stop it, or use another --out")
            locked.errno = errno.EBUSY  # set apart: OSError(errno, text) would print "[Errno 16]" before the text
            raise locked from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock
