"""Any HF sequence-classification model as a reward function (R1's helpfulness reward model)."""

from __future__ import annotations

from r1lab.data.example import Example


class RewardModel:
    """Any HF sequence-classification model as a reward function: the score of prompt + response.

    One output: its logit is the reward (a Bradley-Terry reward model). Several: the probability of
    the last label (a "good" class). Loaded on first use, run without gradients.
    """

    def __init__(self, path: str | None):
        if not path:
            raise ValueError("the 'reward_model' reward needs rl.reward_model=PATH (an HF sequence-classification model)")
        self.path, self.model, self.tokenizer = path, None, None

    def _load(self):
        from pathlib import Path

        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        if not Path(self.path).exists() and (self.path.startswith((".", "/", "~")) or self.path.count("/") > 1):
            raise FileNotFoundError(f"rl.reward_model: no such directory '{self.path}'")
        self.tokenizer = AutoTokenizer.from_pretrained(self.path)
        self.model = AutoModelForSequenceClassification.from_pretrained(self.path).eval()
        if self.model.config.pad_token_id is None:
            self.model.config.pad_token_id = self.tokenizer.pad_token_id or self.tokenizer.eos_token_id or 0

    def __call__(self, response: str, example: Example, **_) -> float:
        import torch

        if self.model is None:
            self._load()
        inputs = self.tokenizer(example.prompt + "\n" + response, return_tensors="pt", truncation=True)
        with torch.no_grad():
            logits = self.model(**inputs).logits[0].float()
        return float(logits[0]) if logits.numel() == 1 else float(logits.softmax(-1)[-1])
