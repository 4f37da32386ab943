"""r1lab from Python: every `r1lab` command as a function that takes Python values (and objects where the CLI takes
strings) and returns objects. The CLI (ui/cli.py) parses its arguments and calls these; `import r1lab` exposes them.

    run(recipe, out, **settings) -> RunResult     r1lab run         distill(teacher, out, ...) -> RunResult  r1lab distill
    pretrain(out=None, **settings) -> Path          r1lab pretrain    compare(spec, out, ...) -> CompareResult r1lab compare
    control(algo, out, env=..., ...) -> ControlResult  r1lab control  evaluate(model, task=, k=) -> EvalResult r1lab eval
    generate(model, out, ...) -> (Path, counts)     r1lab generate    sft(model, data, out, ...) -> SFTResult  r1lab sft
    chat(model, message) -> Reply (or the terminal loop) r1lab chat   serve(model, port=...)                   r1lab serve
    push(model_dir, repo_id) -> URL                 r1lab push        report(run_dir) -> Path                  r1lab report
    load(run_dir) -> RunResult | CompareResult | ControlResult        (any finished directory read back)
"""

import os
import sys
import warnings

from r1lab.api.models import EvalResult, Reply, SFTResult, chat, evaluate, generate, push, report, serve, sft
from r1lab.api.results import CompareResult, ControlResult, RunResult, Stage, load
from r1lab.api.runs import compare, control, distill, pretrain, run

# each `r1lab` sub-command -> its function here (tests/test_api.py checks every sub-command has one)
COMMANDS = {"run": run, "distill": distill, "control": control, "compare": compare, "pretrain": pretrain,
            "eval": evaluate, "generate": generate, "sft": sft, "chat": chat, "serve": serve, "push": push, "report": report}

__all__ = ["run", "distill", "pretrain", "compare", "control", "evaluate", "generate", "sft", "chat", "serve", "push",
           "report", "load", "RunResult", "Stage", "CompareResult", "ControlResult", "EvalResult", "Reply", "SFTResult"]


def quiet_hf() -> None:
    """r1lab draws its own progress; HF's per-file bars ("Loading weights", "Writing shards", "Generating train split")
    are noise, and in a notebook their carriage returns leave broken lines."""
    warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm.auto in a notebook without ipywidgets
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # read when huggingface_hub is first imported
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    if "datasets" in sys.modules:
        import datasets

        datasets.disable_progress_bars()
    if "huggingface_hub" in sys.modules:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()


quiet_hf()
