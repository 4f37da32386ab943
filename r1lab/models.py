"""HF models in and out: load any causal LM + tokenizer on a device and dtype, load saved weights into a
model, save a model atomically, and read the system text an r1lab model was trained with."""

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


def load_weights(model_dir, model) -> dict:
    """The state dict saved in `model_dir` (its *.safetensors files), on the model's device, ready for
    `model.load_state_dict`; a tied LM head gets the embedding's tensor."""
    from safetensors.torch import load_file

    state = {}
    for f in sorted(Path(model_dir).glob("*.safetensors")):
        state.update(load_file(str(f), device=str(model.device)))
    if "lm_head.weight" not in state and getattr(model.config, "tie_word_embeddings", False):
        state["lm_head.weight"] = state["model.embed_tokens.weight"]
    return state


def save_model(model, tokenizer, out, meta: dict | None = None) -> Path:
    """Saves model + tokenizer (+ r1lab.json with `meta`) to `out` atomically: written to a temporary
    directory, then renamed, so `out` is complete or absent, never half-written."""
    import json
    import os
    import shutil

    out = Path(out)
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    if meta is not None:  # also makes load_tokenizer keep our tokenizer class
        (tmp / "r1lab.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False))
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return out


def trained_system(model_dir, template: str | None = None) -> str | None:
    """The system text an r1lab-built model was trained with (its r1lab.json), if it says one and was
    trained with `template` (None: any); else None."""
    import json

    try:
        meta = json.loads((Path(model_dir).expanduser() / "r1lab.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or not isinstance(meta.get("system"), str):
        return None
    return meta["system"] if template is None or meta.get("template", template) == template else None
