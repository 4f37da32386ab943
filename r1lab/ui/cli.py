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
    import r1lab.api  # noqa: F401  (quiets HF's own progress bars: r1lab draws its own)
    try:
        return _dispatch(args)
    except ChildProcessError as err:  # --nproc: the processes' own exit status
        print(f"error: {err}", file=sys.stderr)
        return getattr(err, "returncode", 1)
    except KeyboardInterrupt:
        print("\ninterrupted: run the same command again to resume from the last checkpoint", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, OSError) as err:  # ConfigError is a ValueError
        if os.environ.get("R1LAB_DEBUG"):
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2


def _dispatch(args) -> int:
    from r1lab import dist

    if dist.launched() and args.command != "run":
        raise ValueError(f"`r1lab {args.command}` runs in one process: under torchrun, only `r1lab run` does")
    return COMMANDS[args.command](args)


# Each command's work, given its parsed arguments -> the exit status: its function in r1lab.api (one path for the
# CLI and Python), given the `field=value` overrides parsed into the same dict Python callers pass. Modules are
# imported on use: a command loads only what it needs (torch, transformers, fastapi take seconds).


def _settings(args) -> dict:
    from r1lab.recipes.load import parse_overrides

    return parse_overrides(args.overrides)


def _run(args) -> int:
    from r1lab.api import run

    run(args.recipe, args.out, nproc=args.nproc, **_settings(args))
    return 0


def _distill(args) -> int:
    from r1lab.api import distill

    distill(args.teacher, args.out, student=args.student, **_settings(args))
    return 0


def _control(args) -> int:
    from r1lab.api import control

    summary = control(args.algo, args.out, env=args.env, video=args.video, **_settings(args)).summary
    print(json.dumps({k: summary[k] for k in ("algo", "env", "final_mean_return", "env_steps", "wall_seconds")}, indent=2))
    return 0


def _compare(args) -> int:
    from r1lab.api import compare

    compare(args.spec, args.out, env=args.env, **_settings(args))
    return 0


def _pretrain(args) -> int:
    from r1lab.api import pretrain

    pretrain(args.out, **_settings(args))
    return 0


def _eval(args) -> int:
    from r1lab.api import evaluate

    result = evaluate(args.model, task=args.task, k=args.k, n=args.n, template=args.template,
                      max_new_tokens=args.max_new_tokens, **_settings(args))
    _print_eval(result.model, result.task, result.metrics)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result.metrics, f, indent=2)
    return 0


def _generate(args) -> int:
    from r1lab.api import generate
    from r1lab.progress import console

    stats = generate(args.model, args.out, task=args.task, split=args.split, n=args.n, k=args.k, temperature=args.temperature,
                        max_new_tokens=args.max_new_tokens, template=args.template, **_settings(args)).counts
    console.print(stats)
    return 0


def _sft(args) -> int:
    from r1lab.api import finetune

    print(json.dumps(finetune(args.model, args.data, args.out, **_settings(args)).summary, indent=2))
    return 0


def _chat(args) -> int:
    from r1lab.api import chat

    tools = [name.strip() for given in args.tools or [] for name in given.split(",") if name.strip()]
    if args.max_turns is not None and args.max_turns < 1:
        raise ValueError(f"--max-turns must be at least 1, not {args.max_turns}")
    if args.model is None and not args.api:
        raise ValueError("r1lab chat needs a model directory or hub name, or --api BASE_URL")
    chat(args.model, api=args.api, api_model=args.api_model, api_key=args.api_key, template=args.template,
         temperature=args.temperature, max_new_tokens=args.max_new_tokens, tools=tools, max_turns=args.max_turns)
    return 0


def _serve(args) -> int:
    from r1lab.api import serve_model

    serve_model(args.model, host=args.host, port=args.port, api_key=args.api_key, engine=args.engine, template=args.template,
          name=args.name, device=args.device, dtype=args.dtype, threads=args.threads, max_tokens=args.max_tokens,
          max_n=args.max_n, max_body_bytes=args.max_body_bytes, max_pending=args.max_pending,
          batch_window_ms=args.batch_window_ms, max_batch=args.max_batch)
    return 0


def _push(args) -> int:
    from r1lab.api import push

    print(push(args.model_dir, args.repo_id, private=args.private))
    return 0


def _report(args) -> int:
    from r1lab.api import report

    print(report(args.run_dir))
    return 0


def _export(args) -> int:
    from r1lab.api import export_gguf

    print(json.dumps(export_gguf(args.model_dir, args.gguf, quant=args.quant, template=args.template), indent=2))
    return 0


# command -> the function that runs it (main reports what they raise); a test may put its own in for one
COMMANDS = {"run": _run, "distill": _distill, "control": _control, "compare": _compare, "pretrain": _pretrain,
            "eval": _eval, "generate": _generate, "sft": _sft, "chat": _chat, "serve": _serve, "push": _push,
            "report": _report, "export": _export}


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
