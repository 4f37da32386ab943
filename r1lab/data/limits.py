"""Prompts that cannot fit: a question whose templated prompt leaves no room for the generation budget in
the model's context fails deep inside the first sampling call, naming no row. It is found here, before
any training, and either dropped with a warning naming its rows or refused (data.too_long=drop|error)."""

from __future__ import annotations

import logging

from r1lab.data.example import Example, Task
from r1lab.data.format import render_prompt

log = logging.getLogger("r1lab.data")


class FittedTask(Task):
    """`task` with the examples whose prompts do not fit left out; scoring is the task's own."""

    def __init__(self, task: Task, kept: dict[str, list[Example]]):
        self.task, self.kept, self.name = task, kept, task.name

    def examples(self, split: str) -> list[Example]:
        return self.kept[split] if split in self.kept else self.task.examples(split)

    def score(self, answer, example):
        return self.task.score(answer, example)

    def vote_key(self, answer, example):
        return self.task.vote_key(answer, example)

    def step_labels(self, response, example):
        return self.task.step_labels(response, example)

    def __getattr__(self, name):  # anything else a task offers (e.g. the tiny world's extras)
        return getattr(self.task, name)


def fit_context(task: Task, tokenizer, context: int | None, max_new_tokens: int, *, template: str,
                system: str | None, mode: str = "error", splits: tuple[str, ...] = ("train", "test")) -> Task:
    """Checks every prompt of `splits` against context - max_new_tokens tokens (no context: nothing to check)."""
    if context is None:
        return task
    budget = context - max_new_tokens
    if budget < 1:
        raise ValueError(f"sampling.max_new_tokens={max_new_tokens} leaves no room for a prompt in the model's context "
                         f"of {context} tokens: lower sampling.max_new_tokens")
    kept, changed = {}, False
    for split in splits:
        examples = task.examples(split)
        prompts = [render_prompt(ex, template, tokenizer, system) for ex in examples]
        lengths = [None if len(p) <= 8 * context else len(p) for p in prompts]  # chars: far over, not tokenized
        todo = [i for i, n in enumerate(lengths) if n is None]
        if todo:
            ids = tokenizer([prompts[i] for i in todo], add_special_tokens=False)["input_ids"]
            for i, row in zip(todo, ids):
                lengths[i] = len(row)
        fits = [i in set(todo) and lengths[i] <= budget for i in range(len(examples))]
        over = [(ex, n, i in set(todo)) for i, (ex, n, ok) in enumerate(zip(examples, lengths, fits)) if not ok]
        if not over:
            kept[split] = examples
            continue
        rows = ", ".join(f"id {ex.id!r} ({n:,} {'tokens' if counted else 'characters'})" for ex, n, counted in over[:5])
        more = f" and {len(over) - 5} more" if len(over) > 5 else ""
        what = (f"{task.name}: {len(over)} {split} prompt(s) longer than the model's context ({context} tokens) minus "
                f"sampling.max_new_tokens ({max_new_tokens}): {rows}{more}")
        if mode == "error":
            raise ValueError(f"{what}; shorten or remove them, or pass data.too_long=drop to leave them out")
        log.warning("%s: left out (data.too_long=drop)", what)
        kept[split] = [ex for ex, ok in zip(examples, fits) if ok]
        if not kept[split]:
            raise ValueError(f"{what}: none of the {split} prompts is left")
        changed = True
    return FittedTask(task, kept) if changed else task
