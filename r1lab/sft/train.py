"""Supervised fine-tuning: R1's cold start, rejection-sampling SFT and distillation.

Each example is a templated prompt and the completion the model should write. The model sees
prompt + completion + EOS and learns only the completion and the EOS (prompt tokens get label -100),
so it learns where to stop. Sequences are padded only to the longest one in each micro-batch, and the
loss is the mean over every completion token of the optimizer batch, so gradient accumulation is exact.

Layout of OUT: metrics.jsonl, checkpoints/ (resume), final/ (the trained model + tokenizer; with LoRA, merged,
and the adapter in final/adapter).
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import random
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from r1lab.config import SFTConfig
from r1lab.data.files import read_table
from r1lab.data.format import apply_template, response_prefix
from r1lab.models.device import autocast
from r1lab.models.io import load_model, restore_weights, save_model, trained_system
from r1lab.models.memory import enable_gradient_checkpointing
from r1lab.progress import console, progress_bar
from r1lab.store import checkpoint
from r1lab.store.logs import append_metrics, truncate_jsonl
from r1lab.store.runlock import run_lock
from r1lab.store.trackers import reporting
from r1lab.train.guards import BadStepCounter, step_problem
from r1lab.train.optim import lr_lambda

IGNORE = -100  # label of tokens that carry no loss (prompt and padding); F.cross_entropy's ignore_index


# ---------------------------------------------------------------- data


def load_sft_examples(path_or_rows, cfg: SFTConfig, tokenizer=None, *, template: str = "r1-zero",
                      system: str | None = None) -> list[dict]:
    """Rows -> [{"prompt": templated prompt text, "completion": text to learn}].

    path_or_rows: a .jsonl/.json/.parquet/.csv file, a datasets `save_to_disk` directory, or an iterable
    of dicts. A row is either cfg.prompt_field + cfg.completion_field, or cfg.messages_field (a chat:
    the last assistant message is the completion, the messages before it the prompt; template 'chat' only).
    `template` and `system` are the run's (None: the template's default); `tokenizer` is needed for 'chat'.
    """
    rows, source = _read_rows(path_or_rows)
    examples = [_example(row, i, source, cfg, tokenizer, template, system) for i, row in enumerate(rows)]
    if not examples:
        raise ValueError(f"{source}: no rows to train on")
    return examples


def _read_rows(path_or_rows):
    """(iterable of row dicts, name for error messages)."""
    if not isinstance(path_or_rows, (str, os.PathLike)):
        return path_or_rows, "rows"
    return read_table(str(path_or_rows))["train"], str(path_or_rows)


def _example(row, i: int, source: str, cfg: SFTConfig, tokenizer, template: str, system: str | None) -> dict:
    if not isinstance(row, dict):
        raise ValueError(f"{source}: row {i} is a {type(row).__name__}, expected a dict of fields")
    if row.get(cfg.messages_field) is not None:
        prompt, completion = _chat_example(row[cfg.messages_field], i, source, cfg, tokenizer, template, system)
    else:
        for field in (cfg.prompt_field, cfg.completion_field):
            if row.get(field) is None:
                raise ValueError(f"{source}: row {i} has no {field!r} field (nor {cfg.messages_field!r}); "
                                 f"fields present: {sorted(k for k, v in row.items() if v is not None)}")
            if not isinstance(row[field], str) or not row[field].strip():
                raise ValueError(f"{source}: row {i} has an empty or non-text {field!r} field")
        prompt = apply_template(row[cfg.prompt_field].strip(), template, tokenizer, system)
        completion = row[cfg.completion_field]
    # r1-zero prompts end in "<think>" and completions usually start with it: keep one, not two.
    prefix = response_prefix(prompt)
    if prefix and completion.lstrip().startswith(prefix):
        completion = completion.lstrip()[len(prefix):]
    return {"prompt": prompt, "completion": completion}


def _chat_example(messages, i: int, source: str, cfg: SFTConfig, tokenizer, template: str,
                  system: str | None) -> tuple[str, str]:
    where = f"{source}: row {i} {cfg.messages_field!r}"
    if template != "chat":
        raise ValueError(f"{where} is a chat; chat rows need template='chat' (got {template!r}), "
                         f"or give {cfg.prompt_field!r}/{cfg.completion_field!r} rows")
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        raise ValueError(f"{where}: template 'chat' needs a tokenizer with a chat_template")
    if not isinstance(messages, list) or not all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in messages):
        raise ValueError(f"{where} must be a list of {{'role': str, 'content': str}} messages")
    replies = [j for j, m in enumerate(messages) if m["role"] == "assistant"]
    if not replies:
        raise ValueError(f"{where} has no assistant message to learn from")
    last = replies[-1]
    if last != len(messages) - 1:
        raise ValueError(f"{where} continues after the last assistant message (with a {messages[-1]['role']!r} one)")
    if last == 0:
        raise ValueError(f"{where} has no message before the assistant reply to prompt it")
    if not messages[last]["content"].strip():
        raise ValueError(f"{where} has an empty last assistant message")
    context = messages[:last]
    if system and context[0]["role"] != "system":
        context = [{"role": "system", "content": system}] + context
    prompt = tokenizer.apply_chat_template(context, tokenize=False, add_generation_prompt=True)
    return prompt, messages[last]["content"]


# ---------------------------------------------------------------- tokens


def tokenize_example(tokenizer, example: dict, max_len: int) -> dict:
    """input_ids = prompt + completion + EOS, cut to max_len; labels = input_ids with the prompt set to -100.

    Prompt and completion are tokenized apart, as at generation time (the engine tokenizes the prompt
    alone and the model continues it). A cut drops the end of the completion and its EOS: teaching the
    model to stop mid-thought would be worse than never showing it the end.
    """
    prompt_ids = tokenizer(example["prompt"], add_special_tokens=False)["input_ids"]
    completion_ids = tokenizer(example["completion"], add_special_tokens=False)["input_ids"]
    if not completion_ids or completion_ids[-1] != tokenizer.eos_token_id:
        completion_ids = completion_ids + [tokenizer.eos_token_id]
    input_ids = (prompt_ids + completion_ids)[:max_len]
    labels = ([IGNORE] * len(prompt_ids) + completion_ids)[:max_len]
    return {"input_ids": input_ids, "labels": labels, "truncated": len(prompt_ids) + len(completion_ids) > max_len}


def tokenize_examples(tokenizer, examples: list[dict], max_len: int) -> tuple[list[dict], int, int]:
    """(rows, truncated, dropped): an example whose prompt alone fills max_len has nothing to learn and is dropped."""
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no eos_token: SFT appends it so the model learns to stop")
    rows, truncated, dropped = [], 0, 0
    for ex in examples:
        row = tokenize_example(tokenizer, ex, max_len)
        if all(label == IGNORE for label in row["labels"][1:]):
            dropped += 1
            continue
        truncated += row["truncated"]
        rows.append(row)
    if truncated or dropped:
        console.print(f"[yellow]SFT: {truncated} of {len(examples)} examples are longer than max_len={max_len} tokens "
                      f"and lose the end of their completion; {dropped} dropped (prompt alone fills max_len)")
    if not rows:
        raise ValueError(f"every one of the {len(examples)} SFT examples has a prompt of max_len={max_len} tokens or more")
    return rows, truncated, dropped


def collate(rows: list[dict], pad_id: int) -> dict:
    """Right-pads to the longest row: input_ids, attention_mask, labels (-100 on pads), each (B, L)."""
    B, L = len(rows), max(len(r["input_ids"]) for r in rows)
    input_ids = torch.full((B, L), pad_id, dtype=torch.long)
    labels = torch.full((B, L), IGNORE, dtype=torch.long)
    attention_mask = torch.zeros((B, L), dtype=torch.long)
    for i, r in enumerate(rows):
        n = len(r["input_ids"])
        input_ids[i, :n] = torch.tensor(r["input_ids"])
        labels[i, :n] = torch.tensor(r["labels"])
        attention_mask[i, :n] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def count_targets(rows: list[dict]) -> int:
    """Tokens that carry loss: labelled positions after the first (position 0 has nothing predicting it)."""
    return sum(sum(label != IGNORE for label in r["labels"][1:]) for r in rows)


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


def split_eval(rows: list[dict], fraction: float, seed: int) -> tuple[list, list]:
    """(train, eval): a seeded random `fraction` of the *prompts* is held out (at least one when fraction > 0).

    Rows sharing a prompt (several kept samples of one question) stay on one side, or the eval loss
    would measure memorised questions.
    """
    if fraction <= 0:
        return list(rows), []
    prompt_of = [tuple(r["input_ids"][: sum(label == IGNORE for label in r["labels"][: len(r["input_ids"])])]) for r in rows]
    prompts = sorted(set(prompt_of))
    random.Random(f"sft-eval-{seed}").shuffle(prompts)
    n_eval = max(1, int(len(prompts) * fraction))
    if n_eval >= len(prompts):
        raise ValueError(f"eval_fraction={fraction} holds out all {len(prompts)} prompts; use more data or eval_fraction=0")
    held = set(prompts[:n_eval])
    return [r for r, p in zip(rows, prompt_of) if p not in held], [r for r, p in zip(rows, prompt_of) if p in held]


@functools.lru_cache(maxsize=2)
def _epoch_order(n: int, seed: int, epoch: int) -> tuple[int, ...]:
    order = list(range(n))
    random.Random(seed + epoch).shuffle(order)
    return tuple(order)


def train_sft(model, tokenizer, examples: list[dict], cfg: SFTConfig, out_dir, *, seed: int = 0, template: str = "r1-zero",
              system: str | None = None, stage: str = "sft") -> dict:
    """SFT on `examples` (from load_sft_examples: templated prompts). Resumes from OUT/checkpoints if present.
    `seed` (the run's) fixes the eval split and the batch order; template and system, those the examples
    were templated with, are recorded in OUT/final/r1lab.json.

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
    start, elapsed, train_loss, eval_loss = 0, 0.0, None, None
    if (ckpt := checkpoint.latest(out_dir)) is not None:
        state = checkpoint.load_state(ckpt)
        if state.get("data_id") != data_id:
            raise ValueError(f"{ckpt} was written by a run on other data or batch settings; use a new output directory "
                             f"or the same examples, batch_size, seed, eval_fraction and max_len to resume")
        restore_weights(model, ckpt)
        opt.load_state_dict(state["optimizer"]), sched.load_state_dict(state["scheduler"])
        checkpoint.set_rng_state(state["rng"])
        start, elapsed, train_loss, eval_loss = state["step"], state["elapsed"], state["train_loss"], state["eval_loss"]
        console.print(f"[green]resuming {stage} from {ckpt.name}")
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
            lr = opt.param_groups[0]["lr"]
            opt.zero_grad(set_to_none=True)
            train_loss, tokens = accumulate_gradients(model, batch, cfg.micro_batch_size, pad_id)
            grad_norm = float(torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm))
            problem = step_problem({"loss": train_loss, "grad_norm": grad_norm})
            if problem:  # divergence guard: no update from a non-finite loss or gradient
                opt.zero_grad(set_to_none=True)
            else:
                opt.step()
            bad.record(not problem, step, problem)
            sched.step()
            row = {"stage": stage, "step": step, "epoch": round(epoch + (index + 1) / steps_per_epoch, 4),
                   "loss": train_loss, "lr": lr, "tokens": tokens, "grad_norm": grad_norm,
                   "step_time": round(time.time() - t0, 3), "skipped_steps": bad.total}
            if held_out and ((cfg.eval_every and step % cfg.eval_every == 0) or step == total):
                row["eval_loss"] = eval_loss = evaluate_loss(model, held_out, cfg.micro_batch_size, pad_id)
            append_metrics(out_dir / "metrics.jsonl", row)
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
                                                      "system": system})
    return {"steps": total, "epochs": cfg.epochs, "train_loss": train_loss, "eval_loss": eval_loss,
            "wall_seconds": round(elapsed, 1), "examples": len(train), "eval_examples": len(held_out),
            "truncated": truncated, "dropped": dropped}


def sft_from_config(model_path: str, data, cfg: SFTConfig, out_dir, *, template: str = "r1-zero", system: str | None = None,
                    seed: int = 0, device: str = "auto", dtype: str = "auto", stage: str = "sft", lora=None, log=None) -> dict:
    """Loads a model + tokenizer, reads `data` (a file, a save_to_disk dir or rows) and runs train_sft; with
    `lora` (config.LoRAConfig, r > 0) it trains LoRA adapters; `log` (config.LogConfig) names trackers to report to."""
    settings = {"model": model_path, "template": template, "system": system, "seed": seed, "device": device, "dtype": dtype,
                "sft": cfg.model_dump(), "lora": lora.model_dump() if lora is not None else None}
    with run_lock(out_dir), reporting(log, Path(out_dir), settings) as trackers:  # `r1lab sft --out`: one process per directory
        result = _sft_from_config(model_path, data, cfg, out_dir, template=template, system=system, seed=seed,
                                  device=device, dtype=dtype, stage=stage, lora=lora)
        trackers.summary([result])
        return result


def _sft_from_config(model_path, data, cfg: SFTConfig, out_dir, *, template, system, seed, device, dtype, stage, lora):
    lora_on = lora is not None and lora.enabled
    model, tokenizer = load_model(model_path, device=device, dtype=dtype, master_weights=not lora_on)  # LoRA: the base is frozen
    if lora_on:
        from r1lab.models.lora import add_lora

        model = add_lora(model, lora, seed)
    if system is None:
        system = trained_system(model_path, template)  # the prompt the model was built for (tiny world: none)
    examples = load_sft_examples(data, cfg, tokenizer, template=template, system=system)
    return train_sft(model, tokenizer, examples, cfg, out_dir, seed=seed, template=template, system=system, stage=stage)


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
