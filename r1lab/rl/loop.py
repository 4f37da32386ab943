"""The RL loop: sample groups, score them with rules, update (GRPO or cfg.algorithm), log, checkpoint, resume.

The algorithm is a config value: its advantage estimator and loss come from r1lab.algorithms by name.
Two algorithms need more than that, and get it here: DAPO's dynamic sampling (`_sample`) and PPO's
value model (`ValueModel`, trained beside the policy and checkpointed with it).
"""

from __future__ import annotations

import copy
import math
import random
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from r1lab import checkpoint
from r1lab.rl.algorithms import ADVANTAGES, KL_IN_REWARD, POLICY_LOSSES, clip_range, explained_variance, gae, masked_mean, token_rewards, value_loss, whiten
from r1lab.config import RLConfig
from r1lab.evaluation.evaluate import reflects
from r1lab.rewards.language import language_consistency_reward
from r1lab.logs import append_jsonl, truncate_jsonl
from r1lab.data.format import apply_template, response_prefix
from r1lab.progress import console, progress_bar
from r1lab.rewards.registry import Rewards
from r1lab.engines.base import Rollout
from r1lab.engines.torch_engine import TorchEngine
from r1lab.data.example import Example, Task


class PromptStream:
    """Train examples in a seeded shuffled order, epoch after epoch; its state is two ints."""

    def __init__(self, examples: list[Example], seed: int):
        if not examples:
            raise ValueError("the task's train split is empty")
        self.examples, self.seed, self.epoch, self.pos = examples, seed, 0, 0
        self._order()

    def _order(self):
        self.order = list(range(len(self.examples)))
        random.Random(self.seed + self.epoch).shuffle(self.order)

    def next(self, n: int) -> list[Example]:
        out = []
        while len(out) < n:
            if self.pos == len(self.order):
                self.epoch, self.pos = self.epoch + 1, 0
                self._order()
            out.append(self.examples[self.order[self.pos]])
            self.pos += 1
        return out

    def state(self) -> dict:
        return {"epoch": self.epoch, "pos": self.pos}

    def load(self, state: dict) -> None:
        self.epoch, self.pos = state["epoch"], state["pos"]
        self._order()


@dataclass
class Scored:
    """Sampled groups and their rewards; row i belongs to prompt i // group_size."""

    rollout: Rollout
    examples: list[Example]  # one per completion
    responses: list[str]  # completions with the template's response prefix, as the rewards saw them
    rewards: torch.Tensor  # (N,) weighted totals, float64: exactly the reward functions' sums
    per_fn: dict[str, list]  # each reward function's raw scores, None where it does not apply


def train_rl(policy, tokenizer, task: Task, cfg: RLConfig, run_dir: Path, *, template: str, system: str | None,
             seed: int = 0, stage: str = "rl") -> dict:
    """cfg.algorithm (GRPO by default) on `task`. Resumes from RUN/checkpoints if present. Returns {"steps", "wall_seconds"}."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    rewards_fn = Rewards(cfg.rewards, task, cfg.general_rewards, reward_model=cfg.reward_model)
    stream = PromptStream(task.examples("train"), seed)
    value_model = ValueModel(policy) if cfg.algorithm == "ppo" else None
    opt = _optimizer(policy, value_model, cfg)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg))
    engine = TorchEngine(policy, tokenizer, seed=seed)
    start, elapsed = 0, 0.0
    if (ckpt := checkpoint.latest(run_dir)) is not None:
        state = checkpoint.load_state(ckpt)
        policy.load_state_dict(_load_weights(ckpt, policy))
        if value_model is not None:
            value_model.load_state_dict(state["value_model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        stream.load(state["data"])
        checkpoint.set_rng_state(state["rng"])
        engine.generator.set_state(state["sampler_rng"])
        start, elapsed = state["step"], state["elapsed"]
        for log in ("metrics.jsonl", "samples.jsonl"):
            truncate_jsonl(run_dir / log, lambda row: row.get("step", 0) <= start)
        console.print(f"[green]resuming {stage} from {ckpt.name}")
    ref = _frozen_copy(policy) if cfg.beta > 0 else None
    if ref is not None and start > 0:
        ref.load_state_dict(state["ref"])
    policy.train()

    def prompt_of(example: Example) -> str:
        return apply_template(example.prompt, template, tokenizer, system)

    with progress_bar(f"{stage}: {cfg.algorithm}", cfg.steps) as bar:
        bar(start)
        for step in range(start + 1, cfg.steps + 1):
            t0 = time.time()
            seen, train, stats = _sample(engine, stream, rewards_fn, prompt_of, cfg)
            t_gen = time.time() - t0
            if train is not None:  # None: dapo found no group with reward spread, nothing to learn from
                batch = _training_batch(train.rollout, tokenizer.pad_token_id)
                scores = _score(batch, train, ref, value_model, cfg)
                stats |= _update(policy, opt, batch, cfg, value_model) | scores  # ppo: the rollout's KL, not the loss's 0
            sched.step()
            if cfg.ref_reset_every and step % cfg.ref_reset_every == 0 and ref is not None:
                ref.load_state_dict(policy.state_dict())

            metrics = _metrics(stage, step, seen, stats, cfg, t_gen, time.time() - t0, sched.get_last_lr()[0])
            append_jsonl(run_dir / "metrics.jsonl", [metrics])
            append_jsonl(run_dir / "samples.jsonl", _samples(stage, step, seen, cfg))
            elapsed += metrics["step_time"]
            bar(**{k: f"{metrics[k]:.3f}" for k in ("reward", "accuracy") if k in metrics}, len=f"{metrics['completion_len_mean']:.0f}")
            if (cfg.checkpoint_every and step % cfg.checkpoint_every == 0) or step == cfg.steps:
                checkpoint.save(run_dir, step, policy, tokenizer, {
                    "step": step, "elapsed": elapsed, "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                    "data": stream.state(), "rng": checkpoint.rng_state(), "sampler_rng": engine.generator.get_state(),
                    "ref": ref.state_dict() if ref is not None else None,
                    "value_model": value_model.state_dict() if value_model is not None else None})
    policy.eval()
    return {"steps": cfg.steps, "wall_seconds": round(elapsed, 3)}


def lr_lambda(cfg: RLConfig):
    def f(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / (cfg.warmup_steps + 1)
        if cfg.schedule == "constant":
            return 1.0
        progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return f


def _optimizer(policy, value_model, cfg: RLConfig):
    """One AdamW; PPO's value model is a second parameter group with its own lr. One optimizer (and one
    state dict) keeps the schedule and resume the same for every algorithm."""
    groups = [{"params": list(policy.parameters())}]
    if value_model is not None:
        groups.append({"params": list(value_model.parameters()), "lr": cfg.value_lr or cfg.lr})
    return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.99))


# ---------------------------------------------------------------------------------------------
# Sampling


def _sample_groups(engine, stream: PromptStream, rewards_fn, prompt_of, cfg: RLConfig) -> Scored:
    examples = stream.next(cfg.prompts_per_step)
    prompts = [prompt_of(e) for e in examples]
    rollout = engine.generate(prompts, cfg.sampling, n=cfg.group_size)
    group_examples = [e for e in examples for _ in range(cfg.group_size)]
    responses = [response_prefix(prompts[i // cfg.group_size]) + t for i, t in enumerate(rollout.texts)]
    infos = [{"num_tokens": int(n), "max_tokens": cfg.sampling.max_new_tokens, "truncated": tr}
             for n, tr in zip(rollout.lengths, rollout.truncated)]
    totals, per_fn = rewards_fn(responses, group_examples, infos)
    return Scored(rollout, group_examples, responses, torch.tensor(totals, dtype=torch.float64), per_fn)


def _sample(engine, stream, rewards_fn, prompt_of, cfg: RLConfig) -> tuple[Scored, Scored | None, dict]:
    """-> (everything sampled this step, the groups to train on, stats).

    DAPO's dynamic sampling: a group whose rewards are all equal has advantage 0 and only dilutes the
    batch, so it is dropped and prompts_per_step more prompts are sampled, up to max_resample_rounds
    extra rounds, until prompts_per_step groups have reward spread; past the cap it trains on the groups
    it found (None if none). Other algorithms train on the one round sampled.
    """
    rounds = [_sample_groups(engine, stream, rewards_fn, prompt_of, cfg)]
    if cfg.algorithm != "dapo":
        return rounds[0], rounds[0], {}

    def has_spread() -> torch.Tensor:  # (groups so far,) bool
        return torch.cat([r.rewards for r in rounds]).view(-1, cfg.group_size).std(1) > 0

    while has_spread().sum() < cfg.prompts_per_step and len(rounds) <= cfg.max_resample_rounds:
        rounds.append(_sample_groups(engine, stream, rewards_fn, prompt_of, cfg))
    seen, spread = _concat(rounds, engine.pad_id), has_spread()
    keep = spread.nonzero().squeeze(1)[: cfg.prompts_per_step]
    stats = {"groups_dropped": int((~spread).sum()), "resample_rounds": len(rounds) - 1}
    return seen, _select_groups(seen, keep, cfg.group_size) if len(keep) else None, stats


def _concat(parts: list[Scored], pad_id: int) -> Scored:
    """Several rounds as one batch; completions are right-padded to the longest."""
    if len(parts) == 1:
        return parts[0]
    rollouts = [p.rollout for p in parts]
    T = max(r.completion_ids.size(1) for r in rollouts)

    def cat(tensors, value):  # (sum of N, T)
        return torch.cat([F.pad(x, (0, T - x.size(1)), value=value) for x in tensors])

    def join(lists):
        return [item for items in lists for item in items]

    entropies = None if any(r.entropies is None for r in rollouts) else cat([r.entropies for r in rollouts], 0.0)
    rollout = Rollout(join(r.prompt_ids for r in rollouts), cat([r.completion_ids for r in rollouts], pad_id),
                      cat([r.completion_mask for r in rollouts], 0), cat([r.logprobs for r in rollouts], 0.0),
                      join(r.texts for r in rollouts), join(r.truncated for r in rollouts), rollouts[0].n, entropies)
    return Scored(rollout, join(p.examples for p in parts), join(p.responses for p in parts),
                  torch.cat([p.rewards for p in parts]), {name: join(p.per_fn[name] for p in parts) for name in parts[0].per_fn})


def _select_groups(scored: Scored, groups: torch.Tensor, group_size: int) -> Scored:
    rows = (groups[:, None] * group_size + torch.arange(group_size)).view(-1)  # (len(groups) * G,)
    r, idx = scored.rollout, rows.tolist()
    rollout = Rollout([r.prompt_ids[g] for g in groups.tolist()], r.completion_ids[rows], r.completion_mask[rows],
                      r.logprobs[rows], [r.texts[i] for i in idx], [r.truncated[i] for i in idx], r.n,
                      r.entropies[rows] if r.entropies is not None else None)
    return Scored(rollout, [scored.examples[i] for i in idx], [scored.responses[i] for i in idx], scored.rewards[rows],
                  {name: [v[i] for i in idx] for name, v in scored.per_fn.items()})


# ---------------------------------------------------------------------------------------------
# Training batch, advantages, update


def _training_batch(rollout, pad_id: int) -> dict:
    """[left-padded prompt | right-padded completion] rows; logits at P-1 .. P+T-2 predict the completion.

    Also each prompt once (prompt_ids, prompt_mask: (prompts, P), left-padded) and the prompt of each row
    (prompt_of_row), for `_forward_logprobs`'s shared-prompt pass."""
    n, P = rollout.n, max(map(len, rollout.prompt_ids))
    N, T = rollout.completion_ids.shape
    prompts = torch.full((len(rollout.prompt_ids), P), pad_id, dtype=torch.long)
    prompts_mask = torch.zeros((len(rollout.prompt_ids), P), dtype=torch.long)
    for i, p in enumerate(rollout.prompt_ids):
        prompts[i, P - len(p):] = torch.tensor(p, dtype=torch.long)
        prompts_mask[i, P - len(p):] = 1
    prompt_of_row = torch.arange(N) // n
    attention = torch.cat([prompts_mask[prompt_of_row], rollout.completion_mask], 1)
    return {"input_ids": torch.cat([prompts[prompt_of_row], rollout.completion_ids], 1), "attention_mask": attention,
            "position_ids": (attention.cumsum(1) - 1).clamp(min=0), "completion_ids": rollout.completion_ids,
            "completion_mask": rollout.completion_mask, "prompt_len": P,
            "prompt_ids": prompts, "prompt_mask": prompts_mask, "prompt_of_row": prompt_of_row}


def _score(batch: dict, train: Scored, ref, value_model, cfg: RLConfig) -> dict:
    """Adds to `batch` what the loss needs: rewards (N,), old and reference log-probs (N, T) and the
    advantages: (N,) from the algorithm's estimator, or PPO's (N, T). Returns stats to log.

    The sampling log-probs are the old log-probs: the engine sampled with exactly these weights.
    """
    batch["rewards"], batch["old_logprobs"] = train.rewards.float(), train.rollout.logprobs
    batch["ref_logprobs"] = _logprobs(ref, batch, cfg.sampling.temperature, cfg.micro_batch_size) if ref is not None else None
    if cfg.algorithm == "ppo":
        return _ppo_advantages(batch, value_model, cfg)
    batch["advantages"] = ADVANTAGES[cfg.algorithm](batch["rewards"], cfg.group_size)  # (N,)
    return {"advantage_abs": batch["advantages"].abs().mean().item()}


def _ppo_advantages(batch: dict, value_model, cfg: RLConfig) -> dict:
    """Per-token rewards (the sequence reward at the last token, - beta * k1 KL), GAE on the value model's
    predictions, whitened over the batch. Adds advantages, returns and old_values (N, T) to `batch`."""
    mask, ref_logprobs = batch["completion_mask"], batch["ref_logprobs"]
    values = _values(value_model, batch, cfg.micro_batch_size)  # (N, T)
    kl = batch["old_logprobs"] - ref_logprobs if ref_logprobs is not None else None  # k1 of the sampled tokens
    advantages, returns = gae(token_rewards(batch["rewards"], mask, kl, cfg.beta), values, mask, cfg.gamma, cfg.lam)
    batch.update(advantages=whiten(advantages, mask), returns=returns, old_values=values)
    stats = {"advantage_abs": float(masked_mean(advantages.abs(), mask)), "value_mean": float(masked_mean(values, mask)),
             "explained_variance": explained_variance(values, returns, mask)}
    return stats | ({"kl": float(masked_mean(kl, mask))} if kl is not None else {})


ROW_TENSORS = ("completion_mask", "old_logprobs", "ref_logprobs", "advantages", "old_values", "returns")


def _update(policy, opt, batch, cfg: RLConfig, value_model=None) -> dict:
    """mu passes over the rollouts in shuffled minibatches; micro-batches accumulate gradients.

    Every loss is normalised by its minibatch (sequences, tokens), so the micro-batch losses add up to
    the minibatch's and the gradient does not depend on micro_batch_size.

    Rows whose advantage is exactly 0 (every row of a group whose rewards are all equal) add exactly 0 to
    the loss and its gradient when there is no KL term, so they are left out of the forward and backward
    passes; the normalisers still count them, so the gradient is the same. Early in R1-style training most
    groups are all wrong or all right: this is often the larger part of the batch. Loss statistics
    (clip_frac, ...) are then over the rows trained on.
    """
    N, dev = batch["advantages"].size(0), policy.device
    policy_loss = POLICY_LOSSES[cfg.algorithm]
    eps, eps_high = clip_range(cfg.algorithm, cfg.eps, cfg.eps_high)
    beta = 0.0 if cfg.algorithm in KL_IN_REWARD else cfg.beta  # ppo's KL is already in its rewards
    params = [p for group in opt.param_groups for p in group["params"]]
    skip_zero = beta == 0 and value_model is None and batch["advantages"].dim() == 1
    per_step, per_micro = defaultdict(float), defaultdict(float)  # summed, then averaged over steps / micro-batches
    n_micro = n_opt = 0
    for _ in range(cfg.mu):
        order = torch.randperm(N)
        for mb_start in range(0, N, cfg.minibatch_size):
            minibatch = order[mb_start : mb_start + cfg.minibatch_size]
            norms = {"num_sequences": len(minibatch), "max_tokens": cfg.sampling.max_new_tokens,
                     "num_tokens": batch["completion_mask"][minibatch].sum().clamp(min=1).item()}
            opt.zero_grad(set_to_none=True)
            trained = minibatch[batch["advantages"][minibatch] != 0] if skip_zero else minibatch
            per_step["trained_frac"] += len(trained) / len(minibatch)
            per_step["loss"] += 0.0  # the loss is 0 when no row is trained
            if len(trained) == 0:  # a zero gradient: AdamW still steps (its moments decay), as without the skip
                for p in params:
                    if p.requires_grad:
                        p.grad = torch.zeros_like(p)
            for mi in range(0, len(trained), cfg.micro_batch_size):
                rows = trained[mi : mi + cfg.micro_batch_size]
                part = {k: batch[k][rows].to(dev) for k in ROW_TENSORS if batch.get(k) is not None}
                logprobs = _forward_logprobs(policy, batch, rows, cfg.sampling.temperature)
                loss, stats = policy_loss(logprobs, part["old_logprobs"], part["advantages"], part["completion_mask"],
                                          eps=eps, eps_high=eps_high, beta=beta, ref_logprobs=part.get("ref_logprobs"), **norms)
                per_step["loss"] += loss.item()  # the policy's; ppo's value loss is logged apart
                if value_model is not None:
                    values = _forward_values(value_model, batch, rows)
                    v_loss, v_stats = value_loss(values, part["old_values"], part["returns"], part["completion_mask"],
                                                 cfg.value_clip, norms["num_tokens"])
                    loss = loss + cfg.vf_coef * v_loss
                    per_step["value_loss"] += v_loss.item()
                    stats |= v_stats
                loss.backward()
                for k, v in stats.items():
                    per_micro[k] += v
                n_micro += 1
            per_step["grad_norm"] += float(torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm))
            opt.step()
            n_opt += 1
    return {**{k: v / n_micro for k, v in per_micro.items()}, **{k: v / n_opt for k, v in per_step.items()}}


def _forward_logprobs(model, batch: dict, rows, temperature: float) -> torch.Tensor:
    """Log-probs (n, T) of the completion tokens of `rows` under `model` at `temperature`. Values past a
    completion's end mean nothing (masked).

    With the batch's prompts (from _training_batch) the pass is `_completion_logits`: each prompt once,
    completions in length buckets. Without them (or with batch["shared"] = False) it is the plain pass
    over [prompt | completion] rows, the reference the other is tested against.
    """
    dev = model.device
    ids = batch["completion_ids"][rows].to(dev)
    import inspect

    params = inspect.signature(model.forward).parameters
    takes_cache = "logits_to_keep" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())
    if "prompt_ids" in batch and batch.get("shared", True) and takes_cache:
        parts = _completion_logits(model, batch, rows)
    else:
        P = batch["prompt_len"]
        out = model(input_ids=batch["input_ids"][rows].to(dev), attention_mask=batch["attention_mask"][rows].to(dev),
                    position_ids=batch["position_ids"][rows].to(dev))
        parts = [(torch.arange(ids.size(0), device=dev), out.logits[:, P - 1 : -1])]
    logprobs, order = [], []
    for part, logits in parts:  # logits (n_b, L_b, V) for rows[part], L_b <= T
        logits = logits.float()
        if temperature != 1.0:
            logits = logits / max(temperature, 1e-5)
        # log p(token) = logit(token) - logsumexp: no (n, L, V) log-softmax is kept for the backward.
        lp = logits.gather(-1, ids[part, : logits.size(1), None]).squeeze(-1) - torch.logsumexp(logits, -1)
        logprobs.append(F.pad(lp, (0, ids.size(1) - lp.size(1))))
        order.append(part)
    inverse = torch.argsort(torch.cat(order))  # back to the order of `rows`
    return torch.cat(logprobs)[inverse]


BUCKET_COST = 64  # tokens of padding worth one more forward call (its fixed overhead and smaller matmuls)


def _completion_logits(model, batch: dict, rows):
    """Yields (positions in `rows`, logits (n_b, L_b, V) predicting their first L_b completion tokens).

    The distinct prompts of `rows` are run once (a group's G completions share one prompt pass); each
    completion then attends to a copy of its prompt's keys and values, which keep the gradient. The
    completions go in up to 4 buckets of similar length, each cut to its longest row, so short completions
    are not padded to the longest of the batch; a bucket is split off only when it saves BUCKET_COST
    tokens of padding.
    """
    from transformers import DynamicCache

    dev = model.device
    rows = torch.arange(batch["completion_ids"].size(0))[rows] if isinstance(rows, slice) else torch.as_tensor(rows).cpu()
    prompts, prompt_of = batch["prompt_of_row"][rows].unique(return_inverse=True)
    prompt_mask = batch["prompt_mask"][prompts].to(dev)
    out = model(input_ids=batch["prompt_ids"][prompts].to(dev), attention_mask=prompt_mask,
                position_ids=(prompt_mask.cumsum(1) - 1).clamp(min=0), use_cache=True, logits_to_keep=1)
    first = out.logits[:, -1]  # (prompts, V): predicts each completion's token 0
    kv = _cache_tensors(out.past_key_values)
    mask = batch["completion_mask"][rows]
    T = mask.size(1)
    lengths = torch.where(mask.any(1), T - mask.flip(1).float().argmax(1), 1)  # last unmasked position + 1
    by_length = torch.argsort(lengths, descending=True)
    buckets = _length_buckets(lengths[by_length].tolist())
    for start, end in buckets:
        part = by_length[start:end]
        L = int(lengths[part[0]])
        p = prompt_of[part].to(dev)
        logits = first[p][:, None]
        if L > 1:
            cache = DynamicCache([(k[p], v[p]) for k, v in kv])  # each row's copy of its prompt's keys and values
            pm = prompt_mask[p]
            attention = torch.cat([pm, mask[part, : L - 1].to(dev)], 1)
            positions = pm.sum(1, keepdim=True) + torch.arange(L - 1, device=dev)
            rest = model(input_ids=batch["completion_ids"][rows[part], : L - 1].to(dev), attention_mask=attention,
                         position_ids=positions, past_key_values=cache, use_cache=True).logits  # predict tokens 1 .. L-1
            logits = torch.cat([logits, rest], 1)
        yield part.to(dev), logits


def _length_buckets(lengths: list[int], most: int = 4) -> list[tuple[int, int]]:
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


def _cache_tensors(cache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(keys, values) of every layer of an HF cache, whichever layout this transformers version has."""
    if hasattr(cache, "layers"):
        return [(layer.keys, layer.values) for layer in cache.layers]
    return list(zip(cache.key_cache, cache.value_cache))


@torch.no_grad()
def _logprobs(model, batch: dict, temperature: float, micro: int) -> torch.Tensor:
    """Log-probs (N, T) of every completion (the reference model's pass): micro rows at a time, no gradient."""
    N = batch["input_ids"].size(0)
    return torch.cat([_forward_logprobs(model, batch, slice(i, i + micro), temperature).cpu() for i in range(0, N, micro)])


# ---------------------------------------------------------------------------------------------
# PPO's value model


class ValueModel(torch.nn.Module):
    """PPO's critic: a copy of the policy's transformer (without its LM head) and a scalar head.
    values[:, t] estimates the return from the state before token t, read where the policy's logits are."""

    def __init__(self, policy):
        super().__init__()
        if policy.base_model is policy:
            raise ValueError(f"ppo needs the policy's transformer without its LM head; {type(policy).__name__} has no base_model")
        self.body = copy.deepcopy(policy.base_model)  # e.g. LlamaModel: hidden states, no vocabulary projection
        self.head = torch.nn.Linear(policy.config.hidden_size, 1, device=policy.device)
        torch.nn.init.zeros_(self.head.weight)  # V = 0 at the start: no made-up baseline before any data
        torch.nn.init.zeros_(self.head.bias)

    @property
    def device(self):
        return self.head.weight.device

    def forward(self, input_ids, attention_mask, position_ids) -> torch.Tensor:
        hidden = self.body(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids).last_hidden_state
        return self.head(hidden.float()).squeeze(-1)  # (n, L); float32 head whatever the body's dtype


def _forward_values(value_model, batch: dict, rows) -> torch.Tensor:
    dev, P = value_model.device, batch["prompt_len"]
    values = value_model(batch["input_ids"][rows].to(dev), batch["attention_mask"][rows].to(dev),
                         batch["position_ids"][rows].to(dev))
    return values[:, P - 1 : -1]  # (n, T): the state each completion token was sampled in


@torch.no_grad()
def _values(value_model, batch: dict, micro: int) -> torch.Tensor:
    N = batch["input_ids"].size(0)
    return torch.cat([_forward_values(value_model, batch, slice(i, i + micro)).cpu() for i in range(0, N, micro)])


# ---------------------------------------------------------------------------------------------
# Logs


def _metrics(stage, step, seen: Scored, stats: dict, cfg: RLConfig, t_gen, t_step, lr):
    """Rewards and lengths over everything sampled (dapo: all rounds, dropped groups too); training stats
    (loss, advantages, ...) over the groups trained on."""
    rewards, per_fn, rollout, responses = seen.rewards, seen.per_fn, seen.rollout, seen.responses
    lengths = rollout.lengths.float()
    grouped = rewards.view(-1, cfg.group_size)
    out = {"stage": stage, "step": step, "reward": rewards.mean().item()}
    applied = {name: [v for v in values if v is not None] for name, values in per_fn.items()}  # general vs reasoning
    out.update({f"reward/{name}": sum(v) / len(v) for name, v in applied.items() if v})
    out.update({
        "accuracy": sum(a >= 1.0 for a in applied["accuracy"]) / len(applied["accuracy"]) if applied.get("accuracy") else None,
        "format_rate": sum(f >= 1.0 for f in applied["format"]) / len(applied["format"]) if applied.get("format") else None,
        "completion_len_mean": lengths.mean().item(),
        "completion_len_max": int(lengths.max()),
        "truncated_frac": sum(rollout.truncated) / len(responses),
        "reflection_rate": sum(reflects(r, cfg.reflection_phrases) for r in responses) / len(responses),
        "language_consistency": sum(map(language_consistency_reward, responses)) / len(responses),
        "zero_std_frac": (grouped.std(1) == 0).float().mean().item(),
        "entropy": float(masked_mean(rollout.entropies, rollout.completion_mask)) if rollout.entropies is not None else None,
        **stats,
        "lr": lr,
        "tokens_per_s": int(lengths.sum().item() / max(t_step, 1e-9)),
        "gen_time": round(t_gen, 3),
        "step_time": round(t_step, 3),
    })
    return {k: v for k, v in out.items() if v is not None}


def _samples(stage, step, seen: Scored, cfg: RLConfig) -> list[dict]:
    """The first completion of the first few groups, for samples.jsonl."""
    totals = seen.rewards.tolist()
    correct = [c if c is not None else t for c, t in zip(seen.per_fn.get("accuracy", totals), totals)]
    return [{"stage": stage, "step": step, "prompt": seen.examples[i].prompt, "answer": seen.examples[i].answer,
             "response": seen.responses[i], "reward": totals[i], "correct": correct[i] >= 1.0}
            for i in range(0, len(seen.responses), cfg.group_size)[: cfg.log_samples]]


def _frozen_copy(model):
    ref = copy.deepcopy(model).eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref


def _load_weights(ckpt: Path, model) -> dict:
    from safetensors.torch import load_file

    files = sorted(Path(ckpt).glob("*.safetensors"))
    state = {}
    for f in files:
        state.update(load_file(str(f), device=str(model.device)))
    if "lm_head.weight" not in state and getattr(model.config, "tie_word_embeddings", False):
        state["lm_head.weight"] = state["model.embed_tokens.weight"]
    return state
