"""Load any HF causal LM + tokenizer on a device and dtype."""

from __future__ import annotations

from pathlib import Path

import torch


def pick_device(device: str = "auto") -> torch.device:
    if device != "auto":
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def pick_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    return {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}[dtype]


def _check_exists(name_or_path: str, what: str) -> None:
    name_or_path = str(name_or_path)
    # A string that looks like a path but is missing must not be sent to the hub as a repo id.
    looks_local = name_or_path.startswith((".", "/", "~")) or Path(name_or_path).suffix != "" or name_or_path.count("/") > 1
    if looks_local and not Path(name_or_path).expanduser().exists():
        raise FileNotFoundError(f"{what} '{name_or_path}' does not exist (expected a local directory or a hub name like 'Qwen/Qwen2.5-0.5B')")


def load_tokenizer(name_or_path: str):
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    name_or_path = str(name_or_path)
    _check_exists(name_or_path, "tokenizer")
    path = Path(name_or_path).expanduser()
    if (path / "tokenizer.json").exists() and (path / "r1lab.json").exists():
        # Our own tokenizers load through the generic fast class: AutoTokenizer may pick the
        # architecture's class (e.g. Qwen2) and silently change how spaces are handled.
        tok = PreTrainedTokenizerFast.from_pretrained(str(path))
    else:
        tok = AutoTokenizer.from_pretrained(name_or_path)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(name_or_path: str, device: str = "auto", dtype: str = "auto"):
    """Returns (model, tokenizer) on the chosen device, in eval mode."""
    from transformers import AutoModelForCausalLM

    name_or_path = str(name_or_path)
    _check_exists(name_or_path, "model")
    dev = pick_device(device)
    model = AutoModelForCausalLM.from_pretrained(name_or_path, dtype=pick_dtype(dtype, dev))
    model.to(dev).eval()
    return model, load_tokenizer(name_or_path)
