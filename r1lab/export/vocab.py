"""A HF tokenizer (tokenizer.json) as GGUF's tokenizer metadata: the byte-level BPE vocabulary and merges, each
token's type, the special ids, and `tokenizer.ggml.pre`, the name llama.cpp picks its pre-tokenizer regex by.

Read from the JSON files alone (no transformers): every check runs before a byte of the GGUF file is written.
A tokenizer whose pieces llama.cpp would split differently is refused: a wrong `pre` gives a model that
loads, runs, and reads every prompt with different tokens than it was trained on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from r1lab.errors import ConfigError

# GGUF token types (llama.cpp's llama_token_type): NORMAL is byte-level decoded; USER_DEFINED (added tokens such as
# <think>) is matched whole in any text and printed as written; CONTROL (special tokens) only with special parsing.
NORMAL, CONTROL, USER_DEFINED, UNUSED = 1, 3, 4, 5

# Qwen2's pre-tokenizer regex, as its tokenizer.json writes it: llama.cpp's "qwen2" is the same pattern.
QWEN2_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|"
               r"\s+(?!\S)|\s+")
TINYWORLD_DIGITS = r" ?\d"  # tinyworld/build.py: one token per digit, a space kept on the first
DIGITS = "0123456789"  # as byte-level tokens write them; their other "digits" (², ³) stand for UTF-8 bytes


@dataclass
class GGUFVocab:
    tokens: list[str]
    types: list[int]
    merges: list[str]
    pre: str
    eos_id: int | None
    bos_id: int | None
    pad_id: int | None
    add_bos: bool


def read_vocab(model_dir: Path, vocab_size: int) -> GGUFVocab:
    """The GGUF tokenizer of `model_dir`, padded with unused tokens to the model's `vocab_size` rows."""
    path = Path(model_dir) / "tokenizer.json"
    if not path.exists():
        raise ConfigError(f"{path}: not found; GGUF export needs a fast (tokenizer.json) byte-level BPE tokenizer")
    data = json.loads(path.read_text(encoding="utf-8"))
    model = data.get("model") or {}
    if model.get("type") != "BPE" or (data.get("decoder") or {}).get("type") != "ByteLevel":
        raise ConfigError(f"{path}: a {model.get('type')} tokenizer with a {(data.get('decoder') or {}).get('type')} decoder; "
                          "GGUF export maps byte-level BPE tokenizers only (GPT-2, Qwen2, the tiny world's)")
    if data.get("normalizer") not in (None, {"type": "NFC"}):
        raise ConfigError(f"{path}: normalizer {data['normalizer'].get('type')} has no llama.cpp counterpart")
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    pre = pre_tokenizer_name(data.get("pre_tokenizer"), merges, path)
    by_id = {i: t for t, i in model["vocab"].items()}
    types = {i: NORMAL for i in by_id}
    for added in data.get("added_tokens", []):
        by_id[added["id"]] = added["content"]
        types[added["id"]] = CONTROL if added.get("special") else USER_DEFINED
    if vocab_size < len(by_id) or sorted(by_id) != list(range(len(by_id))):
        raise ConfigError(f"{path}: token ids are not 0..{vocab_size - 1} (it has {len(by_id)} tokens, the model "
                          f"{vocab_size} embedding rows); the exporter needs one id per row")
    pad = range(len(by_id), vocab_size)  # embedding rows past the tokenizer (rounded-up vocabularies)
    tokens = [by_id[i] for i in range(len(by_id))] + [f"[PAD{i}]" for i in pad]
    config = _read_json(Path(model_dir) / "tokenizer_config.json")
    ids = {t: i for i, t in enumerate(tokens)}
    bos_id = _bos_id(data.get("post_processor"), ids)
    return GGUFVocab(tokens=tokens, types=[types[i] for i in range(len(by_id))] + [UNUSED] * len(pad), merges=merges,
                     pre=pre, eos_id=ids.get(_token_text(config.get("eos_token"))), bos_id=bos_id,
                     pad_id=ids.get(_token_text(config.get("pad_token"))), add_bos=bos_id is not None)


def pre_tokenizer_name(pre_tokenizer: dict | None, merges: list[str], path: Path) -> str:
    """llama.cpp's name for the pre-tokenizer, or ConfigError naming what it is."""
    parts = (pre_tokenizer or {}).get("pretokenizers", [pre_tokenizer]) if pre_tokenizer else []
    kinds = [p.get("type") for p in parts]
    last = parts[-1] if parts else {}
    if kinds[-1:] == ["ByteLevel"] and last.get("add_prefix_space"):
        raise ConfigError(f"{path}: ByteLevel add_prefix_space=true; llama.cpp adds no space before the text")
    if kinds == ["ByteLevel"] and last.get("use_regex", True):
        return "gpt-2"
    patterns = [(p.get("pattern") or {}).get("Regex") for p in parts[:-1]]
    if kinds == ["Split", "ByteLevel"] and parts[0].get("behavior") == "Isolated":
        if patterns == [QWEN2_REGEX] and not last.get("use_regex", True):
            return "qwen2"
        if patterns == [TINYWORLD_DIGITS] and last.get("use_regex", True):
            _check_digits_stand_alone(merges, path)
            return "gpt-2"
    raise ConfigError(f"{path}: pre-tokenizer {kinds} {patterns} is not one llama.cpp knows by name; GGUF export maps "
                      "GPT-2's ByteLevel, Qwen2's split and the tiny world's digit split (r1lab/export/vocab.py)")


def _check_digits_stand_alone(merges: list[str], path: Path) -> None:
    """The tiny world splits ` ?\\d` before GPT-2's regex; llama.cpp's "gpt-2" does not. GPT-2's regex already puts
    digits in pieces of their own (` ?\\p{N}+`), so both give the same tokens exactly when no merge joins a digit to
    anything but one leading space (Ġ): then BPE cannot tell " 37" from " 3" + "7". Checked, not assumed."""
    for merge in merges:
        left, _, right = merge.partition(" ")
        joined = left + right
        if any(c in DIGITS for c in joined) and not (len(joined) == 2 and joined[0] == "Ġ" and joined[1] in DIGITS):
            raise ConfigError(f"{path}: merge '{merge}' joins a digit to more than one leading space; llama.cpp's "
                              "GPT-2 pre-tokenizer would then split numbers differently from this tokenizer")


def _bos_id(post_processor: dict | None, ids: dict[str, int]) -> int | None:
    """The token the tokenizer puts before every text (a TemplateProcessing that starts with a special token)."""
    if not post_processor or post_processor.get("type") != "TemplateProcessing":
        return None
    first = (post_processor.get("single") or [{}])[0]
    return ids.get(first["SpecialToken"]["id"]) if "SpecialToken" in first else None


def _token_text(token) -> str | None:
    return token.get("content") if isinstance(token, dict) else token


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
