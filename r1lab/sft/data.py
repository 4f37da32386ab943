"""SFT data: rows (a file, a saved dataset or dicts) -> templated {"prompt", "completion"} examples -> token ids
and labels (the prompt's set to IGNORE, so only the completion and its EOS carry loss) -> padded micro-batches
with their attention masks; and the held-out split, by prompt."""

from __future__ import annotations

import os
import random
import re

import torch

from r1lab.config import SFTConfig
from r1lab.data.files import read_table
from r1lab.data.format import apply_template, response_prefix
from r1lab.progress import console
from r1lab.tools.calls import PLAIN

IGNORE = -100  # label of tokens that carry no loss (prompt, padding, tool results); F.cross_entropy's ignore_index
RESULT_OPEN, RESULT_CLOSE = PLAIN[2], PLAIN[3]
_RESULT = re.compile(f"({re.escape(RESULT_OPEN)}.*?{re.escape(RESULT_CLOSE)})", re.S)


def load_sft_examples(path_or_rows, cfg: SFTConfig, tokenizer=None, *, template: str = "r1-zero",
                      system: str | None = None) -> list[dict]:
    """Rows -> [{"prompt": templated prompt text, "completion": text to learn}].

    path_or_rows: a .jsonl/.json/.parquet/.csv file, a datasets `save_to_disk` directory, or an iterable
    of dicts. A row is either cfg.prompt_field + cfg.completion_field, or cfg.messages_field (a chat:
    the last assistant message is the completion, the messages before it the prompt; template 'chat' only).
    `template` and `system` are the run's (None: the template's default); `tokenizer` is needed for 'chat'.
    """
    rows, source = _read_rows(path_or_rows)
    examples = [_example(row, i, source, cfg, tokenizer, template, system) for i, row in enumerate(rows)]
    if not examples:
        raise ValueError(f"{source}: no rows to train on")
    return examples


def _read_rows(path_or_rows):
    """(iterable of row dicts, name for error messages)."""
    if not isinstance(path_or_rows, (str, os.PathLike)):
        return path_or_rows, "rows"
    return read_table(str(path_or_rows))["train"], str(path_or_rows)


def _example(row, i: int, source: str, cfg: SFTConfig, tokenizer, template: str, system: str | None) -> dict:
    if not isinstance(row, dict):
        raise ValueError(f"{source}: row {i} is a {type(row).__name__}, expected a dict of fields")
    if row.get(cfg.messages_field) is not None:
        prompt, completion = _chat_example(row[cfg.messages_field], i, source, cfg, tokenizer, template, system)
    else:
        for field in (cfg.prompt_field, cfg.completion_field):
            if row.get(field) is None:
                raise ValueError(f"{source}: row {i} has no {field!r} field (nor {cfg.messages_field!r}); "
                                 f"fields present: {sorted(k for k, v in row.items() if v is not None)}")
            if not isinstance(row[field], str) or not row[field].strip():
                raise ValueError(f"{source}: row {i} has an empty or non-text {field!r} field")
        prompt = apply_template(row[cfg.prompt_field].strip(), template, tokenizer, system)
        completion = row[cfg.completion_field]
    # r1-zero prompts end in "<think>" and completions usually start with it: keep one, not two.
    prefix = response_prefix(prompt)
    if prefix and completion.lstrip().startswith(prefix):
        completion = completion.lstrip()[len(prefix):]
    return {"prompt": prompt, "completion": completion}


def _chat_example(messages, i: int, source: str, cfg: SFTConfig, tokenizer, template: str,
                  system: str | None) -> tuple[str, str]:
    where = f"{source}: row {i} {cfg.messages_field!r}"
    if template != "chat":
        raise ValueError(f"{where} is a chat; chat rows need template='chat' (got {template!r}), "
                         f"or give {cfg.prompt_field!r}/{cfg.completion_field!r} rows")
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        raise ValueError(f"{where}: template 'chat' needs a tokenizer with a chat_template")
    if not isinstance(messages, list) or not all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in messages):
        raise ValueError(f"{where} must be a list of {{'role': str, 'content': str}} messages")
    replies = [j for j, m in enumerate(messages) if m["role"] == "assistant"]
    if not replies:
        raise ValueError(f"{where} has no assistant message to learn from")
    last = replies[-1]
    if last != len(messages) - 1:
        raise ValueError(f"{where} continues after the last assistant message (with a {messages[-1]['role']!r} one)")
    if last == 0:
        raise ValueError(f"{where} has no message before the assistant reply to prompt it")
    if not messages[last]["content"].strip():
        raise ValueError(f"{where} has an empty last assistant message")
    context = messages[:last]
    if system and context[0]["role"] != "system":
        context = [{"role": "system", "content": system}] + context
    prompt = tokenizer.apply_chat_template(context, tokenize=False, add_generation_prompt=True)
    return prompt, messages[last]["content"]


# ---------------------------------------------------------------- tokens


def completion_tokens(tokenizer, completion: str) -> tuple[list[int], list[int]]:
    """(ids, labels) of a completion. A tool's result in it (`<result>...</result>`, tools/calls.py) is tokenised as an
    episode appends it (marker, text, marker apart) and labelled IGNORE: the model reads results, never learns to
    write them, in SFT as in RL (Batch.loss_mask)."""
    if RESULT_OPEN not in completion:
        ids = tokenizer(completion, add_special_tokens=False)["input_ids"]
        return ids, list(ids)
    ids, labels = [], []
    for part in _RESULT.split(completion):
        if _RESULT.fullmatch(part):
            body = part[len(RESULT_OPEN): -len(RESULT_CLOSE)]
            part_ids = [i for text in (RESULT_OPEN, body, RESULT_CLOSE) for i in tokenizer(text, add_special_tokens=False)["input_ids"]]
            ids, labels = ids + part_ids, labels + [IGNORE] * len(part_ids)
        elif part:
            part_ids = tokenizer(part, add_special_tokens=False)["input_ids"]
            ids, labels = ids + part_ids, labels + part_ids
    return ids, labels


def tokenize_example(tokenizer, example: dict, max_len: int) -> dict:
    """input_ids = prompt + completion + EOS, cut to max_len; labels = input_ids with the prompt set to -100.

    Prompt and completion are tokenized apart, as at generation time (the engine tokenizes the prompt
    alone and the model continues it). A cut drops the end of the completion and its EOS: teaching the
    model to stop mid-thought would be worse than never showing it the end.
    """
    prompt_ids = tokenizer(example["prompt"], add_special_tokens=False)["input_ids"]
    completion_ids, completion_labels = completion_tokens(tokenizer, example["completion"])
    if not completion_ids or completion_ids[-1] != tokenizer.eos_token_id:
        completion_ids, completion_labels = completion_ids + [tokenizer.eos_token_id], completion_labels + [tokenizer.eos_token_id]
    input_ids = (prompt_ids + completion_ids)[:max_len]
    labels = ([IGNORE] * len(prompt_ids) + completion_labels)[:max_len]
    return {"input_ids": input_ids, "labels": labels, "truncated": len(prompt_ids) + len(completion_ids) > max_len}


def tokenize_examples(tokenizer, examples: list[dict], max_len: int) -> tuple[list[dict], int, int]:
    """(rows, truncated, dropped): an example whose prompt alone fills max_len has nothing to learn and is dropped."""
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no eos_token: SFT appends it so the model learns to stop")
    rows, truncated, dropped = [], 0, 0
    for ex in examples:
        row = tokenize_example(tokenizer, ex, max_len)
        if all(label == IGNORE for label in row["labels"][1:]):
            dropped += 1
            continue
        truncated += row["truncated"]
        rows.append(row)
    if truncated or dropped:
        console.print(f"[yellow]SFT: {truncated} of {len(examples)} examples are longer than max_len={max_len} tokens "
                      f"and lose the end of their completion; {dropped} dropped (prompt alone fills max_len)")
    if not rows:
        raise ValueError(f"every one of the {len(examples)} SFT examples has a prompt of max_len={max_len} tokens or more")
    return rows, truncated, dropped


def collate(rows: list[dict], pad_id: int) -> dict:
    """Right-pads to the longest row: input_ids, attention_mask, labels (-100 on pads), each (B, L)."""
    B, L = len(rows), max(len(r["input_ids"]) for r in rows)
    input_ids = torch.full((B, L), pad_id, dtype=torch.long)
    labels = torch.full((B, L), IGNORE, dtype=torch.long)
    attention_mask = torch.zeros((B, L), dtype=torch.long)
    for i, r in enumerate(rows):
        n = len(r["input_ids"])
        input_ids[i, :n] = torch.tensor(r["input_ids"])
        labels[i, :n] = torch.tensor(r["labels"])
        attention_mask[i, :n] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def count_targets(rows: list[dict]) -> int:
    """Tokens that carry loss: labelled positions after the first (position 0 has nothing predicting it)."""
    return sum(sum(label != IGNORE for label in r["labels"][1:]) for r in rows)


# ---------------------------------------------------------------- held-out split


def split_eval(rows: list[dict], fraction: float, seed: int) -> tuple[list, list]:
    """(train, eval): a seeded random `fraction` of the *prompts* is held out (at least one when fraction > 0).

    Rows sharing a prompt (several kept samples of one question) stay on one side, or the eval loss
    would measure memorised questions.
    """
    if fraction <= 0:
        return list(rows), []
    prompt_of = [tuple(r["input_ids"][: sum(label == IGNORE for label in r["labels"][: len(r["input_ids"])])]) for r in rows]
    prompts = sorted(set(prompt_of))
    random.Random(f"sft-eval-{seed}").shuffle(prompts)
    n_eval = max(1, int(len(prompts) * fraction))
    if n_eval >= len(prompts):
        raise ValueError(f"eval_fraction={fraction} holds out all {len(prompts)} prompts; use more data or eval_fraction=0")
    held = set(prompts[:n_eval])
    return [r for r, p in zip(rows, prompt_of) if p not in held], [r for r, p in zip(rows, prompt_of) if p in held]
