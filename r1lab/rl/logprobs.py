"""The training pass: log-probs of a Batch's completion tokens under a model.

The fast form runs each distinct prompt once and lets its completions attend to copies of its keys and
values (which keep the gradient), with completions in length buckets so short ones are not padded to
the longest. The plain form runs every [prompt | completion] row whole; it is the reference the fast
one is tested against, and serves models whose forward takes no cache and training under gradient
checkpointing (see _checkpointing_now).
"""

from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F

from r1lab.models.device import autocast
from r1lab.models.memory import cache_of, gradient_checkpointing_on, with_cache
from r1lab.rl.batch import Batch, micro_batches

BUCKET_COST = 64  # tokens of padding worth one more forward call (its fixed overhead and smaller matmuls)


def forward_logprobs(model, batch: Batch, temperature: float, shared: bool = True) -> torch.Tensor:
    """Log-probs (N, T) of the batch's completion tokens under `model` at `temperature`, computed under
    `autocast(model)` (in bf16: the logits in bf16, the log-probs from them in fp32). Values past a
    completion's end mean nothing (masked)."""
    with autocast(model):
        return _logprobs(model, batch, temperature, shared)


def _logprobs(model, batch: Batch, temperature: float, shared: bool) -> torch.Tensor:
    dev = model.device
    ids = batch.completion_ids.to(dev)
    if shared and _takes_cache(model) and not _checkpointing_now(model):
        parts = _completion_logits(model, batch)
    else:
        T = ids.size(1)  # logits at P-1 .. P+T-2 predict the completion; none are made for the rest of the prompt
        keep = {"logits_to_keep": T + 1} if _takes_cache(model) else {}
        out = model(input_ids=batch.input_ids.to(dev), attention_mask=batch.attention_mask.to(dev),
                    position_ids=batch.position_ids.to(dev), **keep)
        parts = [(torch.arange(ids.size(0), device=dev), out.logits[:, -(T + 1) : -1])]
    logprobs, order = [], []
    for part, logits in parts:  # logits (n_b, L_b, V) for the rows `part`, L_b <= T
        logits = logits.float()
        if temperature != 1.0:
            logits = logits / max(temperature, 1e-5)
        # log p(token) = logit(token) - logsumexp: no (n, L, V) log-softmax is kept for the backward.
        lp = logits.gather(-1, ids[part, : logits.size(1), None]).squeeze(-1) - torch.logsumexp(logits, -1)
        logprobs.append(F.pad(lp, (0, ids.size(1) - lp.size(1))))
        order.append(part)
    inverse = torch.argsort(torch.cat(order))  # back to the batch's row order
    return torch.cat(logprobs)[inverse]


@torch.no_grad()
def logprobs_no_grad(model, batch: Batch, temperature: float, micro_batch_size: int,
                     micro_batch_tokens: int | None = None) -> torch.Tensor:
    """Log-probs (N, T) of every completion (the reference model's pass), micro-batch by micro-batch
    (at most micro_batch_size rows and micro_batch_tokens tokens: batch.micro_batches)."""
    parts = micro_batches(batch, torch.arange(len(batch)), micro_batch_size, micro_batch_tokens)
    logprobs = torch.cat([forward_logprobs(model, batch.take(rows), temperature).cpu() for rows in parts])
    return logprobs[torch.argsort(torch.cat(parts))]  # back to the batch's row order


def _takes_cache(model) -> bool:
    params = inspect.signature(model.forward).parameters
    return "logits_to_keep" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def _checkpointing_now(model) -> bool:
    """Whether HF's gradient checkpointing acts in this forward: then the shared pass cannot run, and the
    plain one does.

    Under checkpointing, in training mode, transformers turns use_cache off for the whole model and each
    checkpointed layer drops any cache it is given (modeling_layers.GradientCheckpointingLayer: a layer
    that writes its keys and values to a cache would write them again when the backward pass recomputes
    it); 5.19 does so without grad too (5.24 only with grad), so a no-grad pass in training mode takes the
    plain pass as well. There the prompt pass would return no keys and values, and the completions, handed a
    cache, would attend to themselves alone. A cache those layers keep (a read-only prompt prefix) would
    lean on private transformers flags that change between versions. The plain pass needs no cache:
    it is exact, and costs only the prompt rerun per completion, (G-1)/G x prompt / (prompt + completion)
    of the pass: about 6% for 150-token prompts, 2000-token completions and G=8, the long completions
    that call for checkpointing in the first place.
    """
    return getattr(model, "training", False) and gradient_checkpointing_on(model)


def _completion_logits(model, batch: Batch):
    """Yields (rows, logits (n_b, L_b, V) predicting their first L_b completion tokens).

    The batch's prompts are run once each; each completion then attends to a copy of its prompt's keys
    and values. The completions go in up to 4 buckets of similar length, each cut to its longest row; a
    bucket is split off only when it saves BUCKET_COST tokens of padding.
    """
    from transformers import DynamicCache

    dev = model.device
    prompt_mask = batch.prompt_mask.to(dev)
    out = model(input_ids=batch.prompt_ids.to(dev), attention_mask=prompt_mask,
                position_ids=(prompt_mask.cumsum(1) - 1).clamp(min=0), use_cache=True, logits_to_keep=1)
    first = out.logits[:, -1]  # (prompts, V): predicts each completion's token 0
    kv = cache_tensors(cache_of(out))
    mask = batch.completion_mask
    T = mask.size(1)
    lengths = torch.where(mask.any(1), T - mask.flip(1).float().argmax(1), 1)  # last unmasked position + 1
    by_length = torch.argsort(lengths, descending=True)
    for start, end in length_buckets(lengths[by_length].tolist()):
        part = by_length[start:end]
        L = int(lengths[part[0]])
        p = batch.prompt_of_row[part].to(dev)
        logits = first[p][:, None]
        if L > 1:
            cache = DynamicCache([(k[p], v[p]) for k, v in kv])  # each row's copy of its prompt's keys and values
            pm = prompt_mask[p]
            attention = torch.cat([pm, mask[part, : L - 1].to(dev)], 1)
            positions = pm.sum(1, keepdim=True) + torch.arange(L - 1, device=dev)
            rest = model(input_ids=batch.completion_ids[part, : L - 1].to(dev), attention_mask=attention,
                         position_ids=positions, use_cache=True, **with_cache(cache)).logits  # predict tokens 1 .. L-1
            logits = torch.cat([logits, rest], 1)
        yield part.to(dev), logits


def length_buckets(lengths: list[int], most: int = 4) -> list[tuple[int, int]]:
    """Splits rows sorted by length (descending) into 1..most equal runs, the split that pads least
    counting BUCKET_COST per extra run -> [(start, end)]."""
    n, best = len(lengths), None
    for k in range(1, min(most, max(1, n // 8)) + 1):
        cuts = [round(i * n / k) for i in range(k + 1)]
        runs = [(a, b) for a, b in zip(cuts, cuts[1:]) if b > a]
        cost = sum((b - a) * lengths[a] for a, b in runs) + BUCKET_COST * (len(runs) - 1)
        if best is None or cost < best[0]:
            best = (cost, runs)
    return best[1]


def cache_tensors(cache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(keys, values) of every layer of an HF cache, whichever layout this transformers version has."""
    if hasattr(cache, "layers"):
        return [(layer.keys, layer.values) for layer in cache.layers]
    return list(zip(cache.key_cache, cache.value_cache))
