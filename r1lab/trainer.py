"""The RL loop: sample groups, score them with rules, GRPO update, log, checkpoint, resume."""

from __future__ import annotations

import copy
import math
import random
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from r1lab import checkpoint
from r1lab.algorithms import group_advantages, grpo_loss
from r1lab.config import RLConfig
from r1lab.evaluate import reflects
from r1lab.language import language_consistency_reward
from r1lab.logs import append_jsonl, truncate_jsonl
from r1lab.models import apply_template, response_prefix
from r1lab.progress import console, progress_bar
from r1lab.rewards import Rewards
from r1lab.rollout import TorchEngine
from r1lab.tasks import Example, Task


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


def train_rl(policy, tokenizer, task: Task, cfg: RLConfig, run_dir: Path, *, template: str, system: str | None,
             seed: int = 0, stage: str = "rl") -> dict:
    """GRPO on `task`. Resumes from RUN/checkpoints if present. Returns {"steps", "wall_seconds"}."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    rewards_fn = Rewards(cfg.rewards, task)
    stream = PromptStream(task.examples("train"), seed)
    opt = torch.optim.AdamW(policy.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.99))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg))
    engine = TorchEngine(policy, tokenizer, seed=seed)
    start, elapsed = 0, 0.0
    if (ckpt := checkpoint.latest(run_dir)) is not None:
        state = checkpoint.load_state(ckpt)
        policy.load_state_dict(_load_weights(ckpt, policy))
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

    with progress_bar(f"{stage}: GRPO", cfg.steps) as bar:
        bar(start)
        for step in range(start + 1, cfg.steps + 1):
            t0 = time.time()
            examples = stream.next(cfg.prompts_per_step)
            prompts = [apply_template(e.prompt, template, tokenizer, system) for e in examples]
            rollout = engine.generate(prompts, cfg.sampling, n=cfg.group_size)
            t_gen = time.time() - t0
            group_examples = [e for e in examples for _ in range(cfg.group_size)]
            responses = [response_prefix(prompts[i // cfg.group_size]) + t for i, t in enumerate(rollout.texts)]
            infos = [{"num_tokens": int(n), "max_tokens": cfg.sampling.max_new_tokens, "truncated": tr}
                     for n, tr in zip(rollout.lengths, rollout.truncated)]
            totals, per_fn = rewards_fn(responses, group_examples, infos)
            rewards = torch.tensor(totals)
            advantages = group_advantages(rewards, cfg.group_size)
            batch = _training_batch(rollout, tokenizer.pad_token_id)
            ref_logprobs = _logprobs(ref, batch, cfg.sampling.temperature, cfg.micro_batch_size) if ref is not None else None
            stats = _update(policy, opt, batch, rollout.logprobs, advantages, ref_logprobs, cfg)
            sched.step()
            if cfg.ref_reset_every and step % cfg.ref_reset_every == 0 and ref is not None:
                ref.load_state_dict(policy.state_dict())

            metrics = _metrics(stage, step, rewards, per_fn, rollout, responses, advantages, stats, cfg, t_gen,
                               time.time() - t0, sched.get_last_lr()[0])
            append_jsonl(run_dir / "metrics.jsonl", [metrics])
            correct = per_fn.get("accuracy", totals)
            append_jsonl(run_dir / "samples.jsonl", [  # the first completion of the first few groups
                {"stage": stage, "step": step, "prompt": group_examples[i].prompt, "answer": group_examples[i].answer,
                 "response": responses[i], "reward": totals[i], "correct": correct[i] >= 1.0}
                for i in range(0, len(responses), cfg.group_size)[: cfg.log_samples]])
            elapsed += metrics["step_time"]
            bar(**{k: f"{metrics[k]:.3f}" for k in ("reward", "accuracy") if k in metrics}, len=f"{metrics['completion_len_mean']:.0f}")
            if (cfg.checkpoint_every and step % cfg.checkpoint_every == 0) or step == cfg.steps:
                checkpoint.save(run_dir, step, policy, tokenizer, {
                    "step": step, "elapsed": elapsed, "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                    "data": stream.state(), "rng": checkpoint.rng_state(), "sampler_rng": engine.generator.get_state(),
                    "ref": ref.state_dict() if ref is not None else None})
    policy.eval()
    return {"steps": cfg.steps, "wall_seconds": round(elapsed, 1)}


def lr_lambda(cfg: RLConfig):
    def f(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / (cfg.warmup_steps + 1)
        if cfg.schedule == "constant":
            return 1.0
        progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return f


def _training_batch(rollout, pad_id: int) -> dict:
    """[left-padded prompt | right-padded completion] rows; logits at P-1 .. P+T-2 predict the completion."""
    n, P = rollout.n, max(map(len, rollout.prompt_ids))
    N, T = rollout.completion_ids.shape
    prompt = torch.full((N, P), pad_id, dtype=torch.long)
    prompt_mask = torch.zeros((N, P), dtype=torch.long)
    for i in range(N):
        p = rollout.prompt_ids[i // n]
        prompt[i, P - len(p):] = torch.tensor(p)
        prompt_mask[i, P - len(p):] = 1
    attention = torch.cat([prompt_mask, rollout.completion_mask], 1)
    return {"input_ids": torch.cat([prompt, rollout.completion_ids], 1), "attention_mask": attention,
            "position_ids": (attention.cumsum(1) - 1).clamp(min=0), "completion_ids": rollout.completion_ids,
            "completion_mask": rollout.completion_mask, "prompt_len": P}


def _forward_logprobs(model, batch: dict, rows, temperature: float, with_entropy: bool = False):
    dev = model.device
    P = batch["prompt_len"]
    out = model(input_ids=batch["input_ids"][rows].to(dev), attention_mask=batch["attention_mask"][rows].to(dev),
                position_ids=batch["position_ids"][rows].to(dev))
    logits = out.logits[:, P - 1 : -1].float() / max(temperature, 1e-5)  # (n, T, V)
    logp = F.log_softmax(logits, -1)
    token_logprobs = logp.gather(-1, batch["completion_ids"][rows].to(dev)[..., None]).squeeze(-1)
    entropy = -(logp.exp() * logp).sum(-1) if with_entropy else None
    return token_logprobs, entropy


@torch.no_grad()
def _logprobs(model, batch: dict, temperature: float, micro: int) -> torch.Tensor:
    N = batch["input_ids"].size(0)
    return torch.cat([_forward_logprobs(model, batch, slice(i, i + micro), temperature)[0].cpu() for i in range(0, N, micro)])


def _update(policy, opt, batch, old_logprobs, advantages, ref_logprobs, cfg: RLConfig) -> dict:
    """mu passes over the rollouts in shuffled minibatches; micro-batches accumulate gradients.

    The sampling log-probs are the old log-probs: the engine sampled with exactly these weights.
    """
    N, dev = advantages.size(0), policy.device
    mask = batch["completion_mask"]
    sums = {"loss": 0.0, "clip_frac": 0.0, "kl": 0.0, "entropy": 0.0, "grad_norm": 0.0}
    n_micro = n_opt = 0
    for _ in range(cfg.mu):
        order = torch.randperm(N)
        for mb_start in range(0, N, cfg.minibatch_size):
            minibatch = order[mb_start : mb_start + cfg.minibatch_size]
            opt.zero_grad(set_to_none=True)
            for mi in range(0, len(minibatch), cfg.micro_batch_size):
                rows = minibatch[mi : mi + cfg.micro_batch_size]
                logprobs, entropy = _forward_logprobs(policy, batch, rows, cfg.sampling.temperature, with_entropy=True)
                m = mask[rows].to(dev)
                loss, stats = grpo_loss(logprobs, old_logprobs[rows].to(dev), advantages[rows].to(dev), m,
                                        cfg.eps, cfg.eps_high, cfg.beta,
                                        ref_logprobs[rows].to(dev) if ref_logprobs is not None else None)
                (loss * len(rows) / len(minibatch)).backward()
                sums["loss"] += loss.item()
                sums["clip_frac"] += stats["clip_frac"]
                sums["kl"] += stats["kl"]
                sums["entropy"] += float((entropy.detach() * m).sum() / m.sum().clamp(min=1))
                n_micro += 1
            sums["grad_norm"] += float(torch.nn.utils.clip_grad_norm_(policy.parameters(), cfg.max_grad_norm))
            opt.step()
            n_opt += 1
    return {k: v / (n_opt if k == "grad_norm" else n_micro) for k, v in sums.items()}


def _metrics(stage, step, rewards, per_fn, rollout, responses, advantages, stats, cfg: RLConfig, t_gen, t_step, lr):
    lengths = rollout.lengths.float()
    grouped = rewards.view(-1, cfg.group_size)
    out = {"stage": stage, "step": step, "reward": rewards.mean().item()}
    out.update({f"reward/{name}": sum(v) / len(v) for name, v in per_fn.items()})
    out.update({
        "accuracy": sum(a >= 1.0 for a in per_fn.get("accuracy", [])) / len(responses) if "accuracy" in per_fn else None,
        "format_rate": sum(f >= 1.0 for f in per_fn["format"]) / len(responses) if "format" in per_fn else None,
        "completion_len_mean": lengths.mean().item(),
        "completion_len_max": int(lengths.max()),
        "truncated_frac": sum(rollout.truncated) / len(responses),
        "reflection_rate": sum(reflects(r, cfg.reflection_phrases) for r in responses) / len(responses),
        "language_consistency": sum(map(language_consistency_reward, responses)) / len(responses),
        "zero_std_frac": (grouped.std(1) == 0).float().mean().item(),
        "advantage_abs": advantages.abs().mean().item(),
        **stats,
        "lr": lr,
        "tokens_per_s": int(lengths.sum().item() / max(t_step, 1e-9)),
        "gen_time": round(t_gen, 3),
        "step_time": round(t_step, 3),
    })
    return {k: v for k, v in out.items() if v is not None}


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
