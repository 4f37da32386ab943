"""r1lab serve under load: N concurrent streaming clients on loopback, against one request at a time
through plain transformers `generate`.

    python bench/serve.py [--clients 1,8,32] [--requests-per-client 4] [--max-tokens 96] [--md table.md]

Each server is its own child process on 127.0.0.1 (the clients run here, with httpx):
- `r1lab serve` (the torch engine behind the batcher): unseeded requests, which share engine calls, and
  the same requests with a seed each, which are never batched (bench "seeded");
- a baseline server (this file, `--baseline-server`): the same model and prompts through HF `generate`
  with a TextIteratorStreamer (r1lab.engines.streaming.stream_text), one request at a time, its text
  streamed token by token as the model writes it.

Model: the tiny world's pretrained base if it is cached (`r1lab pretrain`; never built here), else an
untrained tiny model built like tests/conftest.py. Prompts: the tiny world's test questions, r1-zero
template, T=0.6, top-p 0.95, stop at </answer>, at most --max-tokens new tokens.

Figures per (server, N): requests/s and output tokens/s over the whole run (N clients, each sending its
requests one after another); time to first token (the first chunk with text: for r1lab serve that is when
its batch finishes) and latency p50/p99 over the requests. Output tokens: the server's usage counts (the
baseline re-tokenizes its text, near enough).
"""


import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


def model_dir() -> tuple[Path, str]:
    """(directory, description): the tiny world's pretrained base if cached (today's default, else the
    newest any earlier r1lab pretrained), else an untrained tiny model. Nothing is pretrained here."""
    import _common

    from r1lab.tinyworld.build import cache_root

    found = _common.pretrained_model_dir("1M", build=False)
    if found is None:
        built = [p.parent for p in cache_root().glob("tinyworld-*/r1lab.json")
                 if json.loads(p.read_text()).get("built_by") == "r1lab pretrain"]
        found = max(built, key=lambda p: p.stat().st_mtime, default=None)
    if found is not None:
        meta = json.loads((found / "r1lab.json").read_text())
        return found, f"a tiny-world base pretrained by `r1lab pretrain`, {meta.get('parameters', 0) / 1e6:.2f}M parameters"
    from r1lab.config import PretrainConfig
    from r1lab.tinyworld.build import build_model, corpus, train_tokenizer
    from r1lab.tinyworld.problems import TinyWorldTask

    out = Path(tempfile.mkdtemp(prefix="r1lab-bench-serve-"))
    tiny = PretrainConfig(corpus_docs=400, vocab_size=320, hidden_size=32, intermediate_size=64, layers=2, heads=4, max_len=256)
    tokenizer = train_tokenizer(corpus(tiny, TinyWorldTask("tinyworld", train_size=400, test_size=20)), tiny.vocab_size)
    build_model(tiny, len(tokenizer)).save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / "r1lab.json").write_text('{"system": ""}')
    return out, "an untrained tiny Llama (tests/conftest.py's; no pretrained base cached)"


def baseline_app(path: str, max_tokens_cap: int):
    """One request at a time through HF generate, streamed as OpenAI chat chunks (content only)."""
    from fastapi import FastAPI, Request
    from fastapi.responses import StreamingResponse

    from r1lab.config import EVAL_SAMPLING, SamplingConfig
    from r1lab.data.format import END_ANSWER, apply_template
    from r1lab.engines.streaming import stream_text
    from r1lab.models.io import load_model, trained_system

    model, tokenizer = load_model(path, device="cpu", dtype="fp32")
    system = trained_system(path, "r1-zero")
    one_at_a_time = threading.Lock()  # released by whichever threadpool thread runs the generator's last step
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = json.loads(await request.body())
        prompt = apply_template(body["messages"][-1]["content"], "r1-zero", system=system)
        sampling = SamplingConfig(**EVAL_SAMPLING, max_new_tokens=min(body.get("max_tokens", 96), max_tokens_cap), stop=[END_ANSWER])

        def events():
            one_at_a_time.acquire()
            try:
                text = ""
                for piece in stream_text(model, tokenizer, prompt, sampling):
                    text += piece
                    yield f"data: {json.dumps({'choices': [{'index': 0, 'delta': {'content': piece}}]})}\n\n"
                produced = len(tokenizer(text, add_special_tokens=False)["input_ids"])
                yield f"data: {json.dumps({'choices': [], 'usage': {'completion_tokens': produced}})}\n\n"
                yield "data: [DONE]\n\n"
            finally:
                one_at_a_time.release()

        return StreamingResponse(events(), media_type="text/event-stream")

    return app


def start_server(argv: list[str]) -> tuple[subprocess.Popen, str]:
    """A server child process; its base URL from the line it prints."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    said = []
    for line in proc.stdout:
        if " at http" in line:
            return proc, line.strip().rsplit(" at ", 1)[1].removesuffix("/v1")
        said.append(line)
    proc.wait()
    raise RuntimeError("the server did not start:\n" + "".join(said))


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


async def one_request(client, base: str, question: str, max_tokens: int, seed: int | None) -> dict:
    body = {"model": "bench", "messages": [{"role": "user", "content": question}], "max_tokens": max_tokens,
            "stream": True, "stream_options": {"include_usage": True}, **({"seed": seed} if seed is not None else {})}
    t0 = time.perf_counter()
    first, tokens = None, 0
    async with client.stream("POST", f"{base}/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if "error" in chunk:
                raise RuntimeError(chunk["error"])
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
            delta = chunk["choices"][0]["delta"] if chunk.get("choices") else {}
            if first is None and (delta.get("content") or delta.get("reasoning_content")):
                first = time.perf_counter() - t0
    latency = time.perf_counter() - t0
    return {"ttft": latency if first is None else first, "latency": latency, "tokens": tokens}


async def load(base: str, questions: list[str], clients: int, per_client: int, max_tokens: int, seeded: bool) -> dict:
    """`clients` clients at once, each sending `per_client` requests one after another."""
    import httpx

    async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=clients)) as client:
        async def run(c: int) -> list[dict]:
            out = []
            for r in range(per_client):
                k = c * per_client + r
                out.append(await one_request(client, base, questions[k % len(questions)], max_tokens, k if seeded else None))
            return out

        t0 = time.perf_counter()
        results = [x for part in await asyncio.gather(*(run(c) for c in range(clients))) for x in part]
        wall = time.perf_counter() - t0

    def pct(values, q):
        values = sorted(values)
        return values[min(len(values) - 1, round(q * (len(values) - 1)))]

    ttft, latency = [r["ttft"] for r in results], [r["latency"] for r in results]
    return {"clients": clients, "requests": len(results), "wall_s": wall, "requests_per_s": len(results) / wall,
            "output_tokens_per_s": sum(r["tokens"] for r in results) / wall, "mean_output_tokens": statistics.mean(r["tokens"] for r in results),
            "ttft_p50_s": pct(ttft, 0.5), "latency_p50_s": pct(latency, 0.5), "latency_p99_s": pct(latency, 0.99)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", default="1,8,32")
    p.add_argument("--requests-per-client", type=int, default=4)
    p.add_argument("--min-requests", type=int, default=32, help="at least this many requests per point")
    p.add_argument("--max-tokens", type=int, default=96)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads of each server (1: best on a busy machine)")
    p.add_argument("--skip", default="", help="comma-separated servers to leave out: r1lab, seeded, baseline")
    p.add_argument("--md", help="write the markdown table here")
    p.add_argument("--json", help="write every figure here")
    p.add_argument("--baseline-server", metavar="MODEL_DIR", help=argparse.SUPPRESS)  # the child process
    args = p.parse_args()

    if args.baseline_server:
        import torch
        import uvicorn
        from transformers.utils import logging as hf_logging

        from r1lab.serve.server import bound_socket

        hf_logging.disable_progress_bar()
        torch.set_num_threads(args.threads)
        app = baseline_app(args.baseline_server, 4096)
        sock = bound_socket("127.0.0.1", 0)
        print(f"baseline at http://127.0.0.1:{sock.getsockname()[1]}/v1", flush=True)
        uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])
        return

    from r1lab.tinyworld.problems import TinyWorldTask

    path, described = model_dir()
    questions = [e.prompt for e in TinyWorldTask("tinyworld", test_size=200).examples("test")]
    servers = {
        "r1lab serve": [sys.executable, "-m", "r1lab.ui.cli", "serve", str(path), "--port", "0", "--name", "bench",
                        "--device", "cpu", "--dtype", "fp32", "--threads", str(args.threads)],
        "HF generate, one at a time": [sys.executable, __file__, "--baseline-server", str(path), "--threads", str(args.threads)],
    }
    plan = [("r1lab serve", "r1lab serve", False), ("r1lab serve, seeded", "r1lab serve", True),
            ("HF generate, one at a time", "HF generate, one at a time", False)]  # (row, server, seeded)
    skip = {{"r1lab": "r1lab serve", "seeded": "r1lab serve, seeded", "baseline": "HF generate, one at a time"}[s]
            for s in args.skip.split(",") if s}
    plan = [row for row in plan if row[0] not in skip]
    print(f"model: {path} ({described}); load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores", flush=True)
    rows = []
    for server_name in dict.fromkeys(server for _, server, _ in plan):
        proc, base = start_server(servers[server_name])
        try:
            asyncio.run(load(base, questions, 4, 1, args.max_tokens, False))  # warm-up
            for label, _, seeded in (row for row in plan if row[1] == server_name):
                for n in map(int, args.clients.split(",")):
                    per_client = max(args.requests_per_client, -(-args.min_requests // n))
                    result = {"server": label, **asyncio.run(load(base, questions, n, per_client, args.max_tokens, seeded))}
                    rows.append(result)
                    print(json.dumps(result), flush=True)
        finally:
            stop_server(proc)
    print(f"load average at the end {os.getloadavg()[0]:.1f}")

    lines = ["| server | clients | requests | requests/s | output tokens/s | time to first token p50 | latency p50 | latency p99 |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['server']} | {r['clients']} | {r['requests']} | {r['requests_per_s']:.2f} | {r['output_tokens_per_s']:.0f} | "
                     f"{r['ttft_p50_s']:.2f} s | {r['latency_p50_s']:.2f} s | {r['latency_p99_s']:.2f} s |")
    table = "\n".join(lines)
    print(table)
    if args.md:
        Path(args.md).write_text(table + "\n")
    if args.json:
        Path(args.json).write_text(json.dumps({"model": str(path), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
