"""r1lab: the DeepSeek-R1 training system, from a tiny world on a CPU to real models.

From Python: `r1lab.run("r1-zero", out="runs/r1-zero", rl={"steps": 50})` and the other commands' twins
(`r1lab.evaluate`, `r1lab.load`, ...: r1lab/api/), imported on first use, so `import r1lab` stays cheap.
"""

__version__ = "0.1.0"

API = ("run", "distill", "pretrain", "compare", "control", "evaluate", "generate", "finetune", "chat", "serve_model", "push",
       "report", "export_gguf", "load", "RunResult", "Stage", "CompareResult", "ControlResult", "EvalResult", "GenerateResult", "Reply", "SFTResult")
__all__ = ["__version__", *API]


def __getattr__(name: str):
    if name in API:
        import r1lab.api

        return getattr(r1lab.api, name)
    raise AttributeError(f"module 'r1lab' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
