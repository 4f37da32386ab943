"""HF models in and out: load any causal LM + tokenizer from a local directory or hub id on a checked
device and dtype, restore a checkpoint's weights, save a model atomically (a LoRA model: merged, with its
adapter beside), and read the system text an r1lab model was trained with."""

from __future__ import annotations

from pathlib import Path

import torch

from r1lab.models.device import check_device, compute_dtype, pick_device, pick_dtype, set_compute_dtype
from r1lab.models.weights import load_weights, rebuilt


def load_tokenizer(name_or_path: str, what: str = "model", **hub_options):
    """The tokenizer of a local model directory or hub id; `hub_options` (revision, trust_remote_code) go to
    from_pretrained. `what` names the setting in errors."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    from r1lab.models.hub import check_source, unreachable

    name_or_path = str(name_or_path)
    check_source(name_or_path, "model", what, hub_options.get("revision"))
    path = Path(name_or_path).expanduser()
    if (path / "tokenizer.json").exists() and (path / "r1lab.json").exists():
        # Our own tokenizers load through the generic fast class: AutoTokenizer may pick the
        # architecture's class (e.g. Qwen2) and silently change how spaces are handled.
        tok = PreTrainedTokenizerFast.from_pretrained(str(path))
    else:
        try:
            tok = AutoTokenizer.from_pretrained(name_or_path, **hub_options)
        except OSError as e:
            raise unreachable(name_or_path, "model", what, e) from e
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(name_or_path: str, device: str = "auto", dtype: str = "auto", master_weights: bool = False,
               what: str = "model", **hub_options):
    """Returns (model, tokenizer) on the chosen device, in eval mode, its passes computing in `dtype` (under
    `autocast(model)`). master_weights: its own weights will train (full fine-tuning, not LoRA): they are
    loaded in fp32, the master copy the optimizer updates; otherwise in `dtype`. `name_or_path`: a local
    directory or any hub id; `hub_options` (revision, trust_remote_code) go to from_pretrained; `what` names
    the setting in errors."""
    from transformers import AutoModelForCausalLM

    from r1lab.models.hub import check_source, unreachable

    name_or_path = str(name_or_path)
    check_source(name_or_path, "model", what, hub_options.get("revision"))
    check_device(device, dtype)
    dev = pick_device(device)
    compute = pick_dtype(dtype, dev)
    try:
        model = AutoModelForCausalLM.from_pretrained(name_or_path, dtype=torch.float32 if master_weights else compute,
                                                     **hub_options)
    except OSError as e:
        if Path(name_or_path).expanduser().exists():
            raise
        raise unreachable(name_or_path, "model", what, e) from e
    set_compute_dtype(model, compute)
    model.to(dev).eval()
    return model, load_tokenizer(name_or_path, what, **hub_options)


def restore_weights(model, model_dir) -> None:
    """Loads what save_pretrained wrote to `model_dir` (a checkpoint) into `model`: a LoRA model's adapter,
    any other model's every weight."""
    from r1lab.models.lora import is_lora, load_adapter

    if is_lora(model):
        load_adapter(model, model_dir)
    else:
        model.load_state_dict(load_weights(model_dir, model))


def save_model(model, tokenizer, out, meta: dict | None = None) -> Path:
    """Saves model + tokenizer (+ r1lab.json with `meta`) to `out` atomically: written to a temporary
    directory, then renamed, so `out` is complete or absent, never half-written. A LoRA model is saved
    merged (any transformers or vLLM loads it as a plain model), its adapter alone in `out`/adapter.

    The weights are saved in the model's compute dtype: a bf16 run's fp32 master weights in bf16. That is
    half the size, the precision the model was trained to compute in, and what users of a bf16 run (and
    of released checkpoints) expect; a stage that trains it further loads it back into fp32 masters with a
    fresh optimizer anyway. Checkpoints (store/checkpoint.py) keep the fp32 masters: a resume is exact."""
    import json
    import os
    import shutil

    from r1lab.disk import writing
    from r1lab.models.lora import ADAPTER_DIR, is_lora, merged_model

    out = Path(out)
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    dtype = compute_dtype(model)
    plain = merged_model(model) if is_lora(model) else model
    if plain.dtype != dtype:
        plain = rebuilt(plain, {k: v.to(dtype) if v.is_floating_point() else v for k, v in plain.state_dict().items()})
    with writing("model", out, cleanup=tmp):  # a full disk: said plainly, the partial directory removed
        plain.save_pretrained(tmp)
        if is_lora(model):
            model.save_pretrained(tmp / ADAPTER_DIR)
        tokenizer.save_pretrained(tmp)
        if meta is not None:  # also makes load_tokenizer keep our tokenizer class
            (tmp / "r1lab.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False))
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return out


def r1lab_meta(model_dir) -> dict:
    """What r1lab wrote beside a model it built (r1lab.json): template, system, tools...; {} for any other model."""
    import json

    try:
        meta = json.loads((Path(model_dir).expanduser() / "r1lab.json").read_text())
    except (OSError, ValueError):
        return {}
    return meta if isinstance(meta, dict) else {}


def trained_tools(model_dir) -> tuple[list[str], int]:
    """The tools (import paths) an r1lab-built model was trained to call and its episodes' max_turns; ([], 1) if none."""
    meta = r1lab_meta(model_dir)
    tools = meta.get("tools")
    if not isinstance(tools, list) or not all(isinstance(t, str) for t in tools):
        return [], 1
    return tools, int(meta.get("max_turns", 3))


def trained_system(model_dir, template: str | None = None) -> str | None:
    """The system text an r1lab-built model was trained with (its r1lab.json), if it says one and was
    trained with `template` (None: any); else None."""
    meta = r1lab_meta(model_dir)
    if not isinstance(meta.get("system"), str):
        return None
    return meta["system"] if template is None or meta.get("template", template) == template else None
