"""Shared pieces of the benchmarks: tiny-world models built from configs, prompts, the matmul peak."""

from __future__ import annotations

import os
import resource
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# name -> PretrainConfig fields; all share the tiny world's 438-token tokenizer.
SIZES = {
    "1M": dict(hidden_size=128, intermediate_size=384, layers=4, heads=4),
    "2M": dict(hidden_size=192, intermediate_size=512, layers=4, heads=4),
    "10M": dict(hidden_size=320, intermediate_size=864, layers=8, heads=5),
    "50M": dict(hidden_size=512, intermediate_size=1536, layers=15, heads=8),
}


# Pretraining budgets of the benchmark's pretrained models: r1lab's own tiny-world pretraining (cached
# like the demo's base; "1M" is the demo's base itself). Enough to learn the format and to end with EOS,
# so completions stop at different lengths and rewards differ within groups, as in real runs.
PRETRAIN = {"1M": dict(steps=1600), "2M": dict(steps=500), "10M": dict(steps=160, lr=3e-3), "50M": dict(steps=100, lr=2e-3)}


def pretrained_model_dir(size: str, build: bool = True) -> Path | None:
    """The tiny-world base of `size`, pretrained by r1lab (built and cached on first use, minutes: 2M ~5 min,
    10M ~10 min on 2 cores); None if it is not cached and build is False."""
    from r1lab.config import PretrainConfig
    from r1lab.tinyworld.build import cache_dir, pretrain

    cfg = PretrainConfig(**SIZES[size], **PRETRAIN[size])
    if (cache_dir(cfg) / "r1lab.json").exists():
        return cache_dir(cfg)
    if not build:
        return None
    print(f"building the pretrained {size} model once ({cfg.steps} steps of r1lab's pretraining; cached in {cache_dir(cfg)})", flush=True)
    return pretrain(cfg)


def tokenizer_dir() -> Path:
    """A tiny-world tokenizer: the cached base model's if there is one, else one trained here (seconds)."""
    from r1lab.tinyworld.build import cache_root

    found = sorted(cache_root().glob("tinyworld-*/tokenizer.json"))
    if found:
        return found[0].parent
    out = Path(os.environ.get("TMPDIR", "/tmp")) / "r1lab-bench-tokenizer"
    if not (out / "tokenizer.json").exists():
        from r1lab.config import PretrainConfig
        from r1lab.tinyworld.build import corpus, train_tokenizer
        from r1lab.tinyworld.problems import TinyWorldTask

        cfg = PretrainConfig(corpus_docs=4000)
        tok = train_tokenizer(corpus(cfg, TinyWorldTask("tinyworld")), cfg.vocab_size)
        out.mkdir(parents=True, exist_ok=True)
        tok.save_pretrained(out)
        (out / "r1lab.json").write_text('{"system": ""}')
    return out


def base_model_dir() -> Path | None:
    """The pretrained tiny-world base (the default PretrainConfig), if it is cached: needed for time-to-accuracy."""
    from r1lab.config import PretrainConfig
    from r1lab.tinyworld.build import cache_dir

    d = cache_dir(PretrainConfig())
    return d if (d / "r1lab.json").exists() else None


def make_model_dir(size: str, out: Path, seed: int = 0) -> Path:
    """A randomly initialised tiny-world Llama of `size`, saved as an HF directory with the tokenizer."""
    from r1lab.config import PretrainConfig
    from r1lab.models.io import load_tokenizer
    from r1lab.tinyworld.build import build_model

    out = Path(out)
    if (out / "r1lab.json").exists():
        return out
    tok = load_tokenizer(str(tokenizer_dir()))
    cfg = PretrainConfig(seed=seed, max_len=256, **SIZES[size])
    model = build_model(cfg, len(tok))
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    (out / "r1lab.json").write_text('{"system": ""}')
    return out


def n_params(model) -> int:
    """N of the 2NT / 6NT FLOP counts: every parameter, tied ones once (the tiny world's input embedding
    is its LM head, a matmul per token)."""
    return sum(p.numel() for p in model.parameters())


def matmul_peak(seconds: float = 1.0, n: int = 1024) -> float:
    """fp32 GFLOP/s of a plain large torch.mm on this machine, now (best of a few timed runs)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best, t_end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = max(best, 2 * n**3 / (time.perf_counter() - t0) / 1e9)
    return best


def peak_rss_mb() -> float:
    """This process's peak resident memory. Linux: VmHWM, the peak of this program's own memory. Not
    ru_maxrss there: a child started by fork + exec inherits its parent's peak in it (the forked copy was
    as large as the parent), so a child of a parent that pretrained a model in-process reported the parent's
    size, whatever it used itself."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
