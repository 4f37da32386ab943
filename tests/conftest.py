import os

import pytest

# Tests compare runs bit for bit (resume, evaluation during training): torch's threads must not follow the
# machine's load between them (r1lab/train/threads.py). tests/test_threads.py turns the fitting back on.
os.environ.setdefault("R1LAB_THREADS", "fixed")

from r1lab.config import PretrainConfig
from r1lab.tinyworld.build import build_model, corpus, train_tokenizer
from r1lab.tinyworld.problems import TinyWorldTask

TINY = PretrainConfig(corpus_docs=400, vocab_size=320, hidden_size=32, intermediate_size=64, layers=2, heads=4, max_len=256)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """An untrained tiny Llama + the tiny world's tokenizer, saved like any HF model."""
    out = tmp_path_factory.mktemp("tiny-model")
    tokenizer = train_tokenizer(corpus(TINY, TinyWorldTask("tinyworld", train_size=400, test_size=20)), TINY.vocab_size)
    model = build_model(TINY, len(tokenizer))
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / "r1lab.json").write_text('{"system": ""}')
    return out


@pytest.fixture
def tiny(tiny_model_dir):
    from r1lab.models.io import load_model

    return load_model(str(tiny_model_dir), device="cpu", dtype="fp32")


@pytest.fixture
def one_thread():
    """The tiny models gain nothing from threads, and on a busy machine they make them many times slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def offline_trackers(tmp_path, monkeypatch):
    """log.report_to's trackers offline and apart from the user's: wandb's default mode (offline) and its own
    directories, trackio's default directory (RUN/trackers/trackio), no hub."""
    for var in ("WANDB_MODE", "TRACKIO_DIR", "TRACKIO_SPACE_ID", "TRACKIO_SERVER_URL"):
        monkeypatch.delenv(var, raising=False)
    for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb-home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("WANDB_SILENT", "true")
