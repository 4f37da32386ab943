"""Question/answer files (JSONL, JSON, CSV, parquet, `save_to_disk` directories) as tasks, checked with math-verify."""

from __future__ import annotations

import logging
import random
import threading
from functools import lru_cache
from pathlib import Path

from r1lab.data.example import SPLITS, Example, Task, check_split, dedupe, normalize_text, prompt_keys

log = logging.getLogger("r1lab.tasks")

FILE_BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}
MAX_VERIFY_CHARS = 1000  # longer "answers" are rambling, not answers; sympy on them can take forever


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
            test = dedupe(self._load(test_file)["train"])
            train = self._load(path)["train"]
        else:
            parts = self._load(path)
            if "test" in parts:  # a DatasetDict saved with its own test split
                test, train = dedupe(parts["test"]), parts["train"]
            else:
                rows = dedupe(parts["train"])
                random.Random(seed).shuffle(rows)
                if len(rows) <= test_size:
                    raise ValueError(
                        f"{path} has {len(rows)} distinct questions; holding out test_size={test_size} leaves none "
                        f"to train on. Pass a smaller test_size or a separate test_file."
                    )
                test, train = rows[:test_size], rows[test_size:]
        train = dedupe(train, exclude=prompt_keys(test))
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
        check_split(split)
        return list(self.splits[split])

    def score(self, answer: str, example: Example) -> float:
        return 1.0 if math_equal(answer, example.answer) else 0.0
