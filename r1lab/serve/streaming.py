"""Waiting for a request's jobs and sending its answer: whole, or as server-sent events once its batch
finishes (the role first, then the reasoning and the answer as one delta each, then any tool calls, each
whole in one delta.tool_calls entry: the engine's `generate` returns whole completions). A client that
leaves has its jobs cancelled, so queued ones never run."""

from __future__ import annotations

import asyncio

from fastapi import Request
from fastapi.responses import JSONResponse, StreamingResponse

from r1lab.serve.api import OpenAIError, envelope, new_id, sse
from r1lab.serve.batching import Job

DISCONNECT_POLL_S = 0.1  # how often a waiting request checks that its client is still there


async def respond(request: Request, req, jobs: list[Job], kind: str, model_name: str, opening: list[dict], render):
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
