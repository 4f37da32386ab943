"""`r1lab chat --api`: talk to any OpenAI-compatible endpoint (DeepSeek's API, r1lab serve, vLLM, ollama)
the way `r1lab chat` talks to a local model: the reasoning dimmed, the answer plain, as it streams.

The reasoning comes as `reasoning_content` (DeepSeek, r1lab serve, vLLM's reasoning parsers; `reasoning`
in newer vLLM) or as <think>...</think> inside `content` (a server without a reasoning parser): both are
shown the same way. The conversation is kept and sent back with every question, earlier answers without
their reasoning (DeepSeek's advice, and its API refuses reasoning_content in the input). A failed or
rate-limited request is retried with exponential backoff (or the server's Retry-After); after the last
try chat says what happened and the conversation stays as it was before the question.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import openai
from rich.console import Console
from rich.text import Text

from r1lab.data.format import END_THINK, THINK
from r1lab.serve.reasoning import thinking_and_answer
from r1lab.ui.display import show_response

RETRY_AFTER_CAP_S = 60.0  # a server asking for longer than this gets the failure reported instead of a long wait
HELP = "/reset forgets the conversation, /save FILE writes it as JSON; exit, quit or Ctrl-D to leave"


def api_key_for(base_url: str) -> str | None:
    """The key from the environment for this endpoint: $DEEPSEEK_API_KEY for DeepSeek's API, else
    $R1LAB_API_KEY or $OPENAI_API_KEY (so a DeepSeek key is never sent to another host)."""
    host = urlparse(base_url).hostname or ""
    names = ["DEEPSEEK_API_KEY"] if host == "deepseek.com" or host.endswith(".deepseek.com") else ["R1LAB_API_KEY", "OPENAI_API_KEY"]
    return next((os.environ[name] for name in names if os.environ.get(name)), None)


def tagged_text(stream, usage: dict) -> Iterator[str]:
    """A streamed chat completion as one text with its reasoning inside <think>...</think>: what
    show_response splits. Fills `usage` from the final usage chunk, when the server sends one."""
    state, finish = "start", None  # start -> thinking -> answer
    for chunk in stream:
        if getattr(chunk, "usage", None) is not None:
            usage.update(completion_tokens=chunk.usage.completion_tokens, prompt_tokens=chunk.usage.prompt_tokens)
        if not chunk.choices:
            continue
        choice = chunk.choices[0]
        delta, finish = choice.delta, choice.finish_reason or finish
        extra = delta.model_extra or {}
        reasoning = extra.get("reasoning_content") or extra.get("reasoning")
        if reasoning and state != "answer":
            if state == "start":
                yield THINK
                state = "thinking"
            yield reasoning
        if delta.content:
            if state == "thinking":
                yield END_THINK + " "
            state = "answer"
            yield delta.content
    if state == "thinking" and finish != "length":  # all reasoning and an empty answer: still a closed thought
        yield END_THINK


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
                 max_tokens: int | None = None, tries: int = 4, backoff_s: float = 1.0, sleep=time.sleep):
        # the client's own retries are off: ours say what they do, and keep the conversation when they give up
        self.client = openai.OpenAI(base_url=base_url, api_key=api_key or "none", max_retries=0)
        self.base_url, self.model, self.console = base_url, model, console
        self.sampling = {k: v for k, v in (("temperature", temperature), ("max_tokens", max_tokens)) if v is not None}
        self.tries, self.backoff_s, self.sleep = tries, backoff_s, sleep
        self.turns: list[dict] = []  # {"role", "content"[, "reasoning_content"]}

    def request_messages(self) -> list[dict]:
        """The conversation as sent: role and content only, so no earlier reasoning goes back."""
        return [{"role": t["role"], "content": t["content"]} for t in self.turns]

    def ask(self, question: str) -> bool:
        """Sends the conversation + `question`, shows the reply; True if it came. On failure (after the
        retries) or Ctrl-C the conversation is left as it was."""
        self.turns.append({"role": "user", "content": question})
        for attempt in range(self.tries):
            usage: dict = {}
            t0 = time.time()
            try:
                stream = self.client.chat.completions.create(model=self.model, messages=self.request_messages(), stream=True,
                                                             stream_options={"include_usage": True}, **self.sampling)
                with stream:
                    text = show_response(tagged_text(stream, usage), self.console, "")
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
            thinking, answer = thinking_and_answer(text)
            self.turns.append({"role": "assistant", "content": answer or "", "reasoning_content": thinking})
            seconds = max(time.time() - t0, 1e-9)
            n = usage.get("completion_tokens")
            self.console.print(Text(f"{n} tokens · {n / seconds:.1f} tokens/s" if n else f"{seconds:.1f} s", style="dim"))
            return True
        self.turns.pop()
        return False

    def save(self, path: str) -> Path:
        out = Path(path).expanduser()
        out.write_text(json.dumps({"base_url": self.base_url, "model": self.model, "messages": self.turns},
                                  indent=2, ensure_ascii=False))
        return out


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
             max_tokens: int | None = None, input_fn=input, console: Console | None = None, **retry) -> None:
    """Interactive loop against `base_url`: a question per line, the conversation kept; /reset, /save FILE.
    Ends on EOF (Ctrl-D), 'exit', 'quit' or Ctrl-C at the prompt; Ctrl-C while the reply streams stops it."""
    console = console or Console()
    model = model or first_model(base_url, api_key)
    session = ApiChat(base_url, model, api_key, console, temperature=temperature, max_tokens=max_tokens, **retry)
    console.print(Text(f"{base_url} · model {model}\n{HELP}", style="dim"))
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
