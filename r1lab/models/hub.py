"""Names that may be Hugging Face Hub ids: tell a local path from a hub id, say plainly when a hub id cannot be
reached (offline, not cached), and push a finished model to the hub.

A name is a local path when it exists on disk or can only be a path (starts with '.', '/' or '~', or is not a
valid hub id, e.g. 'runs/r1/final'); any other name ('Qwen/Qwen2.5-0.5B', 'gpt2', 'openai/gsm8k') goes to the
hub's loaders, which use their own caches and honour HF_HUB_OFFLINE.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

Kind = Literal["model", "dataset"]


def is_hub_id(name: str) -> bool:
    """Whether `name` is a hub id rather than a local path: not on disk, not path-shaped, and valid as an id."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if Path(name).expanduser().exists() or name.startswith((".", "/", "~")):
        return False
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def fetch_hint(name: str, kind: Kind) -> str:
    flag = " --repo-type dataset" if kind == "dataset" else ""
    return (f"fetch it on a machine with network (`hf download{flag} {name}`, into the same HF_HOME), or pass a local "
            f"{'directory' if kind == 'model' else 'file or directory'} instead")


def check_source(name: str, kind: Kind, what: str, revision: str | None = None) -> None:
    """Before any model work: a local `name` must exist; offline, a hub model must be in the hub cache.
    `what` names the setting in errors (e.g. 'model', 'rl.reward_model'). Raises FileNotFoundError."""
    name = str(name)
    if Path(name).expanduser().exists():
        return
    if not is_hub_id(name):
        raise FileNotFoundError(f"{what}: '{name}' does not exist (a local {'directory' if kind == 'model' else 'path'}, "
                                f"or a hub id like {'Qwen/Qwen2.5-0.5B' if kind == 'model' else 'openai/gsm8k'})")
    if kind == "model" and offline() and not cached(name, revision):
        raise FileNotFoundError(f"{what}: '{name}' is neither a local directory nor in the Hugging Face cache, and "
                                f"HF_HUB_OFFLINE is set; {fetch_hint(name, kind)}")


def cached(name: str, revision: str | None = None) -> bool:
    """Whether the hub cache holds model `name`'s config (what from_pretrained reads first)."""
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(name, "config.json", revision=revision), str)


def unreachable(name: str, kind: Kind, what: str, error: Exception) -> OSError:
    """The error for a hub id that could not be loaded: not cached and the hub not reached, or not on the hub."""
    state = "HF_HUB_OFFLINE is set" if offline() else "the hub could not be reached or has no such repository"
    return OSError(f"{what}: could not load {kind} '{name}': it is not a local path, not in the Hugging Face cache, "
                   f"and {state}; {fetch_hint(name, kind)}. ({type(error).__name__}: {str(error).splitlines()[0][:200]})")


def push(model_dir: str | Path, repo_id: str, private: bool = False) -> str:
    """Uploads a saved model directory to the hub as `repo_id` (created if missing); returns its URL.
    Offline it fails at once, never waits on the network."""
    from huggingface_hub import HfApi

    model_dir = Path(model_dir).expanduser()
    if not (model_dir / "config.json").is_file():
        raise FileNotFoundError(f"'{model_dir}' is not a saved model directory (no config.json)")
    if not is_hub_id(repo_id) or "/" not in repo_id:
        raise ValueError(f"'{repo_id}' is not a hub repository id: use NAMESPACE/NAME, e.g. you/r1lab-qwen-0.5b")
    if offline():
        raise OSError(f"cannot push to '{repo_id}': HF_HUB_OFFLINE is set (unset it on a machine with network)")
    api = HfApi()
    try:
        url = api.create_repo(repo_id, private=private, exist_ok=True)
        api.upload_folder(folder_path=str(model_dir), repo_id=repo_id, commit_message="r1lab: upload model")
    except Exception as e:  # connection, auth (401/403) and name errors from huggingface_hub or its HTTP client
        raise OSError(f"could not push '{model_dir}' to '{repo_id}': {type(e).__name__}: {str(e).splitlines()[0][:300]} "
                      "(a network connection and a write token are needed: `hf auth login` or $HF_TOKEN)") from e
    return str(url)
