"""Models and datasets by hub id, with no network: the name check, the offline errors, and the README's
real-model commands run as written on tiny stand-ins laid out in a hub cache (tests/hub_cache.py)."""

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from hub_cache import CHAT_TEMPLATE, cache_repo, gsm8k_like_dataset, qwen_like_model, remote_code_model, trl_like_dataset

from r1lab.models.hub import is_hub_id
from r1lab.recipes.tasks import load_task

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["rl.steps=2", "rl.prompts_per_step=2", "rl.group_size=2", "sampling.max_new_tokens=12", "eval.n=4", "eval.k=1",
         "rl.checkpoint_every=0", "device=cpu"]  # after the README's own settings: later ones win


@pytest.mark.parametrize("name, hub", [
    ("Qwen/Qwen2.5-0.5B", True), ("meta-llama/Llama-3.2-1B", True), ("Qwen/Qwen3-0.6B", True),
    ("deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B", True), ("gpt2", True), ("openai/gsm8k", True),
    ("./models/qwen", False), ("/abs/model", False), ("~/model", False), ("runs/r1/final", False), ("my model", False),
])
def test_a_hub_id_is_told_from_a_path(name, hub):
    assert is_hub_id(name) is hub


def readme_command(start: str) -> list[str]:
    """The README's command line that starts with `start` (continuation lines joined), split like a shell."""
    lines = (ROOT / "README.md").read_text().splitlines()
    i = next(i for i, line in enumerate(lines) if line.startswith(start))
    text = lines[i]
    while text.endswith("\\"):
        i += 1
        text = text[:-1] + lines[i]
    return shlex.split(text)


@pytest.fixture(scope="module")
def hub(tmp_path_factory, tiny_model_dir):
    """An offline hub cache holding Qwen/Qwen2.5-0.5B and openai/gsm8k stand-ins; returns the env to run with."""
    root = tmp_path_factory.mktemp("hub")
    cache_repo(qwen_like_model(root / "qwen", tiny_model_dir), "Qwen/Qwen2.5-0.5B", root / "hub")
    cache_repo(root / "qwen", "Qwen/Qwen2.5-0.5B-Instruct", root / "hub")
    cache_repo(trl_like_dataset(root / "deepmath"), "trl-lib/DeepMath-103K", root / "hub", repo_type="dataset")
    cache_repo(gsm8k_like_dataset(root / "gsm8k"), "openai/gsm8k", root / "hub", repo_type="dataset")
    cache_repo(remote_code_model(root / "remote", tiny_model_dir), "someone/tiny-remote", root / "hub")
    env = {**os.environ, "HF_HOME": str(root / "home"), "HF_HUB_CACHE": str(root / "hub"), "HF_HUB_OFFLINE": "1",
           "HF_DATASETS_CACHE": str(root / "datasets"), "PYTHONPATH": str(ROOT / "tests"), "OMP_NUM_THREADS": "1"}
    return env


def r1lab(args: list[str], env: dict, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    assert args[0] == "r1lab"
    return subprocess.run([sys.executable, "-m", "r1lab", *args[1:]], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.slow
def test_readme_qwen_gsm8k_command_runs_offline_on_stand_ins(hub, tmp_path):
    command = readme_command("r1lab run r1-zero --out runs/qwen model=Qwen/Qwen2.5-0.5B")
    assert "task=openai/gsm8k" in command and "data.config=main" in command
    done = r1lab(command + SMALL, hub, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    run = tmp_path / "runs" / "qwen"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["stages"] and (run / "final" / "config.json").exists()
    config = json.loads((run / "final" / "config.json").read_text())
    assert config["model_type"] == "qwen2"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "reward" in r] == [1, 2]
    # trained on gsm8k's train split (its questions count from 0; the test split's from 100)
    samples = [json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines()]
    assert samples and all(int(s["prompt"].split()[2]) < 100 for s in samples)
    assert "hub:openai/gsm8k" in json.loads((run / "data.json").read_text())  # a resume checks the rows did not change
    evaluated = summary["stages"][0]["eval_after"]  # and evaluated on its test split
    assert evaluated["n"] == 4 and all(int(s["prompt"].split()[2]) >= 100 for s in evaluated["samples"])


def readme_python(first_line: str) -> str:
    """The README's python block that starts with `first_line`."""
    text = (ROOT / "README.md").read_text()
    return text.split("```python\n" + first_line + "\n", 1)[1].split("```", 1)[0]


@pytest.mark.slow
@pytest.mark.parametrize("start", ["r1lab run r1-zero --out runs/deepmath", "r1lab run r1-zero --out runs/mine 'rl.rewards"])
def test_readme_reward_commands_with_the_readme_reward_module(start, hub, tmp_path, tiny_model_dir):
    """my_rewards.py is the README's own; the TRL-style conversational run and the mixed-signature one run as written."""
    (tmp_path / "my_rewards.py").write_text(readme_python("# my_rewards.py"))
    command, env = readme_command(start), dict(hub)
    if "task=tinyworld" in command or not any(c.startswith("task=") for c in command):
        _tiny_base_in_cache(env, tiny_model_dir, tmp_path)
    done = r1lab(command + SMALL, env, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    out = tmp_path / command[command.index("--out") + 1]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    logged = {k for r in rows for k in r if k.startswith("reward/my_rewards:")}
    assert logged and all(isinstance(r[k], float) for r in rows for k in logged if k in r), logged
    assert "failed on" not in done.stderr  # each returned real numbers (boxed read TRL's conversational completions)


def _llama_at(path: Path, tiny_model_dir: Path) -> None:
    """A local Llama stand-in with room for long prompts, saved as a hub model is (no r1lab.json)."""
    import shutil

    shutil.copytree(tiny_model_dir, path)
    (path / "r1lab.json").unlink()
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**config, "max_position_embeddings": 4096}))


def _tiny_base_in_cache(env: dict, tiny_model_dir: Path, tmp_path: Path) -> None:
    """The tiny world's base as if pretrained before (R1LAB_CACHE/tinyworld-KEY): the command runs without the
    minutes of pretraining, on the same cached-base path a second run takes."""
    import shutil

    from r1lab.config import RunConfig
    from r1lab.tinyworld.build import cache_dir

    env["R1LAB_CACHE"] = str(tmp_path / "r1lab-cache")
    target = Path(env["R1LAB_CACHE"]) / cache_dir(RunConfig().pretrain).name
    shutil.copytree(tiny_model_dir, target)


@pytest.mark.slow
@pytest.mark.parametrize("start", ["r1lab run r1-zero --out runs/kk", "r1lab run r1-zero --out runs/mine"])
def test_readme_local_model_and_file_commands(start, hub, tmp_path, tiny_model_dir):
    import datasets

    command, env = readme_command(start), dict(hub)
    if "model=path/to/llama" in command:
        _llama_at(tmp_path / "path" / "to" / "llama", tiny_model_dir)
    if "task=data/train.parquet" in command:
        rows = [{"problem": f"What is {i} + {i}?", "solution": f"\\boxed{{{2 * i}}}"} for i in range(40)]
        (tmp_path / "data").mkdir()
        datasets.Dataset.from_list(rows[:30]).to_parquet(str(tmp_path / "data" / "train.parquet"))
        datasets.Dataset.from_list(rows[30:]).to_parquet(str(tmp_path / "data" / "test.parquet"))
        _tiny_base_in_cache(env, tiny_model_dir, tmp_path)
    done = r1lab(command + SMALL, env, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    out = tmp_path / command[command.index("--out") + 1]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stages"][0]["eval_after"]["n"] == 4 and (out / "final" / "config.json").exists()


@pytest.mark.slow
def test_an_uncached_hub_model_offline_fails_at_once_saying_how_to_fetch_it(hub, tmp_path):
    done = r1lab(["r1lab", "run", "r1-zero", "--out", "runs/q3", "model=Qwen/Qwen3-0.6B", "task=openai/gsm8k",
                  "data.config=main"], hub, tmp_path, timeout=120)
    assert done.returncode != 0
    assert "model: 'Qwen/Qwen3-0.6B' is neither a local directory nor in the Hugging Face cache" in done.stderr
    assert "hf download Qwen/Qwen3-0.6B" in done.stderr
    assert not (tmp_path / "runs" / "q3" / "config.yaml").exists()  # nothing written: the corrected command starts clean


@pytest.mark.slow
def test_revision_and_trust_remote_code_reach_from_pretrained(hub, tmp_path):
    import hashlib

    commit = hashlib.sha1(b"Qwen/Qwen2.5-0.5B").hexdigest()  # the commit cache_repo files the snapshot under

    def eval_(model, *settings):
        return r1lab(["r1lab", "eval", model, "--task", "openai/gsm8k", "--n", "2", "--k", "1", "--max-new-tokens", "4",
                      "data.config=main", "device=cpu", *settings], hub, tmp_path, timeout=300)

    pinned = eval_("Qwen/Qwen2.5-0.5B", f"revision={commit}")
    assert pinned.returncode == 0, pinned.stderr[-2000:]
    unknown = eval_("Qwen/Qwen2.5-0.5B", "revision=v9.9")
    assert unknown.returncode == 2 and "'Qwen/Qwen2.5-0.5B' is neither a local directory nor in the Hugging Face cache" in unknown.stderr
    refused = eval_("someone/tiny-remote")
    assert refused.returncode != 0 and "trust_remote_code" in refused.stderr
    trusted = eval_("someone/tiny-remote", "trust_remote_code=true")
    assert trusted.returncode == 0, trusted.stderr[-2000:]


def test_a_missing_path_is_reported_as_a_path(tmp_path):
    from r1lab.models.io import load_model

    with pytest.raises(FileNotFoundError, match=r"model: '\./nowhere/Qwen2\.5-0\.5B' does not exist"):
        load_model("./nowhere/Qwen2.5-0.5B")
    with pytest.raises(FileNotFoundError, match=r"'runs/r1/final' does not exist"):
        load_model("runs/r1/final")


@pytest.mark.slow
def test_hub_datasets_offline_from_the_hub_cache(hub, tmp_path):
    code = ("from r1lab.recipes.tasks import load_task\n"
            "t = load_task('openai/gsm8k', config='main')\n"
            "print(len(t.examples('train')), len(t.examples('test')), t.examples('test')[0].id, t.examples('test')[0].answer)\n"
            "try:\n    load_task('openai/gsm8k', config='mian')\nexcept ValueError as e:\n    print('ERR', e)\n"
            "try:\n    load_task('openai/other')\nexcept OSError as e:\n    print('ERR', e)\n")
    done = subprocess.run([sys.executable, "-c", code], env=hub, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    first, bad_config, missing = done.stdout.splitlines()[-3:]
    n_train, n_test, test_id, answer = first.split()
    assert (n_train, n_test) == ("24", "8") and test_id.startswith("openai__gsm8k.test-") and answer.isdigit()
    assert "data.config='mian'" in bad_config and "main" in bad_config and "socratic" in bad_config
    assert "task: could not load dataset 'openai/other'" in missing and "hf download --repo-type dataset openai/other" in missing


def test_a_repository_style_directory_with_configs_and_splits(tmp_path):
    repo = gsm8k_like_dataset(tmp_path / "gsm8k")
    task = load_task(str(repo), config="socratic")  # its own test split is used
    assert len(task.examples("train")) == 24 and len(task.examples("test")) == 8
    assert task.examples("test")[0].meta["columns"]["answer"].startswith("How much is it?")
    carved = load_task(str(repo), config="main", split="test", test_size=3)  # no other split: test carved out of it
    assert len(carved.examples("test")) == 3 and len(carved.examples("train")) == 5
    swapped = load_task(str(repo), config="main", split="test", test_split="train")
    assert len(swapped.examples("train")) == 8 and len(swapped.examples("test")) == 24
    with pytest.raises(ValueError, match=r"has no split 'validation'; its splits are \['test', 'train'\]"):
        load_task(str(repo), config="main", test_split="validation")
    with pytest.raises(ValueError, match=r"data.config, data.test_split: only for dataset tasks"):
        load_task("tinyworld", config="main", test_split="test")


# ---------------------------------------------------------------- conversational prompts (TRL's format)


def conversations(n):
    return [{"prompt": [{"role": "system", "content": "Think first."}, {"role": "user", "content": f"What is {i} + 1?"}],
             "solution": str(i + 1)} for i in range(n)]


def test_conversational_prompts_are_rendered_with_the_template(tmp_path, tiny_model_dir):
    import datasets

    from r1lab.data.format import render_prompt
    from r1lab.models.io import load_tokenizer

    datasets.Dataset.from_list(conversations(12)).to_parquet(str(tmp_path / "chat.parquet"))
    task = load_task(str(tmp_path / "chat.parquet"), question_field="prompt", answer_field="solution", test_size=4,
                     prompt_format="conversational")
    ex = task.examples("test")[0]
    assert ex.messages[0] == {"role": "system", "content": "Think first."} and ex.prompt == ex.messages[-1]["content"]
    tok = load_tokenizer(str(tiny_model_dir))
    tok.chat_template = CHAT_TEMPLATE
    assert render_prompt(ex, "chat", tok) == f"<system>Think first.\n<user>{ex.prompt}\n<assistant>"
    # r1-zero writes the conversation in the paper's plain format; the row's system message is the system text
    assert render_prompt(ex, "r1-zero") == f"Think first. User: {ex.prompt}. Assistant: <think>"


def test_conversational_rows_are_not_silently_turned_into_text(tmp_path):
    import datasets

    datasets.Dataset.from_list(conversations(12)).to_parquet(str(tmp_path / "chat.parquet"))
    with pytest.raises(ValueError, match=r"chat\.parquet\[train\]: row 0 \(counting from 0; a \.parquet file has no lines\) "
                                         r"field 'prompt' is a list, not text .*data.prompt_format=conversational"):
        load_task(str(tmp_path / "chat.parquet"), question_field="prompt", answer_field="solution", test_size=4)
    bad = conversations(12)
    bad[5]["prompt"] = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
    datasets.Dataset.from_list(bad).to_parquet(str(tmp_path / "bad.parquet"))
    with pytest.raises(ValueError, match=r"row 5 \(counting from 0; .*\) field 'prompt': the last message is the assistant's"):
        load_task(str(tmp_path / "bad.parquet"), question_field="prompt", answer_field="solution", test_size=4,
                  prompt_format="conversational")
    datasets.Dataset.from_list([{"prompt": "plain", "solution": "1"}] * 3).to_parquet(str(tmp_path / "text.parquet"))
    with pytest.raises(ValueError, match=r"row 0 \(counting from 0; .*\) field 'prompt' is not a list of messages"):
        load_task(str(tmp_path / "text.parquet"), question_field="prompt", answer_field="solution", test_size=1,
                  prompt_format="conversational")


def test_conversations_differing_only_in_system_text_are_different_prompts(tmp_path):
    import datasets

    rows = conversations(6) + [{"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 0 + 1?"}],
                                "solution": "1"}]
    datasets.Dataset.from_list(rows).to_parquet(str(tmp_path / "chat.parquet"))
    task = load_task(str(tmp_path / "chat.parquet"), question_field="prompt", answer_field="solution", test_size=2,
                     prompt_format="conversational")
    assert len(task.examples("train")) + len(task.examples("test")) == 7


# ---------------------------------------------------------------- r1lab push


def test_push_checks_its_arguments_before_any_network(tmp_path, tiny_model_dir):
    from r1lab.models.hub import push

    with pytest.raises(FileNotFoundError, match="not a saved model directory"):
        push(tmp_path, "me/model")
    with pytest.raises(ValueError, match="not a hub repository id"):
        push(tiny_model_dir, "no-namespace")


@pytest.mark.slow
def test_push_offline_is_a_clear_error_not_a_hang(hub, tmp_path, tiny_model_dir):
    done = r1lab(["r1lab", "push", str(tiny_model_dir), "me/tiny"], hub, tmp_path, timeout=60)
    assert done.returncode == 2 and "cannot push to 'me/tiny': HF_HUB_OFFLINE is set" in done.stderr
