"""reasoning-gym datasets as tasks, scored by reasoning-gym's own scorers."""

from __future__ import annotations

import difflib
import logging
import math

from r1lab.data.example import Example, Task, check_split, dedupe, prompt_keys

log = logging.getLogger("r1lab.tasks")


class ReasoningGymTask(Task):
    """A procedural reasoning-gym dataset. Test is items [0, test_size) of one seeded stream, train what follows."""

    DEFAULT_TRAIN_SIZE = 1000  # generation is not free (countdown: ~10 ms an item, it solves each puzzle)

    def __init__(self, dataset: str, *, train_size: int | None = None, test_size: int = 200, seed: int = 0):
        import reasoning_gym
        from reasoning_gym.factory import DATASETS

        if dataset not in DATASETS:
            close = difflib.get_close_matches(dataset, DATASETS, n=3)
            hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise ValueError(
                f"unknown reasoning-gym dataset {dataset!r}.{hint} Valid names are the keys of "
                f"reasoning_gym.factory.DATASETS ({len(DATASETS)} of them, e.g. 'countdown', 'basic_arithmetic'); "
                f"list them with: python -c \"from reasoning_gym.factory import DATASETS; print(sorted(DATASETS))\""
            )
        self.name = f"reasoning-gym:{dataset}"
        self.train_size = train_size or self.DEFAULT_TRAIN_SIZE
        self.test_size = test_size
        self.data = reasoning_gym.create_dataset(dataset, size=test_size + self.train_size, seed=seed)
        self._splits: dict[str, list[Example]] | None = None  # generated on first use: load_task stays cheap

    def _example(self, i: int) -> Example:
        entry = self.data[i]
        return Example(id=f"{self.name}-{i}", prompt=entry["question"], answer=str(entry["answer"]), meta={"entry": entry})

    def examples(self, split: str) -> list[Example]:
        check_split(split)
        if self._splits is None:
            test = dedupe([self._example(i) for i in range(self.test_size)])
            train = [self._example(i) for i in range(self.test_size, self.test_size + self.train_size)]
            self._splits = {"test": test, "train": dedupe(train, exclude=prompt_keys(test))}
        return list(self._splits[split])

    def score(self, answer: str, example: Example) -> float:
        # reasoning-gym scorers give partial credit (e.g. countdown: 0.01 for any string, 0.05 for a wrong
        # expression using the right numbers), so this is a float in [0, 1], not just 0/1.
        try:
            value = float(self.data.score_answer(answer=answer, entry=example.meta["entry"]))
        except Exception as e:  # a scorer choking on model output means the output is wrong
            log.debug("%s scorer failed on %r: %r", self.name, str(answer)[:200], e)
            return 0.0
        return min(1.0, max(0.0, value)) if math.isfinite(value) else 0.0
