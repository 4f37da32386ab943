"""Requests that arrive together share the engine's decode steps: a queue and one worker thread.

The worker owns the engine (engines are not thread-safe). It waits for a request, gathers the others
that arrive within `window_s`, and makes one `engine.generate` call per group of requests that can
share one without changing anyone's result:

- unseeded requests with the same sampling settings (temperature, top_p, top_k, max_tokens, stop) and
  n: one call, up to `max_rows` rows. Their tokens come from the engine's running generator, so what
  each gets depends on what it was batched with, as an unseeded request to any OpenAI server is not
  reproducible;
- a seeded request: its own call, with the engine's random state set to the one a fresh engine made
  with that seed would have (then put back). The engine draws one uniform per live row per step from
  a single generator, so rows batched together see each other's draws: batching distinct seeded
  requests would change their results. Identical seeded requests (same prompt, settings, n and seed)
  are merged: one call, the same answer for each.

Every request holds a slot from `submit` until its result is set; `max_pending` slots in all, so a
flood of requests is refused (`Busy`) instead of queueing without end. A request whose client went away
(`Job.cancel`) gives its slot back at once if it is still queued, and is never run; one already in the
engine gives it back when that call ends (the engine cannot drop a row mid-call), its result unread.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field

from r1lab.config import SamplingConfig
from r1lab.engines import Rollout


class Busy(Exception):
    """Every slot is taken: the caller should answer 429 and let the client retry."""


@dataclass(eq=False)
class Job:
    """One request for n completions of `prompt`; `result` gets its Rollout (one prompt, n rows) or an error."""

    prompt: str
    sampling: SamplingConfig
    n: int
    seed: int | None
    result: Future = field(default_factory=Future)
    finished: bool = False  # its slot is free again
    on_cancel: Callable[[Job], None] | None = None  # the batcher's: frees the slot of a job cancelled while queued

    def cancel(self) -> None:
        """The client went away: a queued job is dropped and its slot freed now; a running one (whose
        future can no longer be cancelled) frees it when its engine call ends. Safe to call more than once."""
        if self.result.cancel() and self.on_cancel is not None:
            self.on_cancel(self)

    @property
    def group(self) -> tuple:
        """Jobs with equal keys can share one engine call (see the module's docstring)."""
        settings = self.sampling.model_dump_json()
        return (settings, self.n) if self.seed is None else (settings, self.n, self.seed, self.prompt)


class Batcher:
    """Runs jobs through `engine.generate`, batching those that can share a call; see the module's docstring.

    seeded_state: seed -> the engine's random state for a request with that seed (what
    `engine.set_rng_state` takes); None when the engine cannot be seeded per request, and then
    `submit` refuses a seed with ValueError.
    """

    def __init__(self, engine, *, seeded_state: Callable[[int], object] | None = None, window_s: float = 0.005,
                 max_rows: int = 64, max_pending: int = 256):
        self.engine, self.seeded_state = engine, seeded_state
        self.window_s, self.max_rows, self.max_pending = window_s, max_rows, max_pending
        self.jobs: queue.Queue[Job | None] = queue.Queue()
        self.pending = 0  # slots taken: jobs submitted and not yet finished or skipped
        self.engine_calls = 0  # for /health and the tests: how many generate calls served the jobs so far
        self.lock = threading.Lock()
        self.worker: threading.Thread | None = None

    def start(self) -> Batcher:
        self.worker = threading.Thread(target=self._run, name="r1lab-batcher", daemon=True)
        self.worker.start()
        return self

    def close(self) -> None:
        """Stops the worker after the group it is running; jobs still queued fail with RuntimeError."""
        if self.worker is not None:
            self.jobs.put(None)
            self.worker.join()
            self.worker = None
        while True:
            try:
                job = self.jobs.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                self._finish(job, error=RuntimeError("the server is shutting down"))

    def submit(self, prompt: str, sampling, n: int = 1, seed: int | None = None) -> Job:
        if seed is not None and self.seeded_state is None:
            raise ValueError("this engine cannot be seeded per request: leave seed out")
        with self.lock:
            if self.pending >= self.max_pending:
                raise Busy(f"all {self.max_pending} request slots are taken")
            self.pending += 1
        job = Job(prompt, sampling, n, seed, on_cancel=self._finish)
        self.jobs.put(job)
        return job

    def _finish(self, job: Job, rollout: Rollout | None = None, error: BaseException | None = None) -> None:
        """Sets the job's result (if any) and frees its slot, once (from the worker, or from cancel)."""
        with self.lock:
            if job.finished:
                return
            job.finished = True
            self.pending -= 1
        try:
            if error is not None:
                job.result.set_exception(error)
            elif rollout is not None:
                job.result.set_result(rollout)
        except InvalidStateError:  # cancelled by its client: nobody is waiting for it
            pass

    def _gather(self, first: Job) -> tuple[list[Job], bool]:
        """`first` and the jobs that arrive within the window (or until the batch is full); and whether
        the queue was closed meanwhile."""
        jobs, rows = [first], first.n
        deadline = time.monotonic() + self.window_s
        while rows < self.max_rows:
            try:
                job = self.jobs.get(timeout=max(deadline - time.monotonic(), 0))
            except queue.Empty:
                break
            if job is None:
                return jobs, True
            jobs.append(job)
            rows += job.n
        return jobs, False

    def _run(self) -> None:
        closing = False
        while not closing:
            first = self.jobs.get()
            if first is None:
                break
            jobs, closing = self._gather(first)
            groups: dict[tuple, list[Job]] = {}  # in order of arrival of each group's first job
            for job in jobs:
                groups.setdefault(job.group, []).append(job)
            for group in groups.values():
                # from here on a job can't be cancelled; those cancelled while queued are skipped (and freed)
                live = [job for job in group if job.result.set_running_or_notify_cancel()]
                try:
                    if live:
                        self._run_group(live)
                except Exception as err:  # noqa: BLE001 - a bug here must fail these requests, not the worker
                    for job in live:
                        self._finish(job, error=err)

    def _run_group(self, jobs: list[Job]) -> None:
        job = jobs[0]
        if job.seed is not None:  # identical seeded jobs: one call, the same answer for each
            rollout = self._generate_or_error([job.prompt], job)
            for other in jobs:
                self._finish(other, *((rollout, None) if isinstance(rollout, Rollout) else (None, rollout)))
            return
        per_call = max(1, self.max_rows // job.n)
        for start in range(0, len(jobs), per_call):
            chunk = jobs[start:start + per_call]
            rollout = self._generate_or_error([j.prompt for j in chunk], job)
            if isinstance(rollout, Rollout):
                for i, j in enumerate(chunk):
                    self._finish(j, rollout.select([i]))
            elif len(chunk) == 1:
                self._finish(chunk[0], error=rollout)
            else:  # find the one that failed: each alone, so the others still get their answers
                for j in chunk:
                    alone = self._generate_or_error([j.prompt], j)
                    self._finish(j, *((alone, None) if isinstance(alone, Rollout) else (None, alone)))

    def _generate_or_error(self, prompts: list[str], like: Job) -> Rollout | BaseException:
        """One engine call with `like`'s settings (and seed); the exception instead of raising it, so that
        one bad request never stops the worker."""
        engine = self.engine
        try:
            self.engine_calls += 1
            if like.seed is None:
                return engine.generate(prompts, like.sampling, n=like.n)
            saved = engine.rng_state()
            engine.set_rng_state(self.seeded_state(like.seed))
            try:
                return engine.generate(prompts, like.sampling, n=like.n)
            finally:  # unseeded requests go on with the engine's own stream of draws
                engine.set_rng_state(saved)
        except Exception as err:  # noqa: BLE001 - handed to the request that caused it
            return err
