"""The task interface: an Example (prompt, reference answer) and a Task (splits + verifier)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Example:
    id: str
    prompt: str  # the question, before any template
    answer: str  # the reference answer, as text
    meta: dict = field(default_factory=dict, compare=False, hash=False)
    # A conversational prompt (TRL's format): the {role, content} messages, ending with the user's, whose last
    # content is `prompt`; rendered by data.format.render_prompt. None: `prompt` is the whole question.
    messages: tuple[dict, ...] | None = field(default=None, compare=False, hash=False)

    def fields(self) -> dict:
        """The example as a dataset row: its meta's keys and a dataset row's own columns (meta["columns"]) by name,
        as TRL passes a row to batched rewards and to an environment's reset(**row)."""
        meta = self.meta or {}
        return {**{k: v for k, v in meta.items() if k != "columns"}, **meta.get("columns", {})}


class Task:
    """A task owns its splits and its verifier. Train and test never share an example."""

    name: str = "task"

    def examples(self, split: str) -> list[Example]:
        raise NotImplementedError

    def score(self, answer: str, example: Example) -> float:
        """1.0 if `answer` (the text inside <answer>…</answer>) is correct for `example`, else 0.0."""
        raise NotImplementedError

    def step_labels(self, response: str, example: Example) -> list[bool] | None:
        """Right (True) or wrong for each step of `response` (data/steps.py), by an exact checker: what a process
        reward model trains on. None where the task has no step checker (outcome supervision still works)."""
        return None

    def vote_key(self, answer: str, example: Example) -> str:
        """What cons@k votes on: answers with the same key are the same answer (default: the text,
        whitespace-normalised). Tasks with many spellings of one answer override it."""
        return " ".join(answer.split())


SPLITS = ("train", "test")


def normalize_text(text: str) -> str:
    """Whitespace-insensitive form of a prompt or answer, for dedup and exact-match."""
    return " ".join(text.split())


def prompt_key(ex: Example) -> str:
    """What makes two prompts the same: the normalised question, with every message of a conversational one."""
    text = ex.prompt if ex.messages is None else "\n".join(f"{m['role']}: {m['content']}" for m in ex.messages)
    return normalize_text(text).casefold()


def dedupe(examples: list[Example], exclude: set[str] = frozenset()) -> list[Example]:
    """Drop examples whose prompt (prompt_key) was seen before or is in `exclude` (e.g. the test prompts)."""
    seen, kept = set(exclude), []
    for ex in examples:
        key = prompt_key(ex)
        if key not in seen:
            seen.add(key)
            kept.append(ex)
    return kept


def prompt_keys(examples: list[Example]) -> set[str]:
    return {prompt_key(ex) for ex in examples}


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
