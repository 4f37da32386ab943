"""Terminal progress: one rich bar per long job, with live fields (loss, reward, accuracy).

Without a terminal (CI logs, pipes) the bar becomes a plain line every 10% of the job; so it does in a notebook,
where rich's console is not a terminal either and displays each line as an output of its own (whole lines: no
carriage returns to break, and nothing needs ipywidgets). R1LAB_PROGRESS=bar asks for the live bar anyway.
"""

from __future__ import annotations

import contextlib
import os
import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

console = Console(stderr=True, quiet=os.environ.get("RANK", "0") != "0")  # torchrun: rank 0 speaks for all
if not console.is_terminal and "COLUMNS" not in os.environ:
    console.width = 120  # a log file has no width: rich's 80 would cut tables and progress lines


@contextlib.contextmanager
def progress_bar(description: str, total: int):
    """Yields `advance(n=1, **fields)`: moves the bar n steps and shows the fields next to it."""
    if not console.is_terminal and os.environ.get("R1LAB_PROGRESS") != "bar":
        yield _plain(description, total)
        return
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TextColumn("<"), TimeRemainingColumn(), TextColumn("{task.fields[info]}")]
    with Progress(*columns, console=console) as bar:
        task = bar.add_task(description, total=total, info="")

        def advance(n: int = 1, **fields):
            bar.update(task, advance=n, info="  ".join(f"{k}={v}" for k, v in fields.items()))

        yield advance


def _plain(description: str, total: int):
    state = {"done": 0, "next": 0, "t0": time.time()}

    def advance(n: int = 1, **fields):
        state["done"] += n
        if n and (state["done"] >= state["next"] or state["done"] == total):
            state["next"] = state["done"] + max(1, total // 10)
            info = "  ".join(f"{k}={v}" for k, v in fields.items())
            console.print(f"{description} {state['done']}/{total} [{time.time() - state['t0']:.0f}s] {info}", highlight=False)

    return advance
