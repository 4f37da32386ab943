"""r1lab from Python: every `r1lab` command as a function that takes Python values (and objects where the CLI takes
strings) and returns objects. The CLI (ui/cli.py) parses its arguments and calls these; `import r1lab` exposes them.

    run(recipe, out, **settings) -> RunResult                  r1lab run
    distill(teacher, out, student=..., **settings) -> RunResult   r1lab distill
    pretrain(out=None, **settings) -> Path                      r1lab pretrain
    compare(spec, out, env=..., **settings) -> CompareResult    r1lab compare
    control(algo, out, env=..., video=...) -> ControlResult     r1lab control
    evaluate(model, task=..., k=..., n=...) -> EvalResult       r1lab eval
    generate(model, out, task=..., k=...) -> GenerateResult     r1lab generate
    finetune(model, data, out, **settings) -> SFTResult         r1lab sft (r1lab.sft is a package of r1lab's)
    chat(model, message) -> Reply (no message: the terminal loop)  r1lab chat
    serve_model(model, port=..., ...)                           r1lab serve (so is r1lab.serve)
    push(model_dir, repo_id) -> str (the URL)                   r1lab push
    report(run_dir) -> Path                                     r1lab report
    export_gguf(model_dir, gguf, quant=...) -> dict             r1lab export (r1lab.export is the package)
    load(run_dir) -> RunResult | CompareResult | ControlResult  any finished directory read back
"""

import os
import sys
import warnings

from r1lab.api.models import (
    EvalResult,
    GenerateResult,
    Reply,
    SFTResult,
    chat,
    evaluate,
    export_gguf,
    finetune,
    generate,
    push,
    report,
    serve_model,
)
from r1lab.api.results import CompareResult, ControlResult, RunResult, Stage, load
from r1lab.api.runs import compare, control, distill, pretrain, run

# each `r1lab` sub-command -> its function here (tests/test_api.py checks every sub-command has one)
COMMANDS = {"run": run, "distill": distill, "control": control, "compare": compare, "pretrain": pretrain,
            "eval": evaluate, "generate": generate, "sft": finetune, "chat": chat, "serve": serve_model, "push": push, "report": report,
            "export": export_gguf}

__all__ = ["run", "distill", "pretrain", "compare", "control", "evaluate", "generate", "finetune", "chat", "serve_model", "push",
           "report", "export_gguf", "load", "RunResult", "Stage", "CompareResult", "ControlResult", "EvalResult", "GenerateResult", "Reply", "SFTResult"]


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
