"""Question/answer datasets as tasks, checked with math-verify: local files (JSONL, JSON, CSV, parquet), directories
(written by `save_to_disk`, or laid out like a hub dataset repository) and hub dataset ids (`openai/gsm8k`).

A prompt column holds text, or (data.prompt_format=conversational) TRL's conversational format: a list of
{"role", "content"} messages ending with the user's, rendered with the run's template (data/format.py)."""

from __future__ import annotations

import codecs
import csv
import json
import logging
import random
import threading
from functools import lru_cache
from pathlib import Path

from r1lab.data.example import Example, Task, check_split, dedupe, normalize_text, prompt_keys
from r1lab.errors import ConfigError

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


# ---------------------------------------------------------------- reading datasets


def read_table(name: str, config: str | None = None) -> dict:
    """{split: datasets.Dataset} of a local file ({'train': …}), a save_to_disk directory, a directory laid out
    like a hub dataset repository, or a hub dataset id (`config`: its configuration, e.g. gsm8k's 'main').
    Errors name the source; used by dataset tasks and by SFT data."""
    import datasets

    from r1lab.models.hub import is_hub_id

    p = Path(name).expanduser()
    if not p.exists() and not is_hub_id(name):
        raise FileNotFoundError(
            f"no such file or directory: {name} (a task is 'tinyworld', 'reasoning-gym:<dataset>', a hub dataset id "
            f"like openai/gsm8k, a {'/'.join(FILE_BUILDERS)} file or a dataset directory)"
        )
    if p.is_file():
        if config is not None:
            raise ValueError(f"data.config={config!r}: {name} is a single file, which has no configurations")
        builder = FILE_BUILDERS.get(p.suffix.lower())
        if builder is None:
            raise ValueError(f"{name}: unsupported file type {p.suffix!r}; use one of {', '.join(FILE_BUILDERS)}")
        try:
            return {"train": datasets.load_dataset(builder, data_files=str(p), split="train")}
        except Exception as e:  # arrow/pandas parse errors are long and name no line; find the line, else the file
            problem = _json_problem(p) if builder == "json" else None
            if problem:
                raise ConfigError(f"{name}: {problem}; a {p.suffix} file holds one JSON object per line "
                                  "(JSON Lines), or one JSON array of objects") from None
            raise ValueError(f"could not read {name} as {builder}: {e}") from e
    if p.is_dir() and any((p / f).exists() for f in ("dataset_dict.json", "state.json")):  # save_to_disk's
        loaded = datasets.load_from_disk(str(p))
        return dict(loaded) if isinstance(loaded, datasets.DatasetDict) else {"train": loaded}
    return dict(_load_dataset(name, config, local=p.is_dir()))


def _load_dataset(name: str, config: str | None, local: bool):
    """datasets.load_dataset on a repository-style directory or a hub id. Offline (or with the hub unreachable),
    a hub id is read from the hub cache's snapshot of its repository, as `hf download --repo-type dataset` leaves it
    (datasets alone finds only what it prepared itself)."""
    import datasets

    from r1lab.models.hub import fetch_hint, offline, unreachable

    def load(source: str):
        try:
            return datasets.load_dataset(source, config)
        except ValueError as e:  # an unknown configuration; datasets lists the known ones
            if "config" in str(e).lower():
                raise ValueError(f"data.config={config!r}: {str(e).splitlines()[0]}") from None
            raise

    if local:
        try:
            return load(name)
        except FileNotFoundError as e:
            raise ValueError(f"{name} is a directory, but neither one written by save_to_disk nor one holding data "
                             f"files (like a hub dataset repository): {e}") from e
    if not offline():
        try:
            return load(name)
        except ConnectionError:
            pass
        except datasets.exceptions.DatasetNotFoundError as e:
            raise FileNotFoundError(f"task: no local path '{name}', and {e}") from None
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        snapshot = snapshot_download(name, repo_type="dataset", local_files_only=True)
    except LocalEntryNotFoundError as e:
        raise unreachable(name, "dataset", "task", e) from None
    log.info("task %s: reading the hub cache's snapshot %s (%s)", name, snapshot,
             "HF_HUB_OFFLINE" if offline() else "the hub is unreachable")
    try:
        return load(snapshot)
    except FileNotFoundError as e:
        raise ValueError(f"task {name}: the cached snapshot {snapshot} has no data files; {fetch_hint(name, 'dataset')}") from e


# ---------------------------------------------------------------- naming a row as its user finds it

JSON_TYPES = {list: "an array", str: "a string", bool: "true or false", type(None): "null", int: "a number", float: "a number"}


def _json_lines(path: Path) -> list[tuple[int, bytes]] | None:
    """(line number from 1, line) of a JSON Lines file's non-blank lines (datasets skips blank ones too), split at
    '\n' only as pyarrow splits them ('\u2028' may stand inside a JSON string); None for a JSON array (datasets reads
    its items as rows, which have no line each)."""
    text = path.read_bytes().removeprefix(codecs.BOM_UTF8)
    if text.lstrip().startswith(b"["):
        return None
    return [(number, line) for number, line in enumerate(text.split(b"\n"), 1) if line.strip()]


def _json_problem(path: Path) -> str | None:
    """'line N is ...: <its start>' for the first line of a JSON Lines file that is no JSON object; None if none is."""
    for number, line in _json_lines(path) or []:
        start = repr(line.decode("utf-8", "replace").strip()[:60])
        try:
            value = json.loads(line)
        except json.JSONDecodeError as e:
            return f"line {number} is not valid JSON ({e.msg}, column {e.colno}): {start}"
        except ValueError:  # UnicodeDecodeError
            return f"line {number} is not UTF-8 text: {start}"
        if not isinstance(value, dict):
            return f"line {number} is {JSON_TYPES.get(type(value), 'no object')}, not an object {{\"field\": ...}}: {start}"
    return None


def _row_lines(path: Path) -> list[int] | None:
    """The line each row of a JSON Lines or CSV file starts on (CSV: after its header; a quoted field may span
    lines), blank lines skipped as datasets skips them; None for a JSON array or another format."""
    if path.suffix.lower() in (".jsonl", ".json"):
        lines = _json_lines(path)
        return None if lines is None else [number for number, _ in lines]
    if path.suffix.lower() != ".csv":
        return None
    starts, end = [], 0
    with open(path, newline="", encoding="utf-8-sig", errors="replace") as f:
        reader = csv.reader(f)
        for record in reader:
            start, end = end + 1, reader.line_num
            if len(record) > 1 or (record and record[0].strip()):  # pandas skips blank and blank-looking lines
                starts.append(start)
    return starts[1:]


def row_place(source: str, where: str, row: int, rows: int) -> str:
    """Row `row` (from 0) of the `rows` read from `source` (a data name), as its user finds it for an error message:
    '<file>: line N' in a JSON Lines or CSV file (what an editor shows), else '<where>: row N (counting from 0)'."""
    path = Path(source).expanduser()
    if not path.is_file():
        return f"{where}: row {row} (counting from 0)"
    try:
        lines = _row_lines(path)
    except (OSError, csv.Error):
        lines = None
    if lines is not None and len(lines) == rows:
        return f"{source}: line {lines[row]}"
    why = f"a {path.suffix} file has no lines" if path.suffix.lower() == ".parquet" else "its rows are not one per line"
    return f"{where}: row {row} (counting from 0; {why})"


def _pick(tables: dict, split: str, source: str):
    if split not in tables:
        raise ValueError(f"data.split / data.test_split: {source} has no split {split!r}; its splits are {sorted(tables)}")
    return tables[split]


class _BadRow(ValueError):
    """What is wrong with a row, said without naming it (the caller knows where it is)."""


def _messages(value, field: str) -> tuple[dict, ...]:
    """A conversational prompt checked: a non-empty list of {role, content} (system, user, assistant) ending with the user."""
    if not isinstance(value, list) or not value:
        raise _BadRow(f"field {field!r} is not a list of messages (data.prompt_format=conversational; use "
                      f"data.prompt_format=text for text prompts)")
    for j, m in enumerate(value):
        if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant") or not isinstance(m.get("content"), str):
            raise _BadRow(f"field {field!r}: message {j} must be {{'role': 'system'|'user'|'assistant', 'content': str}}, "
                          f"got {m!r:.120}")
    if value[-1]["role"] != "user":
        raise _BadRow(f"field {field!r}: the last message is the {value[-1]['role']}'s; a prompt ends with the user's")
    return tuple({"role": m["role"], "content": m["content"]} for m in value)


class DatasetTask(Task):
    """Question/answer rows of a local file or directory or a hub dataset, checked with math-verify.

    The test split: `test_file` if given (used whole), else `test_split`, else the source's own 'test' split if it
    has one, else `test_size` rows held out of the training split at random (fixed by `seed`)."""

    def __init__(self, name: str, *, question_field: str = "question", answer_field: str = "answer",
                 test_file: str | None = None, test_size: int = 200, train_size: int | None = None, seed: int = 0,
                 config: str | None = None, split: str = "train", test_split: str | None = None,
                 prompt_format: str = "text"):
        if prompt_format not in ("text", "conversational"):
            raise ValueError(f"data.prompt_format must be 'text' or 'conversational', got {prompt_format!r}")
        self.name = name
        self.question_field, self.answer_field, self.prompt_format = question_field, answer_field, prompt_format
        tables = read_table(name, config)
        train = self._rows(_pick(tables, split, name), name, f"{name}[{split}]", self._source(name, split, tables))
        if test_file is not None:
            test = dedupe(self._rows(read_table(test_file)["train"], test_file, test_file, self._source(test_file, "train", {})))
        elif test_split is not None or ("test" in tables and split != "test"):
            test_split = test_split or "test"
            test = dedupe(self._rows(_pick(tables, test_split, name), name, f"{name}[{test_split}]",
                                     self._source(name, test_split, tables)))
        else:
            train = dedupe(train)
            random.Random(seed).shuffle(train)
            if len(train) <= test_size:
                raise ValueError(
                    f"{name} has {len(train)} distinct questions; holding out test_size={test_size} leaves none "
                    f"to train on. Pass a smaller test_size, a separate test_file or a test_split."
                )
            test, train = train[:test_size], train[test_size:]
        train = dedupe(train, exclude=prompt_keys(test))
        random.Random(seed + 1).shuffle(train)  # so train_size takes a random subset, not the file's head
        if not train:
            raise ValueError(f"{name}: no training questions left after removing those in the test split")
        self.splits = {"train": train[:train_size] if train_size else train, "test": test}

    @staticmethod
    def _source(name: str, split: str, tables: dict) -> str:
        """The prefix of example ids: the file's stem ('add'), with the split when the source has several."""
        stem = Path(name).expanduser().stem if Path(name).expanduser().exists() else name.replace("/", "__")
        return stem if len(tables) <= 1 else f"{stem}.{split}"

    def _rows(self, data, data_name: str, where: str, source: str) -> list[Example]:
        """A table's examples (`where`: `data_name` and the split); a bad row is named by row_place, before model work."""
        for f in (self.question_field, self.answer_field):
            if f not in data.column_names:
                raise ValueError(f"field {f!r} not found in {where}; columns present: {data.column_names} "
                                 f"(data.question_field / data.answer_field name them)")
        examples = []
        for i, row in enumerate(data):
            try:
                prompt, answer, messages = self._check_row(row)
            except _BadRow as bad:
                raise ConfigError(f"{row_place(data_name, where, i, len(data))} {bad}") from None
            # the row's other columns: a batched (TRL-style) reward gets them by name (rewards/registry.py)
            meta = {"source": where, "row": i, "columns": {k: v for k, v in row.items() if k != self.question_field}}
            examples.append(Example(id=f"{source}-{i}", prompt=prompt, answer=answer, meta=meta, messages=messages))
        return examples

    def _check_row(self, row: dict) -> tuple[str, str, tuple[dict, ...] | None]:
        """(prompt, gold answer, messages or None) of a row; _BadRow says what is wrong with it."""
        question, solution = row[self.question_field], row[self.answer_field]
        if solution is None or not str(solution).strip():
            raise _BadRow(f"has an empty or missing {self.answer_field!r} field")
        messages = None
        if question is None:
            raise _BadRow(f"has an empty or missing {self.question_field!r} field")
        if self.prompt_format == "conversational":
            messages = _messages(question, self.question_field)
            question = messages[-1]["content"]
        elif not isinstance(question, str):
            hint = (" (a list of messages: TRL's conversational format; set data.prompt_format=conversational)"
                    if isinstance(question, list) else "")
            raise _BadRow(f"field {self.question_field!r} is a {type(question).__name__}, not text{hint}")
        if not question.strip():
            raise _BadRow(f"has an empty {self.question_field!r} field")
        answer = gold_answer(str(solution))
        if not answer:
            raise _BadRow(f"has an empty {self.answer_field!r} field after '####'")
        return question.strip(), answer, messages

    def examples(self, split: str) -> list[Example]:
        check_split(split)
        return list(self.splits[split])

    def score(self, answer: str, example: Example) -> float:
        return 1.0 if math_equal(answer, example.answer) else 0.0
