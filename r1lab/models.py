"""HF models in and out: check a device and dtype, load any causal LM + tokenizer on them, the autocast every
forward pass runs in, transformers' name for a KV cache, load saved weights into a model, save a model
atomically (a LoRA model: merged, with its adapter beside), turn on gradient checkpointing, and read the
system text an r1lab model was trained with.

Mixed precision: `dtype` is what the passes compute in. A model whose weights train in full is loaded in
fp32 whatever `dtype` (`load_model(..., master_weights=True)`): gradients and AdamW's moments are then fp32
too, and every forward runs under `autocast(model)`, which computes the matmuls and attention in bf16. In
pure bf16 an update smaller than about 1/256 of a weight is rounded away (an RMSNorm weight near 1.0 never
moves at lr 1e-5). Models nothing updates (inference, LoRA's frozen base) are loaded in `dtype` itself.
"""

from __future__ import annotations

import functools
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


def native_bf16(device: torch.device) -> bool:
    """Whether `device` computes in bf16 in hardware. A CUDA GPU before Ampere (V100, T4) only emulates it,
    many times slower: torch's is_bf16_supported() says yes there unless emulation is excluded."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    return True  # CPU (torch's bf16 kernels) and MPS (macOS 14+) run it


def pick_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """The dtype the forward passes compute in (RunConfig.dtype)."""
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" and native_bf16(device) else torch.float32
    return {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}[dtype]


def check_device(device: str = "auto", dtype: str = "auto") -> None:
    """A ConfigError naming `device` or `dtype` when this machine cannot honour them: before any model work,
    not as a CUDA error once a model is loaded."""
    from r1lab.config import ConfigError

    try:
        dev = pick_device(device)
    except (RuntimeError, ValueError):
        raise ConfigError(f"device: {device!r} is not a device (use auto, cpu, cuda, cuda:N or mps)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device: {device!r} needs CUDA, which this machine does not have (torch {torch.__version__}, "
                              f"{'built without CUDA' if torch.version.cuda is None else 'no GPU visible'}); use device=cpu or auto")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"device: {device!r}, but this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError(f"device: {device!r} needs Apple's MPS, which this machine does not have; use device=cpu or auto")
    if dtype in ("bf16", "bfloat16") and not native_bf16(dev):
        name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else dev.type
        raise ConfigError(f"dtype: bf16 is not native on {name} (it would be emulated, many times slower); use dtype=fp32 or auto")


def load_tokenizer(name_or_path: str, what: str = "model", **hub_options):
    """The tokenizer of a local model directory or hub id; `hub_options` (revision, trust_remote_code) go to
    from_pretrained. `what` names the setting in errors."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    from r1lab.hub import check_source, unreachable

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

    from r1lab.hub import check_source, unreachable

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


def set_compute_dtype(model, dtype: torch.dtype) -> None:
    """Records the dtype `model`'s forward passes compute in (read by `compute_dtype`; copies and wrappers
    such as peft's and FSDP2's keep it)."""
    model.r1lab_compute_dtype = dtype


def compute_dtype(model) -> torch.dtype:
    """The dtype `model`'s forward passes compute in: the one recorded by load_model, else its weights'."""
    recorded = getattr(model, "r1lab_compute_dtype", None)
    return recorded if recorded is not None else next(model.parameters()).dtype


def autocast(model):
    """The context every forward pass of `model` runs in (training passes, the reference's, sampling):
    torch's autocast to its compute dtype. In bf16 the matmuls and attention compute in bf16 from the
    (fp32 master) weights, while norms, the residual stream and the log-probs stay fp32, as torch's AMP
    does it; in fp32 it changes nothing. Backward passes run outside it, as torch recommends."""
    dtype = compute_dtype(model)
    return torch.autocast(model.device.type, dtype=dtype, enabled=dtype != torch.float32)


@functools.cache
def _cache_field() -> str:
    """transformers' name for a forward's KV cache, as argument and as output field: `cache` in newer 5.x
    (5.24 warns that `past_key_values` goes in 5.40), `past_key_values` in older ones (5.19 has no `cache`)."""
    from transformers.modeling_outputs import CausalLMOutputWithPast

    return "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"


def with_cache(cache) -> dict:
    """The keyword argument that hands a forward the KV cache `cache`: model(..., **with_cache(cache))."""
    return {_cache_field(): cache}


def cache_of(output):
    """The KV cache a forward with use_cache=True returned."""
    return getattr(output, _cache_field())


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


def restore_weights(model, model_dir) -> None:
    """Loads what save_pretrained wrote to `model_dir` (a checkpoint) into `model`: a LoRA model's adapter,
    any other model's every weight."""
    from r1lab.lora import is_lora, load_adapter

    if is_lora(model):
        load_adapter(model, model_dir)
    else:
        model.load_state_dict(load_weights(model_dir, model))


def rebuilt(model, state: dict):
    """A new model of `model`'s class and config (a copy of it) holding the tensors of `state` (not copies),
    `model`'s non-persistent buffers (RoPE's inv_freq) and generation config, in eval mode. Built on the
    meta device: no memory for weights about to be replaced."""
    import copy

    with torch.device("meta"):
        plain = type(model)(copy.deepcopy(model.config))  # saving writes its dtype into the config: not `model`'s
    plain.load_state_dict(state, assign=True)
    for name, buffer in model.named_buffers():  # non-persistent buffers are not in a state dict
        owner, _, leaf = name.rpartition(".")
        setattr(plain.get_submodule(owner), leaf, buffer)
    if getattr(model.config, "tie_word_embeddings", False):
        plain.tie_weights()
    plain.generation_config = model.generation_config
    return plain.eval()


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

    from r1lab.lora import ADAPTER_DIR, is_lora, merged_model
    from r1lab.store.disk import writing

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


def enable_gradient_checkpointing(model) -> None:
    """HF's gradient checkpointing on every layer, non-reentrant: a layer keeps only its input and is
    recomputed in the backward pass. (Non-reentrant checkpoints need no input that requires grad, so the
    input hook HF adds for that is removed: a hooked model would lose the engine's fast decoder.)"""
    from r1lab.config import ConfigError

    hf = model.get_base_model() if hasattr(model, "get_base_model") else model  # under a LoRA wrapper
    if not getattr(hf, "supports_gradient_checkpointing", False):
        raise ConfigError(f"gradient_checkpointing: {type(hf).__name__} does not support gradient checkpointing; "
                          "set gradient_checkpointing=false")
    enable = getattr(hf, "activation_checkpointing_enable", None)  # transformers >= 5.x; the old name warns there
    if enable is not None:
        enable({"use_reentrant": False})
    else:
        hf.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    try:
        hf.disable_input_require_grads()
    except AttributeError:  # transformers versions that added no such hook
        pass


def gradient_checkpointing_on(model) -> bool:
    """Whether any layer of `model` is set to checkpoint (HF's flag; it acts only in training mode with grad)."""
    return any(getattr(m, "gradient_checkpointing", False) is True for m in model.modules())


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
