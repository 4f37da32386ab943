"""The GGUF writer (the `gguf` package) filled with one model: llama.cpp's metadata keys for the architecture and
the tokenizer, then every tensor in the file's precision. Kept apart from gguf.py, which decides and checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from r1lab.errors import ConfigError


def need_gguf():
    try:
        import gguf
    except ImportError as e:
        raise ConfigError("r1lab export --gguf needs the gguf package: pip install 'r1lab[gguf]' (or pip install gguf)") from e
    return gguf


def gguf_writer(path: Path, arch: str, config: dict, vocab, chat_template: str, tensors: dict, quant: str, name: str,
                context_length: int):
    """A GGUFWriter for `path` holding the metadata and `tensors` (GGUF name -> float32 array), ready to write."""
    gguf = need_gguf()
    writer = gguf.GGUFWriter(str(path), arch)
    heads = config["num_attention_heads"]
    head_dim = config.get("head_dim") or config["hidden_size"] // heads
    rope = config.get("rope_parameters") or {}
    writer.add_name(name)
    writer.add_context_length(context_length)
    writer.add_embedding_length(config["hidden_size"])
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(heads)
    writer.add_head_count_kv(config.get("num_key_value_heads") or heads)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(float(rope.get("rope_theta", config.get("rope_theta", 10000.0))))
    writer.add_layer_norm_rms_eps(float(config.get("rms_norm_eps", 1e-6)))
    writer.add_vocab_size(len(vocab.tokens))
    add_tokenizer(writer, vocab, chat_template)
    file_type = {"f16": gguf.LlamaFileType.MOSTLY_F16, "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[quant]
    writer.add_file_type(file_type)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    for tensor_name, array in tensors.items():
        data, kind = stored(gguf, array, quant)
        writer.add_tensor(tensor_name, data, raw_dtype=kind)
    return writer


def add_tokenizer(writer, vocab, chat_template: str) -> None:
    writer.add_tokenizer_model("gpt2")  # llama.cpp's name for byte-level BPE
    writer.add_tokenizer_pre(vocab.pre)
    writer.add_token_list(vocab.tokens)
    writer.add_token_types(vocab.types)
    writer.add_token_merges(vocab.merges)
    for add, token_id in ((writer.add_eos_token_id, vocab.eos_id), (writer.add_bos_token_id, vocab.bos_id),
                          (writer.add_pad_token_id, vocab.pad_id)):
        if token_id is not None:
            add(token_id)
    writer.add_add_bos_token(vocab.add_bos)
    writer.add_add_eos_token(False)
    writer.add_chat_template(chat_template)


def stored(gguf, array: np.ndarray, quant: str):
    """(data, GGML type) of one tensor. Norms, biases and other 1-D tensors stay float32 (as llama.cpp's converter
    keeps them: they are tiny and their precision matters); 2-D ones are f16, or q8_0 where the rows split into
    q8_0's blocks of 32 (else f16)."""
    types = gguf.GGMLQuantizationType
    if array.ndim == 1:
        return array.astype(np.float32), types.F32
    if quant == "q8_0" and array.shape[-1] % gguf.GGML_QUANT_SIZES[types.Q8_0][0] == 0:
        return gguf.quants.quantize(array, types.Q8_0), types.Q8_0
    return array.astype(np.float16), types.F16
