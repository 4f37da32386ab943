"""The OpenAI wire format r1lab serve speaks: request models and limits, errors in OpenAI's shape (and the
middleware that refuses a request before it is read: key, size), and the pieces of a response (the
reasoning is split out in reasoning.py)."""

from __future__ import annotations

import hmac
import json
import time
import uuid
from dataclasses import dataclass
from typing import Literal

from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from starlette.exceptions import HTTPException

from r1lab.serve.tools import CalledTool, ToolSpec


@dataclass(frozen=True)
class ServeLimits:
    """What one request may ask for; anything over is refused with a 4xx before it reaches the model."""

    max_tokens: int = 4096  # per completion
    default_max_tokens: int = 512  # when the request says none (chat's default)
    max_n: int = 16  # completions per request
    max_body_bytes: int = 1 << 20
    max_stop: int = 8  # stop strings per request
    max_pending: int = 256  # requests queued or running at once; more get 429

    def __post_init__(self):
        for name, value in vars(self).items():
            if value <= 0:
                raise ValueError(f"serve limit {name} must be positive, not {value}")


class OpenAIError(Exception):
    """Answered as {"error": {"message", "type", "param", "code"}} with `status`, OpenAI's error shape."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 type: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.type = type or ("invalid_request_error" if status < 500 else "server_error")

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class StreamOptions(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")
    include_usage: bool = False


class ApiRequest(BaseModel):
    # strict: "0.5" for a number or true for an integer is the client's mistake, answered 400, not guessed at.
    # Fields of the OpenAI API that r1lab does not use (logprobs, user, parallel_tool_calls, ...) are accepted and ignored.
    model_config = ConfigDict(strict=True, extra="ignore")

    model: str
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=0)  # not OpenAI's; vLLM's extension, 0 = off
    max_tokens: int | None = Field(None, gt=0)
    max_completion_tokens: int | None = Field(None, gt=0)  # the newer name of max_tokens
    stop: str | list[str] | None = None
    n: int = Field(1, gt=0)
    seed: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None

    def stop_strings(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

    def wants_usage_chunk(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage


class ContentPart(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")
    type: Literal["text"]
    text: str


class Message(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")  # an assistant turn's reasoning_content is dropped

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    tool_calls: list[CalledTool] | None = None  # an assistant turn's calls
    tool_call_id: str | None = None  # a tool message's: the call whose result it holds

    @model_validator(mode="after")
    def _tool_fields_where_they_belong(self) -> Message:
        if self.tool_calls and self.role != "assistant":
            raise ValueError(f"tool_calls belong to assistant messages, not {self.role} ones")
        if self.role == "tool" and not self.tool_call_id:
            raise ValueError("a tool message needs the tool_call_id of the call whose result it holds")
        return self

    def as_turn(self) -> dict:
        """{"role", "content"[, "tool_calls", "tool_call_id"]} for the template: text parts joined, developer as
        system (OpenAI's newer name), calls with their arguments as dicts."""
        text = self.content if isinstance(self.content, str) else "".join(p.text for p in self.content or [])
        turn = {"role": "system" if self.role == "developer" else self.role, "content": text}
        if self.tool_calls:
            turn["tool_calls"] = [call.for_template() for call in self.tool_calls]
        if self.tool_call_id is not None:
            turn["tool_call_id"] = self.tool_call_id
        return turn


class ChatRequest(ApiRequest):
    messages: list[Message] = Field(min_length=1)
    tools: list[ToolSpec] | None = None
    tool_choice: str | dict | None = None  # "auto" (the default with tools) or "none"; others are refused

    def offered_tools(self) -> list[ToolSpec]:
        """The tools the model is shown: none with tool_choice "none". A 400 for two tools of one name and for
        a choice r1lab cannot honour ("required" or a named function: nothing here makes a model call)."""
        if self.tool_choice not in (None, "auto", "none"):
            raise OpenAIError(400, f"tool_choice: r1lab serve supports 'auto' and 'none', not {json.dumps(self.tool_choice)}",
                              param="tool_choice")
        names = [tool.function.name for tool in self.tools or []]
        if len(set(names)) < len(names):
            twice = next(name for name in names if names.count(name) > 1)
            raise OpenAIError(400, f"tools: two tools are named '{twice}'", param="tools")
        return [] if self.tool_choice == "none" else list(self.tools or [])


class CompletionRequest(ApiRequest):
    prompt: str | list[str] = Field(min_length=1)

    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)


def parse_request(kind: type[ApiRequest], body: bytes) -> ApiRequest:
    """The request in `body`, whatever its Content-Type says (`curl -d` sends a form type; the API only
    speaks JSON); a body that is not a JSON object of the right fields is a 400 naming the first bad one."""
    try:
        data = json.loads(body)
    except ValueError:  # UnicodeDecodeError included
        raise OpenAIError(400, "the request body is not valid JSON", code="invalid_json") from None
    if not isinstance(data, dict):
        raise OpenAIError(400, "the request body must be a JSON object", code="invalid_value")
    try:
        return kind.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        param = ".".join(str(part) for part in first["loc"]) or None
        raise OpenAIError(400, f"{param}: {first['msg']}" if param else first["msg"], param=param, code="invalid_value") from None


def cut_at_stop(text: str, stops: list[str], kept: tuple[str, ...] = ()) -> str:
    """The text before the first stop string in it: OpenAI's API never returns the stop string. (The
    engine stops on the token that completes one, so its text may run past it.) A stop string in `kept`
    ends the text but stays in it: a tool call's close, which the call is read by."""
    cuts = [i + len(s) * (s in kept) for s in stops if (i := text.find(s)) >= 0]
    return text[:min(cuts, default=len(text))]


def new_id(kind: str) -> str:
    return f"{kind}-{uuid.uuid4().hex[:24]}"


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def envelope(kind: str, request_id: str, model: str, choices: list[dict], **more) -> dict:
    """The fields every response and chunk has around its choices."""
    return {"id": request_id, "object": kind, "created": int(time.time()), "model": model, "choices": choices, **more}


def sse(data: dict | str) -> str:
    """One server-sent event as OpenAI streams them: `data: {json}` and a blank line."""
    return f"data: {data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)}\n\n"


class Guard:
    """ASGI middleware that turns requests away before any of the app runs: a missing or wrong API key
    (401) and a body over the limit (413, counted as it arrives, so a chunked body can't slip past a
    Content-Length check). The body is read here, at most `max_body_bytes`, and replayed to the app."""

    def __init__(self, app, api_key: str | None, max_body_bytes: int):
        self.app, self.api_key, self.max_body_bytes = app, api_key, max_body_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        if self.api_key is not None and scope["path"].startswith("/v1"):
            given = headers.get(b"authorization", b"").decode("latin-1")
            scheme, _, key = given.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(key.strip().encode(), self.api_key.encode()):
                err = OpenAIError(401, "missing or wrong API key: send 'Authorization: Bearer KEY'", code="invalid_api_key")
                return await JSONResponse(err.body(), 401, headers={"WWW-Authenticate": "Bearer"})(scope, receive, send)
        too_large = OpenAIError(413, f"the request body is over {self.max_body_bytes} bytes", code="request_too_large")
        announced = headers.get(b"content-length", b"0")
        if announced.isdigit() and int(announced) > self.max_body_bytes:
            return await JSONResponse(too_large.body(), 413)(scope, receive, send)
        body, more = bytearray(), True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_body_bytes:
                return await JSONResponse(too_large.body(), 413)(scope, receive, send)
        body = bytes(body)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: the disconnect, when it comes

        return await self.app(scope, replay, send)


def add_error_handlers(app) -> None:
    """Every error in OpenAI's shape: {"error": {"message", "type", "param", "code"}}."""

    @app.exception_handler(OpenAIError)
    async def openai_error(_request, err: OpenAIError):
        return JSONResponse(err.body(), err.status)

    @app.exception_handler(HTTPException)
    async def http_error(_request, err: HTTPException):
        return JSONResponse(OpenAIError(err.status_code, str(err.detail)).body(), err.status_code)

    @app.exception_handler(Exception)
    async def crash(_request, err: Exception):
        return JSONResponse(OpenAIError(500, f"internal error: {type(err).__name__}").body(), 500)
