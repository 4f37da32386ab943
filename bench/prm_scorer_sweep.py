"""The process reward model's own knobs, tuned on its held-out labels before any policy pushes on it.

Trains the r1-prm recipe's scorer (sft/scorer.py) again from the base, on a finished run's base samples, for each
(lr, epochs) pair, and prints the held-out share of steps judged right, of wrong steps caught and of answers
judged right. The recipe ships the pair that did best here (docs/FAILED.md).

    python bench/prm_scorer_sweep.py RUN_DIR [--lrs 1e-4,3e-4,1e-3] [--epochs 1,2,4] [--supervision process]

RUN_DIR: an r1-prm run (its base-samples stage and config.yaml).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from _common import ROOT  # noqa: F401  (puts the repository on sys.path)


def main() -> None:
    import torch
    from transformers import AutoModelForTokenClassification
    from transformers.utils import logging as hf_logging

    from r1lab.models.io import load_tokenizer
    from r1lab.recipes.load import load_config
    from r1lab.recipes.run import Run
    from r1lab.sft.scorer import labelled_rows, train_scorer
    from r1lab.store.logs import read_jsonl

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path)
    p.add_argument("--lrs", default="1e-4,3e-4,1e-3")
    p.add_argument("--epochs", default="1,2,4")
    p.add_argument("--supervision", default="process", choices=["process", "outcome"])
    a = p.parse_args()
    cfg = load_config(str(a.run / "config.yaml"))
    run = Run(cfg, a.run)
    stage = next(st for st in cfg.stages if st.kind == "reward-model")
    rows = labelled_rows(read_jsonl(a.run / "base-samples" / "samples.jsonl", strict=True), run.task_of(stage), a.supervision)
    base = run.model_path("base")
    tokenizer = load_tokenizer(base)
    hf_logging.set_verbosity_error()
    results = []
    for lr in map(float, a.lrs.split(",")):
        for epochs in map(int, a.epochs.split(",")):
            model = AutoModelForTokenClassification.from_pretrained(base, num_labels=1, dtype=torch.float32)
            model.config.pad_token_id = tokenizer.pad_token_id
            settings = cfg.stage_sft(stage).model_copy(update={"lr": lr, "epochs": epochs})
            t0 = time.time()
            out = train_scorer(model, tokenizer, rows, settings, Path(f"/tmp/prm-sweep/{lr}-{epochs}"), seed=cfg.seed,
                               stage="sweep")["after"]
            results.append({"lr": lr, "epochs": epochs, **out, "seconds": round(time.time() - t0, 1)})
            print(f"lr {lr:g} epochs {epochs}: steps right {out['step_accuracy']:.3f}, wrong steps caught "
                  f"{out['wrong_step_recall']:.3f}, answers right {out['answer_accuracy']:.3f} ({results[-1]['seconds']} s)",
                  flush=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
