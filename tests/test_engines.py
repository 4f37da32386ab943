"""A new rollout engine needs only the rollout protocol (engines/base.py: Engine): a constructor, `tokenizer`,
`generate`, `load_weights`, the RNG state and `close`. This file defines one with just those and trains through
`make_engine`'s registry; and `make_engine` refuses an option an engine does not take."""

from __future__ import annotations

import pytest
import torch
from helpers import EchoTask, digits, metrics_rows, rl_config

from r1lab.config import ConfigError
from r1lab.engines import ENGINES, Rollout, make_engine
from r1lab.recipes.load import load_config
from r1lab.rewards.registry import REWARD_FUNCTIONS
from r1lab.rl.loop import train_rl


class MinimalEngine:
    """Plain ancestral sampling with the model's full forward pass, one token at a time, no KV cache."""

    def __init__(self, model, tokenizer, *, seed: int = 0):
        self.model, self.tokenizer = model, tokenizer
        self.generator = torch.Generator().manual_seed(seed)

    @torch.no_grad()
    def generate(self, prompts, sampling, n=1, seeds=None) -> Rollout:
        prompt_ids = [self.tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
        pad, eos = self.tokenizer.pad_token_id, self.tokenizer.eos_token_id
        rows, T = [ids for ids in prompt_ids for _ in range(n)], sampling.max_new_tokens
        completion_ids = torch.full((len(rows), T), pad, dtype=torch.long)
        completion_mask = torch.zeros((len(rows), T), dtype=torch.long)
        logprobs = torch.zeros((len(rows), T))
        for i, ids in enumerate(rows):
            tokens = list(ids)
            for t in range(T):
                logits = self.model(input_ids=torch.tensor([tokens])).logits[0, -1].float()
                step_logprobs = torch.log_softmax(logits / sampling.temperature, -1)
                token = int(torch.multinomial(step_logprobs.exp(), 1, generator=self.generator))
                completion_ids[i, t], completion_mask[i, t], logprobs[i, t] = token, 1, step_logprobs[token]
                tokens.append(token)
                if token == eos:
                    break
        texts = self.tokenizer.batch_decode([c[m.bool()] for c, m in zip(completion_ids, completion_mask)],
                                            skip_special_tokens=True)
        truncated = [bool(m.all()) and int(c[-1]) != eos for c, m in zip(completion_ids, completion_mask)]
        return Rollout(prompt_ids=prompt_ids, completion_ids=completion_ids, completion_mask=completion_mask,
                       logprobs=logprobs, texts=texts, truncated=truncated, n=n)

    def load_weights(self, model) -> None:
        self.model = model

    def rng_state(self):
        return self.generator.get_state()

    def set_rng_state(self, state) -> None:
        self.generator.set_state(state)

    def close(self) -> None:
        pass


def test_a_new_engine_trains_with_only_the_rollout_protocol(tiny, tmp_path, monkeypatch):
    model, tokenizer = tiny
    monkeypatch.setitem(ENGINES, "minimal", f"{__name__}:MinimalEngine")
    monkeypatch.setitem(REWARD_FUNCTIONS, "digits", lambda task, **_: digits)  # rewards with spread: something to learn
    before = [p.detach().clone() for p in model.parameters()]
    rows = []
    cfg = rl_config(steps=2, prompts_per_step=2, group_size=4)
    train_rl(model, tokenizer, EchoTask(), cfg, tmp_path, engine=make_engine("minimal", model, tokenizer, seed=0),
             template="r1-zero", system="", report=rows.append)
    assert [r["step"] for r in rows] == [1, 2] and rows == metrics_rows(tmp_path)  # the logger saw every row
    assert all(r["rollout_logp_diff_max"] >= 0 for r in rows)  # not exact: auto corrected with the trainer's log-probs
    assert any(not torch.equal(a, p) for a, p in zip(before, model.parameters()))  # it trained


def test_an_option_the_engine_does_not_take_is_refused(tiny):
    model, tokenizer = tiny
    with pytest.raises(ValueError, match="rollout engine 'torch' takes no option 'gpu_memory_utilization'"):
        make_engine("torch", model, tokenizer, gpu_memory_utilization=0.5)
    with pytest.raises(ConfigError, match="rollout.sleep: the torch engine takes no such option"):
        load_config("r1-zero", ["rollout.sleep=true"])
    assert load_config("r1-zero", ["rollout.engine=vllm", "rollout.sleep=true"]).rollout.options() == {"sleep": True}
