"""Learned rewards: a process reward model (PRM), which scores each step of a response, and an outcome reward
model (ORM), which scores the whole of it. The R1 paper's first failed attempt: a learned reward the policy can
hack, where the rule reward cannot be fooled.

Both are one model: the policy's architecture with a one-output token-classification head (transformers'
AutoModelForTokenClassification), reading `scored_text(prompt, response)`. Its sigmoid at a step's last token
(data/steps.py) is the probability that the step is right; a PRM was trained on every step's label, an ORM on the
last token's only (the answer's correctness). sft/scorer.py trains them; the model's r1lab.json says which.

Rewards (rewards/registry.py), each with rl.reward_model=PATH (or a recipe's reward-model stage):
  process_min   the lowest step score: one wrong step sinks the response (the usual PRM aggregate)
  process_last  the last step's score: the PRM's judgement of the answer
  outcome       the ORM's score of the whole response
"""

from __future__ import annotations

import json
from pathlib import Path

from r1lab.data.steps import step_ends

ROWS_PER_FORWARD = 16  # bounds the memory of a batch of long responses
SUPERVISIONS = ("process", "outcome")
LEARNED_REWARDS = ("process_min", "process_last", "outcome")


def scored_text(prompt: str, response: str) -> tuple[str, int]:
    """What a scorer reads, and where the response starts in it."""
    return prompt + "\n" + response, len(prompt) + 1


def step_positions(offsets: list[tuple[int, int]], ends: list[int]) -> list[int]:
    """The token holding each step's last character (offsets: each token's (start, end) characters; special tokens
    (0, 0)). A step cut off by truncation is read at the last token."""
    starts = [start if end > start else -1 for start, end in offsets]
    positions = []
    for end in ends:
        inside = [i for i, s in enumerate(starts) if 0 <= s < end]
        positions.append(inside[-1] if inside else 0)
    return positions


def scorer_kind(path: str) -> str | None:
    """'process' or 'outcome' for a scorer r1lab trained (its r1lab.json), None for another model."""
    meta = Path(path).expanduser() / "r1lab.json"
    try:
        return json.loads(meta.read_text()).get("scorer")
    except (OSError, ValueError, AttributeError):
        return None


class StepScorer:
    """A trained PRM or ORM, loaded once, on `device` in `dtype` (the policy's); `step_scores` run without gradients."""

    def __init__(self, path: str | None, device="cpu", dtype=None, *, want: str):
        from transformers import AutoModelForTokenClassification

        from r1lab.rewards.reward_model import reward_tokenizer

        if not path:
            raise ValueError(f"a learned {want} reward needs rl.reward_model=PATH: a scorer trained by a reward-model stage")
        kind = scorer_kind(path)
        if kind != want:
            what = f"a scorer with supervision: {kind}" if kind else "no scorer r1lab trained"
            raise ValueError(f"rl.reward_model={path} is {what}, and the {want} rewards need one with supervision: "
                             f"{want} (a reward-model stage's)")
        self.tokenizer = reward_tokenizer(path)
        self.model = AutoModelForTokenClassification.from_pretrained(path, dtype=dtype).to(device).eval()
        self.context = getattr(self.model.config, "max_position_embeddings", None)

    def step_scores(self, prompts: list[str], responses: list[str]) -> list[list[float]]:
        """Each response's step scores in (0, 1), one per step of data/steps.py."""
        import torch

        out: list[list[float]] = []
        for start in range(0, len(responses), ROWS_PER_FORWARD):
            texts, ends = [], []
            for prompt, response in zip(prompts[start:start + ROWS_PER_FORWARD], responses[start:start + ROWS_PER_FORWARD]):
                text, offset = scored_text(prompt, response)
                texts.append(text)
                ends.append([offset + e for e in step_ends(response)])
            inputs = self.tokenizer(texts, return_tensors="pt", padding=True, padding_side="right", truncation=True,
                                    max_length=self.context, return_offsets_mapping=True)
            offsets = inputs.pop("offset_mapping").tolist()
            with torch.no_grad():
                probs = self.model(**inputs.to(self.model.device)).logits[..., 0].float().sigmoid().cpu()  # (B, T)
            out += [probs[i, step_positions(offsets[i], ends[i])].tolist() for i in range(len(texts))]
        return out


def learned_reward(name: str, path: str | None, device="cpu", dtype=None):
    """The batched reward `name` (process_min, process_last or outcome): fn(completions, prompts, **_) -> scores."""
    scorer = StepScorer(path, device, dtype, want="outcome" if name == "outcome" else "process")
    pick = min if name == "process_min" else (lambda scores: scores[-1])

    def reward(completions: list[str], prompts: list[str], **_) -> list[float]:
        return [pick(scores) for scores in scorer.step_scores(prompts, completions)]

    reward.__name__ = name
    return reward
