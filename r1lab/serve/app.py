"""`r1lab serve`: an OpenAI-compatible HTTP server for a model, with the reasoning split out as DeepSeek's
API returns it.

    GET  /v1/models              the one model served
    POST /v1/chat/completions    message.reasoning_content: the text inside <think>...</think>;
                                 message.content: the answer (the tiny world's <answer> tags removed);
                                 message.tool_calls: the calls of a chat-template model offered `tools`
                                 (the client runs them and sends the results back: serve/tools.py)
    POST /v1/completions         the raw continuation of a prompt
    GET  /health                 {"status", "pending", "engine_calls"}: no key needed

Requests go through a `Batcher` (batching.py), which shares engine calls between requests that arrive
together. A streamed response is sent when its batch finishes (streaming.py; see batching.py for why
seeded requests are not batched). Loading a model and running the server: server.py.

Safe by default: binds 127.0.0.1; with an API key every /v1 route needs `Authorization: Bearer KEY`;
the body size, max_tokens, n, the number of stop strings and of requests in flight are bounded
(`ServeLimits`); every refusal is a 4xx in OpenAI's error shape, and an error in one request is that
request's answer only.
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass

from fastapi import FastAPI, Request

from r1lab.config import EVAL_SAMPLING, SamplingConfig
from r1lab.data.format import END_ANSWER, conversation_prompt, response_prefix
from r1lab.serve.api import (
    ChatRequest,
    CompletionRequest,
    Guard,
    OpenAIError,
    ServeLimits,
    add_error_handlers,
    cut_at_stop,
    parse_request,
    usage,
)
from r1lab.serve.batching import Batcher, Busy, Job
from r1lab.serve.reasoning import reasoning_and_content
from r1lab.serve.streaming import respond
from r1lab.serve.tools import CALL_END, read_calls


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
    served = Served(model_name, template, system, limits, context_length, tokenizer, batcher)

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
    add_routes(app, served)
    return app


@dataclass
class Served:
    """What the routes share: the model's name and prompt format, the limits, and the batcher that runs it."""

    model_name: str
    template: str
    system: str | None
    limits: ServeLimits
    context_length: int | None
    tokenizer: object  # the server thread's own, for counting prompt tokens
    batcher: Batcher

    def sampling_of(self, req, *, prompt_tokens: int, chat: bool) -> SamplingConfig:
        """The request's sampling settings, checked against the limits; max_tokens cut to what the context
        leaves after this prompt (so that a long prompt batched with it never shortens another request)."""
        limits, context_length = self.limits, self.context_length
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
        if chat and self.template == "r1-zero":
            stops = [*stops, END_ANSWER]  # the format ends there; a base model would go on as "User: ..."
        return SamplingConfig(temperature=EVAL_SAMPLING["temperature"] if req.temperature is None else req.temperature,
                              top_p=EVAL_SAMPLING["top_p"] if req.top_p is None else req.top_p, top_k=req.top_k or 0,
                              max_new_tokens=min(asked or limits.default_max_tokens, room), stop=stops)

    def check_model(self, name: str) -> None:
        if name != self.model_name:
            raise OpenAIError(404, f"the model '{name}' does not exist; this server has '{self.model_name}'",
                              param="model", code="model_not_found")

    def submit_all(self, prompts: list[str], samplings: list[SamplingConfig], req) -> list[Job]:
        """One job per prompt, all or none: if one is refused, those already queued are withdrawn."""
        jobs: list[Job] = []
        try:
            for prompt, sampling in zip(prompts, samplings):
                jobs.append(self.batcher.submit(prompt, sampling, req.n, req.seed))
        except (Busy, ValueError) as err:
            for job in jobs:
                job.cancel()
            if isinstance(err, Busy):
                raise OpenAIError(429, f"the server is busy ({err}); retry shortly", code="rate_limit_exceeded",
                                  type="rate_limit_error") from None
            raise OpenAIError(400, str(err), param="seed") from None
        return jobs

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])


def add_routes(app: FastAPI, served: Served) -> None:
    @app.get("/health")
    async def health():
        return {"status": "ok", "pending": served.batcher.pending, "engine_calls": served.batcher.engine_calls}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": served.model_name, "object": "model", "created": 0, "owned_by": "r1lab"}]}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        return await answer_chat(served, request)

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await answer_completion(served, request)


async def answer_chat(served: Served, request: Request):
    """POST /v1/chat/completions: one prompt written by the template (with the request's tools, if any), n
    completions of it; a completion that calls a tool answers message.tool_calls (serve/tools.py)."""
    req = parse_request(ChatRequest, await request.body())
    served.check_model(req.model)
    tools = req.offered_tools()
    if tools and served.template != "chat":
        raise OpenAIError(400, f"tools: this server's template is '{served.template}'; tool calls are served for models "
                          "with a chat template (a tiny-world tool model runs its tools in `r1lab chat MODEL`)", param="tools")
    try:
        prompt = conversation_prompt([m.as_turn() for m in req.messages], served.template, served.tokenizer, served.system,
                                     tools=[t.schema() for t in tools])
    except Exception as err:  # noqa: BLE001 - ours (ValueError) or the chat template's own (jinja2) refusal
        raise OpenAIError(400, str(err) if isinstance(err, ValueError) else f"{type(err).__name__}: {err}",
                          param="messages") from None
    sampling = served.sampling_of(req, prompt_tokens=served.count_tokens(prompt), chat=True)
    if tools:  # the client runs the call: the reply ends with it (serve/tools.py says why)
        sampling = sampling.model_copy(update={"stop": [*sampling.stop, CALL_END]})
    jobs = served.submit_all([prompt], [sampling], req)
    prefix, parameters = response_prefix(prompt), {t.function.name: t.parameter_names() for t in tools}

    def render(rollouts):
        [rollout] = rollouts
        made = [(i, *message_of(text, prefix, parameters), finish)
                for i, text, _, finish in completions_of(rollout, sampling, 0, kept=(CALL_END,) if tools else ())]
        used = usage(len(rollout.prompt_ids[0]), int(rollout.lengths.sum()))
        return (chat_chunks(made) if req.stream else chat_choices(made)), used

    opening = [[{"index": i, "delta": {"role": "assistant", "content": ""}, "finish_reason": None} for i in range(req.n)]]
    return await respond(request, req, jobs, "chat.completion", served.model_name, opening, render)


def message_of(text: str, prefix: str, parameters: dict[str, list[str]]) -> tuple[str | None, str | None, list[dict]]:
    """(reasoning_content, content, tool_calls) of a completion: the calls first taken out of the text (a model
    may call from inside its thinking), content None when there are calls and nothing else."""
    rest, calls = read_calls(text, parameters) if parameters else (text, [])
    reasoning, content = reasoning_and_content(rest, prefix)
    return reasoning, (content or None) if calls else content, calls


def chat_choices(made: list[tuple]) -> list[dict]:
    """The choices of a whole response: finish_reason "tool_calls" when a completion calls tools."""
    choices = []
    for i, reasoning, content, calls, finish in made:
        message = {"role": "assistant", "content": content, "reasoning_content": reasoning}
        if calls:
            message["tool_calls"] = calls
        choices.append({"index": i, "message": message, "finish_reason": "tool_calls" if calls else finish, "logprobs": None})
    return choices


def chat_chunks(made: list[tuple]) -> list[list[dict]]:
    """A streamed response's chunks after the opening one, as OpenAI streams them: reasoning and content as
    one delta each (the batch's completions are whole by now), then the calls, each whole in one
    delta.tool_calls entry (its index, id, name and arguments), then the finish reason."""
    chunks = []
    for i, reasoning, content, calls, finish in made:
        if reasoning is not None:
            chunks.append([{"index": i, "delta": {"reasoning_content": reasoning}, "finish_reason": None}])
        if content is not None:
            chunks.append([{"index": i, "delta": {"content": content}, "finish_reason": None}])
        if calls:
            chunks.append([{"index": i, "delta": {"tool_calls": [{"index": k, **call} for k, call in enumerate(calls)]},
                            "finish_reason": None}])
        chunks.append([{"index": i, "delta": {}, "finish_reason": "tool_calls" if calls else finish}])
    return chunks


async def answer_completion(served: Served, request: Request):
    """POST /v1/completions: the raw continuations of one prompt or several, n each."""
    req = parse_request(CompletionRequest, await request.body())
    served.check_model(req.model)
    prompts = req.prompts()
    if any(not p for p in prompts):
        raise OpenAIError(400, "an empty prompt cannot be continued", param="prompt")
    samplings = [served.sampling_of(req, prompt_tokens=served.count_tokens(p), chat=False) for p in prompts]
    jobs = served.submit_all(prompts, samplings, req)

    def render(rollouts):
        made = [row for k, (rollout, sampling) in enumerate(zip(rollouts, samplings))
                for row in completions_of(rollout, sampling, k * req.n)]
        used = usage(sum(len(r.prompt_ids[0]) for r in rollouts), sum(int(r.lengths.sum()) for r in rollouts))
        if not req.stream:
            return [{"index": i, "text": text, "logprobs": None, "finish_reason": finish} for i, text, _, finish in made], used
        return [[{"index": i, "text": text, "logprobs": None, "finish_reason": f}]
                for i, text, _, finish in made for text, f in ((text, None), ("", finish))], used

    return await respond(request, req, jobs, "text_completion", served.model_name, [], render)


def completions_of(rollout, sampling: SamplingConfig, first_index: int,
                   kept: tuple[str, ...] = ()) -> list[tuple[int, str, int, str]]:
    """(choice index, text cut at the first stop string, tokens produced, finish reason) per completion
    of one prompt's rollout, numbered from `first_index`; a stop string in `kept` stays in the text."""
    return [(first_index + j, cut_at_stop(text, sampling.stop, kept), int(length), "length" if truncated else "stop")
            for j, (text, length, truncated) in enumerate(zip(rollout.texts, rollout.lengths.tolist(), rollout.truncated))]
