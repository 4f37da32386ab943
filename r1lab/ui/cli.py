"""The `r1lab` command. Settings are `field=value` overrides of a recipe, e.g. `rl.lr=1e-6 task=gsm8k.jsonl`."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

EXAMPLES = """examples:
  r1lab run r1-zero --out runs/r1-zero                    # the demo: tiny world, CPU, ~15 min
  r1lab run r1-zero --out runs/q model=Qwen/Qwen2.5-0.5B task=openai/gsm8k data.config=main rl.lr=1e-6
  r1lab run r1-zero --out runs/q --nproc 4 model=Qwen/Qwen2.5-0.5B  # 4 processes (GPUs), FSDP2: docs/SCALE.md
  r1lab eval runs/r1-zero/final --task tinyworld --k 8
  r1lab generate runs/r1-zero/final --k 8 --n 500 --out traces.jsonl   # sample, score, filter
  r1lab sft tinyworld --data traces.jsonl --out runs/sft epochs=2      # SFT on the kept samples
  r1lab run r1 --out runs/r1                              # R1's four stages + a distilled student, ~30 min
  r1lab run distill-vs-rl --out runs/dvr teacher=runs/r1/final
  r1lab distill --teacher runs/r1/final --student tinyworld --out runs/distill
  r1lab control --algo ppo --env CartPole-v1 --out runs/cartpole-ppo
  r1lab compare ppo-vs-grpo --out runs/cmp                # the paper's PPO (lambda 0.95, 1.0) vs GRPO
  r1lab chat runs/r1-zero/final
  r1lab serve runs/r1-zero/final --port 8000              # OpenAI-compatible API on 127.0.0.1
  r1lab chat --api http://127.0.0.1:8000/v1 --model runs/r1-zero/final   # or DeepSeek's, vLLM's, ollama's
  r1lab push runs/r1-zero/final you/r1lab-tiny-r1-zero    # upload a model to the Hugging Face Hub
"""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="r1lab", description="DeepSeek-R1 in miniature: R1-Zero with GRPO, from a tiny world on a CPU to HF models.",
                                epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run a recipe (r1-zero, r1, distill-vs-rl, distill) into a run directory; re-running resumes it")
    run.add_argument("recipe", help="recipe name (r1-zero, r1, distill-vs-rl, distill) or path to a YAML recipe")
    run.add_argument("--out", required=True, help="run directory (created, or resumed if it exists)")
    run.add_argument("--nproc", type=int, default=1, help="processes on this machine (one per GPU): starts itself again "
                     "through torchrun; rl stages train data-parallel with FSDP2 (docs/SCALE.md)")
    run.add_argument("overrides", nargs="*", help="field=value settings, e.g. rl.steps=50 model=path/to/model")

    dis = sub.add_parser("distill", help="a teacher writes filtered traces, a student is SFT'd on them (the 'distill' recipe)")
    dis.add_argument("--teacher", required=True, help="teacher model directory (e.g. runs/r1/final)")
    dis.add_argument("--student", default="tinyworld",
                     help="student model directory or hub name; 'tinyworld' (default) pretrains a quarter-size tiny-world model")
    dis.add_argument("--out", required=True, help="run directory (created, or resumed if it exists)")
    dis.add_argument("overrides", nargs="*", help="field=value settings, e.g. stages.0.k=8 sft.epochs=3 task=data.jsonl")

    ctl = sub.add_parser("control", help="PPO or GRPO on a classic-control env (CartPole-v1, Acrobot-v1) with a small MLP")
    ctl.add_argument("--algo", required=True, choices=["grpo", "ppo"])
    ctl.add_argument("--env", default="CartPole-v1")
    ctl.add_argument("--out", required=True, help="directory: metrics.jsonl, summary.json, policy.pt")
    ctl.add_argument("overrides", nargs="*", help="ControlConfig fields (r1lab/config/control.py), e.g. seed=1 lr=3e-4 group_size=16")

    cmp = sub.add_parser("compare", help="run variants (algorithms, settings) on the same task, seed and budget; one overlaid report")
    cmp.add_argument("spec", help="comparison name (ppo-vs-grpo, grpo-family, cartpole, aha-ablation) or path to a YAML spec")
    cmp.add_argument("--out", required=True, help="directory: one run directory per variant, compare.json, report.html")
    cmp.add_argument("overrides", nargs="*", help="field=value settings for every variant, e.g. rl.steps=50")

    pre = sub.add_parser("pretrain", help="build the tiny world's base model (cached for later runs)")
    pre.add_argument("--out", help="save it here instead of the cache")
    pre.add_argument("overrides", nargs="*", help="pretrain fields, e.g. steps=200 hidden_size=64")

    ev = sub.add_parser("eval", help="pass@1 over k samples at T=0.6 / top-p 0.95 on a task's test split")
    ev.add_argument("model", help="model directory or hub name ('tinyworld' for the tiny base)")
    ev.add_argument("--task", default="tinyworld")
    ev.add_argument("--k", type=int, default=4)
    ev.add_argument("--n", type=int, default=None, help="number of test problems (default: all)")
    ev.add_argument("--template", default="r1-zero", choices=["r1-zero", "chat", "none"])
    ev.add_argument("--max-new-tokens", type=int, default=None, help="default: the run's sampling (128)")
    ev.add_argument("--json", help="write the result here")
    ev.add_argument("overrides", nargs="*", help="more fields, e.g. data.answer_field=solution")

    gen = sub.add_parser("generate", help="sample k completions per prompt, score and filter them, write JSONL (every sample, kept or not)")
    gen.add_argument("model", help="model directory or hub name ('tinyworld' for the tiny base)")
    gen.add_argument("--task", default="tinyworld")
    gen.add_argument("--split", default="train", choices=["train", "test"])
    gen.add_argument("--n", type=int, default=None, help="number of prompts (default: all)")
    gen.add_argument("--k", type=int, default=4)
    gen.add_argument("--temperature", type=float, default=None, help="default: the run's sampling (1.0)")
    gen.add_argument("--max-new-tokens", type=int, default=None, help="default: the run's sampling (128)")
    gen.add_argument("--template", default="r1-zero", choices=["r1-zero", "chat", "none"])
    gen.add_argument("--out", required=True, help="JSONL file to write")
    gen.add_argument("overrides", nargs="*", help="more fields, e.g. data.answer_field=solution")

    sf = sub.add_parser("sft", help="fine-tune a model on prompt/completion or chat rows (loss on completions only)")
    sf.add_argument("model", help="model directory or hub name ('tinyworld' for the tiny base)")
    sf.add_argument("--data", required=True, help="JSONL/JSON/CSV/parquet file or save_to_disk directory (e.g. r1lab generate's output)")
    sf.add_argument("--out", required=True, help="output directory: metrics.jsonl, checkpoints/, final/")
    sf.add_argument("overrides", nargs="*", help="sft fields and the run's template, system, seed, device, dtype, lora, "
                    "log, e.g. epochs=3 lr=1e-5 template=chat lora.r=16 log.report_to=tensorboard")

    ch = sub.add_parser("chat", help="talk to a model, or to any OpenAI-compatible API (--api); thinking is shown apart from the answer")
    ch.add_argument("model", nargs="?", help="model directory or hub name (without --api)")
    ch.add_argument("--api", metavar="BASE_URL", help="an OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1 or https://api.deepseek.com")
    ch.add_argument("--model", dest="api_model", metavar="NAME", help="with --api: the model name (default: the server's first)")
    ch.add_argument("--api-key", help="with --api (default: $R1LAB_API_KEY, $OPENAI_API_KEY; $DEEPSEEK_API_KEY for DeepSeek's API)")
    ch.add_argument("--template", default="r1-zero", choices=["r1-zero", "chat", "none"])
    ch.add_argument("--temperature", type=float, default=None, help="default: evaluation's (0.6)")
    ch.add_argument("--max-new-tokens", type=int, default=None, help="default: 512")

    srv = sub.add_parser("serve", help="serve a model over an OpenAI-compatible HTTP API (reasoning_content apart from content)")
    srv.add_argument("model", help="model directory, hub name or 'tinyworld'")
    srv.add_argument("--host", default="127.0.0.1", help="address to listen on (default loopback only)")
    srv.add_argument("--port", type=int, default=8000, help="0: any free port (printed)")
    srv.add_argument("--api-key", default=os.environ.get("R1LAB_API_KEY"),
                     help="require 'Authorization: Bearer KEY' (default: $R1LAB_API_KEY if set, else no key)")
    srv.add_argument("--engine", default="torch", help="rollout engine (torch; vllm where installed)")
    srv.add_argument("--template", default="auto", choices=["auto", "r1-zero", "chat", "none"],
                     help="auto: the one the model was trained with (r1lab.json), else its chat template, else r1-zero")
    srv.add_argument("--name", help="model name clients ask for (default: the MODEL argument)")
    srv.add_argument("--device", default="auto")
    srv.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: one per core)")
    srv.add_argument("--dtype", default="auto")
    srv.add_argument("--max-tokens", type=int, default=4096, help="the most a request may ask for per completion")
    srv.add_argument("--max-n", type=int, default=16, help="the most completions per request")
    srv.add_argument("--max-body-bytes", type=int, default=1 << 20)
    srv.add_argument("--max-pending", type=int, default=256, help="requests in flight at once; more are answered 429")
    srv.add_argument("--batch-window-ms", type=float, default=5.0, help="how long to gather requests into one engine call")
    srv.add_argument("--max-batch", type=int, default=64, help="rows (prompts x n) per engine call")

    push = sub.add_parser("push", help="upload a model directory (e.g. runs/r1-zero/final) to the Hugging Face Hub")
    push.add_argument("model_dir", help="a saved model directory")
    push.add_argument("repo_id", help="the hub repository to create or update, e.g. you/r1lab-qwen-0.5b")
    push.add_argument("--private", action="store_true", help="create the repository private")

    rep = sub.add_parser("report", help="(re)write a run directory's plots and report.html")
    rep.add_argument("run_dir")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
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
    from r1lab.recipes.load import load_config, parse_overrides, validate

    if dist.launched() and args.command != "run":
        raise ValueError(f"`r1lab {args.command}` runs in one process: under torchrun, only `r1lab run` does")
    if args.command == "run":
        from r1lab.recipes.pipeline import run_recipe

        cfg = load_config(args.recipe, args.overrides)
        if args.nproc > 1:
            cfg.check_processes(args.nproc)  # a bad split fails here, before any process starts
            return dist.launch(args.nproc, ["run", args.recipe, "--out", args.out, *args.overrides])
        with dist.process_group():  # torchrun's processes join theirs; one process has none
            run_recipe(cfg, args.out)
    elif args.command == "distill":
        from r1lab.recipes.pipeline import run_recipe

        run_recipe(load_config("distill", [f"teacher={args.teacher}", f"student.model={args.student}", *args.overrides]), args.out)
    elif args.command == "control":
        from r1lab.experiments.control import run_control
        from r1lab.recipes.load import validate_control

        cfg = validate_control({"algo": args.algo, "env": args.env, **parse_overrides(args.overrides)})
        summary = run_control(cfg, args.out)
        print(json.dumps({k: summary[k] for k in ("algo", "env", "final_mean_return", "env_steps", "wall_seconds")}, indent=2))
    elif args.command == "compare":
        from r1lab.experiments.compare import load_spec, run_compare

        run_compare(load_spec(args.spec, args.overrides), args.out)
    elif args.command == "pretrain":
        from r1lab.progress import console
        from r1lab.tinyworld.build import pretrain

        cfg = validate({}, "pretrain settings", [f"pretrain.{o}" for o in args.overrides]).pretrain
        console.print(f"tiny base model: {pretrain(cfg, args.out)}")
    elif args.command == "eval":
        from r1lab.engines import make_engine
        from r1lab.evaluation.evaluate import evaluate
        from r1lab.models.io import load_model
        from r1lab.recipes.pipeline import load_task_for, resolve_model, resolve_system

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
    elif args.command == "generate":
        from r1lab.engines import make_engine
        from r1lab.models.io import load_model
        from r1lab.progress import console
        from r1lab.recipes.pipeline import load_task_for, resolve_model, resolve_system
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
    elif args.command == "sft":
        from r1lab.recipes.pipeline import resolve_model
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
    elif args.command == "chat" and args.api:
        _need_serve_extra()
        from r1lab.ui.api_chat import api_chat, api_key_for

        api_chat(args.api, model=args.api_model or args.model, api_key=args.api_key or api_key_for(args.api),
                 temperature=args.temperature, max_tokens=args.max_new_tokens)
    elif args.command == "chat":
        from r1lab.config import SamplingConfig, changed
        from r1lab.ui.chat import CHAT_SAMPLING, chat

        given = {"temperature": args.temperature, "max_new_tokens": args.max_new_tokens}
        sampling = changed(SamplingConfig, CHAT_SAMPLING, {k: v for k, v in given.items() if v is not None}, "chat")
        if args.model is None:
            raise ValueError("r1lab chat needs a model directory or hub name, or --api BASE_URL")
        chat(args.model, template=args.template, sampling=sampling)
    elif args.command == "serve":
        _need_serve_extra()
        from r1lab.ui.serve import serve
        from r1lab.ui.serve_api import ServeLimits

        limits = ServeLimits(max_tokens=args.max_tokens, max_n=args.max_n, max_body_bytes=args.max_body_bytes,
                             max_pending=args.max_pending)
        serve(args.model, host=args.host, port=args.port, api_key=args.api_key, engine=args.engine, template=args.template,
              name=args.name, device=args.device, dtype=args.dtype, threads=args.threads, limits=limits,
              batch_window_s=args.batch_window_ms / 1000, max_batch_rows=args.max_batch)
    elif args.command == "push":
        from r1lab.models.hub import push

        print(push(args.model_dir, args.repo_id, private=args.private))
    elif args.command == "report":
        from r1lab.evaluation.report import write_report

        print(write_report(args.run_dir))
    return 0


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
