"""The commands that use a model as functions: `evaluate` (`r1lab eval`), `generate`, `finetune` (`r1lab sft`),
`chat` (one question answered, or the terminal loop), `serve_model` (`r1lab serve`), `push`, `report`. (r1lab.sft and
r1lab.serve are r1lab's own packages, so their twins take other names.) A model is a directory, a hub name or 'tinyworld';
`evaluate` also takes a model object with its tokenizer, and rows (a list of dicts, a Dataset) as its task."""

from __future__ import annotations

import io
import tempfile
from dataclasses import dataclass
from pathlib import Path

from r1lab.api.inputs import is_rows, save_rows
from r1lab.api.results import frame
from r1lab.store.logs import read_jsonl


@dataclass(frozen=True)
class EvalResult:
    """A model measured on a task's test split: pass@1 (mean over k samples), pass@k, cons@k, format rate, ..."""

    model: str
    task: str
    metrics: dict

    def __getitem__(self, key: str):
        return self.metrics[key]

    @property
    def pass_at_1(self) -> float:
        return self.metrics["pass@1"]


@dataclass(frozen=True)
class Reply:
    """One answer of a model: the whole text, its thinking and its answer (None while the thinking never closed)."""

    text: str
    thinking: str
    answer: str | None
    tokens: int

    def __str__(self) -> str:
        return f"thinking: {self.thinking}\nanswer: {self.answer}"


@dataclass(frozen=True)
class GenerateResult:
    """`generate`'s samples: the JSONL file holding every one (kept or not) and the counts."""

    path: Path
    counts: dict

    @property
    def rows(self) -> list[dict]:
        """Every sample written, as a dict per line (prompt, response, reward, kept, ...)."""
        return read_jsonl(self.path)

    def dataframe(self):
        return frame(self.rows)


@dataclass(frozen=True)
class SFTResult:
    """A fine-tuned model: its directory, final model, what sft returned and its metrics rows."""

    dir: Path
    final_model: Path
    summary: dict
    metrics: list[dict]

    def dataframe(self):
        return frame(self.metrics)


class AllRows:
    """A task given as rows, evaluated whole: its test split is every row (`r1lab eval` on a file holds out a
    test split; rows handed to `evaluate` are the test). Scoring and the rest are the file task's."""

    def __init__(self, task):
        self.task, self.name = task, task.name

    def examples(self, split: str):
        return self.task.examples("test") + self.task.examples("train")

    def __getattr__(self, name: str):
        return getattr(self.task, name)


def _task_settings(task, tmp: str) -> dict:
    """The settings naming a task; rows are written to `tmp` (one held out, as a file task needs a test split)."""
    if not is_rows(task):
        return {"task": task}
    written = save_rows(task, Path(tmp))
    return {"task": written["task"], **({"data.test_file": written["data.test_file"]} if "data.test_file" in written
                                         else {"data.test_size": 1})}


def evaluate(model, *, task="tinyworld", k: int = 4, n: int | None = None, template: str = "r1-zero",
             max_new_tokens: int | None = None, tokenizer=None, **settings) -> EvalResult:
    """pass@1 over k samples at T=0.6 / top-p 0.95 on the task's test split: `r1lab eval`. model: a directory, hub
    name, 'tinyworld', or a transformers model (with `tokenizer=`); task: a task name or rows; settings: more RunConfig
    fields (e.g. `data={"answer_field": "solution"}`)."""
    from r1lab.engines import make_engine
    from r1lab.evaluation.evaluate import evaluate as measure
    from r1lab.models.io import load_model
    from r1lab.recipes.load import validate
    from r1lab.recipes.run import load_task_for, resolve_model, resolve_system

    model = str(model) if isinstance(model, Path) else model
    eval_settings = {"k": k, "n": n, **({"sampling": {"max_new_tokens": max_new_tokens}} if max_new_tokens is not None else {})}
    with tempfile.TemporaryDirectory(prefix="r1lab-eval-") as tmp:
        given = {"model": model if isinstance(model, str) else "tinyworld", "template": template, "eval": eval_settings}
        cfg = validate(given, "eval settings", {**_task_settings(task, tmp), **settings})
        task_obj = load_task_for(cfg)
        if is_rows(task) and not cfg.data.test_file:
            task_obj = AllRows(task_obj)
        if isinstance(model, str):
            path = resolve_model(cfg)
            model, tokenizer = load_model(path, cfg.device, cfg.dtype, **cfg.hub_options())
        elif tokenizer is None:
            raise ValueError("tokenizer: a model object needs its tokenizer (tokenizer=...)")
        else:
            path = getattr(model, "name_or_path", "") or type(model).__name__
        engine = make_engine(cfg.rollout.engine, model, tokenizer, seed=cfg.seed, **cfg.rollout.options())
        result = measure(engine, task_obj, cfg.eval, template=cfg.template, system=resolve_system(cfg, path),
                         reflection_phrases=cfg.rl.reflection_phrases)
    return EvalResult(str(path), cfg.task if isinstance(task, str) else "rows", result)


def generate(model: str, out: str | Path, *, task: str = "tinyworld", split: str = "train", n: int | None = None, k: int = 4,
             temperature: float | None = None, max_new_tokens: int | None = None, template: str = "r1-zero",
             **settings) -> GenerateResult:
    """Samples k completions per prompt, scores and filters them, writes every sample to `out` (JSONL):
    `r1lab generate`. Returns the file and the counts (`GenerateResult`)."""
    from r1lab.engines import make_engine
    from r1lab.models.io import load_model
    from r1lab.recipes.load import validate
    from r1lab.recipes.run import load_task_for, resolve_model, resolve_system
    from r1lab.sft.generate import generate as sample

    given = {"temperature": temperature, "max_new_tokens": max_new_tokens}
    cfg = validate({"model": model, "task": task, "template": template,
                    "sampling": {k_: v for k_, v in given.items() if v is not None}}, "generate settings", settings)
    task_obj = load_task_for(cfg)
    path = resolve_model(cfg)
    loaded, tokenizer = load_model(path, cfg.device, cfg.dtype, **cfg.hub_options())
    engine = make_engine(cfg.rollout.engine, loaded, tokenizer, seed=cfg.seed, **cfg.rollout.options())
    stats = sample(engine, task_obj, task_obj.examples(split)[:n], k=k, sampling=cfg.sampling, template=cfg.template,
                   system=resolve_system(cfg, path), filters=None, out_path=out)
    return GenerateResult(Path(out), stats)


RUN_LEVEL = ("template", "system", "seed", "device", "dtype", "lora", "log", "sft")  # the others are sft's fields


def finetune(model: str, data, out: str | Path, **settings) -> SFTResult:
    """Fine-tunes `model` on `data` (a file, a save_to_disk directory, `r1lab generate`'s output (its kept samples)
    or rows): `r1lab sft`. settings: sft fields (epochs=2, lr=1e-5) and the run's template, system, seed, device,
    dtype, lora, log."""
    from r1lab.recipes.load import validate
    from r1lab.recipes.run import resolve_model
    from r1lab.sft.train import sft_from_config

    changes = {key if key.split(".")[0] in RUN_LEVEL else f"sft.{key}": value for key, value in settings.items()}
    cfg = validate({"model": model}, "sft settings", changes)
    if isinstance(data, (str, Path)) and str(data).endswith(".jsonl") and _looks_like_generate_output(str(data)):
        from r1lab.sft.generate import read_kept

        data = read_kept(str(data))  # r1lab generate's rows: train on the kept samples only
    elif isinstance(data, Path):
        data = str(data)
    elif not isinstance(data, str) and hasattr(data, "to_list"):
        data = data.to_list()
    result = sft_from_config(resolve_model(cfg), data, cfg.sft, out, template=cfg.template, system=cfg.system,
                             seed=cfg.seed, device=cfg.device, dtype=cfg.dtype, lora=cfg.lora, log=cfg.log)
    out = Path(out)
    metrics = read_jsonl(out / "metrics.jsonl") if (out / "metrics.jsonl").exists() else []
    return SFTResult(out, out / "final", result, metrics)


def _looks_like_generate_output(path: str) -> bool:
    import json

    with open(path) as f:
        first = f.readline()
    try:
        return "kept" in json.loads(first)
    except json.JSONDecodeError:
        return False


def chat(model: str | None = None, message: str | None = None, *, api: str | None = None, api_model: str | None = None,
         api_key: str | None = None, template: str = "r1-zero", temperature: float | None = None,
         max_new_tokens: int | None = None, tools: list[str] | None = None, max_turns: int | None = None) -> Reply | None:
    """With `message`: `model` answers it once, and the Reply comes back (a notebook's chat). Without: the
    terminal loop of `r1lab chat` (thinking dimmed, answer plain), against `model` or an OpenAI-compatible `api`."""
    if max_turns is not None and max_turns < 1:
        raise ValueError(f"max_turns must be at least 1, not {max_turns}")
    if api:
        if message is not None:
            raise ValueError("message: one-question chat runs a local model; with api=, chat is the terminal loop")
        need_serve_extra()
        from r1lab.api.api_chat import api_chat, api_key_for

        api_chat(api, model=api_model or model, api_key=api_key or api_key_for(api), temperature=temperature,
                 max_tokens=max_new_tokens, tools=tools or [], max_turns=max_turns)
        return None
    from r1lab.api.terminal_chat import CHAT_SAMPLING
    from r1lab.api.terminal_chat import chat as terminal
    from r1lab.config import SamplingConfig, changed

    given = {"temperature": temperature, "max_new_tokens": max_new_tokens}
    sampling = changed(SamplingConfig, CHAT_SAMPLING, {k: v for k, v in given.items() if v is not None}, "chat")
    if model is None:
        raise ValueError("chat needs a model directory or hub name, or an api base URL")
    if message is None:
        terminal(str(model), template=template, sampling=sampling, tools=tools or [], max_turns=max_turns)
        return None
    return ask(str(model), message, template=template, sampling=sampling, tools=tools, max_turns=max_turns)


def ask(model_dir: str, message: str, *, template: str, sampling, tools: list[str] | None, max_turns: int | None) -> Reply:
    """`model_dir`'s model answers `message` once, as chat would (its tools run), nothing printed."""
    from rich.console import Console

    from r1lab.api.terminal_chat import answer, question_prompt, tool_episodes
    from r1lab.data.format import END_ANSWER
    from r1lab.engines import make_engine
    from r1lab.models.io import load_model, trained_system
    from r1lab.serve.reasoning import thinking_and_answer

    if template == "r1-zero":
        sampling = sampling.model_copy(update={"stop": [*sampling.stop, END_ANSWER]})
    episodes = tool_episodes(model_dir, template, tools, max_turns)
    loaded, tokenizer = load_model(model_dir, device="auto")
    engine = make_engine("torch", loaded, tokenizer)
    prompt = question_prompt(message, template, tokenizer, trained_system(model_dir, template), episodes)
    silent = Console(file=io.StringIO(), force_jupyter=False)  # in a notebook rich would display it anyway
    tokens, text = answer(engine, prompt, sampling, silent, episodes)
    from r1lab.data.format import response_prefix

    full = response_prefix(prompt) + text
    thinking, answer_text = thinking_and_answer(full)
    return Reply(full, thinking, answer_text, tokens)


def serve_model(model: str, *, host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None, engine: str = "torch",
          template: str = "auto", name: str | None = None, device: str = "auto", dtype: str = "auto",
          threads: int | None = None, max_tokens: int = 4096, max_n: int = 16, max_body_bytes: int = 1 << 20,
          max_pending: int = 256, batch_window_ms: float = 5.0, max_batch: int = 64) -> None:
    """Serves `model` over an OpenAI-compatible HTTP API until interrupted: `r1lab serve`."""
    need_serve_extra()
    from r1lab.serve.api import ServeLimits
    from r1lab.serve.server import serve as run_server

    limits = ServeLimits(max_tokens=max_tokens, max_n=max_n, max_body_bytes=max_body_bytes, max_pending=max_pending)
    run_server(model, host=host, port=port, api_key=api_key, engine=engine, template=template, name=name, device=device,
               dtype=dtype, threads=threads, limits=limits, batch_window_s=batch_window_ms / 1000, max_batch_rows=max_batch)


def push(model_dir: str | Path, repo_id: str, *, private: bool = False) -> str:
    """Uploads a saved model directory to the Hugging Face Hub as `repo_id`: `r1lab push`. Returns its URL."""
    from r1lab.models.hub import push as upload

    return upload(model_dir, repo_id, private=private)


def report(run_dir: str | Path) -> Path:
    """(Re)writes a run directory's plots and report.html: `r1lab report`. Returns the report's path."""
    from r1lab.evaluation.report import write_report

    return Path(write_report(run_dir))


def export_gguf(model_dir: str | Path, gguf: str | Path, *, quant: str = "f16", template: str | None = None) -> dict:
    """A saved model as one GGUF file for llama.cpp and ollama, an ollama Modelfile beside it: `r1lab export`.
    quant: f16, q8_0 or q4_k_m; template: r1-zero (the default for r1lab's models) or chat (the tokenizer's).
    Returns what was written (paths, sizes, seconds). (`r1lab.export` is the package that writes it.)"""
    from r1lab.export.gguf import export_gguf as write

    return write(model_dir, gguf, quant=quant, template=template)


def need_serve_extra() -> None:
    """serve and chat with api= need the `serve` extra's packages: say so instead of a traceback."""
    import importlib.util

    missing = [name for name in ("fastapi", "uvicorn", "openai") if importlib.util.find_spec(name) is None]
    if missing:
        raise ValueError(f"{', '.join(missing)} not installed: pip install 'r1lab[serve]' (or -e '.[serve]' in a checkout)")
