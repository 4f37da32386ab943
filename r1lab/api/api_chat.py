"""`r1lab chat --api`: talk to any OpenAI-compatible endpoint (DeepSeek's API, r1lab serve, vLLM, ollama)
the way `r1lab chat` talks to a local model: the reasoning dimmed, the answer plain, as it streams.

The reasoning comes as `reasoning_content` (DeepSeek, r1lab serve, vLLM's reasoning parsers; `reasoning`
in newer vLLM) or as <think>...</think> inside `content` (a server without a reasoning parser): both are
shown the same way. The conversation is kept and sent back with every question, earlier answers without
their reasoning (DeepSeek's advice, and its API refuses reasoning_content in the input). A failed or
rate-limited request is retried with exponential backoff (or the server's Retry-After); after the last
try chat says what happened and the conversation stays as it was before the question.

With --tools (import paths of typed functions with docstrings) their schemas go with every request as OpenAI's
`tools`; while a reply calls them (message.tool_calls), chat runs each call here (tools/box.py: a time limit, an
output cap, any failure an error string), shows it with its result, sends the assistant's calls and a `tool`
message per result back, and asks again: at most `max_turns` replies per question, the last asked with
tool_choice "none" so that it answers.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import openai
from rich.console import Console
from rich.text import Text

from r1lab.api.display import ToolShown, call_text, show_response
from r1lab.data.format import END_THINK, THINK
from r1lab.serve.reasoning import thinking_and_answer
from r1lab.tools.calls import ToolCall, parse_call

RETRY_AFTER_CAP_S = 60.0  # a server asking for longer than this gets the failure reported instead of a long wait
DEFAULT_MAX_TURNS = 4  # replies per question when tools are given
HELP = "/reset forgets the conversation, /save FILE writes it as JSON; exit, quit or Ctrl-D to leave"


def api_key_for(base_url: str) -> str | None:
    """The key from the environment for this endpoint: $DEEPSEEK_API_KEY for DeepSeek's API, else
    $R1LAB_API_KEY or $OPENAI_API_KEY (so a DeepSeek key is never sent to another host)."""
    host = urlparse(base_url).hostname or ""
    names = ["DEEPSEEK_API_KEY"] if host == "deepseek.com" or host.endswith(".deepseek.com") else ["R1LAB_API_KEY", "OPENAI_API_KEY"]
    return next((os.environ[name] for name in names if os.environ.get(name)), None)


@dataclass
class Reply:
    """What a question's streamed replies held beside the text shown: the latest reply's reasoning, content,
    calls (index -> {"id", "name", "arguments"}, put together from their deltas) and finish reason; the tokens
    of all of them; and where the shown text is: start -> thinking -> answer (a call keeps the thinking open)."""

    state: str = "start"
    usage: dict = field(default_factory=dict)
    reasoning: str = ""
    content: str = ""
    calls: dict = field(default_factory=dict)
    finish: str | None = None

    def next_reply(self) -> None:
        self.reasoning, self.content, self.calls, self.finish = "", "", {}, None

    def add_call(self, delta) -> None:
        """A streamed piece of a call: OpenAI sends its id and name first, then its arguments in pieces."""
        call = self.calls.setdefault(delta.index, {"id": f"call_{delta.index}", "name": "", "arguments": ""})
        call["id"] = delta.id or call["id"]
        if delta.function is not None:
            call["name"] = delta.function.name or call["name"]
            call["arguments"] += delta.function.arguments or ""


def tagged_text(stream, reply: Reply) -> Iterator[str]:
    """A streamed chat completion as one text with its reasoning inside <think>...</think>: what
    show_response splits (the thinking is left open: the caller closes it). Fills `reply` as it goes,
    the usage from the final usage chunk, when the server sends one."""
    for chunk in stream:
        if getattr(chunk, "usage", None) is not None:
            reply.usage["completion_tokens"] = reply.usage.get("completion_tokens", 0) + chunk.usage.completion_tokens
        if not chunk.choices:
            continue
        choice = chunk.choices[0]
        delta, reply.finish = choice.delta, choice.finish_reason or reply.finish
        extra = delta.model_extra or {}
        reasoning = extra.get("reasoning_content") or extra.get("reasoning")
        reply.reasoning += reasoning or ""
        if reasoning and reply.state != "answer":
            if reply.state == "start":
                yield THINK
                reply.state = "thinking"
            yield reasoning
        if delta.content:
            reply.content += delta.content
            if reply.state == "thinking":
                yield END_THINK + " "
            reply.state = "answer"
            yield delta.content
        for call in delta.tool_calls or []:
            reply.add_call(call)


def called(call: dict, parameters: dict[str, list[str]]) -> ToolCall:
    """A call as the server sent it (a name, arguments as a JSON string), read as the tool box runs it."""
    try:
        arguments = json.loads(call["arguments"] or "{}")
    except json.JSONDecodeError as err:
        return ToolCall(call["name"], error=f"the arguments are not JSON ({err.msg})")
    return parse_call(json.dumps({"name": call["name"], "arguments": arguments}), parameters, "chat")


def describe(err: Exception) -> str:
    """What went wrong, in words a user can act on."""
    if isinstance(err, openai.APIConnectionError):
        return f"could not reach the server ({err.__cause__ or err})"
    if isinstance(err, openai.AuthenticationError):
        return (f"the server refused the API key (401: {_message(err)}); pass --api-key or set $R1LAB_API_KEY, "
                "$OPENAI_API_KEY or $DEEPSEEK_API_KEY")
    if isinstance(err, openai.RateLimitError):
        return f"rate limited (429: {_message(err)})"
    if isinstance(err, openai.NotFoundError):
        return f"not found (404: {_message(err)}); check --model and the base URL"
    if isinstance(err, openai.APIStatusError):
        return f"the server answered {err.status_code}: {_message(err)}"
    return f"{type(err).__name__}: {_message(err)}"


def _message(err: Exception) -> str:
    body = getattr(err, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])
    return str(getattr(err, "message", None) or err)


def retry_wait(err: Exception, attempt: int, backoff_s: float) -> float | None:
    """Seconds to wait before trying again, or None when trying again cannot help (a 4xx other than 429,
    an error the server put in the stream that is the request's fault)."""
    if isinstance(err, openai.APIStatusError):
        if err.status_code != 429 and err.status_code < 500:
            return None
        after = err.response.headers.get("retry-after")
        try:
            if after is not None:
                return float(after) if float(after) <= RETRY_AFTER_CAP_S else None
        except ValueError:
            pass
    elif not isinstance(err, openai.APIConnectionError):  # an error event inside the stream
        body = getattr(err, "body", None)
        kind = (body.get("error", body) if isinstance(body, dict) else {}) or {}
        if not isinstance(kind, dict) or kind.get("type") != "server_error":
            return None
    return backoff_s * 2 ** attempt


class ApiChat:
    """One conversation with an endpoint: `ask` sends it with a new question and shows the streamed reply."""

    def __init__(self, base_url: str, model: str, api_key: str | None, console: Console, *, temperature: float | None = None,
                 max_tokens: int | None = None, tries: int = 4, backoff_s: float = 1.0, sleep=time.sleep,
                 tools: list[str] | None = None, max_turns: int = DEFAULT_MAX_TURNS):
        # the client's own retries are off: ours say what they do, and keep the conversation when they give up
        self.client = openai.OpenAI(base_url=base_url, api_key=api_key or "none", max_retries=0)
        self.base_url, self.model, self.console = base_url, model, console
        self.sampling = {k: v for k, v in (("temperature", temperature), ("max_tokens", max_tokens)) if v is not None}
        self.tries, self.backoff_s, self.sleep = tries, backoff_s, sleep
        self.toolbox, self.max_turns = (tool_box(tools) if tools else None), max_turns
        self.turns: list[dict] = []  # {"role", "content"[, "reasoning_content", "tool_calls", "tool_call_id"]}

    def request_messages(self) -> list[dict]:
        """The conversation as sent: no earlier reasoning goes back."""
        return [{k: v for k, v in t.items() if k != "reasoning_content"} for t in self.turns]

    def ask(self, question: str) -> bool:
        """Sends the conversation + `question`, shows the reply (and runs the tools it calls); True if it came.
        On failure (after the retries) or Ctrl-C the conversation is left as it was. A retry goes on from the
        last reply that came whole (calls already run are not run again)."""
        start = len(self.turns)
        self.turns.append({"role": "user", "content": question})
        for attempt in range(self.tries):
            reply, t0 = Reply(), time.time()
            try:
                with closing(self.replies(start, reply)) as chunks:  # closing it closes the open stream
                    show_response(chunks, self.console, "")
            except KeyboardInterrupt:
                self.console.print(Text("\n(interrupted)", style="yellow"))
                break
            except openai.APIError as err:
                wait = retry_wait(err, attempt, self.backoff_s)
                if wait is None or attempt == self.tries - 1:
                    tries = f"after {attempt + 1} tries" if attempt else "at once"
                    self.console.print(Text(f"request failed {tries}: {describe(err)}\n"
                                            "the conversation is kept: ask again, /save FILE or /reset", style="red"))
                    break
                self.console.print(Text(f"({describe(err)}; retrying in {wait:.1f} s)", style="yellow"))
                self.sleep(wait)
                continue
            if reply.calls:
                self.console.print(Text("(the last reply still called tools: those calls were not run)", style="yellow"))
            seconds = max(time.time() - t0, 1e-9)
            n = reply.usage.get("completion_tokens")
            self.console.print(Text(f"{n} tokens · {n / seconds:.1f} tokens/s" if n else f"{seconds:.1f} s", style="dim"))
            return True
        del self.turns[start:]
        return False

    def replies(self, start: int, reply: Reply) -> Iterator[str | ToolShown]:
        """The replies to the question at turns[start] as one text for show_response, each tool call between
        them with its result: while a reply calls tools (and replies are left), the calls are run and their
        results sent back. Ends by adding the answer to the conversation."""
        while True:
            last = sum(1 for t in self.turns[start:] if t.get("tool_calls")) >= self.max_turns - 1
            offered = {"tools": [t.schema for t in self.toolbox.tools.values()], "tool_choice": "none" if last else "auto"} \
                if self.toolbox is not None else {}
            stream = self.client.chat.completions.create(model=self.model, messages=self.request_messages(), stream=True,
                                                         stream_options={"include_usage": True}, **self.sampling, **offered)
            reply.next_reply()
            with stream:
                yield from tagged_text(stream, reply)
            if not reply.calls or self.toolbox is None or last:
                break
            yield from self.run_calls(reply)
        if reply.state == "thinking" and reply.finish != "length":  # all reasoning and an empty answer: still a closed thought
            yield END_THINK
        thinking, answer = thinking_and_answer(reply.content)
        self.turns.append({"role": "assistant", "content": answer or "",
                           "reasoning_content": reply.reasoning.strip() or thinking})

    def run_calls(self, reply: Reply) -> Iterator[ToolShown]:
        """Runs the reply's calls (at once, each within the tool box's time limit); adds the assistant's calls
        and a tool message per result to the conversation; yields each call with its result."""
        calls = [reply.calls[i] for i in sorted(reply.calls)]
        read = [called(call, self.toolbox.parameters) for call in calls]
        results = self.toolbox.run_many(read)
        answer = thinking_and_answer(reply.content)[1]
        sent = [{"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}} for c in calls]
        self.turns.append({"role": "assistant", "content": (answer or "").strip() or None,
                           "reasoning_content": reply.reasoning.strip(), "tool_calls": sent})
        for call, tool_call, result in zip(calls, read, results):
            self.turns.append({"role": "tool", "tool_call_id": call["id"], "content": result})
            yield ToolShown(call_text(tool_call, f"{call['name']}({call['arguments']})"), result)

    def save(self, path: str) -> Path:
        out = Path(path).expanduser()
        out.write_text(json.dumps({"base_url": self.base_url, "model": self.model, "messages": self.turns},
                                  indent=2, ensure_ascii=False))
        return out


def tool_box(names: list[str]):
    """The tools named by import path (module:function), run as in training (tools/box.py); loaded on use:
    transformers, which writes their schemas, takes seconds to import."""
    from r1lab.tools.box import ToolBox, load_tools

    return ToolBox(load_tools(names))


def first_model(base_url: str, api_key: str | None) -> str:
    """The first model the endpoint lists (what `--model` defaults to)."""
    try:
        listed = openai.OpenAI(base_url=base_url, api_key=api_key or "none", max_retries=2).models.list().data
    except openai.APIError as err:
        raise ValueError(f"could not list the models at {base_url}: {describe(err)}; pass --model NAME") from None
    if not listed:
        raise ValueError(f"{base_url} lists no models; pass --model NAME")
    return listed[0].id


def api_chat(base_url: str, *, model: str | None = None, api_key: str | None = None, temperature: float | None = None,
             max_tokens: int | None = None, input_fn=input, console: Console | None = None, tools: list[str] | None = None,
             max_turns: int | None = None, **retry) -> None:
    """Interactive loop against `base_url`: a question per line, the conversation kept; /reset, /save FILE.
    Ends on EOF (Ctrl-D), 'exit', 'quit' or Ctrl-C at the prompt; Ctrl-C while the reply streams stops it.
    tools: import paths whose calls chat runs (see the module's docstring), at most `max_turns` replies a question."""
    console = console or Console()
    model = model or first_model(base_url, api_key)
    session = ApiChat(base_url, model, api_key, console, temperature=temperature, max_tokens=max_tokens, tools=tools,
                      max_turns=max_turns or DEFAULT_MAX_TURNS, **retry)
    using = "" if session.toolbox is None else f" · tools {', '.join(session.toolbox.tools)}, up to {session.max_turns} replies"
    console.print(Text(f"{base_url} · model {model}{using}\n{HELP}", style="dim"))
    while True:
        try:
            line = input_fn("\nyou> ").strip()
        except (EOFError, KeyboardInterrupt):
            break
        if line.lower() in ("exit", "quit"):
            break
        if line == "/reset":
            session.turns.clear()
            console.print(Text("(conversation cleared)", style="dim"))
        elif line.startswith("/save"):
            target = line[len("/save"):].strip()
            if not target:
                console.print(Text("usage: /save FILE", style="yellow"))
                continue
            try:
                console.print(Text(f"(saved {len(session.turns)} messages to {session.save(target)})", style="dim"))
            except OSError as err:
                console.print(Text(f"could not save: {err}", style="red"))
        elif line.startswith("/"):
            console.print(Text(f"unknown command {line.split()[0]}; {HELP}", style="yellow"))
        elif line:
            session.ask(line)
    console.print(Text("bye", style="dim"))
