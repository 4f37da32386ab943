"""`r1lab serve`: an OpenAI-compatible HTTP server for a model, with the reasoning split out as DeepSeek's
API returns it.

    GET  /v1/models              the one model served
    POST /v1/chat/completions    message.reasoning_content: the text inside <think>...</think>;
                                 message.content: the answer (the tiny world's <answer> tags removed)
    POST /v1/completions         the raw continuation of a prompt
    GET  /health                 {"status", "pending", "engine_calls"}: no key needed

Requests go through a `Batcher` (batching.py), which shares engine calls between requests that arrive
together. A streamed response is sent when its batch finishes: the role first, then the reasoning and
the answer as one delta each (the engine's `generate` returns whole completions; see batching.py for
why seeded requests are not batched).

Safe by default: binds 127.0.0.1; with an API key every /v1 route needs `Authorization: Bearer KEY`;
the body size, max_tokens, n, the number of stop strings and of requests in flight are bounded
(`ServeLimits`); every refusal is a 4xx in OpenAI's error shape, and an error in one request is that
request's answer only.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import socket
import sys

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from r1lab.config import EVAL_SAMPLING, SamplingConfig
from r1lab.data.format import END_ANSWER, conversation_prompt, response_prefix
from r1lab.ui.batching import Batcher, Busy, Job
from r1lab.ui.serve_api import (
    ChatRequest,
    CompletionRequest,
    Guard,
    OpenAIError,
    ServeLimits,
    add_error_handlers,
    cut_at_stop,
    envelope,
    new_id,
    parse_request,
    reasoning_and_content,
    sse,
    usage,
)

LOOPBACK = ("127.0.0.1", "localhost", "::1")
DISCONNECT_POLL_S = 0.1  # how often a waiting request checks that its client is still there


def make_app(engine, *, model_name: str, template: str, system: str | None = None, limits: ServeLimits | None = None,
             api_key: str | None = None, seeded_state=None, context_length: int | None = None, tokenizer=None,
             batch_window_s: float = 0.005, max_batch_rows: int = 64):
    """The server for `engine` (anything with the Engine protocol's generate / rng_state / set_rng_state /
    tokenizer / close). `template` and `system` write the chat prompts (conversation_prompt);
    `context_length` bounds prompt + completion; `tokenizer` counts prompt tokens in the server's own
    thread (default: a copy of the engine's, since a tokenizer is not safe to share between threads);
    `seeded_state` as in Batcher. The batcher runs while the app does (its lifespan)."""
    limits = limits or ServeLimits()
    tokenizer = tokenizer if tokenizer is not None else copy.deepcopy(engine.tokenizer)
    batcher = Batcher(engine, seeded_state=seeded_state, window_s=batch_window_s, max_rows=max_batch_rows,
                      max_pending=limits.max_pending)

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        batcher.start()
        try:
            yield
        finally:
            batcher.close()
            engine.close()

    app = FastAPI(title="r1lab serve", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(Guard, api_key=api_key, max_body_bytes=limits.max_body_bytes)
    add_error_handlers(app)

    def sampling_of(req, *, prompt_tokens: int, chat: bool) -> SamplingConfig:
        """The request's sampling settings, checked against the limits; max_tokens cut to what the context
        leaves after this prompt (so that a long prompt batched with it never shortens another request)."""
        asked = req.max_completion_tokens or req.max_tokens
        if asked is not None and asked > limits.max_tokens:
            raise OpenAIError(400, f"max_tokens is {asked}; this server allows at most {limits.max_tokens}", param="max_tokens")
        if req.n > limits.max_n:
            raise OpenAIError(400, f"n is {req.n}; this server allows at most {limits.max_n}", param="n")
        stops = req.stop_strings()
        if len(stops) > limits.max_stop or any(not s for s in stops):
            raise OpenAIError(400, f"stop: at most {limits.max_stop} non-empty strings", param="stop")
        room = limits.max_tokens if context_length is None else context_length - prompt_tokens
        if room <= 0:
            raise OpenAIError(400, f"the prompt is {prompt_tokens} tokens; the model's context is {context_length}",
                              param="messages" if chat else "prompt", code="context_length_exceeded")
        if chat and template == "r1-zero":
            stops = [*stops, END_ANSWER]  # the format ends there; a base model would go on as "User: ..."
        return SamplingConfig(temperature=EVAL_SAMPLING["temperature"] if req.temperature is None else req.temperature,
                              top_p=EVAL_SAMPLING["top_p"] if req.top_p is None else req.top_p, top_k=req.top_k or 0,
                              max_new_tokens=min(asked or limits.default_max_tokens, room), stop=stops)

    def check_model(name: str) -> None:
        if name != model_name:
            raise OpenAIError(404, f"the model '{name}' does not exist; this server has '{model_name}'",
                              param="model", code="model_not_found")

    def submit_all(prompts: list[str], samplings: list[SamplingConfig], req) -> list[Job]:
        """One job per prompt, all or none: if one is refused, those already queued are withdrawn."""
        jobs: list[Job] = []
        try:
            for prompt, sampling in zip(prompts, samplings):
                jobs.append(batcher.submit(prompt, sampling, req.n, req.seed))
        except (Busy, ValueError) as err:
            for job in jobs:
                job.cancel()
            if isinstance(err, Busy):
                raise OpenAIError(429, f"the server is busy ({err}); retry shortly", code="rate_limit_exceeded",
                                  type="rate_limit_error") from None
            raise OpenAIError(400, str(err), param="seed") from None
        return jobs

    def count_tokens(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    async def respond(request: Request, req, jobs: list[Job], kind: str, opening: list[dict], render):
        """The answer to a request whose `jobs` are queued: `render(rollouts)` -> (choices, usage) for a
        whole response, or (chunks' choices, usage) when streaming, where `opening` chunks go first."""
        request_id = new_id("chatcmpl" if kind.startswith("chat") else "cmpl")
        if not req.stream:
            rollouts = await wait_all(jobs, request)
            if rollouts is None:
                return JSONResponse({}, 499)  # the client is gone; nobody reads this
            choices, used = render(rollouts)
            return envelope(kind, request_id, model_name, choices, usage=used)

        chunk_kind = kind + ".chunk" if kind.startswith("chat") else kind

        async def events():
            try:
                for choices in opening:
                    yield sse(envelope(chunk_kind, request_id, model_name, choices))
                rollouts = await wait_all(jobs, request)
                if rollouts is None:
                    return
                chunks, used = render(rollouts)
                for choices in chunks:
                    yield sse(envelope(chunk_kind, request_id, model_name, choices))
                if req.wants_usage_chunk():
                    yield sse(envelope(chunk_kind, request_id, model_name, [], usage=used))
            except OpenAIError as err:  # the status line is sent: the error goes in the stream, as OpenAI does
                yield sse(err.body())
            finally:  # a client that left: its queued jobs are dropped
                for job in jobs:
                    job.cancel()
            yield sse("[DONE]")

        return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    @app.get("/health")
    async def health():
        return {"status": "ok", "pending": batcher.pending, "engine_calls": batcher.engine_calls}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": model_name, "object": "model", "created": 0, "owned_by": "r1lab"}]}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        req = parse_request(ChatRequest, await request.body())
        check_model(req.model)
        try:
            prompt = conversation_prompt([m.as_turn() for m in req.messages], template, tokenizer, system)
        except Exception as err:  # noqa: BLE001 - ours (ValueError) or the chat template's own (jinja2) refusal
            raise OpenAIError(400, str(err) if isinstance(err, ValueError) else f"{type(err).__name__}: {err}",
                              param="messages") from None
        sampling = sampling_of(req, prompt_tokens=count_tokens(prompt), chat=True)
        jobs = submit_all([prompt], [sampling], req)
        prefix = response_prefix(prompt)

        def render(rollouts):
            [rollout] = rollouts
            made = [(i, *reasoning_and_content(text, prefix), finish) for i, text, _, finish in completions_of(rollout, sampling, 0)]
            used = usage(len(rollout.prompt_ids[0]), int(rollout.lengths.sum()))
            if not req.stream:
                return [{"index": i, "message": {"role": "assistant", "content": content, "reasoning_content": reasoning},
                         "finish_reason": finish, "logprobs": None} for i, reasoning, content, finish in made], used
            chunks = []
            for i, reasoning, content, finish in made:
                if reasoning is not None:
                    chunks.append([{"index": i, "delta": {"reasoning_content": reasoning}, "finish_reason": None}])
                chunks += [[{"index": i, "delta": {"content": content}, "finish_reason": None}],
                           [{"index": i, "delta": {}, "finish_reason": finish}]]
            return chunks, used

        opening = [[{"index": i, "delta": {"role": "assistant", "content": ""}, "finish_reason": None} for i in range(req.n)]]
        return await respond(request, req, jobs, "chat.completion", opening, render)

    @app.post("/v1/completions")
    async def completions(request: Request):
        req = parse_request(CompletionRequest, await request.body())
        check_model(req.model)
        prompts = req.prompts()
        if any(not p for p in prompts):
            raise OpenAIError(400, "an empty prompt cannot be continued", param="prompt")
        samplings = [sampling_of(req, prompt_tokens=count_tokens(p), chat=False) for p in prompts]
        jobs = submit_all(prompts, samplings, req)

        def render(rollouts):
            made = [row for k, (rollout, sampling) in enumerate(zip(rollouts, samplings))
                    for row in completions_of(rollout, sampling, k * req.n)]
            used = usage(sum(len(r.prompt_ids[0]) for r in rollouts), sum(int(r.lengths.sum()) for r in rollouts))
            if not req.stream:
                return [{"index": i, "text": text, "logprobs": None, "finish_reason": finish} for i, text, _, finish in made], used
            return [[{"index": i, "text": text, "logprobs": None, "finish_reason": f}]
                    for i, text, _, finish in made for text, f in ((text, None), ("", finish))], used

        return await respond(request, req, jobs, "text_completion", [], render)

    return app


def completions_of(rollout, sampling: SamplingConfig, first_index: int) -> list[tuple[int, str, int, str]]:
    """(choice index, text cut at the first stop string, tokens produced, finish reason) per completion
    of one prompt's rollout, numbered from `first_index`."""
    return [(first_index + j, cut_at_stop(text, sampling.stop), int(length), "length" if truncated else "stop")
            for j, (text, length, truncated) in enumerate(zip(rollout.texts, rollout.lengths.tolist(), rollout.truncated))]


async def wait_all(jobs: list[Job], request: Request):
    """The jobs' Rollouts in order; None once the client has disconnected (they are then cancelled).
    Every job is cancelled on the way out, which frees the queued ones of a request that failed."""
    try:
        rollouts = []
        for job in jobs:
            rollout = await wait_for(job, request)
            if rollout is None:
                return None
            rollouts.append(rollout)
        return rollouts
    finally:
        for job in jobs:
            job.cancel()


async def wait_for(job: Job, request: Request):
    """The job's Rollout; None once the client has disconnected (the job is then cancelled, so a queued one
    never runs). An error in generation becomes this request's OpenAIError: 400 for what the engine
    refuses as invalid (ValueError), 500 for anything else."""
    waiting = asyncio.wrap_future(job.result)
    try:
        while not waiting.done():
            await asyncio.wait({waiting}, timeout=DISCONNECT_POLL_S)
            if not waiting.done() and await request.is_disconnected():
                job.cancel()
                return None
        return waiting.result()
    except asyncio.CancelledError:
        job.cancel()
        if waiting.cancelled():  # we cancelled it ourselves: the client left
            return None
        raise
    except ValueError as err:
        raise OpenAIError(400, str(err)) from None
    except Exception as err:  # noqa: BLE001 - reported to this request's client only
        raise OpenAIError(500, f"generation failed: {type(err).__name__}: {err}") from None


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
    from r1lab.recipes.pipeline import resolve_model

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
