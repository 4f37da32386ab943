"""Tasks: prompts, reference answers and a verifier.

`load_task(name)` is the one entry point:
  "tinyworld", "tinyworld/<variant>"  -> the built-in toy world (r1lab.tinyworld)
  "reasoning-gym:<dataset>"           -> a procedurally generated reasoning-gym dataset, scored by its own scorer
  a path (.jsonl/.json/.parquet/.csv, or a `save_to_disk` directory) -> a question/answer file, scored with math-verify
"""

from __future__ import annotations

import difflib
import logging
import math
import random
import threading
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

log = logging.getLogger("r1lab.tasks")


@dataclass(frozen=True)
class Example:
    id: str
    prompt: str  # the question, before any template
    answer: str  # the reference answer, as text
    meta: dict = field(default_factory=dict, compare=False, hash=False)


class Task:
    """A task owns its splits and its verifier. Train and test never share an example."""

    name: str = "task"

    def examples(self, split: str) -> list[Example]:
        raise NotImplementedError

    def score(self, answer: str, example: Example) -> float:
        """1.0 if `answer` (the text inside <answer>…</answer>) is correct for `example`, else 0.0."""
        raise NotImplementedError

    def vote_key(self, answer: str, example: Example) -> str:
        """What cons@k votes on: answers with the same key are the same answer (default: the text,
        whitespace-normalised). Tasks with many spellings of one answer override it."""
        return " ".join(answer.split())


SPLITS = ("train", "test")
FILE_BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}
MAX_VERIFY_CHARS = 1000  # longer "answers" are rambling, not answers; sympy on them can take forever


def load_task(
    name: str,
    *,
    question_field: str = "question",
    answer_field: str = "answer",
    test_file: str | None = None,
    test_size: int = 200,
    train_size: int | None = None,
    seed: int = 0,
) -> Task:
    """Build a Task from a name: "tinyworld[/...]", "reasoning-gym:<dataset>" or a path to a local data file/dir."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"task name must be a non-empty string, got {name!r}")
    if not isinstance(test_size, int) or test_size < 1:
        raise ValueError(f"test_size must be a positive int, got {test_size!r}")
    if train_size is not None and (not isinstance(train_size, int) or train_size < 1):
        raise ValueError(f"train_size must be a positive int or None, got {train_size!r}")
    is_file = not (name == "tinyworld" or name.startswith("tinyworld/") or name.startswith("reasoning-gym:"))
    if test_file is not None and not is_file:
        raise ValueError(f"test_file is only for file tasks; {name!r} makes its own test split")
    if name == "tinyworld" or name.startswith("tinyworld/"):
        from r1lab.tinyworld.problems import TinyWorldTask

        return TinyWorldTask(name, train_size=train_size, test_size=test_size, seed=seed)
    if name.startswith("reasoning-gym:"):
        return ReasoningGymTask(name.removeprefix("reasoning-gym:"), train_size=train_size, test_size=test_size, seed=seed)
    return FileTask(name, question_field=question_field, answer_field=answer_field, test_file=test_file,
                    test_size=test_size, train_size=train_size, seed=seed)


def normalize_text(text: str) -> str:
    """Whitespace-insensitive form of a prompt or answer, for dedup and exact-match."""
    return " ".join(text.split())


def _dedupe(examples: list[Example], exclude: set[str] = frozenset()) -> list[Example]:
    """Drop examples whose normalised prompt was seen before or is in `exclude` (e.g. the test prompts)."""
    seen, kept = set(exclude), []
    for ex in examples:
        key = normalize_text(ex.prompt).casefold()
        if key not in seen:
            seen.add(key)
            kept.append(ex)
    return kept


def _prompt_keys(examples: list[Example]) -> set[str]:
    return {normalize_text(ex.prompt).casefold() for ex in examples}


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")


# ---------------------------------------------------------------- answer checking (math-verify)


def gold_answer(text: str) -> str:
    """The final answer inside a reference solution: after the last '####' (GSM8K) or the last \\boxed{...} (MATH)."""
    if "####" in text:
        return text.rsplit("####", 1)[1].strip()
    boxed = _last_boxed(text)
    return boxed.strip() if boxed is not None else text.strip()


def _last_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...}, with nested braces balanced; None if absent or unbalanced."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, i = 0, start + len("\\boxed")
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i + 1 : j]
    return None


@lru_cache(maxsize=8192)  # each gold answer is parsed once per sampled response otherwise
def _parse_math(text: str) -> tuple:
    from math_verify import parse

    text = text.replace("\\$", "")  # "\$72" is a dollar amount, not LaTeX; math-verify parses it as nothing
    # Bare text ("1/2", "x+1", "\sqrt{2}") is wrapped as inline LaTeX so it's read as one expression;
    # unwrapped, math-verify would fish out the *last number*, so "1, 2, 72" would match 72.
    if "$" not in text and "\\boxed" not in text and "\\(" not in text and "\\[" not in text:
        text = f"${text}$"
    return tuple(parse(text, parsing_timeout=_timeout()))


def _timeout() -> int | None:
    # math-verify times out with signal.alarm, which raises ValueError outside the main thread;
    # there we run without a timeout (MAX_VERIFY_CHARS bounds the work instead).
    return 5 if threading.current_thread() is threading.main_thread() else None


def math_equal(answer: str | None, gold: str) -> bool:
    """Is `answer` mathematically the same as `gold`? Exact match first (cheap), then math-verify. Never raises."""
    if answer is None:
        return False
    answer, gold = normalize_text(answer), normalize_text(gold)
    if not answer or not gold:
        return False
    if answer == gold:
        return True
    if len(answer) > MAX_VERIFY_CHARS:
        return False
    try:
        from math_verify import verify

        gold_parsed, answer_parsed = _parse_math(gold), _parse_math(answer)
        if not gold_parsed or not answer_parsed:
            return False
        return bool(verify(list(gold_parsed), list(answer_parsed), timeout_seconds=_timeout()))
    except BaseException as e:  # math-verify's TimeoutException is a BaseException; a verifier must not kill a run
        if isinstance(e, (KeyboardInterrupt, SystemExit)):
            raise
        log.debug("math-verify failed on %r vs %r: %r", answer[:200], gold[:200], e)
        return False


# ---------------------------------------------------------------- reasoning-gym


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
        _check_split(split)
        if self._splits is None:
            test = _dedupe([self._example(i) for i in range(self.test_size)])
            train = [self._example(i) for i in range(self.test_size, self.test_size + self.train_size)]
            self._splits = {"test": test, "train": _dedupe(train, exclude=_prompt_keys(test))}
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


# ---------------------------------------------------------------- local files


def read_table(path: str) -> dict:
    """{split: datasets.Dataset} from a JSONL/JSON/CSV/parquet file ({'train': …}) or a save_to_disk directory
    (its train and test splits). Errors name the path; used by file tasks and by SFT data."""
    import datasets

    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(
            f"no such file or directory: {path} (a task is 'tinyworld', 'reasoning-gym:<dataset>', "
            f"or a {'/'.join(FILE_BUILDERS)} file or a datasets save_to_disk directory)"
        )
    if p.is_dir():
        try:
            loaded = datasets.load_from_disk(str(p))
        except FileNotFoundError as e:
            raise ValueError(f"{path} is a directory but not one written by datasets' save_to_disk") from e
        if isinstance(loaded, datasets.DatasetDict):
            if "train" not in loaded:
                raise ValueError(f"{path}: DatasetDict has splits {list(loaded)}, but no 'train' split")
            return {s: loaded[s] for s in loaded if s in SPLITS}
        return {"train": loaded}
    builder = FILE_BUILDERS.get(p.suffix.lower())
    if builder is None:
        raise ValueError(f"{path}: unsupported file type {p.suffix!r}; use one of {', '.join(FILE_BUILDERS)}")
    try:
        return {"train": datasets.load_dataset(builder, data_files=str(p), split="train")}
    except Exception as e:  # arrow/pandas parse errors are long; say which file first
        raise ValueError(f"could not read {path} as {builder}: {e}") from e


class FileTask(Task):
    """Question/answer rows from a local file or `save_to_disk` directory, checked with math-verify."""

    def __init__(self, path: str, *, question_field: str = "question", answer_field: str = "answer",
                 test_file: str | None = None, test_size: int = 200, train_size: int | None = None, seed: int = 0):
        self.name = path
        self.question_field, self.answer_field = question_field, answer_field
        if test_file is not None:
            # The test file is used whole: test_size only applies when test is carved out of the data.
            test = _dedupe(self._load(test_file)["train"])
            train = self._load(path)["train"]
        else:
            parts = self._load(path)
            if "test" in parts:  # a DatasetDict saved with its own test split
                test, train = _dedupe(parts["test"]), parts["train"]
            else:
                rows = _dedupe(parts["train"])
                random.Random(seed).shuffle(rows)
                if len(rows) <= test_size:
                    raise ValueError(
                        f"{path} has {len(rows)} distinct questions; holding out test_size={test_size} leaves none "
                        f"to train on. Pass a smaller test_size or a separate test_file."
                    )
                test, train = rows[:test_size], rows[test_size:]
        train = _dedupe(train, exclude=_prompt_keys(test))
        random.Random(seed + 1).shuffle(train)  # so train_size takes a random subset, not the file's head
        if not train:
            raise ValueError(f"{path}: no training questions left after removing those in the test split")
        self.splits = {"train": train[:train_size] if train_size else train, "test": test}

    def _load(self, path: str) -> dict[str, list[Example]]:
        """Read a file or save_to_disk directory into {split: examples}; one-file sources come back as 'train'."""
        tables, stem = read_table(path), Path(path).expanduser().stem
        if len(tables) == 1:
            return {"train": self._rows(tables["train"], path, stem)}
        return {split: self._rows(data, f"{path}[{split}]", f"{stem}.{split}") for split, data in tables.items()}

    def _rows(self, data, path: str, source: str) -> list[Example]:
        for f in (self.question_field, self.answer_field):
            if f not in data.column_names:
                raise ValueError(f"field {f!r} not found in {path}; columns present: {data.column_names}")
        examples = []
        for i, row in enumerate(data):
            question, solution = row[self.question_field], row[self.answer_field]
            for f, value in ((self.question_field, question), (self.answer_field, solution)):
                if value is None or not str(value).strip():
                    raise ValueError(f"{path}: row {i} has an empty {f!r} field")
            answer = gold_answer(str(solution))
            if not answer:
                raise ValueError(f"{path}: row {i} has an empty {self.answer_field!r} field after '####'")
            meta = {"source": str(path), "row": i}
            if answer != str(solution).strip():
                meta["solution"] = str(solution)  # the full worked solution, e.g. for SFT
            examples.append(Example(id=f"{source}-{i}", prompt=str(question).strip(), answer=answer, meta=meta))
        return examples

    def examples(self, split: str) -> list[Example]:
        _check_split(split)
        return list(self.splits[split])

    def score(self, answer: str, example: Example) -> float:
        return 1.0 if math_equal(answer, example.answer) else 0.0
