"""ThreadFit: torch's threads follow the cores that other processes leave free (r1lab/train/threads.py)."""

import subprocess
import sys
import time

import pytest
import torch

from r1lab.train.threads import ThreadFit, machine_busy_seconds, usable_cores

pytestmark = pytest.mark.skipif(machine_busy_seconds() is None or usable_cores() < 2, reason="needs /proc/stat and 2 cores")

BUSY = "import time\nwhile True: pass\n"


@pytest.fixture
def fitting(monkeypatch):
    """The fitting on (conftest turns it off for the rest of the suite), 2 threads to start from."""
    monkeypatch.delenv("R1LAB_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def _window(fit: ThreadFit, seconds: float = 1.0) -> int:
    time.sleep(seconds)  # this process idles: whatever the machine does is the others' load
    return fit()


def test_threads_drop_beside_busy_processes_and_come_back(fitting):
    fit = ThreadFit()
    assert fit.enabled and fit.max_threads == 2
    alone = _window(fit)  # 2 on a quiet machine; whatever else runs here now decides it
    assert alone == 2 or fit.others > 0.7, f"a quiet machine keeps the threads (others: {fit.others:.2f} cores)"
    busy = [subprocess.Popen([sys.executable, "-c", BUSY]) for _ in range(fit.cores)]
    try:
        time.sleep(0.5)
        fit()  # starts a window inside the busy period
        assert _window(fit) == 1, f"every core busy elsewhere: one thread (others: {fit.others:.2f} cores)"
        assert torch.get_num_threads() == 1 and fit.others > fit.cores - 1
    finally:
        for p in busy:
            p.kill()
            p.wait()
    fit()
    assert _window(fit) == alone == torch.get_num_threads(), "the busy processes ended: threads back"
    if alone == 2:
        assert [threads for _, threads in fit.history] == [1, 2]


def test_own_work_is_not_counted_as_others(fitting):
    fit = ThreadFit()
    t_end = time.perf_counter() + 1.0
    a = torch.randn(256, 256)
    while time.perf_counter() < t_end:  # this process busy on both threads
        a = torch.tanh(a @ a)
    assert fit() == 2, f"own work counted as a competitor's (others: {fit.others:.2f} cores)"


@pytest.mark.parametrize("env", [{"R1LAB_THREADS": "fixed"}, {"OMP_NUM_THREADS": "2"}])
def test_a_chosen_thread_count_is_left_alone(fitting, monkeypatch, env):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    fit = ThreadFit()
    assert not fit.enabled
    busy = subprocess.Popen([sys.executable, "-c", BUSY])
    try:
        assert _window(fit, 0.5) == 2 == torch.get_num_threads()
    finally:
        busy.kill()
        busy.wait()


def test_a_wrong_setting_is_named(fitting, monkeypatch):
    monkeypatch.setenv("R1LAB_THREADS", "2")
    with pytest.raises(ValueError, match="R1LAB_THREADS='2'.*OMP_NUM_THREADS=N"):
        ThreadFit()


def test_rl_runs_log_their_threads(tmp_path, tiny, fitting):
    import json

    from r1lab.config import RLConfig, SamplingConfig
    from r1lab.engines import make_engine
    from r1lab.rl.loop import train_rl
    from r1lab.tinyworld.problems import TinyWorldTask

    model, tok = tiny
    cfg = RLConfig(steps=2, prompts_per_step=2, group_size=2, sampling=SamplingConfig(max_new_tokens=8), checkpoint_every=0)
    train_rl(model, tok, TinyWorldTask("tinyworld", train_size=50, test_size=10), cfg, tmp_path,
             engine=make_engine("torch", model, tok, seed=0), template="r1-zero", system="")
    rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert all(r.get("threads") in (1, 2) for r in rows if "loss" in r or "threads" in r), rows
    assert any("threads" in r for r in rows)
