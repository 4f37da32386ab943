"""LoRA through peft: add adapters to a model, check what they target, the base model as RL's reference
(the adapter disabled: no second copy of the weights), the merged model final/ holds, checkpoints' adapters.

    model = add_lora(model, cfg.lora, seed)   # only the adapters train; the base weights stay as loaded
    ref = AdapterDisabled(model)              # KL's reference: the base the policy started from
    save_model(model, ...)                    # models.py: merged_model(model) + the adapter in ADAPTER_DIR
"""

from __future__ import annotations

import re
import sys
import warnings
from pathlib import Path

import torch

ADAPTER_DIR = "adapter"  # final/adapter: the adapter alone (peft's PeftModel.from_pretrained reads it)
ADAPTER_FILE = "adapter_model.safetensors"  # what peft's save_pretrained writes


def is_lora(model) -> bool:
    """Whether `model` is a peft model. peft is an optional extra: a model cannot be one if peft was never imported."""
    peft = sys.modules.get("peft")
    return peft is not None and isinstance(model, peft.PeftModel)


def add_lora(model, cfg, seed: int = 0):
    """`model` with LoRA adapters (cfg: config.LoRAConfig) on cfg.target_modules; only they require grad.
    The adapters' random init (B = 0, so the model starts equal to its base) is seeded by `seed`, without
    moving torch's global random state."""
    from r1lab.errors import ConfigError

    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        raise ConfigError("lora.r > 0 needs peft: pip install 'r1lab[lora]'") from None
    check_targets(model, cfg.target_modules)
    config = LoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=cfg.target_modules,
                        task_type="CAUSAL_LM")
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        torch.manual_seed(seed)
        # peft reads transformers' old name for the checkpointing flag, which transformers 5 deprecates: noise
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        return get_peft_model(model, config)


def _targetable(module) -> bool:
    # the layer types peft's LoRA adapts (transformers' Conv1D: GPT-2's linear layers)
    return isinstance(module, (torch.nn.Linear, torch.nn.Embedding, torch.nn.Conv1d, torch.nn.Conv2d)) \
        or type(module).__name__ == "Conv1D"


def check_targets(model, target_modules: list[str] | str) -> None:
    """A ConfigError naming lora.target_modules when a target matches no layer of `model` (peft's rule: a
    list entry matches a module's name or its last parts, a string is a regex of full names), listing the
    layers the model has. `model` may be a skeleton on the meta device: only names and types are read."""
    from r1lab.errors import ConfigError

    layers = {name: m for name, m in model.named_modules() if _targetable(m)}
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if target_modules == "all-linear":
        matched = [n for n, m in layers.items() if isinstance(m, torch.nn.Linear) and m is not head]
        missing = [] if matched else ["all-linear"]
    elif isinstance(target_modules, str):
        matched = [n for n in layers if re.fullmatch(target_modules, n)]
        missing = [] if matched else [target_modules]
    else:
        hits = {t: [n for n in layers if n == t or n.endswith("." + t)] for t in target_modules}
        matched = [n for names in hits.values() for n in names]
        missing = [t for t, names in hits.items() if not names]
    kinds = sorted({n.rsplit(".", 1)[-1] for n in layers})
    if missing:
        raise ConfigError(f"lora.target_modules: {', '.join(map(repr, missing))} matches no layer of {type(model).__name__}; "
                          f"its layers are {', '.join(kinds) or 'none peft can adapt'}")
    tied = getattr(getattr(model, "config", None), "tie_word_embeddings", False)
    if tied and head is not None and any(layers[n] is head for n in matched):
        raise ConfigError("lora.target_modules: matches the LM head, whose weights this model shares with its embeddings "
                          "(merging would change both); leave the head out")


class AdapterDisabled:
    """The base model under a LoRA model: its forward with the adapter disabled, in eval mode (as the
    frozen copy a full model's reference is). RL's reference with LoRA: the weights the policy started
    from, without a second copy of them."""

    def __init__(self, model):
        from r1lab.models.device import compute_dtype, set_compute_dtype

        self.model = model
        set_compute_dtype(self, compute_dtype(model))  # it runs under the policy's autocast

    @property
    def device(self):
        return self.model.device

    def __call__(self, *args, **kwargs):
        was_training = self.model.training
        self.model.eval()
        try:
            with self.model.disable_adapter():
                return self.model(*args, **kwargs)
        finally:
            self.model.train(was_training)

    forward = __call__  # the training pass reads forward's signature (it takes keyword arguments: a cache)


@torch.no_grad()
def merged_state_dict(model) -> dict[str, torch.Tensor]:
    """The weights of LoRA model `model` with its adapter merged in, under the base model's own names:
    W + B A alpha / r for each adapted layer (as peft's merge computes it: the delta cast to W's dtype,
    then added), the base's own tensors for the rest. `model` is not changed."""
    base, adapter = model.get_base_model(), model.active_adapter
    merged = {}
    for name, module in base.named_modules():
        if hasattr(module, "get_delta_weight") and hasattr(module, "get_base_layer"):  # a peft LoRA layer
            weight = module.get_base_layer().weight
            merged[f"{name}.weight"] = weight + module.get_delta_weight(adapter).to(weight.dtype)
    for key, tensor in base.state_dict().items():
        if not any(part.startswith("lora_") for part in key.split(".")):  # lora_A, lora_B, lora_embedding_A, ...
            merged.setdefault(key.replace(".base_layer.", "."), tensor)
    return merged


def merged_model(model):
    """A plain transformers model (the base model's class) holding merged_state_dict(model): what final/
    saves, loadable by AutoModelForCausalLM and vLLM. Adapted layers get new tensors; the others share
    the policy's."""
    from r1lab.models.weights import rebuilt

    return rebuilt(model.get_base_model(), merged_state_dict(model))


def load_adapter(model, directory) -> None:
    """The adapter weights saved in `directory` (a checkpoint: peft's save_pretrained) into LoRA model `model`."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    path = Path(directory) / ADAPTER_FILE
    if not path.exists():
        raise ValueError(f"{directory} holds no LoRA adapter ({ADAPTER_FILE}): it was saved by a run without LoRA; "
                         "resume with the same lora settings or use a new output directory")
    result = set_peft_model_state_dict(model, load_file(str(path), device=str(model.device)))
    if result.unexpected_keys:
        raise ValueError(f"{path} holds weights this model's adapter lacks: {', '.join(result.unexpected_keys[:4])} ...")
