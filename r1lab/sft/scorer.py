"""Trains a process or outcome reward model (rewards/learned.py) on sampled responses, each labelled by the task's
exact checker: every step (process supervision, the PRM the R1 paper tried) or the answer alone (outcome
supervision, an ORM). The checker stands in for PRM800K's human annotators; it never errs, so whatever the policy
later exploits is the learned model's own error, not a labelling one.

A binary cross-entropy on the one-output head's logit at each labelled token (a step's last token; an ORM's
response end), over the whole model. A tenth of the prompts (sft.eval_fraction, at least one) is held out: the
scorer's accuracy on their steps, on their wrong steps alone and on their answers says how much it can be trusted
before any policy pushes on it. The stage is short (seconds to minutes): a crash reruns it from the start.
"""

from __future__ import annotations

import random
from pathlib import Path

import torch
import torch.nn.functional as F

from r1lab.config import SFTConfig
from r1lab.data.example import Example, Task
from r1lab.data.steps import step_ends
from r1lab.progress import progress_bar
from r1lab.rewards.learned import scored_text, step_positions
from r1lab.store.logs import append_jsonl
from r1lab.train.optim import lr_lambda
from r1lab.train.threads import ThreadFit


def labelled_rows(rows: list[dict], task: Task, supervision: str) -> list[dict]:
    """generate-stage rows (every sample, kept or not) as {"id", "prompt", "response", "labels"}: one label per step
    (process) or the answer's correctness on the last step (outcome; the other steps None)."""
    examples = {e.id: e for e in task.examples("train")}
    out = []
    for row in rows:
        example = examples.get(row["id"]) or Example(id=row["id"], prompt=row["prompt"], answer=row["answer"])
        steps = len(step_ends(row["response"]))
        if supervision == "outcome":
            labels = [None] * (steps - 1) + [bool(row["scores"]["correct"])]
        else:
            labels = task.step_labels(row["response"], example)
            if labels is None:
                raise ValueError(f"task {task.name!r} has no step checker (Task.step_labels), which process supervision "
                                 "needs; use supervision: outcome, or a task that labels steps (the tiny world's)")
        out.append({"id": row["id"], "prompt": row["prompt"], "response": row["response"], "labels": labels})
    return out


def encode(rows: list[dict], tokenizer, context: int | None) -> list[dict]:
    """Each row's token ids and its labelled (position, label) pairs."""
    encoded = []
    for row in rows:
        text, offset = scored_text(row["prompt"], row["response"])
        enc = tokenizer(text, truncation=context is not None, max_length=context, return_offsets_mapping=True)
        positions = step_positions(enc["offset_mapping"], [offset + e for e in step_ends(row["response"])])
        pairs = [(p, float(label)) for p, label in zip(positions, row["labels"]) if label is not None]
        encoded.append({"id": row["id"], "input_ids": enc["input_ids"], "pairs": pairs})
    return encoded


def _logits_at(model, batch: list[dict], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The head's logit at every labelled token of `batch` (L,) and the labels (L,)."""
    width = max(len(r["input_ids"]) for r in batch)
    ids = torch.tensor([r["input_ids"] + [pad_id] * (width - len(r["input_ids"])) for r in batch])
    mask = torch.tensor([[1] * len(r["input_ids"]) + [0] * (width - len(r["input_ids"])) for r in batch])
    logits = model(input_ids=ids.to(model.device), attention_mask=mask.to(model.device)).logits[..., 0].float()  # (B, T)
    rows = torch.tensor([i for i, r in enumerate(batch) for _ in r["pairs"]], dtype=torch.long)
    cols = torch.tensor([p for r in batch for p, _ in r["pairs"]], dtype=torch.long)
    labels = torch.tensor([y for r in batch for _, y in r["pairs"]])
    return logits[rows.to(logits.device), cols.to(logits.device)], labels.to(logits.device)


@torch.no_grad()
def evaluate_scorer(model, encoded: list[dict], pad_id: int, batch_size: int = 32) -> dict:
    """Accuracy at 0.5 on every labelled step, on the wrong ones alone, and on each row's last (its answer)."""
    model.eval()
    right, wrong_caught, wrong, last_right = 0, 0, 0, 0
    labelled = [r for r in encoded if r["pairs"]]
    for start in range(0, len(labelled), batch_size):
        batch = labelled[start:start + batch_size]
        logits, labels = _logits_at(model, batch, pad_id)
        said = logits > 0
        right += int((said == labels.bool()).sum())
        wrong_caught += int((~said & ~labels.bool()).sum())
        wrong += int((~labels.bool()).sum())
        ends = torch.tensor([len(r["pairs"]) for r in batch]).cumsum(0) - 1
        last_right += int((said[ends] == labels.bool()[ends]).sum())
    steps = sum(len(r["pairs"]) for r in labelled)
    return {"step_accuracy": right / max(steps, 1), "wrong_step_recall": wrong_caught / wrong if wrong else None,
            "answer_accuracy": last_right / max(len(labelled), 1), "steps": steps, "wrong_steps": wrong}


def train_scorer(model, tokenizer, rows: list[dict], cfg: SFTConfig, out: Path, *, seed: int, stage: str) -> dict:
    """Trains `model` (a one-output token classifier) on `labelled_rows`; logs each step to out/metrics.jsonl and
    returns the held-out evaluation before and after training."""
    context = getattr(model.config, "max_position_embeddings", None)
    ids = sorted({r["id"] for r in rows})
    held = set(random.Random(seed).sample(ids, max(1, int(len(ids) * (cfg.eval_fraction or 0.1)))))
    train = encode([r for r in rows if r["id"] not in held], tokenizer, context)
    test = encode([r for r in rows if r["id"] in held], tokenizer, context)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    torch.manual_seed(seed)
    before = evaluate_scorer(model, test, pad_id)
    steps_per_epoch = -(-len(train) // cfg.batch_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg.warmup_steps, cfg.epochs * steps_per_epoch,
                                                                      cfg.min_lr_ratio))
    rng, step, fit_threads = random.Random(seed), 0, ThreadFit(enabled=model.device.type == "cpu")  # beside busy processes
    out.mkdir(parents=True, exist_ok=True)
    with progress_bar(f"{stage}: reward model, {len(train)} samples x {cfg.epochs} epochs", cfg.epochs * steps_per_epoch) as bar:
        for _ in range(cfg.epochs):
            rng.shuffle(train)
            for start in range(0, len(train), cfg.batch_size):
                model.train()
                fit_threads()
                batch = [r for r in train[start:start + cfg.batch_size] if r["pairs"]]
                if not batch:
                    continue
                logits, labels = _logits_at(model, batch, pad_id)
                loss = F.binary_cross_entropy_with_logits(logits, labels)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
                optimizer.step()
                schedule.step()
                step += 1
                append_jsonl(out / "metrics.jsonl", [{"stage": stage, "step": step, "loss": loss.item(),
                                                      "grad_norm": float(grad_norm), "lr": schedule.get_last_lr()[0]}])
                bar(1, loss=f"{loss.item():.4f}")
    after = evaluate_scorer(model, test, pad_id)
    append_jsonl(out / "metrics.jsonl", [{"stage": stage, "step": step, **{f"eval_{k}": v for k, v in after.items()}}])
    return {"samples": len(train), "held_out_samples": len(test), "steps": step, "before": before, "after": after}
