"""The `r1lab` command's arguments: every subcommand, its options and their help (cli.py runs them)."""

from __future__ import annotations

import argparse
import os
from importlib import resources

from r1lab.config.control import SUPPORTED_ENVS

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
  r1lab control --algo ppo --env Hopper-v5 --out runs/hopper-ppo --video   # a MuJoCo robot: pip install 'r1lab[mujoco]'
  r1lab compare robot --env Hopper-v5 --out runs/hopper   # PPO, GRPO and branching GRPO, one budget
  r1lab compare ppo-vs-grpo --out runs/cmp                # the paper's PPO (lambda 0.95, 1.0) vs GRPO
  r1lab chat runs/r1-zero/final
  r1lab serve runs/r1-zero/final --port 8000              # OpenAI-compatible API on 127.0.0.1
  r1lab chat --api http://127.0.0.1:8000/v1 --model runs/r1-zero/final   # or DeepSeek's, vLLM's, ollama's
  r1lab chat --api http://127.0.0.1:8000/v1 --tools r1lab.tools:calculator  # the client runs the model's calls
  r1lab push runs/r1-zero/final you/r1lab-tiny-r1-zero    # upload a model to the Hugging Face Hub
  r1lab export runs/r1-zero/final --gguf out/r1.gguf      # for llama.cpp and ollama (+ out/Modelfile)
"""


def parser() -> argparse.ArgumentParser:
    """The `r1lab` command's parser, its subcommands in the order --help lists them."""
    p = argparse.ArgumentParser(prog="r1lab", description="DeepSeek-R1 in miniature: R1-Zero with GRPO, from a tiny world on a CPU to HF models.",
                                epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_add_training, _add_sampling, _add_chat_and_serve, _add_hub_and_report, _add_export):
        add(sub)
    return p


def _add_training(sub) -> None:
    """run, distill, control, compare, pretrain."""
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

    ctl = sub.add_parser("control", help="PPO, GRPO or branching GRPO on a gymnasium control task or MuJoCo robot, small MLPs")
    ctl.add_argument("--algo", required=True, choices=["grpo", "ppo", "grpo-branch"])
    ctl.add_argument("--env", default="CartPole-v1", help=f"one of {', '.join(SUPPORTED_ENVS)}; each starts from its preset "
                     "(r1lab/config/control.py ENV_PRESETS)")
    ctl.add_argument("--out", required=True, help="directory: metrics.jsonl, summary.json, policy.pt")
    ctl.add_argument("--video", action="store_true", help="also write policy.gif, an episode of the trained policy")
    ctl.add_argument("overrides", nargs="*", help="ControlConfig fields (r1lab/config/control.py), e.g. seed=1 lr=3e-4 group_size=16")

    cmp = sub.add_parser("compare", help="run variants (algorithms, settings) on the same task, seed and budget; one overlaid report")
    shipped = sorted(p.name[:-5] for p in (resources.files("r1lab") / "experiments" / "comparisons").iterdir()
                     if p.name.endswith(".yaml"))
    cmp.add_argument("spec", help=f"comparison name ({', '.join(shipped)}) or path to a YAML spec")
    cmp.add_argument("--out", required=True, help="directory: one run directory per variant, compare.json, report.html")
    cmp.add_argument("--env", help="control comparisons: the env every variant trains on (the same as env=ENV)")
    cmp.add_argument("overrides", nargs="*", help="field=value settings for every variant, e.g. rl.steps=50")

    pre = sub.add_parser("pretrain", help="build the tiny world's base model (cached for later runs)")
    pre.add_argument("--out", help="save it here instead of the cache")
    pre.add_argument("overrides", nargs="*", help="pretrain fields, e.g. steps=200 hidden_size=64")


def _add_sampling(sub) -> None:
    """eval, generate, sft."""
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


def _add_chat_and_serve(sub) -> None:
    ch = sub.add_parser("chat", help="talk to a model, or to any OpenAI-compatible API (--api); thinking is shown apart from the answer")
    ch.add_argument("model", nargs="?", help="model directory or hub name (without --api)")
    ch.add_argument("--api", metavar="BASE_URL", help="an OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1 or https://api.deepseek.com")
    ch.add_argument("--model", dest="api_model", metavar="NAME", help="with --api: the model name (default: the server's first)")
    ch.add_argument("--api-key", help="with --api (default: $R1LAB_API_KEY, $OPENAI_API_KEY; $DEEPSEEK_API_KEY for DeepSeek's API)")
    ch.add_argument("--template", default="r1-zero", choices=["r1-zero", "chat", "none"])
    ch.add_argument("--temperature", type=float, default=None, help="default: evaluation's (0.6)")
    ch.add_argument("--max-new-tokens", type=int, default=None, help="default: 512")
    ch.add_argument("--tools", action="append", metavar="MODULE:FUNCTION",
                    help="a tool the model may call, e.g. r1lab.tools:calculator (repeat it, or separate with commas); "
                         "chat runs each call and shows it with its result. A model trained with tools has its own (r1lab.json)")
    ch.add_argument("--max-turns", type=int, default=None,
                    help="with tools: the most generations (replies) per question (default: the model's, else 4)")

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


def _add_hub_and_report(sub) -> None:
    push = sub.add_parser("push", help="upload a model directory (e.g. runs/r1-zero/final) to the Hugging Face Hub")
    push.add_argument("model_dir", help="a saved model directory")
    push.add_argument("repo_id", help="the hub repository to create or update, e.g. you/r1lab-qwen-0.5b")
    push.add_argument("--private", action="store_true", help="create the repository private")

    rep = sub.add_parser("report", help="(re)write a run directory's plots and report.html")
    rep.add_argument("run_dir")


def _add_export(sub) -> None:
    ex = sub.add_parser("export", help="write a model as one GGUF file for llama.cpp and ollama, with an ollama Modelfile beside it")
    ex.add_argument("model_dir", help="a saved model directory (Llama or Qwen2, byte-level BPE tokenizer)")
    ex.add_argument("--gguf", required=True, metavar="OUT.gguf", help="the GGUF file to write (whole or not at all)")
    ex.add_argument("--quant", default="f16", choices=["f16", "q8_0", "q4_k_m"],
                    help="weights' precision (default f16); q4_k_m uses llama.cpp's quantiser (pip install llama-cpp-python)")
    ex.add_argument("--template", choices=["r1-zero", "chat"], default=None,
                    help="prompt format written into the file and Modelfile (default: the model's, r1lab.json; else its "
                         "chat template; else r1-zero)")
