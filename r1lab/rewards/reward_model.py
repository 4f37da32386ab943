"""Any HF sequence-classification model as a batched reward function (R1's helpfulness reward model)."""

from __future__ import annotations

from pathlib import Path

from r1lab.data.format import without_reasoning

ROWS_PER_FORWARD = 16  # bounds the memory of a batch of long responses


def reward_tokenizer(path: str):
    """The reward model's tokenizer, refused without a pad token: batched scoring pads with it, and the model
    reads its score at the last token that is not padding (HF sequence classification finds it by pad_token_id)."""
    from transformers import AutoTokenizer

    from r1lab.models.hub import is_hub_id

    if not Path(path).expanduser().exists() and not is_hub_id(path):
        raise FileNotFoundError(f"rl.reward_model: no such directory '{path}'")
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token_id is None:
        raise ValueError(f"rl.reward_model: the tokenizer of '{path}' has no pad token, which batched scoring needs; "
                         "set \"pad_token\" in its tokenizer_config.json to the token the model was trained to pad "
                         "with (often its eos token)")
    return tokenizer


class RewardModel:
    """A batched reward (`fn(completions, prompts, **_) -> list[float]`, rewards/registry.py): the score of
    each prompt + response, on `device`, in `dtype` (the policy's), loaded when the reward is built.

    The text: with the tokenizer's chat template when it has one (user: the example's prompt, assistant:
    the response), else prompt + "\\n" + response. The response without its reasoning
    (data.format.without_reasoning, empty while the thinking is unclosed): R1's helpfulness reward model
    judges the final summary only. One output: its logit is the reward (a Bradley-Terry reward model);
    several: the probability of the last label (a "good" class). Run without gradients.
    """

    def __init__(self, path: str | None, device="cpu", dtype=None):
        from transformers import AutoModelForSequenceClassification

        if not path:
            raise ValueError("the 'reward_model' reward needs rl.reward_model=PATH (an HF sequence-classification model)")
        self.tokenizer = reward_tokenizer(path)
        self.model = AutoModelForSequenceClassification.from_pretrained(path, dtype=dtype).to(device).eval()
        # the model finds a row's last token by the pad id: it must be the one the rows are padded with
        self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.chat = bool(getattr(self.tokenizer, "chat_template", None))

    def text(self, prompt: str, response: str) -> str:
        response = without_reasoning(response)
        if self.chat:
            return self.tokenizer.apply_chat_template([{"role": "user", "content": prompt},
                                                       {"role": "assistant", "content": response}], tokenize=False)
        return prompt + "\n" + response

    def __call__(self, completions: list[str], prompts: list[str], **_) -> list[float]:
        import torch

        texts = [self.text(p, c) for p, c in zip(prompts, completions)]
        scores: list[float] = []
        for start in range(0, len(texts), ROWS_PER_FORWARD):
            # right padding: positions count from 0 in every row, as when a row is scored alone
            inputs = self.tokenizer(texts[start:start + ROWS_PER_FORWARD], return_tensors="pt", padding=True,
                                    padding_side="right", truncation=True, add_special_tokens=not self.chat)
            with torch.no_grad():
                logits = self.model(**inputs.to(self.model.device)).logits.float()
            scores += (logits[:, 0] if logits.shape[-1] == 1 else logits.softmax(-1)[:, -1]).tolist()
        return scores
