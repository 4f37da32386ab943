"""Sample k responses per prompt, score them, keep the good ones: DeepSeek-R1's data engine.

The same loop makes the cold-start data (few, readable, correct), the ~600k rejection-sampled
reasoning samples of stage 3, and distillation data for small models. Every sample is written to the
JSONL, kept or not, with its scores and the reasons it was dropped, so a filter can be audited;
`read_kept` then gives the (prompt, completion) pairs for SFT.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

from r1lab.config import FilterConfig, SamplingConfig
from r1lab.data.example import Example, Task
from r1lab.data.format import extract_answer, render_prompt, response_prefix, split_response
from r1lab.disk import atomic_write
from r1lab.progress import progress_bar
from r1lab.rewards.language import language_share
from r1lab.rewards.rules import RewardFn, format_reward, make_accuracy_reward, repetition_penalty
from r1lab.store.logs import numbered_jsonl_rows


def _tidy(text: str) -> str:
    """Whitespace normalised: runs of spaces collapsed, lines stripped, at most one blank line in a row."""
    lines = [" ".join(line.split()) for line in text.strip().splitlines()]
    return "\n".join(line for i, line in enumerate(lines) if line or (i > 0 and lines[i - 1]))


def summary(response: str) -> str | None:
    """R1's summary of the reasoning: the text of the last <answer> block after </think>; None if there is
    none or it is empty (an answer inside the thinking is no summary)."""
    _, rest = split_response(response)
    answer = extract_answer(rest) if rest is not None else None
    return answer or None  # an empty block summarises nothing


def reformat_for_readability(response: str) -> str:
    """'<think> reasoning </think> <answer> summary </answer>' with whitespace normalised; a response
    without both parts comes back only whitespace-normalised (it has no readable form to give)."""
    thinking, _ = split_response(response)
    answer = summary(response)
    if answer is None:
        return _tidy(response)
    return f"<think> {_tidy(thinking)} </think> <answer> {_tidy(answer)} </answer>"


def score_sample(response: str, example: Example, task: Task, *, num_tokens: int, truncated: bool,
                 filters: FilterConfig, reward_fn: RewardFn | None = None,
                 max_tokens: int | None = None) -> tuple[dict, list[str]]:
    """Scores one response (starting at its '<think>') and lists why it is dropped ([] = it passes).

    `reward_fn(response, example, **info)` replaces the task's verifier as the correctness score (e.g. a
    judge model for answers no rule can check); `max_tokens` is the generation limit, passed to it.
    The per-prompt filters (duplicates, max_per_prompt) are applied by `select`, not here.
    """
    reward_fn = reward_fn or make_accuracy_reward(task)
    info = {"num_tokens": num_tokens, "max_tokens": max_tokens or num_tokens, "truncated": truncated}
    scores = {
        "correct": float(reward_fn(response, example, **info)),
        "format": format_reward(response),
        "repetition": -repetition_penalty(response, ngram_size=3) + 0.0,  # +0.0: no -0.0 in the JSON
        "language_share": language_share(response, filters.language),
        "num_tokens": int(num_tokens),
        "truncated": bool(truncated),
        "summary": summary(response) is not None,
    }
    checks = [
        ("wrong", filters.require_correct and scores["correct"] < 1.0),
        ("format", filters.require_format and scores["format"] < 1.0),
        ("no_summary", filters.require_summary and not scores["summary"]),
        ("repetition", filters.max_repetition is not None and scores["repetition"] > filters.max_repetition),
        ("mixed_language", filters.min_language_share is not None and scores["language_share"] is not None
         and scores["language_share"] < filters.min_language_share),
        ("truncated", filters.drop_truncated and truncated),
        ("too_long", filters.max_tokens is not None and num_tokens > filters.max_tokens),
    ]
    return scores, [reason for reason, failed in checks if failed]


def select(responses: list[str], reasons: list[list[str]], filters: FilterConfig) -> list[list[str]]:
    """Adds the per-prompt reasons to one prompt's samples: "duplicate" for a response seen earlier
    (up to whitespace), "max_per_prompt" for passing samples beyond the first max_per_prompt."""
    reasons = [list(r) for r in reasons]
    seen, kept = set(), 0
    for response, why in zip(responses, reasons):
        key = " ".join(response.split())
        if filters.dedupe and key in seen:
            why.append("duplicate")
        seen.add(key)
        if not why:
            kept += 1
            if filters.max_per_prompt is not None and kept > filters.max_per_prompt:
                why.append("max_per_prompt")
    return reasons


def generate(engine, task: Task, examples: list[Example], *, k: int, sampling: SamplingConfig, template: str,
             system: str | None, filters: FilterConfig | dict | None, out_path: str | os.PathLike,
             reward_fn: RewardFn | None = None, batch_size: int = 64, label: str = "generate") -> dict:
    """Samples k responses for each example, scores and filters them, writes every sample to `out_path`.

    Rows: {"id", "sample", "prompt" (the question, untemplated), "answer", "response", "completion"
    (the readable response, for SFT), "scores", "kept", "reasons"}. The file appears only when
    complete (written to a temporary file, then renamed). `batch_size` is completions per engine call.
    Returns {"prompts", "samples", "kept", "dropped", "kept_prompts", "drop_reasons", "pass@1", "out_path"}.
    """
    filters = _filter_config(filters)
    examples = list(examples)
    if not examples:
        raise ValueError("generate: no examples to sample from")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"generate: k (samples per prompt) must be a positive int, got {k!r}")
    reward_fn = reward_fn or make_accuracy_reward(task)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = out_path.with_name(out_path.name + ".tmp")
    per_call = max(1, batch_size // k)
    correct, kept, kept_prompts, drop_reasons = [], 0, 0, Counter()
    try:
        with open(tmp_path, "w", encoding="utf-8") as out, \
                progress_bar(f"{label}: {len(examples)} prompts x {k}", len(examples)) as bar:
            for start in range(0, len(examples), per_call):
                chunk = examples[start : start + per_call]
                prompts = [render_prompt(e, template, engine.tokenizer, system) for e in chunk]
                rollout = engine.generate(prompts, sampling, n=k)
                for i, ex in enumerate(chunk):
                    rows = _score_prompt(ex, task, prompts[i], rollout, range(i * k, (i + 1) * k), filters,
                                         reward_fn, sampling.max_new_tokens)
                    for row in rows:
                        out.write(json.dumps(row, ensure_ascii=False) + "\n")
                        correct.append(row["scores"]["correct"])
                        drop_reasons.update(row["reasons"])
                    kept_here = sum(row["kept"] for row in rows)
                    kept, kept_prompts = kept + kept_here, kept_prompts + (kept_here > 0)
                bar(len(chunk), kept=kept, pass1=f"{sum(correct) / len(correct):.3f}")
        os.replace(tmp_path, out_path)
    finally:
        tmp_path.unlink(missing_ok=True)  # after an error: leave no half-written file behind
    return {
        "prompts": len(examples),
        "samples": len(correct),
        "kept": kept,
        "dropped": len(correct) - kept,
        "kept_prompts": kept_prompts,
        "drop_reasons": dict(drop_reasons.most_common()),
        "pass@1": sum(correct) / len(correct),
        "out_path": str(out_path),
    }


def _score_prompt(ex: Example, task: Task, prompt_text: str, rollout, rows: range, filters: FilterConfig,
                  reward_fn: RewardFn, max_tokens: int) -> list[dict]:
    """The JSONL rows of one prompt's k samples."""
    responses = [response_prefix(prompt_text) + rollout.texts[r] for r in rows]
    scored = [score_sample(resp, ex, task, num_tokens=int(rollout.lengths[r]), truncated=bool(rollout.truncated[r]),
                           filters=filters, reward_fn=reward_fn, max_tokens=max_tokens)
              for resp, r in zip(responses, rows)]
    reasons = select(responses, [why for _, why in scored], filters)
    return [{"id": ex.id, "sample": j, "prompt": ex.prompt, "answer": ex.answer, "response": resp,
             "completion": reformat_for_readability(resp), "scores": scores, "kept": not why, "reasons": why,
             **_conversation(ex, reformat_for_readability(resp))}
            for j, (resp, (scores, _), why) in enumerate(zip(responses, scored, reasons))]


def _conversation(ex: Example, completion: str) -> dict:
    """A conversational prompt's row also holds the whole conversation, so SFT on it keeps the system and
    earlier turns (sft/train.py reads `messages` first)."""
    return {} if ex.messages is None else {"messages": [*ex.messages, {"role": "assistant", "content": completion}]}


def write_reference_answers(examples: list[Example], out_path: str | os.PathLike) -> dict:
    """Rows like `generate`'s, all kept, whose completion is the example's own answer with an empty
    chain of thought: '<think> </think> <answer> … </answer>'. Non-reasoning SFT data."""
    for ex in examples:
        if not ex.answer or not str(ex.answer).strip():
            raise ValueError(f"example {ex.id!r} has no reference answer to write")
    return write_completions(examples, [f"<think> </think> <answer> {ex.answer} </answer>" for ex in examples], out_path)


def write_completions(examples: list[Example], completions: list[str], out_path: str | os.PathLike) -> dict:
    """Rows like `generate`'s, all kept: each example with the completion written for it (answers, traces)."""
    rows = [{"id": ex.id, "sample": 0, "prompt": ex.prompt, "answer": ex.answer, "response": completion,
             "completion": completion, "scores": {}, "kept": True, "reasons": [], **_conversation(ex, completion)}
            for ex, completion in zip(examples, completions, strict=True)]
    if not rows:
        raise ValueError("no examples to write")
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out_path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), "samples")
    return {"prompts": len(rows), "samples": len(rows), "kept": len(rows), "out_path": str(out_path)}


def _filter_config(filters: FilterConfig | dict | None) -> FilterConfig:
    if filters is None:
        return FilterConfig()
    if isinstance(filters, dict):
        return FilterConfig(**filters)
    if not isinstance(filters, FilterConfig):
        raise TypeError(f"filters must be a FilterConfig, a dict or None, got {type(filters).__name__}")
    return filters


def read_kept(path: str | os.PathLike) -> list[dict]:
    """The kept samples of a `generate` JSONL, as [{"prompt", "completion"}] for SFT (with "messages", the whole
    conversation, for a conversational prompt's). Strict, unlike a report: a bad line here would silently shrink
    the training data."""
    pairs = []
    for line_no, row in numbered_jsonl_rows(path, strict=True):
        for field in ("prompt", "completion", "kept"):
            if field not in row:
                raise ValueError(f"{path}, line {line_no}: missing field {field!r} (is this a `generate` output?)")
        if not isinstance(row["kept"], bool):
            raise ValueError(f"{path}, line {line_no}: field 'kept' must be true or false, got {row['kept']!r}")
        if not row["kept"]:
            continue
        for field in ("prompt", "completion"):
            if not isinstance(row[field], str) or not row[field].strip():
                raise ValueError(f"{path}, line {line_no}: field {field!r} of a kept sample must be a non-empty string")
        pairs.append({"prompt": row["prompt"], "completion": row["completion"],
                      **({"messages": row["messages"]} if row.get("messages") else {})})
    return pairs
