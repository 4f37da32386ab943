"""Rollout engines: sample completions and the log-probs they were sampled with.

`TorchEngine` works with any HF causal LM on CPU or GPU: each prompt is prefilled once and its KV
cache repeated for the n samples, then one forward per new token for the whole batch, with finished
rows dropped from the batch. A vLLM engine implements the same `generate`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F


@dataclass
class Rollout:
    """n completions per prompt, row i belongs to prompt i // n."""

    prompt_ids: list[list[int]]  # one per prompt, unpadded
    completion_ids: torch.Tensor  # (N, T) right-padded with pad id
    completion_mask: torch.Tensor  # (N, T) 1 for sampled tokens, EOS included
    logprobs: torch.Tensor  # (N, T) log-prob of each token under the temperature-scaled policy
    texts: list[str]  # decoded completions, special tokens removed
    truncated: list[bool]  # hit max_new_tokens without EOS or a stop string
    n: int

    @property
    def lengths(self) -> torch.Tensor:
        return self.completion_mask.sum(1)


class Engine(Protocol):
    """What the trainer and the evaluator need from a rollout engine.

    The log-probs must be those of the weights being trained (the trainer uses them as the old
    log-probs of the clipped objective), so an engine with its own copy of the weights (vLLM) gets
    them from `load_weights` after every optimizer step.
    """

    tokenizer: object

    def generate(self, prompts: list[str], sampling, n: int = 1) -> Rollout: ...

    def load_weights(self, model) -> None: ...


def filter_logits(logits: torch.Tensor, top_p: float = 1.0, top_k: int = 0) -> torch.Tensor:
    """Masks logits outside the top-k and the top-p nucleus with -inf. logits: (B, V)."""
    if top_k > 0 and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        drop = cum - sorted_logits.softmax(-1) >= top_p  # keep the token that crosses top_p
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return logits


class TorchEngine:
    def __init__(self, model, tokenizer, seed: int = 0):
        self.model, self.tokenizer = model, tokenizer
        eos = model.generation_config.eos_token_id if model.generation_config is not None else None
        eos = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        self.eos_ids = torch.tensor(sorted(eos | {tokenizer.eos_token_id}))
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.generator = torch.Generator(device=model.device).manual_seed(seed)

    def load_weights(self, model) -> None:
        self.model = model  # same process, same tensors: nothing to copy

    @torch.no_grad()
    def generate(self, prompts: list[str], sampling, n: int = 1) -> Rollout:
        """Samples n completions for each prompt. `sampling` has temperature, top_p, top_k, max_new_tokens, stop."""
        model, dev = self.model, self.model.device
        was_training = model.training
        model.eval()
        prompt_ids = [self.tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
        if any(len(p) == 0 for p in prompt_ids):
            raise ValueError("an empty prompt cannot be continued: every prompt needs at least one token")
        limit = getattr(model.config, "max_position_embeddings", None)
        longest = max(map(len, prompt_ids))
        max_new = sampling.max_new_tokens if limit is None else min(sampling.max_new_tokens, limit - longest)
        if max_new <= 0:
            raise ValueError(f"a prompt of {longest} tokens leaves no room to generate in the model's context of {limit}")

        # Prefill each prompt once (left-padded), then repeat its cache for the n samples.
        width = longest
        ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        attn = torch.zeros((len(prompts), width), dtype=torch.long)
        for i, p in enumerate(prompt_ids):
            ids[i, width - len(p):] = torch.tensor(p)
            attn[i, width - len(p):] = 1
        ids, attn = ids.to(dev), attn.to(dev)
        positions = (attn.cumsum(-1) - 1).clamp(min=0)
        out = model(input_ids=ids, attention_mask=attn, position_ids=positions, use_cache=True)
        cache = out.past_key_values
        if n > 1:
            cache.batch_repeat_interleave(n)
        logits = out.logits[:, -1].float().repeat_interleave(n, 0)  # (N, V)
        attn = attn.repeat_interleave(n, 0)
        next_pos = positions[:, -1:].repeat_interleave(n, 0) + 1

        N = len(prompts) * n
        tokens = torch.full((N, max_new), self.pad_id, dtype=torch.long)
        logprobs = torch.zeros((N, max_new))
        lengths = torch.zeros(N, dtype=torch.long)
        stopped = torch.zeros(N, dtype=torch.bool)
        active = torch.arange(N)  # rows of the batch still generating
        eos_ids = self.eos_ids.to(dev)
        stop_strings = list(sampling.stop)
        for t in range(max_new):
            scaled = logits / max(sampling.temperature, 1e-5)
            step_logprobs = F.log_softmax(scaled, -1)
            if sampling.temperature == 0:
                choice = scaled.argmax(-1)
            else:
                probs = filter_logits(scaled, sampling.top_p, sampling.top_k).softmax(-1)
                choice = torch.multinomial(probs, 1, generator=self.generator).squeeze(1)
            tokens[active, t] = choice.cpu()
            logprobs[active, t] = step_logprobs.gather(1, choice[:, None]).squeeze(1).cpu()
            lengths[active] = t + 1
            done = torch.isin(choice, eos_ids).cpu()
            if stop_strings:
                done |= torch.tensor([self._hit_stop(tokens[r, : t + 1], stop_strings) for r in active.tolist()])
            stopped[active[done]] = True
            keep = ~done
            if not keep.any() or t == max_new - 1:
                break
            if not keep.all():  # drop finished rows so later steps do less work
                kept = keep.nonzero().squeeze(1).to(dev)
                cache.batch_select_indices(kept)
                choice, attn, next_pos = choice[kept], attn[kept], next_pos[kept]
                active = active[keep]
            attn = torch.cat([attn, attn.new_ones(len(active), 1)], 1)
            out = model(input_ids=choice[:, None], attention_mask=attn, position_ids=next_pos,
                        past_key_values=cache, use_cache=True)
            cache, next_pos = out.past_key_values, next_pos + 1
            logits = out.logits[:, -1].float()

        if was_training:
            model.train()
        T = int(lengths.max())
        mask = torch.arange(T)[None, :] < lengths[:, None]
        tokens = tokens[:, :T].masked_fill(~mask, self.pad_id)
        texts = self.tokenizer.batch_decode([row[:l].tolist() for row, l in zip(tokens, lengths)], skip_special_tokens=True)
        return Rollout(prompt_ids, tokens, mask.long(), logprobs[:, :T] * mask, texts, (~stopped).tolist(), n)

    def _hit_stop(self, row: torch.Tensor, stops: list[str]) -> bool:
        tail = self.tokenizer.decode(row[-16:].tolist(), skip_special_tokens=True)
        return any(s in tail for s in stops)
