"""The device and dtype a model runs on, checked before any model work, and mixed precision.

`dtype` is what the passes compute in. A model whose weights train in full is loaded in fp32 whatever
`dtype` (`io.load_model(..., master_weights=True)`): gradients and AdamW's moments are then fp32 too, and
every forward runs under `autocast(model)`, which computes the matmuls and attention in bf16. In pure bf16
an update smaller than about 1/256 of a weight is rounded away (an RMSNorm weight near 1.0 never moves at
lr 1e-5). Models nothing updates (inference, LoRA's frozen base) are loaded in `dtype` itself.
"""

from __future__ import annotations

import torch

from r1lab.errors import ConfigError


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
