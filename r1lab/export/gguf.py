"""`r1lab export MODEL_DIR --gguf OUT.gguf`: a saved HF model (Llama or Qwen2) as one GGUF file for llama.cpp and
ollama, with its tokenizer, chat template and context length, and an ollama Modelfile beside it.

Everything that could refuse (architecture, settings, tensors, tokenizer, quantisation) is checked before a byte
is written, and the file is written to a temporary name and renamed: OUT.gguf is whole or absent.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from r1lab.disk import atomic_write, writing
from r1lab.errors import ConfigError
from r1lab.export.gguf_write import gguf_writer, need_gguf
from r1lab.export.modelfile import Prompting, modelfile, r1_zero_jinja
from r1lab.export.vocab import CONTROL, GGUFVocab, read_vocab

QUANTS = ("f16", "q8_0", "q4_k_m")
# HF model_type -> llama.cpp architecture. Llama's q/k rows are reordered for llama.cpp's RoPE (see `permuted`);
# Qwen2 uses the NeoX RoPE layout HF uses, and has q/k/v biases.
ARCHITECTURES = {"llama": "llama", "qwen2": "qwen2"}
LAYER_TENSORS = {
    "input_layernorm.weight": "attn_norm.weight", "post_attention_layernorm.weight": "ffn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight", "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight", "self_attn.o_proj.weight": "attn_output.weight",
    "self_attn.q_proj.bias": "attn_q.bias", "self_attn.k_proj.bias": "attn_k.bias", "self_attn.v_proj.bias": "attn_v.bias",
    "mlp.gate_proj.weight": "ffn_gate.weight", "mlp.up_proj.weight": "ffn_up.weight", "mlp.down_proj.weight": "ffn_down.weight",
}
TOP_TENSORS = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
               "lm_head.weight": "output.weight"}


def export_gguf(model_dir, out, quant: str = "f16", template: str | None = None) -> dict:
    """Writes `out` (GGUF) and `Modelfile` beside it; returns what was written and how long it took."""
    t0 = time.time()
    model_dir, out = Path(model_dir).expanduser(), Path(out).expanduser()
    if quant not in QUANTS:
        raise ConfigError(f"--quant {quant}: choose one of {', '.join(QUANTS)}")
    if out.suffix != ".gguf":
        raise ConfigError(f"--gguf {out}: the file name must end in .gguf")
    config = _read_config(model_dir)
    arch = _architecture(config, model_dir)
    vocab = read_vocab(model_dir, config["vocab_size"])
    prompting = _prompting(model_dir, template, vocab)
    need_gguf()
    if quant == "q4_k_m":
        _need_llama_cpp()
    tensors = _gguf_tensors(model_dir, config, arch)
    tmp = out.with_name(f".{out.name}.tmp")
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        if quant == "q4_k_m":  # gguf-py cannot write k-quants: llama.cpp's quantiser, from an f16 file
            f16 = out.with_name(f".{out.name}.f16.tmp")
            try:
                _write(f16, arch, config, vocab, prompting, tensors, "f16", model_dir.name)
                _llama_cpp_quantize(f16, tmp)
            finally:
                f16.unlink(missing_ok=True)
        else:
            _write(tmp, arch, config, vocab, prompting, tensors, quant, model_dir.name)
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a partial file is never left behind, whatever stopped the writing
        raise
    context = _context_length(config)
    atomic_write(out.parent / "Modelfile", modelfile(out.name, prompting, context), "ollama Modelfile")
    return {"gguf": str(out), "modelfile": str(out.parent / "Modelfile"), "architecture": arch, "quant": quant,
            "template": prompting.template, "pre_tokenizer": vocab.pre, "context_length": context,
            "bytes": out.stat().st_size, "seconds": round(time.time() - t0, 2)}


def _read_config(model_dir: Path) -> dict:
    path = model_dir / "config.json"
    if not path.exists():
        raise ConfigError(f"{path}: not found; r1lab export takes a saved model directory (e.g. runs/r1-zero/final)")
    return json.loads(path.read_text())


def _architecture(config: dict, model_dir: Path) -> str:
    """llama.cpp's name for the model's architecture, or ConfigError naming the setting it cannot map."""
    kind = config.get("model_type")
    if kind not in ARCHITECTURES:
        raise ConfigError(f"{model_dir}/config.json: model_type '{kind}' ({', '.join(config.get('architectures') or [])}); "
                          f"GGUF export maps {', '.join(ARCHITECTURES)} only")
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    refused = {"hidden_act": config.get("hidden_act", "silu") != "silu",
               "rope_parameters.rope_type": rope.get("rope_type", rope.get("type", "default")) != "default",
               "mlp_bias": bool(config.get("mlp_bias")),
               "attention_bias": kind == "llama" and bool(config.get("attention_bias")),
               "use_sliding_window": bool(config.get("use_sliding_window"))}
    for field, unmapped in refused.items():
        if unmapped:
            raise ConfigError(f"{model_dir}/config.json: {field} is not mapped to GGUF by r1lab export")
    return ARCHITECTURES[kind]


def _context_length(config: dict) -> int:
    return int(config.get("max_position_embeddings", 2048))


def _prompting(model_dir: Path, template: str | None, vocab: GGUFVocab) -> Prompting:
    """The template the model was trained with (r1lab.json), else the tokenizer's chat template, else r1-zero."""
    meta = _json_or_empty(model_dir / "r1lab.json")
    own = _json_or_empty(model_dir / "tokenizer_config.json").get("chat_template")
    if own is None and (model_dir / "chat_template.jinja").exists():
        own = (model_dir / "chat_template.jinja").read_text(encoding="utf-8")
    given = f"--template {template}" if template else f"{model_dir}/r1lab.json's template"
    template = template or meta.get("template") or ("chat" if own else "r1-zero")
    if template == "chat" and not isinstance(own, str):
        raise ConfigError(f"{given}: {model_dir} has no chat template (tokenizer_config.json or chat_template.jinja); "
                          "use --template r1-zero")
    if template not in ("r1-zero", "chat"):
        raise ConfigError(f"{given} is '{template}': GGUF export writes r1-zero or chat; choose one with --template")
    system = meta.get("system") if isinstance(meta.get("system"), str) else None
    stop = vocab.tokens[vocab.eos_id] if vocab.eos_id is not None and vocab.types[vocab.eos_id] == CONTROL else None
    return Prompting(chat_template=own if template == "chat" else r1_zero_jinja(system), template=template, system=system,
                     stop=stop)


def _gguf_tensors(model_dir: Path, config: dict, arch: str) -> dict:
    """GGUF name -> float32 numpy array, in file order; unknown tensors refused by name."""
    from safetensors.torch import load_file

    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise ConfigError(f"{model_dir}: no *.safetensors weights; save the model with save_pretrained (r1lab does)")
    hf = {name: t for f in files for name, t in load_file(str(f)).items()}
    if config.get("tie_word_embeddings"):
        hf.pop("lm_head.weight", None)  # llama.cpp reads the embedding when output.weight is absent
    out = {}
    for name, tensor in hf.items():
        gguf_name = _gguf_name(name)
        if gguf_name is None:
            if name.endswith("rotary_emb.inv_freq"):
                continue
            raise ConfigError(f"{model_dir}: tensor '{name}' has no GGUF name in r1lab export's {arch} map")
        array = tensor.float().numpy()
        if arch == "llama" and gguf_name.endswith(("attn_q.weight", "attn_k.weight")):
            heads = config["num_attention_heads"]
            array = permuted(array, heads if "attn_q" in gguf_name else config.get("num_key_value_heads") or heads)
        out[gguf_name] = array
    return out


def _gguf_name(hf_name: str) -> str | None:
    if hf_name in TOP_TENSORS:
        return TOP_TENSORS[hf_name]
    parts = hf_name.split(".", 3)  # model.layers.{i}.rest
    if len(parts) == 4 and parts[:2] == ["model", "layers"] and parts[3] in LAYER_TENSORS:
        return f"blk.{parts[2]}.{LAYER_TENSORS[parts[3]]}"
    return None


def permuted(weight, heads: int):
    """HF's Llama q/k rows per head are [first halves of the rotary pairs; second halves] (rotate_half); llama.cpp's
    "llama" RoPE rotates adjacent pairs. Interleaving the two halves makes the same attention."""
    rows = weight.shape[0]
    return weight.reshape(heads, 2, rows // heads // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def _write(path: Path, arch: str, config: dict, vocab: GGUFVocab, prompting: Prompting, tensors: dict, quant: str,
           name: str) -> None:
    with writing("GGUF file", path, cleanup=path):
        writer = gguf_writer(path, arch, config, vocab, prompting.chat_template, tensors, quant, name, _context_length(config))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()


def _need_llama_cpp() -> None:
    import importlib.util

    if importlib.util.find_spec("llama_cpp") is None:
        raise ConfigError("--quant q4_k_m needs llama.cpp's quantiser: pip install llama-cpp-python "
                          "(or export --quant q8_0 / f16, and run llama.cpp's llama-quantize yourself)")


def _llama_cpp_quantize(source: Path, target: Path) -> None:
    import ctypes

    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M
    params.nthread = 1
    if llama_cpp.llama_model_quantize(str(source).encode(), str(target).encode(), ctypes.byref(params)) != 0:
        raise OSError(f"llama.cpp could not quantise {source} to q4_k_m (its log above says why); nothing was written")


def _json_or_empty(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
