"""Torch's intra-op threads, fitted to the cores other processes leave free (CPU runs on Linux).

Why: torch's CPU ops end with a barrier of its OpenMP threads. When another busy process shares the cores,
one of our threads is often descheduled at that barrier and the others wait (spinning first) until the
scheduler brings it back, once per op: a GRPO step of a few thousand small ops went from 0.96 s to 4.1 s
median, 6.2 s at worst, beside one other 2-thread job on 2 cores (bench/README.md, "Under a busy machine").
One thread per free core has no barrier to wait at.

`ThreadFit()` is called between phases of work (the RL loop: before sampling, before the update). It
reads how much CPU time the machine spent outside this process since the last call (/proc/stat minus
this process's own time, its idle spinning threads included) and sets torch's threads to the cores left:
the starting count on a quiet machine, fewer (at least 1) beside busy processes, back up when they end.

It leaves the threads alone when the user chose them (OMP_NUM_THREADS=N, which torch honours everywhere, or
R1LAB_THREADS=fixed, which keeps torch's default count), when there is one thread to start with, where
/proc/stat cannot be read, and where it is not `enabled` (the RL loop: a model on a GPU, or an engine in a
process of its own, vLLM, whose work would look like a competitor's).
"""

from __future__ import annotations

import os
import time

import torch


def machine_busy_seconds() -> float | None:
    """CPU seconds every core of the machine spent busy since boot, all processes together (None where /proc/stat
    is not readable: ThreadFit then leaves the threads alone)."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()[1:]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _own_seconds() -> float:
    t = os.times()
    return t.user + t.system


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, which a container or `taskset` may narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


class ThreadFit:
    """Call it between phases of work; it may change torch.get_num_threads() (see the module's docstring).
    `others` is the last measured load of other processes, in cores; `history` the (time, threads) changes."""

    MIN_WINDOW = 0.2  # seconds: shorter windows are all rounding (the kernel counts in 10 ms ticks)

    def __init__(self, enabled: bool = True):
        self.max_threads = torch.get_num_threads()
        self.cores = usable_cores()
        setting = os.environ.get("R1LAB_THREADS")
        if setting not in (None, "", "fixed"):
            raise ValueError(f"R1LAB_THREADS={setting!r}: its one value is 'fixed' (keep torch's thread count); "
                             "to choose the count, set OMP_NUM_THREADS=N")
        chosen = setting == "fixed" or os.environ.get("OMP_NUM_THREADS")
        self.enabled = enabled and not chosen and self.max_threads > 1 and machine_busy_seconds() is not None
        self.others, self.history = 0.0, []
        self._last = self._sample()

    def _sample(self) -> tuple[float, float, float]:
        return time.perf_counter(), machine_busy_seconds() or 0.0, _own_seconds()

    def __call__(self) -> int:
        if not self.enabled:
            return torch.get_num_threads()
        now = self._sample()
        wall, busy, own = (b - a for a, b in zip(self._last, now))
        if wall < self.MIN_WINDOW:
            return torch.get_num_threads()
        self._last = now
        self.others = max(0.0, (busy - own) / wall)
        free = self.cores - self.others
        # A quarter core of slack: light background work (an editor, a shell) should not halve our threads.
        threads = max(1, min(self.max_threads, int(free + 0.25)))
        if threads != torch.get_num_threads():
            torch.set_num_threads(threads)
            self.history.append((round(time.time(), 3), threads))
        return threads
