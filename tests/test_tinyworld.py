import json
import random

import pytest
import torch

from r1lab.config import PretrainConfig
from r1lab.data.format import extract_answer
from r1lab.rewards.rules import format_reward
from r1lab.tinyworld.build import corpus, pack, train_tokenizer
from r1lab.tinyworld.problems import (
    ARITH_STYLES,
    COUNTDOWN_STYLES,
    RESERVED_TEST,
    TinyWorldTask,
    arithmetic_problem,
    arithmetic_solution,
    sample_problem,
    score,
    worked_solution,
)


def _countdown(numbers, target):
    return sample_problem(random.Random(0), "countdown").__class__(
        id="x", prompt="", answer=str(target), meta={"kind": "countdown", "numbers": numbers, "target": target})


def test_countdown_verifier():
    ex = _countdown([3, 5, 7], 22)
    assert score("(3 * 5) + 7", ex) == 1.0
    assert score("7 + 5 * 3", ex) == 1.0  # any expression using each number once
    assert score("(3 + 5) + 7", ex) == 0.0  # wrong value
    assert score("(3 * 5) + 7 + 0", ex) == 0.0  # an extra number
    assert score("15 + 7", ex) == 0.0  # numbers not the given ones
    assert score("__import__('os').system('x')", ex) == 0.0  # never evaluated as Python
    assert score("9" * 5000, ex) == 0.0 and score(None, ex) == 0.0


def test_arithmetic_values_stay_two_digit_and_answers_check():
    rng = random.Random(1)
    for _ in range(2000):
        question, steps = arithmetic_problem(rng)
        assert all(0 <= result <= 99 for *_, result in steps), question
        thinking, answer = arithmetic_solution(rng, steps, "careful")
        assert answer == steps[-1][3]


@pytest.mark.parametrize("kind, styles", [("arithmetic", ARITH_STYLES), ("countdown", COUNTDOWN_STYLES)])
def test_corpus_is_imperfect_but_well_formed(kind, styles):
    rng = random.Random(2)
    scores, reflective = [], 0
    for _ in range(1500):
        ex = sample_problem(rng, kind)
        response = worked_solution(rng, ex)
        assert format_reward(response) == 1.0
        scores.append(score(extract_answer(response), ex))
        reflective += "wait, recheck" in response
    accuracy = sum(scores) / len(scores)
    assert 0.2 < accuracy < 0.7, accuracy  # partly right: RL has behaviour to select for
    assert reflective > 50  # some solutions catch their own slip


def test_test_split_is_fixed_and_never_in_train_or_corpus():
    a = TinyWorldTask("tinyworld", test_size=40, seed=0)
    b = TinyWorldTask("tinyworld", test_size=20, seed=7, train_size=3000)
    test_a = {e.prompt for e in a.examples("test")}
    assert {e.prompt for e in b.examples("test")} <= test_a  # the same world, whatever the seed
    assert not test_a & {e.prompt for e in a.examples("train")}
    assert not test_a & {e.prompt for e in b.examples("train")}
    docs = corpus(PretrainConfig(corpus_docs=3000), b)
    assert not any(f"User: {p}." in d for d in docs for p in test_a)
    with pytest.raises(ValueError, match="reserved"):
        TinyWorldTask("tinyworld/countdown", test_size=RESERVED_TEST + 1)
    with pytest.raises(ValueError, match="unknown tiny-world task .tinyworld/chess.*arithmetic, countdown, general"):
        TinyWorldTask("tinyworld/chess")


def test_pack_keeps_documents_whole_and_labels_responses():
    think = 9
    docs = [[1, 2, think, 3, 4, 0], [5, think, 6, 0], [7, 7, 7, think, 8, 8, 0]]
    blocks, labels = pack(docs, think, max_len=10)
    assert blocks.tolist() == [[1, 2, 9, 3, 4, 0, 5, 9, 6, 0], [7, 7, 7, 9, 8, 8, 0, 0, 0, 0]]
    assert labels.tolist() == [[-100, -100, -100, 3, 4, 0, -100, -100, 6, 0], [-100] * 4 + [8, 8, 0] + [-100] * 3]
    assert isinstance(blocks, torch.Tensor)


def test_tokenizer_keeps_digits_apart():
    docs = corpus(PretrainConfig(corpus_docs=300), TinyWorldTask("tinyworld", train_size=300, test_size=10))
    tok = train_tokenizer(docs, 320)
    pieces = tok.convert_ids_to_tokens(tok("Compute 47 + 85 = 132")["input_ids"])
    assert [p for p in pieces if any(c.isdigit() for c in p)] == ["Ġ4", "7", "Ġ8", "5", "Ġ1", "3", "2"]
    assert tok.decode(tok(docs[0])["input_ids"]) == docs[0]


def test_arithmetic_question_means_what_its_steps_compute():
    """The question, read with normal precedence, equals the answer the steps chain to."""
    rng = random.Random(4)
    products = 0
    for _ in range(3000):
        question, steps = arithmetic_problem(rng)
        products += "*" in question
        assert eval(question.removeprefix("Compute ")) == steps[-1][3], question  # only digits, + - * ( )
    assert products > 50


def test_cache_key_follows_config_and_world_version(monkeypatch, tmp_path):
    from r1lab.tinyworld import build

    monkeypatch.setenv("R1LAB_CACHE", str(tmp_path))
    base = build.cache_dir(PretrainConfig())
    assert base.parent == tmp_path and build.cache_dir(PretrainConfig()) == base
    assert build.cache_dir(PretrainConfig(steps=801)) != base
    monkeypatch.setattr(build, "WORLD_VERSION", build.WORLD_VERSION + 1)
    assert build.cache_dir(PretrainConfig()) != base  # a changed world never reuses a stale base


@pytest.mark.slow
def test_pretrain_saves_a_whole_model_once(tmp_path):
    from r1lab.models import load_model, trained_system
    from r1lab.tinyworld.build import WORLD_VERSION, pretrain

    cfg = PretrainConfig(corpus_docs=200, vocab_size=320, hidden_size=16, intermediate_size=32, layers=1, heads=2,
                         batch_size=4, steps=3)
    out = pretrain(cfg, tmp_path / "base")
    meta = json.loads((out / "r1lab.json").read_text())
    assert (meta["world_version"], meta["template"]) == (WORLD_VERSION, "r1-zero") and trained_system(out) == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base"]  # no temporary directory left behind
    written = (out / "r1lab.json").stat().st_mtime_ns
    assert pretrain(cfg, out) == out and (out / "r1lab.json").stat().st_mtime_ns == written  # finished: reused
    model, tokenizer = load_model(str(out), device="cpu")
    assert model.config.num_hidden_layers == 1 and tokenizer.tokenize("<think>") == ["<think>"]


@pytest.mark.parametrize("kind", ["arithmetic", "countdown"])
def test_corpus_without_careful_styles(kind):
    """The aha-ablation's corpus: no solution checks, redoes or searches on; the other styles keep their shares."""
    rng = random.Random(3)
    with_careful = [worked_solution(rng, sample_problem(rng, kind)) for _ in range(800)]
    without = [worked_solution(rng, sample_problem(rng, kind), careful_styles=False) for _ in range(800)]
    assert all(format_reward(r) == 1.0 for r in without)
    assert not any(mark in r for r in without for mark in ("wait, recheck", " check ", "再算", "验算"))
    assert any("wait, recheck" in r for r in with_careful)
    if kind == "countdown":  # searches: only the impatient one or two tries are left
        assert max(r.count("try ") for r in without) <= 2 < max(r.count("try ") for r in with_careful)
    mean_len = lambda rs: sum(map(len, rs)) / len(rs)  # noqa: E731
    assert mean_len(without) < mean_len(with_careful)


def test_careful_styles_flag_keys_its_own_base_only():
    from r1lab.tinyworld.build import cache_dir

    default = cache_dir(PretrainConfig())
    assert cache_dir(PretrainConfig(careful_styles=True)) == default  # bases built before the flag stay cached
    assert cache_dir(PretrainConfig(careful_styles=False)) != default
