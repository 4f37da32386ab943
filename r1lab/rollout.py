"""Rollout engines: sample completions and the log-probs they were sampled with.

`TorchEngine` works with any HF causal LM on CPU or GPU. Each prompt is prefilled once and its keys and
values copied to its n samples, then one forward per new token for the whole batch. Two paths do this:

- plain: the model's own forward with an HF cache, finished rows dropped from the batch at once. Any model.
- fast (Llama-family models: Llama, Qwen2, Mistral without a sliding window): the same computation written
  out over the model's weights, without the per-module Python of the HF forward: fused q|k|v and gate|up
  matmuls, residual adds inside the matmuls, a KV cache preallocated per call and written in place (no
  torch.cat per token), and attention as three ops per layer. Finished rows stop being sampled at once and
  leave the batch when enough of them have finished to pay for compacting the cache.

Both paths sample the same tokens for the same seed (the fast path draws only for unfinished rows, in
the same order) and agree on the log-probs and entropies up to float rounding; tests/test_rollout.py
checks that. Another engine (vLLM, say) needs only `generate` and `load_weights` (the `Engine` protocol).
"""

from __future__ import annotations

import functools
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
    entropies: torch.Tensor | None = None  # (N, T) entropy of the temperature-scaled policy at each token

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


def sample_next(logits: torch.Tensor, sampling, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One token per row from (B, V) logits -> (tokens (B,), their log-probs (B,), entropies (B,)), all
    under the temperature-scaled policy. Shared by both paths, so they draw the same tokens from the same
    generator state. The entropy is logged by the trainer: here it costs two cheap ops, in the training
    pass a softmax over every completion token."""
    scaled = logits / max(sampling.temperature, 1e-5)
    logprobs = F.log_softmax(scaled, -1)
    probs = logprobs.exp()
    entropy = (probs * logprobs).sum(-1).neg_()
    if sampling.temperature == 0:
        choice = scaled.argmax(-1)
    else:
        # Inverse CDF: one uniform per row (torch.multinomial draws one exponential per vocabulary entry,
        # 10x slower at a batch of 128). Tokens of probability 0 (filtered) span an empty interval.
        if sampling.top_p < 1.0 or sampling.top_k > 0:
            probs = filter_logits(scaled, sampling.top_p, sampling.top_k).softmax(-1)
        cdf = probs.cumsum(-1)
        u = torch.rand((cdf.size(0), 1), generator=generator, device=cdf.device, dtype=cdf.dtype)
        choice = torch.searchsorted(cdf, u * cdf[:, -1:], right=True).squeeze(1).clamp_(max=cdf.size(1) - 1)
    return choice, logprobs.gather(1, choice[:, None]).squeeze(1), entropy


class TorchEngine:
    def __init__(self, model, tokenizer, seed: int = 0, fast: bool = True):
        """fast=False always uses the plain path (the reference the fast one is tested against)."""
        self.model, self.tokenizer, self.fast = model, tokenizer, fast
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
        model = self.model
        prompt_ids = [self.tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
        if any(len(p) == 0 for p in prompt_ids):
            raise ValueError("an empty prompt cannot be continued: every prompt needs at least one token")
        limit = getattr(model.config, "max_position_embeddings", None)
        longest = max(map(len, prompt_ids))
        max_new = sampling.max_new_tokens if limit is None else min(sampling.max_new_tokens, limit - longest)
        if max_new <= 0:
            raise ValueError(f"a prompt of {longest} tokens leaves no room to generate in the model's context of {limit}")

        was_training = model.training
        model.eval()
        try:
            decoder = FastDecoder.of(model) if self.fast else None
            run = self._sample_fast if decoder is not None else self._sample_plain
            tokens, logprobs, entropies, lengths, stopped = run(decoder, prompt_ids, sampling, n, max_new)
        finally:
            if was_training:
                model.train()
        tokens, logprobs, entropies, lengths, stopped = (x.cpu() for x in (tokens, logprobs, entropies, lengths, stopped))
        T = int(lengths.max())
        mask = torch.arange(T)[None, :] < lengths[:, None]
        tokens = tokens[:, :T].masked_fill(~mask, self.pad_id)
        texts = self.tokenizer.batch_decode([row[:l].tolist() for row, l in zip(tokens, lengths)], skip_special_tokens=True)
        return Rollout(prompt_ids, tokens, mask.long(), logprobs[:, :T] * mask, texts, (~stopped).tolist(), n,
                       entropies[:, :T] * mask)

    def _left_padded(self, prompt_ids: list[list[int]], dev) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(map(len, prompt_ids))
        ids = torch.full((len(prompt_ids), width), self.pad_id, dtype=torch.long)
        attn = torch.zeros((len(prompt_ids), width), dtype=torch.long)
        for i, p in enumerate(prompt_ids):
            ids[i, width - len(p):] = torch.tensor(p)
            attn[i, width - len(p):] = 1
        return ids.to(dev), attn.to(dev)

    def _sample_plain(self, _, prompt_ids, sampling, n: int, max_new: int):
        """-> tokens, logprobs, entropies (N, max_new), lengths (N,), stopped (N,), with the model's own forward."""
        model, dev = self.model, self.model.device
        # Prefill each prompt once (left-padded), then repeat its cache for the n samples.
        ids, attn = self._left_padded(prompt_ids, dev)
        positions = (attn.cumsum(-1) - 1).clamp(min=0)
        out = model(input_ids=ids, attention_mask=attn, position_ids=positions, use_cache=True)
        cache = out.past_key_values
        if n > 1:
            cache.batch_repeat_interleave(n)
        logits = out.logits[:, -1].float().repeat_interleave(n, 0)  # (N, V)
        attn = attn.repeat_interleave(n, 0)
        next_pos = positions[:, -1:].repeat_interleave(n, 0) + 1

        N = len(prompt_ids) * n
        tokens = torch.full((N, max_new), self.pad_id, dtype=torch.long)
        logprobs, entropies = torch.zeros((N, max_new)), torch.zeros((N, max_new))
        lengths = torch.zeros(N, dtype=torch.long)
        stopped = torch.zeros(N, dtype=torch.bool)
        active = torch.arange(N)  # rows of the batch still generating
        eos_ids = self.eos_ids.to(dev)
        stop_strings = list(sampling.stop)
        for t in range(max_new):
            choice, step_logprobs, step_entropies = sample_next(logits, sampling, self.generator)
            tokens[active, t] = choice.cpu()
            logprobs[active, t] = step_logprobs.cpu()
            entropies[active, t] = step_entropies.cpu()
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
        return tokens, logprobs, entropies, lengths, stopped

    def _sample_fast(self, dec: "FastDecoder", prompt_ids, sampling, n: int, max_new: int):
        """Same contract as _sample_plain, with the FastDecoder and its KVCache.

        The batch holds slots: rows still generating plus finished rows not yet dropped. Finished rows are
        never sampled again (sampling sees the live rows only, in order, as the plain path's batch does);
        they leave the batch when the cache is rebuilt: when the generated part needs more columns, or
        when carrying them costs more than copying the cache (see `_compact_now`).
        """
        dev = dec.device
        ids, attn = self._left_padded(prompt_ids, dev)
        N = len(prompt_ids) * n
        positions = (attn.cumsum(-1) - 1).clamp(min=0)
        cache = KVCache(dec, attn.bool(), n, max_new)
        logits = dec.prefill(ids, positions, attn.bool(), cache).repeat_interleave(n, 0)  # (N, V)
        next_pos = positions[:, -1].repeat_interleave(n, 0) + 1

        tokens = torch.full((N, max_new), self.pad_id, dtype=torch.long, device=dev)
        logprobs, entropies = torch.zeros((N, max_new), device=dev), torch.zeros((N, max_new), device=dev)
        lengths = torch.zeros(N, dtype=torch.long, device=dev)
        stopped = torch.zeros(N, dtype=torch.bool, device=dev)
        live = torch.ones(N, dtype=torch.bool, device=dev)  # per slot
        n_live = N
        eos_ids = self.eos_ids.to(dev)
        stop_strings = list(sampling.stop)
        for t in range(max_new):
            all_live = n_live == len(cache.rows)
            live_idx = None if all_live else live.nonzero().squeeze(1)
            rows = cache.rows if all_live else cache.rows[live_idx]
            choice, step_logprobs, step_entropies = sample_next(logits if all_live else logits[live_idx], sampling, self.generator)
            tokens[rows, t] = choice
            logprobs[rows, t] = step_logprobs
            entropies[rows, t] = step_entropies
            lengths[rows] = t + 1
            done = torch.isin(choice, eos_ids)
            if stop_strings:
                hits = [self._hit_stop(tokens[r, : t + 1], stop_strings) for r in rows.tolist()]
                done |= torch.tensor(hits, device=dev)
            n_done = int(done.sum())
            if n_done:
                stopped[rows[done]] = True
                n_live -= n_done
                live[done if all_live else live_idx[done]] = False
            if n_live == 0 or t == max_new - 1:
                break
            inputs = choice if all_live else torch.full_like(cache.rows, self.pad_id).index_put_((live_idx,), choice)
            grow = t == cache.width  # token t goes into generated column t
            width = min(2 * cache.width, max_new) if grow else cache.width
            drop = n_live < len(cache.rows) and (grow or self._compact_now(len(cache.rows), n_live, max_new - t - 1))
            if grow or drop:  # one copy of the cache does both
                keep = live.nonzero().squeeze(1) if drop else None
                cache.rebuild(keep, width)
                if keep is not None:
                    inputs, next_pos, live = inputs[keep], next_pos[keep], live[keep]
            cache.open(t)
            logits = dec.step(inputs, next_pos, t, cache)
            next_pos = next_pos + 1
        return tokens, logprobs, entropies, lengths, stopped

    @staticmethod
    def _compact_now(slots: int, live: int, steps_left: int) -> bool:
        """Drop finished rows when carrying them for the steps left costs more than copying the cache once:
        a finished row costs about 1/slots of a step per step, the copy about two steps' attention."""
        return (slots - live) * steps_left >= 2 * slots

    def _hit_stop(self, row: torch.Tensor, stops: list[str]) -> bool:
        tail = self.tokenizer.decode(row[-16:].tolist(), skip_special_tokens=True)
        return any(s in tail for s in stops)


# ---------------------------------------------------------------------------------------------
# The fast path: a Llama-family forward over the model's own weights, for sampling only.


class KVCache:
    """Keys and values of every layer, one block per batch slot: k, v (slots, kv_heads, P + width, head_dim).
    Columns 0 .. P-1 hold the slot's prompt (left-padded; the prefill runs each prompt once and copies it to
    its n samples), column P + t generated token t. `width` grows by doubling (rebuild), so attention never
    reads many columns that are not written yet, and no torch.cat runs per token.

    bias (slots * kv_heads, 1, P + width) is added to the attention scores: -inf on the prompt's padding and
    on generated columns not written yet (`open(t)` unmasks column P + t). rows[i] is the output row of slot i.
    Attention reads whole contiguous blocks: CPU batched matmuls on slices are several times slower. One
    block per slot (not the prompt once per group) reads the prompt n times, but keeps attention at three
    ops per layer, where the shared prompt needed a dozen reshapes and gathers: at these sizes ops cost
    more than bytes, and finished rows leave the batch without touching other rows' prompts.
    """

    def __init__(self, dec: "FastDecoder", valid: torch.Tensor, n: int, max_new: int):
        prompts, self.P = valid.shape  # valid: (prompts, P), False on left padding
        self.n, self.N, self.kv_heads = n, prompts * n, dec.kv_heads
        self.width = min(16, max_new)
        shape = (self.N, dec.kv_heads, self.P + self.width, dec.head_dim)
        # zeros: masked columns must still be finite (0 * inf is nan)
        self.k = [torch.zeros(shape, dtype=dec.dtype, device=dec.device) for _ in dec.layers]
        self.v = [torch.zeros(shape, dtype=dec.dtype, device=dec.device) for _ in dec.layers]
        bias = torch.zeros((prompts, self.P + self.width), dtype=dec.dtype, device=dec.device)
        bias[:, : self.P].masked_fill_(~valid, float("-inf"))
        bias[:, self.P :] = float("-inf")
        self.bias = bias.repeat_interleave(n * dec.kv_heads, 0)[:, None, :]
        self.rows = torch.arange(self.N, device=dec.device)

    def write_prompt(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> None:
        """k, v (prompts, kv_heads, P, head_dim) -> columns 0 .. P-1 of each prompt's n slots."""
        for cache, x in ((self.k[layer], k), (self.v[layer], v)):
            cache[:, :, : self.P].unflatten(0, (-1, self.n)).copy_(x[:, None].expand(-1, self.n, -1, -1, -1))

    def open(self, t: int) -> None:
        self.bias[:, :, self.P + t] = 0

    def rebuild(self, keep: torch.Tensor | None, width: int) -> None:
        """Keeps the slots `keep` (None: all) and widens the generated part to `width` columns."""
        grow = self.P + width - self.k[0].size(2)

        def rebuilt(x):  # (slots, kv_heads, P + old width, d) -> (kept slots, kv_heads, P + width, d)
            x = x.index_select(0, keep) if keep is not None else x
            return F.pad(x, (0, 0, 0, grow)) if grow > 0 else x

        self.k, self.v = [rebuilt(k) for k in self.k], [rebuilt(v) for v in self.v]
        if keep is not None:  # the bias has kv_heads rows per slot
            heads = (keep[:, None] * self.kv_heads + torch.arange(self.kv_heads, device=keep.device)).view(-1)
            self.bias, self.rows = self.bias.index_select(0, heads), self.rows[keep]
        if grow > 0:
            self.bias = F.pad(self.bias, (0, grow), value=float("-inf"))
        self.width = width


def _rms_norm(x: torch.Tensor, norm) -> torch.Tensor:
    """HF's Llama/Qwen2 RMSNorm: normalise in float32, cast back, then scale."""
    if x.dtype == torch.float32:
        return F.rms_norm(x, (x.size(-1),), norm.weight, norm.variance_epsilon)
    return norm.weight * F.rms_norm(x.float(), (x.size(-1),), None, norm.variance_epsilon).to(x.dtype)


def _rotate(x: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding, as HF's apply_rotary_pos_emb: x * cos + rotate_half(x) * sin, where
    rotate_half(x) * sin = roll(x, half) * signed_sin (sin with its first half negated): 3 ops, not 5."""
    return torch.addcmul(x * cos, x.roll(x.size(-1) // 2, -1), signed_sin)


class _Linear:
    """A decode-time linear map: one or several (weight, bias) pairs fed the same input, outputs side by
    side. `linear(x, residual)` returns x W^T + b + residual with the add inside the matmul.

    With `pack` (CPU with oneDNN, models small enough to copy their weights per `generate` call), a
    weight of PACK_MIN elements or more is also repacked into oneDNN's blocked layout: at decode batch
    sizes its matmul is 15-45% faster than MKL's on the plain weight; below that, oneDNN's ~8 us more per
    call costs more than it saves (bench/README.md). Anything else runs F.linear / addmm as they are.
    """

    PACK_MIN = 100_000

    def __init__(self, pairs: list, pack: bool = False):
        self.pairs, self.packed = pairs, None
        if pack and len(pairs) == 1 and pairs[0][0].numel() >= self.PACK_MIN:
            self.packed = torch.ops.mkldnn._reorder_linear_weight(pairs[0][0].detach(), 128)

    def __call__(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        if self.packed is not None:
            bias = self.pairs[0][1]
            if residual is None:
                return torch.ops.mkldnn._linear_pointwise(x, self.packed, bias, "none", [], "")
            return torch.ops.mkldnn._linear_pointwise.binary(x, residual, self.packed, bias, "add")
        if len(self.pairs) > 1:
            out = torch.cat([F.linear(x, w, b) for w, b in self.pairs], -1)
            return out if residual is None else residual + out
        weight, bias = self.pairs[0]
        if residual is None:
            return F.linear(x, weight, bias)
        if bias is not None:
            residual = residual + bias
        return torch.addmm(residual.flatten(0, -2), x.flatten(0, -2), weight.t()).view_as(residual)


@functools.lru_cache(maxsize=None)
def _onednn_works(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether oneDNN's packed linear runs here and agrees with F.linear (private ops: checked, not assumed)."""
    if device.type != "cpu" or dtype != torch.float32 or not torch.backends.mkldnn.is_available():
        return False
    try:
        weight, x = torch.randn(48, 16), torch.randn(3, 16)
        packed = torch.ops.mkldnn._reorder_linear_weight(weight, 128)
        out = torch.ops.mkldnn._linear_pointwise.binary(x, torch.ones(3, 48), packed, None, "add")
        return bool(torch.allclose(out, x @ weight.t() + 1, atol=1e-4))
    except (RuntimeError, AttributeError):
        return False


class FastDecoder:
    """The forward pass of a Llama-family HF model (Llama, Qwen2, Mistral without a sliding window),
    written over the model's weights for prefill and one-token decode steps with a `KVCache`.

    Small models (up to FUSE_PARAMETERS) get their q|k|v and gate|up weights concatenated once per
    `generate` call (the trainer changes the weights between calls), so a layer is four matmuls: at
    small widths the per-matmul overhead is what costs; on a CPU the copies are also packed for oneDNN
    (`_Linear`). Larger ones keep their weights as they are (no second copy in memory). The LM head is called as the model's module, so hooks on it still apply.
    `of(model)` returns None for anything this does not reproduce exactly (other architectures, sliding
    windows, adapters or hooks on the layers); the plain path serves those.
    """

    SUPPORTED = ("llama", "qwen2", "mistral")
    FUSE_PARAMETERS = 100_000_000

    def __init__(self, model):
        cfg, base = model.config, model.model
        attn0 = base.layers[0].self_attn
        self.model, self.device, self.dtype = model, model.device, model.lm_head.weight.dtype
        self.heads, self.kv_heads = cfg.num_attention_heads, cfg.num_key_value_heads
        self.head_dim, self.scaling = attn0.head_dim, attn0.scaling
        self.embed, self.norm, self.rotary = base.embed_tokens, base.norm, base.rotary_emb
        fuse = sum(p.numel() for p in model.parameters()) <= self.FUSE_PARAMETERS
        pack = fuse and _onednn_works(self.device, self.dtype)

        def linear(*modules) -> _Linear:  # one (weight, bias) pair if fused
            pairs = [(m.weight, m.bias) for m in modules]
            if fuse and len(pairs) > 1:
                pairs = [(torch.cat([w for w, _ in pairs]), torch.cat([b for _, b in pairs]) if pairs[0][1] is not None else None)]
            return _Linear(pairs, pack)

        self.layers = []
        for layer in base.layers:
            a, m = layer.self_attn, layer.mlp
            self.layers.append({
                "ln1": layer.input_layernorm, "ln2": layer.post_attention_layernorm,
                "qkv": linear(a.q_proj, a.k_proj, a.v_proj), "o": linear(a.o_proj),
                "gate_up": linear(m.gate_proj, m.up_proj), "down": linear(m.down_proj),
            })
        self._cos = self._sin = torch.empty(0)

    @classmethod
    def of(cls, model) -> "FastDecoder | None":
        cfg = getattr(model, "config", None)
        if getattr(cfg, "model_type", None) not in cls.SUPPORTED or not hasattr(model, "lm_head"):
            return None
        if getattr(cfg, "hidden_act", None) != "silu" or getattr(cfg, "mlp_bias", False):
            return None
        if getattr(cfg, "sliding_window", None) is not None and getattr(cfg, "use_sliding_window", True):
            return None
        if any(t != "full_attention" for t in (getattr(cfg, "layer_types", None) or [])):
            return None
        rope = getattr(cfg, "rope_parameters", None) or getattr(cfg, "rope_scaling", None) or {}
        if any(kind in str(rope.get("rope_type", rope.get("type", ""))) for kind in ("dynamic", "longrope")):
            return None  # these rescale RoPE with the sequence length at every call
        base = getattr(model, "model", None)
        layers = getattr(base, "layers", None)
        if layers is None or not all(hasattr(base, a) for a in ("embed_tokens", "norm", "rotary_emb")):
            return None
        linear = ("q_proj", "k_proj", "v_proj", "o_proj")
        for layer in layers:
            mods = [getattr(layer.self_attn, n, None) for n in linear]
            mods += [getattr(layer.mlp, n, None) for n in ("gate_proj", "up_proj", "down_proj")]
            if any(type(m) is not torch.nn.Linear for m in mods):  # adapters (LoRA), quantised layers, ...
                return None
            if type(layer.mlp).__name__ not in ("LlamaMLP", "Qwen2MLP", "MistralMLP"):
                return None
            if any(m.bias is not None for m in mods[4:]) or (mods[0].bias is None) != (mods[1].bias is None):
                return None
        hooked = [m for m in base.modules() if m._forward_hooks or m._forward_pre_hooks]
        if hooked or model._forward_hooks or model._forward_pre_hooks:
            return None
        return cls(model)

    def _rope(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, signed sin (..., head_dim) at `positions` (see _rotate), looked up in a table made by the
        model's own RoPE module (so its scaling types apply), extended when a position is past its end."""
        if int(positions.max()) >= len(self._cos):
            table = torch.arange(int(positions.max()) + 65, device=self.device)[None]
            cos, sin = self.rotary(self.embed.weight[:1], table)
            sin = torch.cat([-sin[..., : sin.size(-1) // 2], sin[..., sin.size(-1) // 2 :]], -1)  # for _rotate
            self._cos, self._sin = cos[0].to(self.dtype), sin[0].to(self.dtype)  # (positions, head_dim)
        return self._cos[positions], self._sin[positions]

    def _qkv(self, layer, h: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
        """h (..., hidden) -> q (..., H, d), k, v (..., Hkv, d) with RoPE (cos, sin: (..., 1, d)) applied to q and k."""
        H, Hkv, d = self.heads, self.kv_heads, self.head_dim
        qkv = layer["qkv"](h)
        qk = _rotate(qkv[..., : (H + Hkv) * d].unflatten(-1, (H + Hkv, d)), cos, sin)
        return qk[..., :H, :], qk[..., H:, :], qkv[..., (H + Hkv) * d :].unflatten(-1, (Hkv, d))

    def _mlp_and_residual(self, layer, x: torch.Tensor, attn_out: torch.Tensor) -> torch.Tensor:
        x = layer["o"](attn_out, residual=x)
        gate, up = layer["gate_up"](_rms_norm(x, layer["ln2"])).chunk(2, -1)
        return layer["down"](F.silu(gate) * up, residual=x)

    def prefill(self, ids: torch.Tensor, positions: torch.Tensor, valid: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """Runs the left-padded prompts (B, P) once each, writes their keys and values into the prompt columns
        of their samples' cache slots, returns the logits at the last position (B, V) as float32."""
        B, P = ids.shape
        H, Hkv, d = self.heads, self.kv_heads, self.head_dim
        causal = torch.ones((P, P), dtype=torch.bool, device=ids.device).tril()
        # Padding keys are masked; a padding query sees itself, so no row of the mask is empty.
        mask = (causal & valid[:, None, :]) | torch.eye(P, dtype=torch.bool, device=ids.device)
        x = self.embed(ids)
        cos, sin = (c.unsqueeze(-2) for c in self._rope(positions))
        for i, layer in enumerate(self.layers):
            q, k, v = self._qkv(layer, _rms_norm(x, layer["ln1"]), cos, sin)  # (B, P, heads, d)
            q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
            cache.write_prompt(i, k, v)
            if Hkv != H:
                k, v = k.repeat_interleave(H // Hkv, 1), v.repeat_interleave(H // Hkv, 1)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None], scale=self.scaling)
            x = self._mlp_and_residual(layer, x, out.transpose(1, 2).reshape(B, P, H * d))
        return self.model.lm_head(_rms_norm(x[:, -1], self.norm)).float()

    def step(self, tokens: torch.Tensor, positions: torch.Tensor, t: int, cache: KVCache) -> torch.Tensor:
        """Generated token t of every slot (B,) -> next-token logits (B, V) as float32."""
        B = tokens.size(0)
        H, Hkv, d = self.heads, self.kv_heads, self.head_dim
        column = cache.P + t
        x = self.embed(tokens)
        cos, sin = (c.unsqueeze(-2) for c in self._rope(positions))
        for i, layer in enumerate(self.layers):
            q, k, v = self._qkv(layer, _rms_norm(x, layer["ln1"]), cos, sin)
            keys, values = cache.k[i], cache.v[i]  # (B, Hkv, L, d)
            keys[:, :, column], values[:, :, column] = k, v
            q = (q * self.scaling).view(B * Hkv, H // Hkv, d)  # a kv head's query heads together
            scores = torch.baddbmm(cache.bias, q, keys.view(B * Hkv, -1, d).transpose(1, 2))  # (B * Hkv, g, L)
            probs = scores.softmax(-1, dtype=torch.float32).to(q.dtype)
            out = torch.bmm(probs, values.view(B * Hkv, -1, d))
            x = self._mlp_and_residual(layer, x, out.view(B, H * d))
        return self.model.lm_head(_rms_norm(x, self.norm)).float()
