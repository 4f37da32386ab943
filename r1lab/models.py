"""Load any HF causal LM + tokenizer, pick a device and dtype, and wrap prompts in a template."""

from __future__ import annotations

from pathlib import Path

import torch

R1_ZERO_SYSTEM = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant solves it. "
    "The assistant first thinks about the reasoning process in the mind and then provides the user with "
    "the answer. The reasoning process and answer are enclosed within <think> </think> and <answer> </answer> "
    "tags, respectively, i.e., <think> reasoning process here </think> <answer> answer here </answer>."
)
TEMPLATES = ("r1-zero", "chat", "none")


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


def apply_template(prompt: str, template: str, tokenizer=None, system: str | None = None) -> str:
    """Wraps a task prompt for generation.

    r1-zero: the paper's plain template, ending in "Assistant: <think>" so the model starts thinking.
    chat:    the tokenizer's chat template with a generation prompt.
    none:    the prompt text as is.
    """
    if template == "r1-zero":
        system = R1_ZERO_SYSTEM if system is None else system
        return f"{system} User: {prompt}. Assistant: <think>".lstrip()
    if template == "chat":
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise ValueError("template 'chat' needs a tokenizer with a chat_template; use template=r1-zero or template=none")
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    if template == "none":
        return prompt
    raise ValueError(f"unknown template '{template}' (choose one of {', '.join(TEMPLATES)})")


def response_prefix(prompt_text: str) -> str:
    """The part of the response the template already wrote (r1-zero pre-fills '<think>')."""
    return "<think>" if prompt_text.rstrip().endswith("<think>") else ""
