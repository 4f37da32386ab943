"""Running `r1lab serve`: a model loaded into the app (`build_app`), served on a port until Ctrl-C (`serve`)
or from a thread of this process (`serving_in_thread`: tests, benchmarks). The app itself: app.py."""

from __future__ import annotations

import contextlib
import socket
import sys

from r1lab.serve.api import ServeLimits
from r1lab.serve.app import make_app

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def model_template(model_path: str, tokenizer) -> str:
    """The template a model was trained with: an r1lab model's (its r1lab.json; trained_system answers
    for the template it names), else the tokenizer's chat template when it has one, else r1-zero."""
    from r1lab.models.io import trained_system

    for template in ("r1-zero", "chat"):
        if trained_system(model_path, template) is not None:
            return template
    return "chat" if getattr(tokenizer, "chat_template", None) else "r1-zero"


def bound_socket(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (port 0: any free one), so the address can be printed before serving:
    connections made before the server runs wait in the backlog instead of being refused."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    return sock


def build_app(model: str, *, api_key: str | None = None, engine: str = "torch", template: str = "auto", name: str | None = None,
              device: str = "auto", dtype: str = "auto", seed: int = 0, limits: ServeLimits | None = None,
              batch_window_s: float = 0.005, max_batch_rows: int = 64):
    """Loads `model` (a directory, a hub name or 'tinyworld') into the engine `engine` -> (app, what it serves)."""
    from r1lab.engines import make_engine
    from r1lab.models.io import load_model, load_tokenizer, trained_system
    from r1lab.recipes.load import validate
    from r1lab.recipes.run import resolve_model

    path = resolve_model(validate({"model": model}, "serve settings"))
    weights, tokenizer = load_model(path, device=device, dtype=dtype)
    template = model_template(path, tokenizer) if template == "auto" else template
    sampler = make_engine(engine, weights, tokenizer, seed=seed)
    # The Engine protocol has no "reseed": a request's seed gives the random state a fresh engine made with
    # that seed starts from. A torch engine is cheap to make (it is a generator); other engines are not.
    seeded_state = (lambda s: make_engine(engine, weights, tokenizer, seed=s).rng_state()) if engine == "torch" else None
    app = make_app(sampler, model_name=name or model, template=template, system=trained_system(path, template),
                   limits=limits, api_key=api_key, seeded_state=seeded_state, tokenizer=load_tokenizer(path),
                   context_length=getattr(weights.config, "max_position_embeddings", None),
                   batch_window_s=batch_window_s, max_batch_rows=max_batch_rows)
    return app, f"{path} as '{name or model}' (template {template}, engine {engine})"


def serve(model: str, *, host: str = "127.0.0.1", port: int = 8000, threads: int | None = None, **settings) -> None:
    """Serves `model` on host:port until Ctrl-C; `settings` as build_app's. threads: torch's CPU threads
    (None: torch's default, one per core; 1 is faster on a machine busy with other work)."""
    import torch
    import uvicorn

    if threads:
        torch.set_num_threads(threads)

    app, what = build_app(model, **settings)
    sock = bound_socket(host, port)
    shown_host = f"[{host}]" if ":" in host else host
    print(f"r1lab serve: {what} at http://{shown_host}:{sock.getsockname()[1]}/v1", flush=True)
    if host not in LOOPBACK and settings.get("api_key") is None:
        print(f"warning: serving on {host} without --api-key: anyone who can reach it can use the model", file=sys.stderr)
    # the engine is closed by the app's lifespan (make_app), also when serving fails
    uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=5)).run(sockets=[sock])


@contextlib.contextmanager
def serving_in_thread(app, host: str = "127.0.0.1", port: int = 0):
    """Serves `app` from a thread of this process while the block runs (tests, benchmarks); yields the base
    URL (http://host:port, without /v1). The server is stopped, and its thread joined, on the way out."""
    import threading
    import time

    import uvicorn

    sock = bound_socket(host, port)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=2))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="r1lab-serve", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.01)
        yield f"http://{host}:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()
