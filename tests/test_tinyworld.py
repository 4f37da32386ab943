import json
import random
import re

import pytest
import torch

from r1lab.config import PretrainConfig
from r1lab.data.format import extract_answer
from r1lab.rewards.rules import format_reward
from r1lab.tinyworld.build import corpus, pack, train_tokenizer
from r1lab.tinyworld.problems import RESERVED_TEST, TinyWorldTask, arithmetic_problem, sample_problem, score
from r1lab.tinyworld.solutions import ARITH_STYLES, COUNTDOWN_STYLES, arithmetic_solution, worked_solution


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


def test_arithmetic_problems_are_solved_by_their_x_and_checks_end_right():
    rng = random.Random(1)
    kinds = set()
    for _ in range(2000):
        question, (a, op, b, c, x) = arithmetic_problem(rng)
        assert question == f"Solve {a} * x {op} {b} = {c}" and 1 <= x <= 9 and 10 <= c <= 99
        assert (a * x + b if op == "+" else a * x - b) == c
        thinking, answer = arithmetic_solution(rng, (a, op, b, c, x), "check")
        assert answer == x and thinking.endswith(" ok.")  # a check style always ends on a check that holds
        kinds.add(op)
        for step in re.findall(r"(\d+) ([-+*]) (\d+) = (-?\d+)", thinking):  # every equation it writes is right
            assert eval(" ".join(step[:3])) == int(step[3]), thinking
    assert kinds == {"+", "-"}


def test_arithmetic_styles_differ_only_in_whether_they_check():
    """The guess and the impatient check stop at the estimate; the check style corrects a wrong one."""
    rng = random.Random(5)
    for _ in range(300):
        _, parts = arithmetic_problem(rng)
        state = rng.getstate()
        guess = arithmetic_solution(rng, parts, "guess")
        rng.setstate(state)
        impatient = arithmetic_solution(rng, parts, "impatient")
        rng.setstate(state)
        check = arithmetic_solution(rng, parts, "check")
        assert guess[1] == impatient[1]  # the same estimate, answered
        if guess[1] != parts[-1]:
            assert impatient[0].endswith("give up.") and "wait, try" in check[0] and check[1] == parts[-1]


@pytest.mark.parametrize("kind, styles", [("arithmetic", ARITH_STYLES), ("countdown", COUNTDOWN_STYLES)])
def test_corpus_is_imperfect_but_well_formed(kind, styles):
    rng = random.Random(2)
    scores, reflective = [], 0
    for _ in range(1500):
        ex = sample_problem(rng, kind)
        response = worked_solution(rng, ex)
        assert format_reward(response) == 1.0
        scores.append(score(extract_answer(response), ex))
        reflective += " check " in response or " wait" in response
    accuracy = sum(scores) / len(scores)
    assert 0.2 < accuracy < 0.7, accuracy  # partly right: RL has behaviour to select for
    if kind == "arithmetic":
        assert 50 < reflective < 600  # some solutions check; most do not


def test_test_split_is_fixed_and_never_in_train_or_corpus():
    a = TinyWorldTask("tinyworld", test_size=40, seed=0)
    b = TinyWorldTask("tinyworld", test_size=20, seed=7, train_size=3000)
    test_a = {e.prompt for e in a.examples("test")}
    assert {e.prompt for e in b.examples("test")} <= test_a  # the same world, whatever the seed
    assert not test_a & {e.prompt for e in a.examples("train")}
    assert not test_a & {e.prompt for e in b.examples("train")}
    docs = corpus(PretrainConfig(corpus_docs=3000), b)
    assert not any(f"User: {p}." in d for d in docs for p in test_a)
    # The practice lines are the checks' arithmetic of train equations: every one right, none of a test equation.
    practice = [d for d in docs if not d.startswith("User:")]
    assert len(practice) == 450 and len(docs) == 3450
    test_parts = {e.meta["parts"][:4] for e in TinyWorldTask("tinyworld/arithmetic", test_size=1000).examples("test")}
    for line in practice:
        a, x, product, product_, op, b_, value, c, value_, difference = re.match(
            r"(\d+) \* (\d+) = (\d+), (\d+) ([-+]) (\d+) = (-?\d+), (\d+) - (-?\d+) = (-?\d+)<\|endoftext\|>$", line).groups()
        assert int(a) * int(x) == int(product) and product == product_ and value == value_
        assert eval(f"{product} {op} {b_}") == int(value) and int(c) - int(value) == int(difference)  # "13 - -1 = 14" too
        assert (int(a), op, int(b_), int(c)) not in test_parts
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
    # First fit: a short document fills the gap an earlier block left, instead of opening a new block.
    blocks, _ = pack([docs[0], docs[2], docs[1]], think, max_len=10)
    assert blocks.tolist() == [[1, 2, 9, 3, 4, 0, 5, 9, 6, 0], [7, 7, 7, 9, 8, 8, 0, 0, 0, 0]]


def test_tokenizer_keeps_digits_apart():
    docs = corpus(PretrainConfig(corpus_docs=300), TinyWorldTask("tinyworld", train_size=300, test_size=10))
    tok = train_tokenizer(docs, 320)
    pieces = tok.convert_ids_to_tokens(tok("Solve 47 + 85 = 132")["input_ids"])
    assert [p for p in pieces if any(c.isdigit() for c in p)] == ["Ġ4", "7", "Ġ8", "5", "Ġ1", "3", "2"]
    assert tok.decode(tok(docs[0])["input_ids"]) == docs[0]


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
    from r1lab.models.io import load_model, trained_system
    from r1lab.tinyworld.build import WORLD_VERSION, pretrain

    cfg = PretrainConfig(corpus_docs=200, vocab_size=320, hidden_size=16, intermediate_size=32, layers=1, heads=2,
                         batch_size=4, steps=3, census=4)
    out = pretrain(cfg, tmp_path / "base")
    meta = json.loads((out / "r1lab.json").read_text())
    assert (meta["world_version"], meta["template"]) == (WORLD_VERSION, "r1-zero") and trained_system(out) == ""
    assert meta["checks"]["problems"] == 4 and meta["checks"]["honest"] is False  # 3 steps: it checks nothing yet
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
    assert not any(mark in r for r in without for mark in ("wait, try", "等等"))
    if kind == "arithmetic":
        assert any("wait, try" in r for r in with_careful)
    if kind == "countdown":  # searches: only the impatient one or two tries are left
        assert max(r.count("try ") for r in without) <= 2 < max(r.count("try ") for r in with_careful)
    mean_len = lambda rs: sum(map(len, rs)) / len(rs)  # noqa: E731
    assert mean_len(without) < mean_len(with_careful)


def test_careful_styles_flag_keys_its_own_base_only():
    from r1lab.tinyworld.build import cache_dir

    default = cache_dir(PretrainConfig())
    assert cache_dir(PretrainConfig(careful_styles=True)) == default  # bases built before the flag stay cached
    assert cache_dir(PretrainConfig(careful_styles=False)) != default


def test_census_reads_styles_and_judges_check_lines():
    from r1lab.data.example import Example
    from r1lab.tinyworld.census import check_parts, first_estimate_right, style_of

    ex = Example(id="q", prompt="Solve 7 * x + 23 = 72", answer="7", meta={"kind": "arithmetic", "parts": (7, "+", 23, 72, 7)})
    rng = random.Random(0)
    for style in ARITH_STYLES:  # every style the corpus writes is read back as itself
        for _ in range(20):
            response = worked_solution_in(rng, ex, style)
            right_at_once = extract_answer(response) == "7" and "wait" not in response and "等等" not in response
            # an impatient check whose estimate was right reads exactly like a check that held at once
            assert style_of(response, ex) == ("check" if style == "impatient" and right_at_once else style)
    honest = (" x is about 6. check 7 * 6 = 42, 42 + 23 = 65, 72 - 65 = 7, too small. wait, try 7: 7 * 7 = 49, "
              "49 + 23 = 72, 72 - 72 = 0 ok.")
    assert check_parts(honest, ex) == [{"copies b": True, "sum right": True, "difference right": True, "verdict follows": True}] * 2
    assert first_estimate_right(honest, ex) is False
    decorative = " x大约是 6. 验算 7 * 6 = 42, 42 + 22 = 71, 72 - 71 = 0 好."  # b miscopied, sum and difference wrong, "ok" under 71
    assert check_parts(decorative, ex) == [{"copies b": False, "sum right": False, "difference right": False, "verdict follows": False}]
    too_big = " x is about 8. check 7 * 8 = 56, 56 + 23 = 79, 72 - 79 = -7, too big. wait, try 7:"
    assert check_parts(too_big, ex) == [{"copies b": True, "sum right": True, "difference right": True, "verdict follows": True}]
    countdown = sample_problem(random.Random(1), "countdown")
    assert style_of(" try 3 + 5 = 8, 8 * 7 = 56 no. give up.", countdown) == "impatient"
    assert style_of(" maybe (3 + 5) * 7.", countdown) == "guess"


def worked_solution_in(rng, example, style):
    from r1lab.tinyworld.language import mix_language
    from r1lab.tinyworld.solutions import arithmetic_solution

    thinking, answer = arithmetic_solution(rng, example.meta["parts"], style)
    thinking = mix_language(rng, thinking) if rng.random() < 0.5 else thinking
    return f" {thinking} </think> <answer> {answer} </answer>"


def test_census_runs_on_a_model_directory(tiny_model_dir):
    from r1lab.tinyworld.census import census

    table = census(str(tiny_model_dir), n=4, temperature=1.0, k=2)
    checks = table.pop("checks")
    for kind in ("arithmetic", "countdown"):
        rows = [row for key, row in table.items() if key.startswith(kind + "/")]
        assert sum(row["samples"] for row in rows) == 4 and abs(sum(row["share"] for row in rows) - 1) < 1e-9
        assert all(0 <= row["accuracy"] <= 1 for row in rows)
    assert all(0 <= part["rate"] <= 1 for part in checks.values())
