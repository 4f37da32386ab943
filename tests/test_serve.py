"""r1lab serve (OpenAI-compatible, reasoning_content apart from content) and r1lab chat --api.

Servers run on a free loopback port, in a thread of this process or as a subprocess, and are always
stopped by the test that started them.
"""

import asyncio
import copy
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest
import torch
from hub_cache import TOOLS_CHAT_TEMPLATE, qwen_like_model

from r1lab.api.api_chat import ApiChat, api_key_for
from r1lab.config import SamplingConfig
from r1lab.data.format import END_ANSWER, apply_template, conversation_prompt, without_reasoning
from r1lab.engines import Rollout, make_engine
from r1lab.models.io import load_model, load_tokenizer
from r1lab.serve.api import ChatRequest, ServeLimits, cut_at_stop
from r1lab.serve.app import make_app
from r1lab.serve.reasoning import reasoning_and_content
from r1lab.serve.server import build_app, serving_in_thread

ROOT = Path(__file__).resolve().parents[1]
REPLY = " 3 + 4 = 7 </think> <answer> 7 </answer>"  # what the scripted model writes after the template's <think>


class ScriptedEngine:
    """The Engine protocol with written answers: reply(prompt) -> text, or (text, truncated). Records each
    generate call's prompts; `gate` (a threading.Event), when given, holds every call until it is set: a
    slow model. A reply of None raises inside generate (a model that fails on that prompt)."""

    def __init__(self, tokenizer, reply=lambda prompt: REPLY, gate=None):
        self.tokenizer, self.reply, self.gate = tokenizer, reply, gate
        self.pad_id = tokenizer.pad_token_id
        self.calls, self.state = [], 0

    def generate(self, prompts, sampling, n=1):
        self.calls.append(list(prompts))
        if self.gate is not None:
            assert self.gate.wait(30)
        replies = [self.reply(p) for p in prompts for _ in range(n)]
        if any(r is None for r in replies):
            raise RuntimeError("the scripted model fails on this prompt")
        texts, truncated = zip(*[(r, False) if isinstance(r, str) else r for r in replies])
        ids = [self.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
        width = max(map(len, ids))
        tokens = torch.tensor([row + [self.pad_id] * (width - len(row)) for row in ids])
        mask = torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in ids])
        return Rollout(prompt_ids=[self.tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts],
                       completion_ids=tokens, completion_mask=mask, logprobs=torch.zeros(tokens.shape), texts=list(texts),
                       truncated=list(truncated), n=n)

    def rng_state(self):
        return self.state

    def set_rng_state(self, state):
        self.state = state

    def close(self):
        pass


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return load_tokenizer(str(tiny_model_dir))


def scripted_app(tokenizer, engine=None, **options):
    engine = engine or ScriptedEngine(tokenizer)
    return make_app(engine, model_name="tiny", template="r1-zero", system="", **options), engine


def client(base: str, key: str = "none", **options) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0, **options)


@pytest.fixture(scope="module")
def tiny_server(tiny_model_dir):
    """r1lab serve on the untrained tiny model, in this process: (base URL, the loaded model, its tokenizer)."""
    app, _ = build_app(str(tiny_model_dir), name="tiny", device="cpu", dtype="fp32",
                       limits=ServeLimits(max_tokens=64, default_max_tokens=24))
    model, tok = load_model(str(tiny_model_dir), device="cpu", dtype="fp32")
    with serving_in_thread(app) as base:
        yield base, model, tok


def alone(model, tok, prompt: str, seed: int, n: int = 1, **sampling) -> Rollout:
    """What one request with this seed gets: a fresh engine made with that seed, one call."""
    settings = SamplingConfig(**{"temperature": 0.6, "top_p": 0.95, **sampling})
    return make_engine("torch", model, tok, seed=seed).generate([prompt], settings, n=n)


QUESTION = [{"role": "user", "content": "What is 12 + 5?"}]


def test_chat_with_the_openai_client(tiny_server):
    base, model, tok = tiny_server
    api = client(base)
    assert [m.id for m in api.models.list().data] == ["tiny"]
    prompt = apply_template("What is 12 + 5?", "r1-zero", system="")  # the fixture's r1lab.json: system ""
    made = alone(model, tok, prompt, seed=7, n=3, max_new_tokens=20, stop=[END_ANSWER])

    reply = api.chat.completions.create(model="tiny", messages=QUESTION, seed=7, n=3, max_tokens=20)
    assert len(reply.choices) == 3
    for choice, text, length, truncated in zip(reply.choices, made.texts, made.lengths.tolist(), made.truncated):
        reasoning, content = reasoning_and_content(cut_at_stop(text, [END_ANSWER]), "<think>")
        assert (choice.message.reasoning_content, choice.message.content) == (reasoning, content)
        assert choice.finish_reason == ("length" if truncated else "stop")
    assert reply.usage.prompt_tokens == len(tok(prompt, add_special_tokens=False)["input_ids"])
    assert reply.usage.completion_tokens == int(made.lengths.sum())  # the tokens produced, EOS included
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens

    stream = api.chat.completions.create(model="tiny", messages=QUESTION, seed=7, n=3, max_tokens=20, stream=True,
                                         stream_options={"include_usage": True})
    parts, finish, usage = {}, {}, None
    for chunk in stream:
        usage = chunk.usage or usage
        for c in chunk.choices:
            got = parts.setdefault(c.index, {"reasoning": "", "content": ""})
            got["reasoning"] += (c.delta.model_extra or {}).get("reasoning_content") or ""
            got["content"] += c.delta.content or ""
            finish[c.index] = c.finish_reason or finish.get(c.index)
    assert [(parts[i]["reasoning"], parts[i]["content"]) for i in range(3)] == \
           [(c.message.reasoning_content, c.message.content) for c in reply.choices]
    assert [finish[i] for i in range(3)] == [c.finish_reason for c in reply.choices]
    assert usage.model_dump() == reply.usage.model_dump()


def test_stop_strings_and_completions(tiny_server):
    base, model, tok = tiny_server
    api = client(base)
    prompt = "User: What is 2 + 2?. Assistant: <think>"
    full = api.completions.create(model="tiny", prompt=prompt, seed=3, max_tokens=40, temperature=1.0, top_p=1.0)
    text = full.choices[0].text
    assert text == alone(model, tok, prompt, seed=3, max_new_tokens=40, temperature=1.0, top_p=1.0).texts[0]
    stop = text[12:14]  # two characters from the middle: the same draws stop the same completion there
    cut = api.completions.create(model="tiny", prompt=prompt, seed=3, max_tokens=40, temperature=1.0, top_p=1.0, stop=[stop, "@@"])
    assert cut.choices[0].text == text[: text.index(stop)] and cut.choices[0].finish_reason == "stop"
    assert stop not in cut.choices[0].text and cut.usage.completion_tokens < full.usage.completion_tokens

    two = api.completions.create(model="tiny", prompt=[prompt, "User: hi. Assistant:"], n=2, max_tokens=8, seed=1)
    assert [c.index for c in two.choices] == [0, 1, 2, 3]
    assert two.usage.completion_tokens <= 4 * 8


def test_reasoning_content_and_multi_turn(tokenizer):
    replies = {"q2": ("still thinking", True), "q3": "no thinking tags here"}  # q3: a prompt with no <think>
    engine = ScriptedEngine(tokenizer, reply=lambda p: replies.get(p.rsplit("User: ", 1)[-1].split(".")[0], REPLY))
    app, _ = scripted_app(tokenizer, engine)
    with serving_in_thread(app) as base:
        api = client(base)
        first = api.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "q1"}])
        message = first.choices[0].message
        assert (message.reasoning_content, message.content) == ("3 + 4 = 7", "7")  # <answer> tags removed
        history = [{"role": "user", "content": "q1"},
                   {"role": "assistant", "content": message.content, "reasoning_content": message.reasoning_content},
                   {"role": "user", "content": "q2"}]
        second = api.chat.completions.create(model="tiny", messages=history).choices[0]
        assert engine.calls[-1] == ["User: q1. Assistant: 7 User: q2. Assistant: <think>"]  # earlier reasoning dropped
        assert (second.message.reasoning_content, second.message.content, second.finish_reason) == ("still thinking", "", "length")
        # <think> text inside an earlier assistant content is dropped too
        history[1]["content"] = "<think> secret </think> 7"
        api.chat.completions.create(model="tiny", messages=history)
        assert "secret" not in engine.calls[-1][0]

    with serving_in_thread(make_app(engine, model_name="tiny", template="none")) as base:
        message = client(base).chat.completions.create(model="tiny", messages=[{"role": "user", "content": "q3"}]).choices[0].message
        assert message.reasoning_content is None and message.content == "no thinking tags here"


def test_conversation_prompt():
    one = [{"role": "user", "content": "q"}]
    assert conversation_prompt(one, "r1-zero") == apply_template("q", "r1-zero")
    assert conversation_prompt(one, "r1-zero", system="") == apply_template("q", "r1-zero", system="")
    turns = [{"role": "system", "content": "S"}, *one, {"role": "assistant", "content": "<think> r </think> a"},
             {"role": "user", "content": "q2"}]
    assert conversation_prompt(turns, "r1-zero", system="ignored") == "S User: q. Assistant: a User: q2. Assistant: <think>"
    assert conversation_prompt(turns, "none") == "q\n\n a\n\nq2"
    assert without_reasoning("<think> r") == "" and without_reasoning("plain") == "plain"
    with pytest.raises(ValueError, match="end with a user message"):
        conversation_prompt(turns[:3], "r1-zero")


def _post(base, body, key=None, **kwargs):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    body = {"json": body} if isinstance(body, (dict, list)) else {"content": body}  # content: raw bytes or chunks
    return httpx.post(f"{base}/v1/chat/completions", headers=headers, timeout=30, **kwargs, **body)


def _error(response, status, code=None, param=None):
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    assert code is None or error["code"] == code
    assert param is None or error["param"] == param
    return error


GOOD = {"model": "tiny", "messages": QUESTION}


def test_bad_requests_get_openai_errors_and_the_next_is_served(tokenizer):
    app, _ = scripted_app(tokenizer, api_key="sesame", limits=ServeLimits(max_tokens=100, max_n=4, max_body_bytes=4000))
    with serving_in_thread(app) as base:
        ok = lambda: _post(base, GOOD, "sesame").json()["choices"][0]["message"]["content"] == "7"
        assert ok()
        _error(_post(base, GOOD), 401, "invalid_api_key")
        _error(_post(base, GOOD, "wrong"), 401, "invalid_api_key")
        with pytest.raises(openai.AuthenticationError):
            client(base, "wrong").chat.completions.create(**GOOD)
        assert httpx.get(f"{base}/health").json()["status"] == "ok"  # no key needed to see it is up
        cases = [
            ({**GOOD, "messages": [{"role": "user", "content": "x" * 5000}]}, 413, "request_too_large", None),
            ({**GOOD, "model": "gpt-4"}, 404, "model_not_found", "model"),
            ({**GOOD, "max_tokens": 101}, 400, None, "max_tokens"),
            ({**GOOD, "n": 5}, 400, None, "n"),
            ({**GOOD, "temperature": "hot"}, 400, "invalid_value", "temperature"),
            ({**GOOD, "max_tokens": True}, 400, "invalid_value", "max_tokens"),
            ({**GOOD, "messages": []}, 400, None, "messages"),
            ({**GOOD, "messages": [{"role": "assistant", "content": "hi"}]}, 400, None, "messages"),
            ({**GOOD, "messages": [{"role": "wizard", "content": "hi"}]}, 400, None, None),
            ({**GOOD, "stop": ["a"] * 9}, 400, None, "stop"),
            ([1, 2], 400, None, None),
            (b'{"model": "tiny", "messages": [', 400, "invalid_json", None),
            (b"\xff\xfe not even text", 400, None, None),
        ]
        for body, status, code, param in cases:
            _error(_post(base, body, "sesame"), status, code, param)
            assert ok()
        # a body too large that announces no length (chunked) is cut off as it arrives
        chunks = iter([b'{"model": "tiny", "messages": [{"role": "user", "content": "', b"x" * 3000, b"y" * 3000, b'"}]}'])
        _error(_post(base, chunks, "sesame"), 413, "request_too_large")
        _error(httpx.get(f"{base}/v1/nothing", headers={"Authorization": "Bearer sesame"}), 404)
        # a prompt longer than the model's context, on a server that knows it
    app, _ = scripted_app(tokenizer, context_length=20)
    with serving_in_thread(app) as base:
        _error(_post(base, {**GOOD, "messages": [{"role": "user", "content": "1 2 3 4 5 6 7 8 9 10 11 12"}]}), 400,
               "context_length_exceeded")
        assert _post(base, {**GOOD, "max_tokens": 1000}).status_code == 200  # cut to what the context leaves


def test_a_failing_request_does_not_fail_its_batch(tokenizer):
    gate = threading.Event()
    engine = ScriptedEngine(tokenizer, reply=lambda p: None if "boom" in p else REPLY, gate=gate)
    app, _ = scripted_app(tokenizer, engine, batch_window_s=0.2)
    with serving_in_thread(app) as base:
        results = {}

        def ask(question):
            results[question] = _post(base, {**GOOD, "messages": [{"role": "user", "content": question}]})

        threads = [threading.Thread(target=ask, args=(q,)) for q in ("fine", "boom", "also fine")]
        for t in threads:
            t.start()
        time.sleep(0.1)
        gate.set()
        for t in threads:
            t.join()
        assert sorted(engine.calls[0]) == sorted(apply_template(q, "r1-zero", system="") for q in ("fine", "boom", "also fine"))
        assert results["fine"].status_code == results["also fine"].status_code == 200
        _error(results["boom"], 500)
        assert _post(base, GOOD).status_code == 200


KILLED_CLIENT = """
import httpx, sys, time
with httpx.stream("POST", sys.argv[1], json={"model": "tiny", "stream": True, "messages": [{"role": "user", "content": sys.argv[2]}]}, timeout=60) as r:
    for line in r.iter_lines():
        if line.startswith("data:"):
            print("first chunk", flush=True)
            time.sleep(60)
"""


def _health(base):
    return httpx.get(f"{base}/health").json()


def _wait_until(condition, seconds=20):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_a_client_killed_mid_stream_frees_its_slot(tokenizer):
    gate = threading.Event()
    engine = ScriptedEngine(tokenizer, gate=gate)
    app, _ = scripted_app(tokenizer, engine, limits=ServeLimits(max_pending=2))
    with serving_in_thread(app) as base:
        running = threading.Thread(target=_post, args=(base, {**GOOD, "messages": [{"role": "user", "content": "first"}]}))
        running.start()
        _wait_until(lambda: len(engine.calls) == 1)  # "first" is in the (held) engine
        killed = subprocess.Popen([sys.executable, "-c", KILLED_CLIENT, f"{base}/v1/chat/completions", "queued"],
                                  stdout=subprocess.PIPE, text=True)
        try:
            assert killed.stdout.readline().strip() == "first chunk"
            assert _health(base)["pending"] == 2
            _error(_post(base, GOOD), 429, "rate_limit_exceeded")  # every slot taken
        finally:
            killed.kill()
            killed.wait()
        _wait_until(lambda: _health(base)["pending"] == 1)  # the queued request's slot, freed before it ran
        gate.set()
        running.join()
        _wait_until(lambda: _health(base)["pending"] == 0)
        assert _post(base, GOOD).status_code == 200
        assert not any("queued" in p for call in engine.calls for p in call)  # never reached the model

        # killed while its request is in the engine: the call ends, the slot comes back, the server goes on
        gate.clear()
        killed = subprocess.Popen([sys.executable, "-c", KILLED_CLIENT, f"{base}/v1/chat/completions", "running"],
                                  stdout=subprocess.PIPE, text=True)
        try:
            assert killed.stdout.readline().strip() == "first chunk"
            _wait_until(lambda: any("running" in p for p in engine.calls[-1]))
        finally:
            killed.kill()
            killed.wait()
        gate.set()
        _wait_until(lambda: _health(base)["pending"] == 0)
        assert _post(base, GOOD).status_code == 200


class Flaky:
    """ASGI wrapper: the first `failures` chat requests get `status` (429: rate limited), then the app answers."""

    def __init__(self, app, failures, status=429):
        self.app, self.failures, self.status = app, failures, status

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"].endswith("/chat/completions") and self.failures > 0:
            self.failures -= 1
            body = json.dumps({"error": {"message": "slow down", "type": "rate_limit_error", "param": None, "code": None}})
            await send({"type": "http.response.start", "status": self.status,
                        "headers": [(b"content-type", b"application/json"), (b"retry-after", b"0.01")]})
            return await send({"type": "http.response.body", "body": body.encode()})
        return await self.app(scope, receive, send)


def test_api_chat_retries_then_says_what_happened(tokenizer):
    from rich.console import Console

    app, _ = scripted_app(tokenizer)
    flaky = Flaky(app, failures=2)
    with serving_in_thread(flaky) as base:
        console = Console(record=True, width=100, color_system=None)
        waits = []
        session = ApiChat(f"{base}/v1", "tiny", None, console, tries=3, backoff_s=0.5, sleep=waits.append)
        assert session.ask("q1")
        out = console.export_text()
        assert out.count("rate limited (429: slow down); retrying") == 2 and waits == [0.01, 0.01]  # the server's Retry-After
        assert "3 + 4 = 7" in out and session.turns[-1] == {"role": "assistant", "content": "7", "reasoning_content": "3 + 4 = 7"}

        flaky.failures = 5
        assert not session.ask("q2")
        assert "request failed after 3 tries: rate limited (429: slow down)" in console.export_text()
        assert [t["content"] for t in session.turns] == ["q1", "7"]  # the conversation as it was

        flaky.failures, flaky.status = 1, 400  # a request the server refuses: no retry
        assert not session.ask("q3") and "request failed at once: the server answered 400" in console.export_text()
    session = ApiChat(f"{base}/v1", "tiny", None, console, tries=2, backoff_s=0.01)  # the server is gone now
    assert not session.ask("q4")
    assert "request failed after 2 tries: could not reach the server" in console.export_text()
    assert [t["content"] for t in session.turns] == []


def test_api_key_from_the_environment(monkeypatch):
    for name in ("R1LAB_API_KEY", "OPENAI_API_KEY", "DEEPSEEK_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    assert api_key_for("http://127.0.0.1:8000/v1") is None
    monkeypatch.setenv("DEEPSEEK_API_KEY", "ds")
    monkeypatch.setenv("OPENAI_API_KEY", "oa")
    assert api_key_for("https://api.deepseek.com") == "ds" and api_key_for("http://127.0.0.1:8000/v1") == "oa"
    monkeypatch.setenv("R1LAB_API_KEY", "r1")
    assert api_key_for("http://127.0.0.1:8000/v1") == "r1" and api_key_for("https://deepseek.com.evil.example") == "r1"


def _env():
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "COLUMNS": "100"}
    return {k: v for k, v in env.items() if k not in ("R1LAB_API_KEY", "OPENAI_API_KEY", "DEEPSEEK_API_KEY")}


@pytest.mark.slow
def test_chat_api_in_a_terminal(tokenizer, tmp_path):
    pexpect = pytest.importorskip("pexpect")
    app, engine = scripted_app(tokenizer, api_key="sesame")
    with serving_in_thread(app) as base:
        env = {**_env(), "R1LAB_API_KEY": "sesame"}
        term = pexpect.spawn(sys.executable, ["-m", "r1lab.ui.cli", "chat", "--api", f"{base}/v1"], env=env,
                             encoding="utf-8", timeout=60, dimensions=(40, 100))
        try:
            term.expect("model tiny")  # found by listing the server's models
            term.expect("you> ")
            term.sendline("q1")
            term.expect("thinking")
            term.expect("3 \\+ 4 = 7")
            term.expect("answer")
            term.expect("7")
            term.expect("tokens/s")
            term.expect("you> ")
            term.sendline("q2")
            term.expect("you> ")
            assert engine.calls[-1] == ["User: q1. Assistant: 7 User: q2. Assistant: <think>"]
            saved = tmp_path / "talk.json"
            term.sendline(f"/save {saved}")
            term.expect("saved 4 messages")
            term.expect("you> ")
            term.sendline("/reset")
            term.expect("conversation cleared")
            term.expect("you> ")
            term.sendline("q3")
            term.expect("you> ")
            assert engine.calls[-1] == ["User: q3. Assistant: <think>"]
            term.sendline("exit")
            term.expect("bye")
            term.expect(pexpect.EOF)
        finally:
            term.close(force=True)
        messages = json.loads(saved.read_text())["messages"]
        assert [m["role"] for m in messages] == ["user", "assistant"] * 2
        assert messages[1] == {"role": "assistant", "content": "7", "reasoning_content": "3 + 4 = 7"}

        term = pexpect.spawn(sys.executable, ["-m", "r1lab.ui.cli", "chat", "--api", f"{base}/v1", "--model", "tiny"],
                             env=_env(), encoding="utf-8", timeout=60)  # no key
        try:
            term.expect("you> ")
            term.sendline("q1")
            term.expect("request failed at once: the server refused the API key")
            term.expect("you> ")
            term.sendeof()
            term.expect("bye")
        finally:
            term.close(force=True)


async def _stream_all(base, requests):
    """Sends the requests at once, streaming; each one's (reasoning, content) per choice."""
    api = openai.AsyncOpenAI(base_url=f"{base}/v1", api_key="none", max_retries=0, timeout=120)

    async def one(body):
        texts = {}
        async for chunk in await api.chat.completions.create(**body, stream=True):
            for c in chunk.choices:
                reasoning, content = texts.get(c.index, ("", ""))
                texts[c.index] = (reasoning + ((c.delta.model_extra or {}).get("reasoning_content") or ""),
                                  content + (c.delta.content or ""))
        return [texts[i] for i in sorted(texts)]

    try:
        return await asyncio.gather(*(one(body) for body in requests))
    finally:
        await api.close()


@pytest.mark.slow
def test_load_64_concurrent_streams(tiny_model_dir):
    """64 streaming requests at once all complete, each identical to the same request made alone; unseeded
    ones share engine calls; the server's memory comes back near its idle level."""
    psutil = pytest.importorskip("psutil")
    server = subprocess.Popen([sys.executable, "-m", "r1lab.ui.cli", "serve", str(tiny_model_dir), "--port", "0",
                               "--name", "tiny", "--device", "cpu", "--dtype", "fp32", "--threads", "1"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env())
    try:
        line = server.stdout.readline()
        assert "r1lab serve:" in line, line + server.stdout.read()
        base = line.strip().rsplit(" at ", 1)[1].removesuffix("/v1")
        process = psutil.Process(server.pid)
        questions = [f"What is {i} + {i % 7}?" for i in range(64)]
        seeded = [{"model": "tiny", "messages": [{"role": "user", "content": q}], "seed": i, "max_tokens": 24,
                   **({"n": 2} if i % 8 == 0 else {})} for i, q in enumerate(questions)]
        unseeded = [{"model": "tiny", "messages": [{"role": "user", "content": q}], "max_tokens": 24} for q in questions]

        asyncio.run(_stream_all(base, unseeded))  # warm-up: the allocator's pools and the thread pools exist now
        idle = process.memory_info().rss
        calls = _health(base)["engine_calls"]
        together = asyncio.run(_stream_all(base, seeded))
        assert _health(base)["engine_calls"] - calls == 64  # a seeded request is never batched
        separately = [asyncio.run(_stream_all(base, [body]))[0] for body in seeded]
        assert together == separately
        assert all(len(r) == (2 if i % 8 == 0 else 1) for i, r in enumerate(together))

        calls = _health(base)["engine_calls"]
        for _ in range(2):
            replies = asyncio.run(_stream_all(base, unseeded))
            assert len(replies) == 64 and all(len(r) == 1 for r in replies)
        batched_calls = _health(base)["engine_calls"] - calls
        assert batched_calls <= 2 * 64 / 4, batched_calls  # unseeded requests share engine calls
        assert _health(base)["pending"] == 0
        grown = process.memory_info().rss - idle
        print(f"server RSS: {idle / 2**20:.0f} MiB idle after warm-up, {grown / 2**20:+.1f} MiB after 256 more requests")
        assert grown < 32 * 2**20, f"RSS grew {grown / 2**20:.1f} MiB"  # the margin: 32 MiB
    finally:
        server.terminate()
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


# Tools: OpenAI's function calling for chat-template models. The model's output is scripted (or a random tiny
# Qwen2's); the template, the HTTP, the checking of tools and the reading of calls are the real ones.

CALL = '<tool_call>\n{"name": "calculator", "arguments": {"expression": "7 * 6 + 23"}}\n</tool_call>'
CALCULATOR = {"type": "function", "function": {
    "name": "calculator", "description": "Evaluates an arithmetic expression.",
    "parameters": {"type": "object", "properties": {"expression": {"type": "string"}}, "required": ["expression"]}}}
ASKED = [{"role": "user", "content": "What is 7 * 6 + 23?"}]


@pytest.fixture(scope="module")
def qwen_tokenizer(tokenizer):
    tok = copy.deepcopy(tokenizer)
    tok.chat_template = TOOLS_CHAT_TEMPLATE
    return tok


def tool_model(prompt: str) -> str:
    """Calls the calculator until it has a result, then answers with it; a made-up result after its call (what
    the server must cut off). A question that says 'think' calls from inside its thinking."""
    if "<tool_response>" in prompt:
        return f"The answer is {prompt.rsplit('<tool_response>', 1)[1].split()[0]}."
    thinking = "<think> 7 * 6 is 42 " if "think" in prompt.rsplit("<|im_start|>user", 1)[1] else "Let me compute. "
    return thinking + CALL + "\n<tool_response>\n1000\n</tool_response> The answer is 1000."


def tool_server(qwen_tokenizer, reply=tool_model):
    engine = ScriptedEngine(qwen_tokenizer, reply=reply)
    return make_app(engine, model_name="tiny", template="chat", tokenizer=qwen_tokenizer), engine


def test_a_qwen_style_template_renders_a_call_and_its_result(tiny_model_dir, tmp_path):
    """A tiny random Qwen2 with a Qwen-style template: the request's tools, an assistant's call and the tool's
    result go through the template as Qwen2.5's shows them; served, the follow-up is answered."""
    model_dir = qwen_like_model(tmp_path / "qwen", tiny_model_dir, TOOLS_CHAT_TEMPLATE)
    tok = load_tokenizer(str(model_dir))
    called = {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "calculator", "arguments": '{"expression": "7 * 6 + 23"}'}}]}
    follow_up = [*ASKED, called, {"role": "tool", "tool_call_id": "call_1", "content": "65"}]
    req = ChatRequest.model_validate({"model": "tiny", "messages": follow_up, "tools": [CALCULATOR]})
    prompt = conversation_prompt([m.as_turn() for m in req.messages], "chat", tok, tools=[t.schema() for t in req.tools])
    assert json.dumps(CALCULATOR) in prompt.split("<tools>")[1].split("</tools>")[0]
    assert f"<|im_start|>assistant\n{CALL}<|im_end|>" in prompt  # the arguments a dict again, as the model wrote them
    assert prompt.endswith("<|im_start|>user\n<tool_response>\n65\n</tool_response><|im_end|>\n<|im_start|>assistant\n")

    app, what = build_app(str(model_dir), name="tiny", device="cpu", dtype="fp32", limits=ServeLimits(max_tokens=8))
    assert "template chat" in what
    with serving_in_thread(app) as base:
        reply = client(base).chat.completions.create(model="tiny", messages=follow_up, tools=[CALCULATOR], max_tokens=8)
        assert reply.choices[0].finish_reason in ("stop", "length") and reply.usage.prompt_tokens == len(
            tok(prompt, add_special_tokens=False)["input_ids"])


def test_a_call_comes_back_as_tool_calls_and_its_result_is_answered(qwen_tokenizer):
    app, engine = tool_server(qwen_tokenizer)
    with serving_in_thread(app) as base:
        api = client(base)
        choice = api.chat.completions.create(model="tiny", messages=ASKED, tools=[CALCULATOR]).choices[0]
        assert "<tools>" in engine.calls[-1][0] and choice.finish_reason == "tool_calls"
        [call] = choice.message.tool_calls
        assert call.id.startswith("call_") and call.type == "function" and call.function.name == "calculator"
        assert json.loads(call.function.arguments) == {"expression": "7 * 6 + 23"}
        assert choice.message.content == "Let me compute."  # the text outside the call; the made-up result cut off

        history = [*ASKED, choice.message.model_dump(exclude_none=True),
                   {"role": "tool", "tool_call_id": call.id, "content": "65"}]
        answer = api.chat.completions.create(model="tiny", messages=history, tools=[CALCULATOR]).choices[0]
        assert (answer.message.content, answer.message.tool_calls, answer.finish_reason) == ("The answer is 65.", None, "stop")
        assert CALL in engine.calls[-1][0] and "<tool_response>\n65\n</tool_response>" in engine.calls[-1][0]

        thinking = api.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "think: 7 * 6 + 23?"}],
                                               tools=[CALCULATOR]).choices[0]
        assert (thinking.message.reasoning_content, thinking.message.content) == ("7 * 6 is 42", None)
        assert thinking.finish_reason == "tool_calls" and thinking.message.tool_calls[0].function.name == "calculator"

        calls, finish, content = {}, None, ""  # streamed: the call whole in one delta, as OpenAI's clients put together
        for chunk in api.chat.completions.create(model="tiny", messages=ASKED, tools=[CALCULATOR], stream=True):
            for c in chunk.choices:
                content += c.delta.content or ""
                finish = c.finish_reason or finish
                for piece in c.delta.tool_calls or []:
                    calls.setdefault(piece.index, []).append((piece.id, piece.function.name, piece.function.arguments))
        assert finish == "tool_calls" and content == "Let me compute."
        assert [(name, json.loads(arguments)) for [(_, name, arguments)] in calls.values()] == \
               [("calculator", {"expression": "7 * 6 + 23"})]

        plain = api.chat.completions.create(model="tiny", messages=ASKED, tools=[CALCULATOR], tool_choice="none").choices[0]
        assert "<tools>" not in engine.calls[-1][0] and plain.message.tool_calls is None and plain.finish_reason == "stop"
        assert "1000" in plain.message.content  # not offered tools, the model's text is all content


def test_bad_tools_get_a_400_naming_the_field(qwen_tokenizer, tokenizer):
    app, _ = tool_server(qwen_tokenizer)
    not_json = {"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "calculator", "arguments": "7 * 6"}}]}
    misplaced = {"role": "user", "content": "q", "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "{}"}}]}
    schema_not_object = {"type": "function", "function": {"name": "f", "parameters": "x"}}
    cases = [
        ({"tools": "calculator"}, "tools"),
        ({"tools": [{"type": "function"}]}, "tools.0.function"),
        ({"tools": [{"type": "retrieval", "function": {"name": "calculator"}}]}, "tools.0.type"),
        ({"tools": [{"type": "function", "function": {"name": "what is 2+2"}}]}, "tools.0.function.name"),
        ({"tools": [CALCULATOR, schema_not_object]}, "tools.1.function.parameters"),
        ({"tools": [CALCULATOR, CALCULATOR]}, "tools"),
        ({"tools": [CALCULATOR], "tool_choice": "required"}, "tool_choice"),
        ({"tools": [CALCULATOR], "tool_choice": {"type": "function", "function": {"name": "calculator"}}}, "tool_choice"),
        ({"messages": [*ASKED, not_json, {"role": "tool", "tool_call_id": "c", "content": "42"}]},
         "messages.1.tool_calls.0.function.arguments"),
        ({"messages": [*ASKED, {"role": "tool", "content": "42"}]}, "messages.1"),
        ({"messages": [misplaced]}, "messages.0"),
    ]
    with serving_in_thread(app) as base:
        for change, param in cases:
            error = _error(_post(base, {**GOOD, "messages": ASKED, **change}), 400, param=param)
            assert error["message"].startswith(param), error
        assert _post(base, {**GOOD, "tools": [CALCULATOR]}).json()["choices"][0]["finish_reason"] == "tool_calls"
    app, _ = scripted_app(tokenizer)  # r1-zero: no place for tools in the prompt
    with serving_in_thread(app) as base:
        _error(_post(base, {**GOOD, "tools": [CALCULATOR]}), 400, param="tools")
        _error(_post(base, {**GOOD, "messages": [*QUESTION, {"role": "tool", "tool_call_id": "c", "content": "1"}]}), 400,
               param="messages")
        assert _post(base, {**GOOD, "tools": [CALCULATOR], "tool_choice": "none"}).status_code == 200  # nothing offered


def test_api_chat_runs_the_calls_and_sends_the_results_back(qwen_tokenizer):
    from rich.console import Console

    app, engine = tool_server(qwen_tokenizer)
    with serving_in_thread(app) as base:
        console = Console(record=True, width=100, color_system=None)
        session = ApiChat(f"{base}/v1", "tiny", None, console, tools=["r1lab.tools:calculator"])
        assert session.ask("What is 7 * 6 + 23?")
        out = console.export_text()
        assert "tool: calculator(7 * 6 + 23) -> 65" in out and out.index("tool: calculator") < out.index("The answer is 65.")
        assert [t["role"] for t in session.turns] == ["user", "assistant", "tool", "assistant"]
        call = session.turns[1]["tool_calls"][0]
        assert session.turns[2] == {"role": "tool", "tool_call_id": call["id"], "content": "65"}
        assert session.turns[3]["content"] == "The answer is 65."
        assert "<tool_response>\n65\n</tool_response>" in engine.calls[-1][0] and "<tools>" in engine.calls[-1][0]

    always = lambda prompt: '<tool_call>\n{"name": "calculator", "arguments": {"expression": "1 / 0"}}\n</tool_call>'
    app, engine = tool_server(qwen_tokenizer, reply=always)
    with serving_in_thread(app) as base:
        console = Console(record=True, width=100, color_system=None)
        session = ApiChat(f"{base}/v1", "tiny", None, console, tools=["r1lab.tools:calculator"], max_turns=2)
        assert session.ask("What is 1 / 0?")
        assert "tool: calculator(1 / 0) -> error: calculator: division by zero" in console.export_text()
        assert len(engine.calls) == 2 and "<tools>" not in engine.calls[-1][0]  # the last reply: tool_choice none
        assert [t["role"] for t in session.turns] == ["user", "assistant", "tool", "assistant"]
