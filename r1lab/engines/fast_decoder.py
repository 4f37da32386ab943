"""The torch engine's fast path: a Llama-family forward written over the model's own weights, for
prefill and one-token decode steps with a preallocated KV cache (see engines/torch_engine.py).

It computes what the HF forward computes under `models.autocast`: with fp32 master weights and bf16
compute, the matmuls and attention in bf16 (from bf16 copies of the weights, made once per `generate`
call, and a bf16 KV cache), the residual stream, norms and RoPE in the weights' fp32."""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from r1lab.models.device import compute_dtype


class KVCache:
    """Keys and values of every layer, one block per batch slot: k, v (slots, kv_heads, P + width, head_dim).
    Columns 0 .. P-1 hold the slot's prompt (left-padded; the prefill runs each prompt once and copies it to
    its n samples), column P + t generated token t. `width` grows by doubling (rebuild), so attention never
    reads many columns that are not written yet, and no torch.cat runs per token.

    bias (slots * kv_heads, 1, P + width) is added to the attention scores: -inf on the prompt's padding and
    on generated columns not written yet (`open(t)` unmasks column P + t). rows[i] is the output row of slot i.
    In episodes with turns (engines/live_episodes.py) each slot fills its columns at its own pace (`extend`,
    `open_at`): a slot's generated columns are its completion so far, tool results included.
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
        self.k = [torch.zeros(shape, dtype=dec.compute, device=dec.device) for _ in dec.layers]
        self.v = [torch.zeros(shape, dtype=dec.compute, device=dec.device) for _ in dec.layers]
        bias = torch.zeros((prompts, self.P + self.width), dtype=dec.compute, device=dec.device)
        bias[:, : self.P].masked_fill_(~valid, float("-inf"))
        bias[:, self.P :] = float("-inf")
        self.bias = bias.repeat_interleave(n * dec.kv_heads, 0)[:, None, :]
        self.rows = torch.arange(self.N, device=dec.device)

    def write_prompt(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> None:
        """k, v (prompts, kv_heads, P, head_dim) -> columns 0 .. P-1 of each prompt's n slots."""
        for cache, x in ((self.k[layer], k), (self.v[layer], v)):
            cache[:, :, : self.P].unflatten(0, (-1, self.n)).copy_(x[:, None].expand(-1, self.n, -1, -1, -1))

    @staticmethod
    def compact_now(slots: int, live: int, steps_left: int) -> bool:
        """Drop finished rows when carrying them for the steps left costs more than copying the cache once:
        a finished row costs about 1/slots of a step per step, the copy about two steps' attention."""
        return (slots - live) * steps_left >= 2 * slots

    def open(self, t: int) -> None:
        self.bias[:, :, self.P + t] = 0

    def open_at(self, slots: torch.Tensor, columns: torch.Tensor) -> None:
        """Unmasks generated column columns[i] of slot slots[i] only (episodes: slots write at columns of their own)."""
        self.bias.view(-1, self.kv_heads, self.bias.size(-1))[slots, :, self.P + columns] = 0

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


class DecodeLinear:
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
        if residual.dtype != weight.dtype:  # bf16 matmul, fp32 residual stream: added in fp32, as HF under autocast
            return residual + F.linear(x.to(weight.dtype), weight, bias)
        if bias is not None:
            residual = residual + bias
        return torch.addmm(residual.flatten(0, -2), x.flatten(0, -2), weight.t()).view_as(residual)


@functools.lru_cache(maxsize=None)
def onednn_works(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether oneDNN's packed linear runs here and agrees with F.linear (private ops: checked, not assumed)."""
    if device.type != "cpu" or dtype != torch.float32 or not torch.backends.mkldnn.is_available():
        return False
    try:
        probe = torch.Generator().manual_seed(0)  # not the global generator: a check must not change what a run samples
        weight, x = torch.randn(48, 16, generator=probe), torch.randn(3, 16, generator=probe)
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
    (`DecodeLinear`). Larger ones keep their weights as they are (no second copy in memory). The LM head is called as the model's module, so hooks on it still apply.
    `of(model)` returns None for anything this does not reproduce exactly (other architectures, sliding
    windows, adapters or hooks on the layers); the plain path serves those.
    """

    SUPPORTED = ("llama", "qwen2", "mistral")
    FUSE_PARAMETERS = 100_000_000

    def __init__(self, model):
        cfg, base = model.config, model.model
        attn0 = base.layers[0].self_attn
        self.model, self.device, self.dtype = model, model.device, model.lm_head.weight.dtype  # the residual stream's
        self.compute = compute_dtype(model)  # the matmuls', attention's and KV cache's
        self.heads, self.kv_heads = cfg.num_attention_heads, cfg.num_key_value_heads
        self.head_dim, self.scaling = attn0.head_dim, attn0.scaling
        self.embed, self.norm, self.rotary = base.embed_tokens, base.norm, base.rotary_emb
        fuse = sum(p.numel() for p in model.parameters()) <= self.FUSE_PARAMETERS
        pack = fuse and onednn_works(self.device, self.compute)

        def linear(*modules) -> DecodeLinear:  # one (weight, bias) pair if fused; in the compute dtype
            pairs = [(m.weight.to(self.compute), m.bias.to(self.compute) if m.bias is not None else None) for m in modules]
            if fuse and len(pairs) > 1:
                pairs = [(torch.cat([w for w, _ in pairs]), torch.cat([b for _, b in pairs]) if pairs[0][1] is not None else None)]
            return DecodeLinear(pairs, pack)

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
        qkv = layer["qkv"](h.to(self.compute))
        qk = _rotate(qkv[..., : (H + Hkv) * d].unflatten(-1, (H + Hkv, d)), cos, sin).to(self.compute)  # RoPE in fp32
        return qk[..., :H, :], qk[..., H:, :], qkv[..., (H + Hkv) * d :].unflatten(-1, (Hkv, d))

    def _mlp_and_residual(self, layer, x: torch.Tensor, attn_out: torch.Tensor) -> torch.Tensor:
        x = layer["o"](attn_out, residual=x)
        gate, up = layer["gate_up"](_rms_norm(x, layer["ln2"]).to(self.compute)).chunk(2, -1)
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

    def extend(self, ids: torch.Tensor, positions: torch.Tensor, slots: torch.Tensor, columns: torch.Tensor, chunks: int,
               cache: KVCache) -> torch.Tensor:
        """Chunks of tokens, each going on from where its slot is (at most one chunk per slot): ids, positions,
        slots, generated columns (R,), laid out as the first token of every chunk in slot order (`chunks` of them),
        then the chunks' later tokens, chunk after chunk, each in order. A token attends to its slot's open columns
        and its chunk up to itself. -> the next-token logits after each chunk (chunks, V) as float32, in slot order.

        Work goes by tokens, not by slots x the longest chunk: the matmuls run on the R tokens, attention as a decode
        step for the first tokens and apart for the later ones (tool results), over a copy of their few slots' cache."""
        B, F, H, d, g = cache.k[0].size(0), chunks, self.heads, self.head_dim, self.heads // self.kv_heads
        written, firsts = cache.P + columns, slots[:F]
        cache.open_at(firsts, columns[:F])  # the later tokens' columns open after the forward: first tokens never see them
        later, last = self._later(slots[F:], written[F:], firsts, cache) if len(ids) > F else (None, torch.arange(F))
        pick = None  # each slot's query in the decode-step attention: its first token; any, for a slot feeding nothing
        if F < B:
            pick = torch.zeros(B, dtype=torch.long, device=ids.device).index_put_((firsts,), torch.arange(F).to(ids.device))
        x = self.embed(ids)
        cos, sin = (c.unsqueeze(-2) for c in self._rope(positions))
        for i, layer in enumerate(self.layers):
            q, k, v = self._qkv(layer, _rms_norm(x, layer["ln1"]), cos, sin)  # (R, heads, d)
            keys, values = cache.k[i], cache.v[i]  # (B, Hkv, P + width, d)
            keys[slots, :, written], values[slots, :, written] = k, v
            q = q * self.scaling
            first = q[:F] if pick is None else q.index_select(0, pick)  # (B, H, d)
            scores = torch.baddbmm(cache.bias, first.view(-1, g, d), keys.view(B * self.kv_heads, -1, d).transpose(1, 2))
            probs = scores.softmax(-1, dtype=torch.float32).to(q.dtype)  # (B * Hkv, g, P + width)
            out = torch.bmm(probs, values.view(B * self.kv_heads, -1, d)).view(B, H * d)
            out = out if pick is None else out[firsts]
            if later is not None:
                out = torch.cat([out, self._attend_later(q[F:], keys, values, *later)])
            x = self._mlp_and_residual(layer, x, out)
        cache.open_at(slots[F:], columns[F:])
        return self.model.lm_head(_rms_norm(x[last.to(x.device)], self.norm)).float()

    def _later(self, slots: torch.Tensor, written: torch.Tensor, firsts: torch.Tensor, cache: KVCache):
        """The chunks' later tokens (slots, written columns: (L',)) -> ((their S slots, each token's place on an
        (S, longest) grid, the token on each place of the grid (any, on padding), the bias (S, 1, longest, C) that
        opens each chunk up to each token), the index of each chunk's last token among all R (chunks,))."""
        dev, F = slots.device, len(firsts)
        owners, chunk = torch.unique_consecutive(slots, return_inverse=True)  # (S,), (L',)
        index = torch.arange(len(slots), device=dev)
        starts = torch.ones_like(slots, dtype=torch.bool)
        starts[1:] = chunk[1:] != chunk[:-1]
        place = index - torch.cummax(torch.where(starts, index, 0), 0).values  # 0 for a chunk's second token
        L, C, S, Hkv = int(place.max()) + 1, cache.bias.size(-1), len(owners), self.kv_heads
        second = torch.zeros(S, dtype=torch.long, device=dev).index_put_((chunk,), written - place)  # (S,) its column
        reach = torch.arange(C, device=dev) - second[:, None, None]  # (S, 1, C)
        opened = (reach >= 0) & (reach <= torch.arange(L, device=dev)[:, None])  # (S, L, C): up to the token itself
        bias = cache.bias.view(-1, Hkv, C)[:, :1].index_select(0, owners)[:, :, None]  # (S, 1, 1, C): same for every head
        bias = bias.masked_fill(opened[:, None], 0)  # (S, 1, L, C)
        ends = torch.ones_like(starts)
        ends[:-1] = starts[1:]
        last = torch.arange(F, device=dev).index_put_((torch.searchsorted(firsts, owners),), F + index[ends])
        grid = chunk * L + place  # (L',)
        fill = torch.zeros(S * L, dtype=torch.long, device=dev).index_put_((grid,), index)
        return (owners, grid, fill, bias), last

    def _attend_later(self, q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, owners: torch.Tensor,
                      grid: torch.Tensor, fill: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """Attention of the chunks' later tokens q (L', H, d), laid out on the (S, longest) grid -> (L', H * d)."""
        S, L = bias.size(0), bias.size(2)
        padded = q.index_select(0, fill).view(S, L, self.heads, self.head_dim).transpose(1, 2)  # (S, H, L, d)
        k, v = keys.index_select(0, owners), values.index_select(0, owners)  # (S, Hkv, C, d)
        out = F.scaled_dot_product_attention(padded, k, v, attn_mask=bias, scale=1.0, enable_gqa=self.heads != self.kv_heads)
        return out.transpose(1, 2).reshape(S * L, -1).index_select(0, grid)
