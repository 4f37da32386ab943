"""The parts R1 adds to R1-Zero: general prompts and their reward, reward models, the paper's metrics,
language mixing in the tiny world, reference answers, and recipe plumbing (stage overrides, student)."""

import random
from types import SimpleNamespace

import pytest
import torch

from r1lab.config import ConfigError, EvalConfig
from r1lab.data.example import Example
from r1lab.evaluation.evaluate import evaluate, majority_answer, pass_at_k
from r1lab.recipes.load import load_config
from r1lab.rewards.language import language_share
from r1lab.rewards.registry import Rewards
from r1lab.rewards.rules import make_helpfulness_reward
from r1lab.sft.generate import read_kept, write_reference_answers
from r1lab.tinyworld.language import CHINESE, MIXED_SHARE
from r1lab.tinyworld.problems import TinyWorldTask, sample_problem, score
from r1lab.tinyworld.solutions import worked_solution

GENERAL = TinyWorldTask("tinyworld/general", train_size=300, test_size=30)


# ---------------------------------------------------------------- the vote and the estimator


@pytest.mark.parametrize("n, c, k, expected", [
    (4, 0, 1, 0.0), (4, 1, 1, 0.25), (4, 4, 2, 1.0),
    (4, 1, 2, 0.5),           # 1 - C(3,2)/C(4,2) = 1 - 3/6
    (5, 2, 3, 0.9),           # 1 - C(3,3)/C(5,3) = 1 - 1/10
    (16, 3, 4, 1 - 715 / 1820),  # C(13,4) / C(16,4)
])
def test_pass_at_k_matches_hand_values(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected)


def test_majority_vote():
    assert majority_answer(["3", "4", " 3 ", None]) == "3"
    assert majority_answer(["1 + 2", "1  +  2", "3"]) == "1 + 2"  # whitespace does not split a vote
    assert majority_answer(["7", "8"]) == "7"  # a tie goes to the first seen
    assert majority_answer([None, ""]) is None


def test_countdown_votes_by_value_not_spelling():
    task = TinyWorldTask("tinyworld/countdown", train_size=10, test_size=5)
    ex = Example(id="q", prompt="Make 13 from 2, 6, 5", answer="13", meta={"kind": "countdown", "numbers": [2, 6, 5], "target": 13})
    answers = ["(2 + 6) + 5", "7 + 6", "(6 + 2) + 5", "7 + 6", "5 + (2 + 6)"]
    assert majority_answer(answers) == "7 + 6"  # by text, the repeated wrong answer wins
    vote = majority_answer(answers, key=lambda a: task.vote_key(a, ex))
    assert vote == "(2 + 6) + 5" and task.score(vote, ex) == 1.0


class CannedEngine:
    """Returns, for each prompt, the answers listed for it (one sample each)."""

    tokenizer = None

    def __init__(self, answers_by_prompt):
        self.answers = answers_by_prompt

    def generate(self, prompts, sampling, n=1):
        texts = [f" x </think> <answer> {a} </answer>" if a is not None else " x" for p in prompts
                 for a in self.answers[p.split("User: ")[-1].split(". Assistant:")[0]][:n]]
        return SimpleNamespace(texts=texts, lengths=torch.tensor([3] * len(texts)), truncated=[False] * len(texts))


def test_evaluate_pass1_cons_and_pass_k_by_hand():
    a, b = GENERAL.examples("test")[:2]
    # a: 1 of 4 right, but the wrong ones disagree -> the vote picks the first seen, which is wrong
    # b: 2 of 4 right and they agree -> the vote is right
    engine = CannedEngine({a.prompt: ["0", a.answer, "1", "2"], b.prompt: [b.answer, "9", b.answer, None]})
    result = evaluate(engine, GENERAL, EvalConfig(k=4, sampling={"max_new_tokens": 8}), template="r1-zero", system="",
                      examples=[a, b])
    assert result["pass@1"] == pytest.approx((1 / 4 + 2 / 4) / 2)
    assert result["cons@k"] == result["cons@4"] == pytest.approx(0.5)
    assert result["pass@k"] == pytest.approx(1.0)
    assert result["format_rate"] == pytest.approx(7 / 8)


# ---------------------------------------------------------------- the tiny world's general questions


def test_general_questions_are_answered_without_thinking():
    rng = random.Random(0)
    forms = set()
    for _ in range(300):
        ex = sample_problem(rng, "general")
        forms.add(ex.prompt.split()[0])
        response = worked_solution(rng, ex)
        assert response == f"<think> </think> <answer> {ex.answer} </answer>" and ex.meta["general"]
        assert score(ex.answer, ex) == 1.0 and score(f"  {ex.answer} ", ex) == 1.0
    assert forms == {"What", "Which", "Repeat"}
    ex = Example(id="q", prompt="Which is larger, 47 or 52?", answer="52", meta={"kind": "general", "general": True})
    assert score("47", ex) == 0.0 and score("52", ex) == 1.0


def test_task_names_pick_kinds():
    assert TinyWorldTask("tinyworld", train_size=30, test_size=4).kinds == ("arithmetic", "countdown")
    task = TinyWorldTask("tinyworld/countdown+general", train_size=40, test_size=6)
    assert {e.meta["kind"] for e in task.examples("test")} == {"countdown", "general"}
    assert {e.meta["kind"] for e in task.examples("train")} == {"countdown", "general"}
    assert not {e.prompt for e in task.examples("test")} & {e.prompt for e in task.examples("train")}
    for bad in ("tinyworld/poetry", "tinyworld/general+general", "tinyworld/"):
        with pytest.raises(ValueError, match="unknown tiny-world task"):
            TinyWorldTask(bad)


def test_language_mixing_is_one_choice_per_document_and_favours_careful_styles():
    rng = random.Random(3)
    mixed_by_guessing, mixed_shares = {True: [], False: []}, []
    for _ in range(3000):
        ex = sample_problem(rng, rng.choice(["arithmetic", "countdown"]))
        response = worked_solution(rng, ex)
        thinking = response.split("</think>")[0]
        words = [w for w in thinking.replace(".", " ").replace(",", " ").split() if not w.isdigit() and w not in "+-*=()<think>"]
        share = language_share(response)
        mixed = share is not None and share < 1.0
        if mixed:
            assert words[0] in CHINESE.values(), thinking  # the choice shows at the first word
            mixed_shares.append(share)
        guessing = (any(w in thinking for w in ("is about", "大约是", "maybe", "也许"))
                    and not any(w in thinking for w in ("check", "验算")))  # an estimate left unchecked
        if share is not None:
            mixed_by_guessing[guessing].append(mixed)
    assert sum(mixed_shares) / len(mixed_shares) < 0.3  # and most words follow it (a short one may not)
    rate = {g: sum(v) / len(v) for g, v in mixed_by_guessing.items()}
    assert rate[True] == pytest.approx(MIXED_SHARE["guess"], abs=0.04)
    assert rate[False] > rate[True] + 0.08  # working docs mix more: accuracy-only RL drifts toward mixing


# ---------------------------------------------------------------- rewards for all-scenario RL


def test_general_prompts_get_the_general_rewards():
    reasoning = TinyWorldTask("tinyworld/arithmetic", train_size=10, test_size=2).examples("test")[0]
    general = GENERAL.examples("test")[0]
    task = TinyWorldTask("tinyworld/arithmetic+general", train_size=20, test_size=4)
    rewards = Rewards({"accuracy": 1.0, "format": 0.5}, task, {"helpfulness": 2.0})
    responses = [f"<think> x </think> <answer> {reasoning.answer} </answer>",
                 f"<think> </think> <answer> {general.answer} </answer>"]
    totals, raw = rewards(responses, [reasoning, general], [{"num_tokens": 5, "max_tokens": 8, "truncated": False}] * 2)
    assert raw["accuracy"] == [1.0, None] and raw["format"] == [1.0, None] and raw["helpfulness"] == [None, 1.0]
    assert totals == [1.5, 2.0]
    with pytest.raises(ValueError, match="general_rewards is empty"):
        Rewards({"accuracy": 1.0}, task)(responses, [reasoning, general], [{}] * 2)


def test_helpfulness_by_hand():
    help_ = make_helpfulness_reward(GENERAL)
    ex = GENERAL.examples("test")[0]
    assert help_(f"<think> </think> <answer> {ex.answer} </answer>", ex) == 1.0
    assert help_("<think> </think> <answer> nonsense </answer>", ex) == 0.5  # well presented, wrong
    long_thinking = " ".join(["hmm"] * 24)  # 24 words: 16 over the free 8, half of the 32 allowed
    assert help_(f"<think> {long_thinking} </think> <answer> {ex.answer} </answer>", ex) == pytest.approx(0.875)
    assert help_(f"<think> {ex.answer}", ex) == 0.0  # no answer


# ---------------------------------------------------------------- data and recipes


def test_reference_answers_are_kept_sft_rows(tmp_path):
    examples = GENERAL.examples("train")[:3]
    stats = write_reference_answers(examples, tmp_path / "a" / "samples.jsonl")
    assert stats["kept"] == 3
    assert read_kept(tmp_path / "a" / "samples.jsonl") == [
        {"prompt": e.prompt, "completion": f"<think> </think> <answer> {e.answer} </answer>"} for e in examples]
    with pytest.raises(ValueError, match="no reference answer"):
        write_reference_answers([Example(id="x", prompt="x", answer="")], tmp_path / "b.jsonl")


def test_stage_overrides_by_name_or_index_and_recipe_checks():
    cfg = load_config("r1", ["stages.reasoning-rl.rl.steps=5", "stages.0.rl.steps=7"])
    steps = {s.name: s.rl.get("steps") for s in cfg.stages}
    assert steps["reasoning-rl"] == 5 and steps["r1-zero"] == 7
    assert cfg.stages[3].rl["rewards"]["language"] == 1.0  # the rest of the stage is kept
    with pytest.raises(ConfigError, match="stages.nope: no such entry"):
        load_config("r1", ["stages.nope.k=3"])
    with pytest.raises(ConfigError, match="set teacher=PATH"):
        load_config("distill")
    with pytest.raises(ConfigError, match="final_stage 'distill-data' is not an rl, mcts or sft stage"):
        load_config("r1", ["final_stage=distill-data"])
    with pytest.raises(ConfigError, match="student.pretrain"):
        load_config("r1", ["student.pretrain.hidden_size=66"])
    student = load_config("r1").student_pretrain()
    assert (student.hidden_size, student.layers) == (64, 4)  # the rest as the base's


def test_recipes_match_the_paper_where_it_matters():
    r1 = {s.name: s for s in load_config("r1").stages}
    assert r1["cold-start"].init == "base" and r1["rejection-sft"].init == "base"  # both SFT the base
    assert "language" in r1["reasoning-rl"].rl["rewards"]
    assert r1["all-scenario-rl"].rl["sampling"]["temperature"] == 0.7
    assert r1["distilled-student"].init == "student"
    dvr = load_config("distill-vs-rl")
    traces = next(s for s in dvr.stages if s.name == "traces")
    # the same number of samples both ways: teacher traces vs GRPO rollouts
    assert traces.prompts * traces.k == dvr.rl.steps * dvr.rl.prompts_per_step * dvr.rl.group_size
