"""Evaluation as the paper does it: k samples per problem at T=0.6 / top-p 0.95, never greedy.

pass@1 = mean correctness over the k samples; pass@k by the unbiased estimator; cons@k = the
majority answer among the k, checked once.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from math import comb

from r1lab.config import REFLECTION_PHRASES, EvalConfig
from r1lab.data.example import Example, Task
from r1lab.data.format import extract_answer, reflects, render_prompt, response_prefix
from r1lab.progress import progress_bar
from r1lab.rewards.language import language_consistency_reward
from r1lab.rewards.rules import format_reward


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct: 1 - C(n-c, k) / C(n, k)."""
    if n - c < k:
        return 1.0
    return 1.0 - comb(n - c, k) / comb(n, k)


def majority_answer(answers: list[str | None], key=lambda a: " ".join(a.split())) -> str | None:
    """The most common extracted answer, answers with the same `key` counting as one (ties: the first
    seen); the first answer with the winning key is returned. None if no sample answered."""
    given = [a for a in answers if a]
    counts = Counter(key(a) for a in given)
    if not counts:
        return None
    winner = counts.most_common(1)[0][0]
    return next(a for a in given if key(a) == winner)


def evaluate(engine, task: Task, cfg: EvalConfig, *, template: str, system: str | None,
             reflection_phrases: list[str] = REFLECTION_PHRASES, examples: list[Example] | None = None,
             label: str = "eval", progress: bool = True, turns=None) -> dict:
    """progress=False: no bar of its own (inside another's, as during RL, where two live bars would clash).
    turns: episodes that call tools (engines/episodes.py Turns), as the run's RL samples them; None: one turn."""
    examples = list(examples if examples is not None else task.examples("test"))[: cfg.n]
    per_chunk = max(1, cfg.batch_size // cfg.k)
    correct, formatted, lengths, reflective, consistency, cons, samples = [], [], [], [], [], [], []
    calls, errors = [], []
    schemas = turns.prompt_tools(template) if turns is not None else None
    bar_of = progress_bar(f"{label}: {len(examples)} problems x {cfg.k}", len(examples)) if progress else \
        contextlib.nullcontext(lambda *_, **__: None)
    with bar_of as bar:
        for start in range(0, len(examples), per_chunk):
            chunk = examples[start : start + per_chunk]
            prompts = [render_prompt(e, template, engine.tokenizer, system, schemas) for e in chunk]
            rollout = turns.rollout(engine, prompts, cfg.sampling, cfg.k, chunk) if turns else engine.generate(prompts, cfg.sampling, n=cfg.k)
            if turns:
                calls, errors = calls + rollout.tool_calls, errors + rollout.tool_errors
            for i, ex in enumerate(chunk):
                rows = range(i * cfg.k, (i + 1) * cfg.k)
                responses = [response_prefix(prompts[i]) + rollout.texts[r] for r in rows]
                answers = [extract_answer(r) for r in responses]
                scores = [task.score(a, ex) if a else 0.0 for a in answers]
                correct.append(scores)
                formatted += [format_reward(r) for r in responses]
                lengths += [int(rollout.lengths[r]) for r in rows]
                reflective += [reflects(r, reflection_phrases) for r in responses]
                consistency += [language_consistency_reward(r) for r in responses]
                vote = majority_answer(answers, key=lambda a, ex=ex: task.vote_key(a, ex))
                cons.append(task.score(vote, ex) if vote else 0.0)
                samples.append({"prompt": ex.prompt, "answer": ex.answer, "response": responses[0], "correct": scores[0] >= 1.0})
            bar(len(chunk), pass1=f"{sum(map(sum, correct)) / (cfg.k * len(correct)):.3f}")
    n = len(examples)
    pass_k = sum(pass_at_k(cfg.k, sum(s >= 1.0 for s in sc), cfg.k) for sc in correct) / n
    return {
        "pass@1": sum(sum(s) / cfg.k for s in correct) / n,
        "k": cfg.k,
        "n": n,
        "pass@k": pass_k,  # also under its numbered name, as papers write it
        "cons@k": sum(cons) / n,
        f"pass@{cfg.k}": pass_k,
        f"cons@{cfg.k}": sum(cons) / n,
        "format_rate": sum(formatted) / len(formatted),
        "mean_length": sum(lengths) / len(lengths),
        "reflection_rate": sum(reflective) / len(reflective),
        "language_consistency": sum(consistency) / len(consistency),
        "temperature": cfg.sampling.temperature,
        "top_p": cfg.sampling.top_p,
        "samples": samples[:8],
        **({"tool_call_rate": sum(c > 0 for c in calls) / len(calls), "tool_calls_mean": sum(calls) / len(calls),
            "tool_error_frac": sum(errors) / max(1, sum(calls))} if turns else {}),
        **_by_kind(examples, correct),
    }


def _by_kind(examples: list[Example], correct: list[list[float]]) -> dict:
    """pass@1 of each kind of problem when a task mixes kinds (the tiny world's meta["kind"]): {} otherwise."""
    kinds = [ex.meta.get("kind") for ex in examples]
    if None in kinds or len(set(kinds)) < 2:
        return {}
    by = {}
    for kind, scores in zip(kinds, correct):
        by.setdefault(kind, []).append(sum(scores) / len(scores))
    return {"pass@1_by_kind": {k: sum(v) / len(v) for k, v in by.items()}}
