"""The `r1lab` command. Settings are `field=value` overrides of a recipe, e.g. `rl.lr=1e-6 task=gsm8k.jsonl`."""

from __future__ import annotations

import json
import logging
import os
import sys

from r1lab.ui.arguments import parser as command_parser


def main(argv: list[str] | None = None) -> int:
    parser = command_parser()
    args, extra = parser.parse_known_args(argv)  # field=value items may come before or after --out
    if extra and (not hasattr(args, "overrides") or any(e.startswith("-") for e in extra)):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if extra:
        args.overrides = list(args.overrides) + extra
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    _quiet_hf()
    try:
        return _dispatch(args)
    except KeyboardInterrupt:
        print("\ninterrupted: run the same command again to resume from the last checkpoint", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, OSError) as err:  # ConfigError is a ValueError
        if os.environ.get("R1LAB_DEBUG"):
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2


def _quiet_hf() -> None:
    """r1lab draws its own progress; HF's per-checkpoint "Loading weights" / "Writing shards" bars are noise."""
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:
        pass


def _dispatch(args) -> int:
    from r1lab import dist

    if dist.launched() and args.command != "run":
        raise ValueError(f"`r1lab {args.command}` runs in one process: under torchrun, only `r1lab run` does")
    return COMMANDS[args.command](args)


# Each command's work, given its parsed arguments -> the exit status. Modules are imported on use: a command
# loads only what it needs (torch, transformers, fastapi take seconds).


def _run(args) -> int:
    from r1lab import dist
    from r1lab.recipes.load import load_config
    from r1lab.recipes.pipeline import run_recipe

    cfg = load_config(args.recipe, args.overrides)
    if args.nproc > 1:
        cfg.check_processes(args.nproc)  # a bad split fails here, before any process starts
        return dist.launch(args.nproc, ["run", args.recipe, "--out", args.out, *args.overrides])
    with dist.process_group():  # torchrun's processes join theirs; one process has none
        run_recipe(cfg, args.out)
    return 0


def _distill(args) -> int:
    from r1lab.recipes.load import load_config
    from r1lab.recipes.pipeline import run_recipe

    run_recipe(load_config("distill", [f"teacher={args.teacher}", f"student.model={args.student}", *args.overrides]), args.out)
    return 0


def _control(args) -> int:
    from r1lab.control.run import run_control
    from r1lab.recipes.load import parse_overrides, validate_control

    settings = {"algo": args.algo, "env": args.env, **({"video": True} if args.video else {}), **parse_overrides(args.overrides)}
    cfg = validate_control(settings)
    summary = run_control(cfg, args.out)
    print(json.dumps({k: summary[k] for k in ("algo", "env", "final_mean_return", "env_steps", "wall_seconds")}, indent=2))
    return 0


def _compare(args) -> int:
    from r1lab.errors import ConfigError
    from r1lab.experiments.compare import load_spec, run_compare

    spec = load_spec(args.spec, [*([f"env={args.env}"] if args.env else []), *args.overrides])
    if args.env and spec.kind != "control":
        raise ConfigError(f"--env: comparison '{spec.compare}' trains language models (kind: {spec.kind}); --env is for "
                          "control comparisons such as 'robot'")
    run_compare(spec, args.out)
    return 0


def _pretrain(args) -> int:
    from r1lab.progress import console
    from r1lab.recipes.load import validate
    from r1lab.tinyworld.build import pretrain

    cfg = validate({}, "pretrain settings", [f"pretrain.{o}" for o in args.overrides]).pretrain
    console.print(f"tiny base model: {pretrain(cfg, args.out)}")
    return 0


def _eval(args) -> int:
    from r1lab.engines import make_engine
    from r1lab.evaluation.evaluate import evaluate
    from r1lab.models.io import load_model
    from r1lab.recipes.load import validate
    from r1lab.recipes.run import load_task_for, resolve_model, resolve_system

    settings = {"model": args.model, "task": args.task, "template": args.template, "eval": {"k": args.k, "n": args.n}}
    if args.max_new_tokens is not None:
        settings["eval"]["sampling"] = {"max_new_tokens": args.max_new_tokens}
    cfg = validate(settings, "eval settings", args.overrides)
    task = load_task_for(cfg)
    path = resolve_model(cfg)
    model, tokenizer = load_model(path, cfg.device, cfg.dtype, **cfg.hub_options())
    result = evaluate(make_engine(cfg.rollout.engine, model, tokenizer, seed=cfg.seed, **cfg.rollout.options()), task, cfg.eval, template=cfg.template,
                      system=resolve_system(cfg, path), reflection_phrases=cfg.rl.reflection_phrases)
    _print_eval(path, cfg.task, result)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


def _generate(args) -> int:
    from r1lab.engines import make_engine
    from r1lab.models.io import load_model
    from r1lab.progress import console
    from r1lab.recipes.load import validate
    from r1lab.recipes.run import load_task_for, resolve_model, resolve_system
    from r1lab.sft.generate import generate

    sampling = {"temperature": args.temperature, "max_new_tokens": args.max_new_tokens}
    cfg = validate({"model": args.model, "task": args.task, "template": args.template,
                    "sampling": {k: v for k, v in sampling.items() if v is not None}}, "generate settings", args.overrides)
    task = load_task_for(cfg)
    path = resolve_model(cfg)
    model, tokenizer = load_model(path, cfg.device, cfg.dtype, **cfg.hub_options())
    stats = generate(make_engine(cfg.rollout.engine, model, tokenizer, seed=cfg.seed, **cfg.rollout.options()), task, task.examples(args.split)[: args.n], k=args.k,
                     sampling=cfg.sampling,
                     template=cfg.template, system=resolve_system(cfg, path), filters=None, out_path=args.out)
    console.print(stats)
    return 0


def _sft(args) -> int:
    from r1lab.recipes.load import validate
    from r1lab.recipes.run import resolve_model
    from r1lab.sft.train import sft_from_config

    # template, system, seed, device, dtype, lora and log are the run's (every stage's); the other fields are sft's
    run_level = ("template", "system", "seed", "device", "dtype", "lora", "log", "sft")
    overrides = [o if o.split("=")[0].split(".")[0] in run_level else f"sft.{o}" for o in args.overrides]
    cfg = validate({"model": args.model}, "sft settings", overrides)
    data = args.data
    if data.endswith(".jsonl") and _looks_like_generate_output(data):
        from r1lab.sft.generate import read_kept

        data = read_kept(data)  # r1lab generate's rows: train on the kept samples only
    result = sft_from_config(resolve_model(cfg), data, cfg.sft, args.out, template=cfg.template, system=cfg.system,
                             seed=cfg.seed, device=cfg.device, dtype=cfg.dtype, lora=cfg.lora, log=cfg.log)
    print(json.dumps(result, indent=2))
    return 0


def _chat(args) -> int:
    tools = [name.strip() for given in args.tools or [] for name in given.split(",") if name.strip()]
    if args.max_turns is not None and args.max_turns < 1:
        raise ValueError(f"--max-turns must be at least 1, not {args.max_turns}")
    if args.api:
        _need_serve_extra()
        from r1lab.ui.api_chat import api_chat, api_key_for

        api_chat(args.api, model=args.api_model or args.model, api_key=args.api_key or api_key_for(args.api),
                 temperature=args.temperature, max_tokens=args.max_new_tokens, tools=tools, max_turns=args.max_turns)
        return 0
    from r1lab.config import SamplingConfig, changed
    from r1lab.ui.chat import CHAT_SAMPLING, chat

    given = {"temperature": args.temperature, "max_new_tokens": args.max_new_tokens}
    sampling = changed(SamplingConfig, CHAT_SAMPLING, {k: v for k, v in given.items() if v is not None}, "chat")
    if args.model is None:
        raise ValueError("r1lab chat needs a model directory or hub name, or --api BASE_URL")
    chat(args.model, template=args.template, sampling=sampling, tools=tools, max_turns=args.max_turns)
    return 0


def _serve(args) -> int:
    _need_serve_extra()
    from r1lab.serve.api import ServeLimits
    from r1lab.serve.server import serve

    limits = ServeLimits(max_tokens=args.max_tokens, max_n=args.max_n, max_body_bytes=args.max_body_bytes,
                         max_pending=args.max_pending)
    serve(args.model, host=args.host, port=args.port, api_key=args.api_key, engine=args.engine, template=args.template,
          name=args.name, device=args.device, dtype=args.dtype, threads=args.threads, limits=limits,
          batch_window_s=args.batch_window_ms / 1000, max_batch_rows=args.max_batch)
    return 0


def _push(args) -> int:
    from r1lab.models.hub import push

    print(push(args.model_dir, args.repo_id, private=args.private))
    return 0


def _report(args) -> int:
    from r1lab.evaluation.report import write_report

    print(write_report(args.run_dir))
    return 0


def _export(args) -> int:
    from r1lab.export.gguf import export_gguf

    print(json.dumps(export_gguf(args.model_dir, args.gguf, quant=args.quant, template=args.template), indent=2))
    return 0


# command -> the function that runs it (main reports what they raise); a test may put its own in for one
COMMANDS = {"run": _run, "distill": _distill, "control": _control, "compare": _compare, "pretrain": _pretrain,
            "eval": _eval, "generate": _generate, "sft": _sft, "chat": _chat, "serve": _serve, "push": _push,
            "report": _report, "export": _export}

def _need_serve_extra() -> None:
    """r1lab serve and chat --api need the `serve` extra's packages: say so instead of a traceback."""
    import importlib.util

    missing = [name for name in ("fastapi", "uvicorn", "openai") if importlib.util.find_spec(name) is None]
    if missing:
        raise ValueError(f"{', '.join(missing)} not installed: pip install 'r1lab[serve]' (or -e '.[serve]' in a checkout)")


def _looks_like_generate_output(path: str) -> bool:
    with open(path) as f:
        first = f.readline()
    try:
        return "kept" in json.loads(first)
    except json.JSONDecodeError:
        return False


def _print_eval(model: str, task: str, result: dict) -> None:
    from rich.table import Table

    from r1lab.progress import console

    table = Table(title=f"{model} on {task}")
    for key, value in result.items():
        if isinstance(value, (int, float)):
            table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    console.print(table)


if __name__ == "__main__":
    sys.exit(main())
