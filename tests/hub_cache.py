"""Local stand-ins for hub models and datasets: files laid out in a Hugging Face hub cache exactly as
`hf download` leaves them (models--ORG--NAME/snapshots/COMMIT/..., refs/main), so `from_pretrained("ORG/NAME")`
and r1lab's dataset loading find them with HF_HUB_OFFLINE=1 and no network."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

CHAT_TEMPLATE = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}<assistant>{% endif %}")

# A template in the shape of Qwen2.5's (written here, not copied): `tools=` listed in the system turn as JSON
# signatures with how to call them, an assistant turn's tool_calls as <tool_call>{"name", "arguments"}</tool_call>
# (arguments a dict, written with tojson), and `tool` turns as <tool_response> blocks inside one user turn.
TOOLS_CHAT_TEMPLATE = (
    "{%- set has_system = messages and messages[0].role == 'system' %}"
    "{%- if tools or has_system %}"
    "{{- '<|im_start|>system\n' + (messages[0].content if has_system else 'You are a helpful assistant.') }}"
    "{%- if tools %}"
    "{{- '\n\n# Tools\nThese functions can be called, each signature a line of JSON:\n<tools>' }}"
    "{%- for tool in tools %}{{- '\n' + (tool | tojson) }}{%- endfor %}"
    "{{- '\n</tools>\nTo call one, write its name and arguments inside <tool_call></tool_call> tags:\n<tool_call>\n'"
    " + '{\"name\": <function name>, \"arguments\": <a JSON object>}\n</tool_call>' }}"
    "{%- endif %}"
    "{{- '<|im_end|>\n' }}"
    "{%- endif %}"
    "{%- for m in messages %}"
    "{%- if m.role == 'system' and loop.first %}"
    "{%- elif m.role == 'tool' %}"
    "{%- if loop.first or messages[loop.index0 - 1].role != 'tool' %}{{- '<|im_start|>user' }}{%- endif %}"
    "{{- '\n<tool_response>\n' + m.content + '\n</tool_response>' }}"
    "{%- if loop.last or messages[loop.index0 + 1].role != 'tool' %}{{- '<|im_end|>\n' }}{%- endif %}"
    "{%- elif m.role == 'assistant' %}"
    "{{- '<|im_start|>assistant' }}"
    "{%- if m.content %}{{- '\n' + m.content }}{%- endif %}"
    "{%- for call in m.tool_calls or [] %}"
    "{%- set f = call.function if call.function is defined else call %}"
    "{{- '\n<tool_call>\n{\"name\": \"' + f.name + '\", \"arguments\": ' + (f.arguments | tojson) + '}\n</tool_call>' }}"
    "{%- endfor %}"
    "{{- '<|im_end|>\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>' + m.role + '\n' + m.content + '<|im_end|>\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}{%- endif %}"
)


def cache_repo(files_dir: Path, repo_id: str, hub_cache: Path, repo_type: str = "model") -> Path:
    """Copies `files_dir` into `hub_cache` as repository `repo_id`'s snapshot at main; returns the snapshot."""
    repo = Path(hub_cache) / f"{repo_type}s--{repo_id.replace('/', '--')}"
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    snapshot = repo / "snapshots" / commit
    shutil.copytree(files_dir, snapshot, dirs_exist_ok=True)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return snapshot


def qwen_like_model(out: Path, tokenizer_dir: Path, template: str = CHAT_TEMPLATE) -> Path:
    """A tiny Qwen2 (the architecture of Qwen2.5) with the tiny world's tokenizer and a chat template, saved the
    way a hub model is (no r1lab.json: nothing marks it as r1lab's)."""
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    tokenizer.chat_template = template
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                         tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    Qwen2ForCausalLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def gsm8k_like_dataset(out: Path, train: int = 24, test: int = 8) -> Path:
    """A dataset repository laid out like openai/gsm8k's: configs 'main' and 'socratic' in the README's front
    matter, a parquet file per split, answers ending in '#### n'."""
    import datasets

    def rows(n, start, style):
        return [{"question": f"What is {i} + {i + 1}?", "answer": f"{style} {i} + {i + 1} = {2 * i + 1}\n#### {2 * i + 1}"}
                for i in range(start, start + n)]

    for config, style in (("main", "Add:"), ("socratic", "How much is it? Add:")):
        (out / config).mkdir(parents=True, exist_ok=True)
        datasets.Dataset.from_list(rows(train, 0, style)).to_parquet(str(out / config / "train-00000-of-00001.parquet"))
        datasets.Dataset.from_list(rows(test, 100, style)).to_parquet(str(out / config / "test-00000-of-00001.parquet"))
    (out / "README.md").write_text("---\nconfigs:\n" + "".join(
        f"- config_name: {c}\n  data_files:\n  - split: train\n    path: {c}/train-*\n  - split: test\n    path: {c}/test-*\n"
        for c in ("main", "socratic")) + "---\n")
    return out


REMOTE_CODE = {
    "configuration_tiny.py": "from transformers import LlamaConfig\n\n\nclass TinyConfig(LlamaConfig):\n    model_type = 'tinyremote'\n",
    "modeling_tiny.py": ("from transformers import LlamaForCausalLM\n\nfrom .configuration_tiny import TinyConfig\n\n\n"
                         "class TinyForCausalLM(LlamaForCausalLM):\n    config_class = TinyConfig\n"),
}


def remote_code_model(out: Path, llama_dir: Path) -> Path:
    """A model whose architecture transformers does not ship: its config names classes in the repository's own
    Python files (auto_map), which only trust_remote_code=True lets transformers import."""
    import json

    shutil.copytree(llama_dir, out, dirs_exist_ok=True)
    (out / "r1lab.json").unlink(missing_ok=True)
    config = json.loads((out / "config.json").read_text())
    config.update(model_type="tinyremote", architectures=["TinyForCausalLM"], max_position_embeddings=1024,
                  auto_map={"AutoConfig": "configuration_tiny.TinyConfig", "AutoModelForCausalLM": "modeling_tiny.TinyForCausalLM"})
    (out / "config.json").write_text(json.dumps(config))
    for name, code in REMOTE_CODE.items():
        (out / name).write_text(code)
    return out


def trl_like_dataset(out: Path, train: int = 16, test: int = 6) -> Path:
    """A dataset repository laid out like trl-lib/DeepMath-103K's: config 'default', data/{train,test}-*.parquet,
    a conversational `prompt` (a list of messages) and a `solution` column."""
    import datasets

    def rows(n, start):
        return [{"prompt": [{"role": "user", "content": f"What is {i} + 2? Put the answer in \\boxed{{}}."}],
                 "solution": str(i + 2)} for i in range(start, start + n)]

    (out / "data").mkdir(parents=True, exist_ok=True)
    datasets.Dataset.from_list(rows(train, 0)).to_parquet(str(out / "data" / "train-00000-of-00001.parquet"))
    datasets.Dataset.from_list(rows(test, 100)).to_parquet(str(out / "data" / "test-00000-of-00001.parquet"))
    return out
