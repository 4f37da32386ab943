"""Supervised fine-tuning: R1's cold start, rejection-sampling SFT and distillation.

Each example is a templated prompt and the completion the model should write. The model sees
prompt + completion + EOS and learns only the completion and the EOS (prompt tokens get label -100),
so it learns where to stop. Sequences are padded only to the longest one in each micro-batch, and the
loss is the mean over every completion token of the optimizer batch, so gradient accumulation is exact.
Rows to examples, token ids, labels and micro-batches: sft/data.py; the loss and the training loop: here.

Layout of OUT: metrics.jsonl, checkpoints/ (resume), final/ (the trained model + tokenizer; with LoRA, merged,
and the adapter in final/adapter).
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import random
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from r1lab.config import SFTConfig
from r1lab.models.device import autocast
from r1lab.models.io import load_model, restore_weights, save_model, trained_system
from r1lab.models.memory import enable_gradient_checkpointing
from r1lab.progress import console, progress_bar
from r1lab.sft.data import IGNORE, collate, count_targets, load_sft_examples, split_eval, tokenize_examples
from r1lab.store import checkpoint
from r1lab.store.logs import append_metrics, truncate_jsonl
from r1lab.store.runlock import run_lock
from r1lab.store.trackers import reporting
from r1lab.train.guards import BadStepCounter, step_problem
from r1lab.train.optim import lr_lambda

# ---------------------------------------------------------------- loss


def _loss_sum(model, batch: dict) -> torch.Tensor:
    """Summed cross-entropy of the labelled tokens; logits at t predict the token at t+1."""
    dev = model.device
    with autocast(model):
        out = model(input_ids=batch["input_ids"].to(dev), attention_mask=batch["attention_mask"].to(dev), use_cache=False)
    targets = batch["labels"][:, 1:].to(dev)  # (B, L-1)
    keep = targets != IGNORE
    logits = out.logits[:, :-1][keep].float()  # (n_targets, V): only labelled positions go to fp32
    return F.cross_entropy(logits, targets[keep], reduction="sum")


def accumulate_gradients(model, rows: list[dict], micro_batch_size: int, pad_id: int) -> tuple[float, int]:
    """Backward over one optimizer batch in micro-batches; returns (mean loss per target token, target tokens).

    Each micro-batch's summed loss is divided by the target tokens of the whole batch, so the gradient
    is the same however the batch is split.
    """
    n_targets = count_targets(rows)
    total = 0.0
    for start in range(0, len(rows), micro_batch_size):
        loss = _loss_sum(model, collate(rows[start : start + micro_batch_size], pad_id)) / max(n_targets, 1)
        loss.backward()
        total += loss.item()
    return total, n_targets


@torch.no_grad()
def evaluate_loss(model, rows: list[dict], micro_batch_size: int, pad_id: int) -> float:
    """Mean cross-entropy per target token over `rows`."""
    was_training = model.training
    model.eval()
    total = sum(_loss_sum(model, collate(rows[s : s + micro_batch_size], pad_id)).item()
                for s in range(0, len(rows), micro_batch_size))
    model.train(was_training)
    return total / max(count_targets(rows), 1)


# ---------------------------------------------------------------- training


@functools.lru_cache(maxsize=2)
def _epoch_order(n: int, seed: int, epoch: int) -> tuple[int, ...]:
    order = list(range(n))
    random.Random(seed + epoch).shuffle(order)
    return tuple(order)


def train_sft(model, tokenizer, examples: list[dict], cfg: SFTConfig, out_dir, *, seed: int = 0, template: str = "r1-zero",
              system: str | None = None, stage: str = "sft", report: Callable[[dict], None] | None = None,
              tools: dict | None = None) -> dict:
    """SFT on `examples` (from load_sft_examples: templated prompts). Resumes from OUT/checkpoints if present.
    `seed` (the run's) fixes the eval split and the batch order; template and system, those the examples
    were templated with, are recorded in OUT/final/r1lab.json. `report(row)` gets every metrics row as it is
    written (sft_from_config passes the run's trackers' log). `tools` ({"tools": [...], "max_turns": N}): what the
    model learns to call, recorded in r1lab.json for chat and serving.

    Returns {"steps", "epochs", "train_loss", "eval_loss", "wall_seconds", "examples", "eval_examples",
    "truncated", "dropped"}; the trained model is in OUT/final.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if not examples:
        raise ValueError("no SFT examples to train on")
    torch.manual_seed(seed)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    max_len = _max_len(model, cfg)
    rows, truncated, dropped = tokenize_examples(tokenizer, examples, max_len)
    train, held_out = split_eval(rows, cfg.eval_fraction, seed)
    steps_per_epoch = math.ceil(len(train) / cfg.batch_size)  # the last batch of an epoch may be smaller
    total = cfg.epochs * steps_per_epoch
    data_id = _fingerprint(examples, cfg, max_len, seed)

    if cfg.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    params = [p for p in model.parameters() if p.requires_grad]  # with LoRA, the adapters: the base stays frozen
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.95))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg.warmup_steps, total, cfg.min_lr_ratio))
    start, elapsed, train_loss, eval_loss = _resume(out_dir, model, opt, sched, data_id, stage)
    # also from step 0: the rows of a first attempt killed before its first checkpoint go
    truncate_jsonl(out_dir / "metrics.jsonl", lambda row: row.get("stage") != stage or row.get("step", 0) <= start)
    bad = BadStepCounter(cfg.max_bad_steps, f"{stage} (sft)")
    console.print(f"{stage}: {len(train)} train / {len(held_out)} eval examples, {total} steps "
                  f"({cfg.epochs} epochs x {steps_per_epoch}), batch {cfg.batch_size} in micro-batches of {cfg.micro_batch_size}")
    model.train()

    with progress_bar(f"{stage}: SFT", total) as bar:
        bar(start)
        for step in range(start + 1, total + 1):
            t0 = time.time()
            epoch, index = divmod(step - 1, steps_per_epoch)
            order = _epoch_order(len(train), seed, epoch)
            batch = [train[j] for j in order[index * cfg.batch_size : (index + 1) * cfg.batch_size]]
            row = {"stage": stage, "step": step, "epoch": round(epoch + (index + 1) / steps_per_epoch, 4),
                   **_optimizer_step(model, params, opt, sched, batch, cfg, pad_id, bad, step)}
            train_loss = row["loss"]
            row.update(step_time=round(time.time() - t0, 3), skipped_steps=bad.total)
            if held_out and ((cfg.eval_every and step % cfg.eval_every == 0) or step == total):
                row["eval_loss"] = eval_loss = evaluate_loss(model, held_out, cfg.micro_batch_size, pad_id)
            append_metrics(out_dir / "metrics.jsonl", row, report)
            elapsed += time.time() - t0
            bar(loss=f"{train_loss:.3f}", **({"eval": f"{eval_loss:.3f}"} if eval_loss is not None else {}))
            bad.check()
            due = (cfg.checkpoint_every and step % cfg.checkpoint_every == 0) or step == total
            if due and bad.streak == 0:  # a checkpoint is only ever written from a good step
                checkpoint.save(out_dir, step, model, tokenizer, {
                    "kind": "sft", "step": step, "elapsed": elapsed, "data_id": data_id,
                    "epoch": epoch, "pos": min((index + 1) * cfg.batch_size, len(train)),  # place in the seeded order
                    "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "rng": checkpoint.rng_state(),
                    "train_loss": train_loss, "eval_loss": eval_loss})
    model.eval()
    save_model(model, tokenizer, out_dir / "final", {"built_by": f"r1lab sft ({stage})", "template": template,
                                                      "system": system, **(tools or {})})
    return {"steps": total, "epochs": cfg.epochs, "train_loss": train_loss, "eval_loss": eval_loss,
            "wall_seconds": round(elapsed, 1), "examples": len(train), "eval_examples": len(held_out),
            "truncated": truncated, "dropped": dropped}


def _resume(out_dir: Path, model, opt, sched, data_id: str, stage: str) -> tuple[int, float, float | None, float | None]:
    """(step, elapsed seconds, train loss, eval loss) of the latest checkpoint, its weights, optimizer, scheduler
    and RNG restored; (0, 0.0, None, None) with none to resume from."""
    if (ckpt := checkpoint.latest(out_dir)) is None:
        return 0, 0.0, None, None
    state = checkpoint.load_state(ckpt)
    if state.get("data_id") != data_id:
        raise ValueError(f"{ckpt} was written by a run on other data or batch settings; use a new output directory "
                         f"or the same examples, batch_size, seed, eval_fraction and max_len to resume")
    restore_weights(model, ckpt)
    opt.load_state_dict(state["optimizer"]), sched.load_state_dict(state["scheduler"])
    checkpoint.set_rng_state(state["rng"])
    console.print(f"[green]resuming {stage} from {ckpt.name}")
    return state["step"], state["elapsed"], state["train_loss"], state["eval_loss"]


def _optimizer_step(model, params: list, opt, sched, batch: list[dict], cfg: SFTConfig, pad_id: int,
                    bad: BadStepCounter, step: int) -> dict:
    """One optimizer step over `batch`; its metrics {"loss", "lr" (the rate it ran at), "tokens", "grad_norm"}."""
    lr = opt.param_groups[0]["lr"]
    opt.zero_grad(set_to_none=True)
    loss, tokens = accumulate_gradients(model, batch, cfg.micro_batch_size, pad_id)
    grad_norm = float(torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm))
    problem = step_problem({"loss": loss, "grad_norm": grad_norm})
    if problem:  # divergence guard: no update from a non-finite loss or gradient
        opt.zero_grad(set_to_none=True)
    else:
        opt.step()
    bad.record(not problem, step, problem)
    sched.step()
    return {"loss": loss, "lr": lr, "tokens": tokens, "grad_norm": grad_norm}


def sft_from_config(model_path: str, data, cfg: SFTConfig, out_dir, *, template: str = "r1-zero", system: str | None = None,
                    seed: int = 0, device: str = "auto", dtype: str = "auto", stage: str = "sft", lora=None, log=None) -> dict:
    """Loads a model + tokenizer, reads `data` (a file, a save_to_disk dir or rows) and runs train_sft; with
    `lora` (config.LoRAConfig, r > 0) it trains LoRA adapters; `log` (config.LogConfig) names trackers to report to."""
    settings = {"model": model_path, "template": template, "system": system, "seed": seed, "device": device, "dtype": dtype,
                "sft": cfg.model_dump(), "lora": lora.model_dump() if lora is not None else None}
    with run_lock(out_dir), reporting(log, Path(out_dir), settings) as trackers:  # `r1lab sft --out`: one process per directory
        result = _sft_from_config(model_path, data, cfg, out_dir, template=template, system=system, seed=seed,
                                  device=device, dtype=dtype, stage=stage, lora=lora, report=trackers.log)
        trackers.summary([result])
        return result


def _sft_from_config(model_path, data, cfg: SFTConfig, out_dir, *, template, system, seed, device, dtype, stage, lora, report):
    lora_on = lora is not None and lora.enabled
    model, tokenizer = load_model(model_path, device=device, dtype=dtype, master_weights=not lora_on)  # LoRA: the base is frozen
    if lora_on:
        from r1lab.models.lora import add_lora

        model = add_lora(model, lora, seed)
    if system is None:
        system = trained_system(model_path, template)  # the prompt the model was built for (tiny world: none)
    examples = load_sft_examples(data, cfg, tokenizer, template=template, system=system)
    return train_sft(model, tokenizer, examples, cfg, out_dir, seed=seed, template=template, system=system, stage=stage,
                     report=report)


# ---------------------------------------------------------------- helpers


def _max_len(model, cfg: SFTConfig) -> int:
    limit = getattr(model.config, "max_position_embeddings", None)
    if limit is not None and cfg.max_len > limit:
        console.print(f"[yellow]SFT: max_len={cfg.max_len} is over the model's context of {limit}; using {limit}")
        return limit
    return cfg.max_len


def _fingerprint(examples: list[dict], cfg: SFTConfig, max_len: int, seed: int) -> str:
    """What fixes the batches of every step: a checkpoint made under another one cannot be resumed."""
    h = hashlib.sha256(json.dumps([cfg.batch_size, seed, cfg.eval_fraction, max_len]).encode())
    for ex in examples:
        h.update(ex["prompt"].encode() + b"\0" + ex["completion"].encode() + b"\1")
    return h.hexdigest()[:16]
