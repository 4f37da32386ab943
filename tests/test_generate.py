import json
from types import SimpleNamespace

import pytest
import torch

from r1lab.config import SamplingConfig
from r1lab.data.example import Example
from r1lab.engines import make_engine
from r1lab.sft.generate import FilterConfig, generate, read_kept, reformat_for_readability, score_sample, select
from r1lab.tinyworld.problems import TinyWorldTask

TASK = TinyWorldTask("tinyworld", train_size=50, test_size=10)
# A crafted example (the filters do not care which world wrote it), scored by the tiny world's rules.
EX = Example(id="q", prompt="Compute 40 + 8 - 8", answer="40", meta={"kind": "arithmetic"})
GOOD = "<think> 40 + 8 = 48. 48 - 8 = 40. check 40 + 8 = 48 ok. </think> <answer> 40 </answer>"


def reasons(response, truncated=False, num_tokens=20, **filters):
    return score_sample(response, EX, TASK, num_tokens=num_tokens, truncated=truncated, filters=FilterConfig(**filters))[1]


def test_example_is_what_the_crafted_samples_assume():
    assert TASK.score("40", EX) == 1.0 and TASK.score("41", EX) == 0.0


def test_a_correct_clean_sample_is_kept_with_its_scores():
    scores, why = score_sample(GOOD, EX, TASK, num_tokens=20, truncated=False, filters=FilterConfig())
    assert why == []
    # 22 words, 20 word 3-grams of which "40 + 8" and "+ 8 =" come twice
    assert scores == {"correct": 1.0, "format": 1.0, "repetition": 2 / 20, "language_share": 1.0,
                      "num_tokens": 20, "truncated": False, "summary": True}


def test_each_filter_names_its_reason():
    assert reasons(GOOD.replace("<answer> 40", "<answer> 41")) == ["wrong"]
    looping = "<think> " + "40 + 8 = 48. " * 8 + "48 - 8 = 40. </think> <answer> 40 </answer>"
    assert reasons(looping) == ["repetition"]
    assert reasons(GOOD.replace("ok.", "对. 等等, 再算 ok.")) == ["mixed_language"]  # 1 Latin word of 5
    assert reasons(GOOD, truncated=True) == ["truncated"]
    assert reasons(GOOD, num_tokens=30, max_tokens=25) == ["too_long"]
    assert reasons("<think> 40 + 8 = 48. 48 -", truncated=True) == ["wrong", "format", "no_summary", "truncated"]
    assert reasons("<think> 40 + 8 = 48. 48 - 8 = 40. </think>") == ["wrong", "format", "no_summary"]
    assert reasons(GOOD + " extra") == ["format"]  # the summary is there, the format is not exact
    # an answer inside the thinking is no summary
    assert reasons("<think> <answer> 40 </answer> </think>") == ["format", "no_summary"]


def test_filters_can_be_turned_off():
    off = dict(require_correct=False, require_format=False, require_summary=False, max_repetition=None,
               min_language_share=None, drop_truncated=False)
    assert reasons("<think> 不 不 不 不 不 不", truncated=True, **off) == []
    assert reasons(GOOD.replace("ok.", "对 对 ok."), min_language_share=0.5) == []  # 5 Latin of 7 words


def test_a_wordless_thinking_is_not_mixed():
    scores, why = score_sample("<think> 40 + 8 = 48, 48 - 8 = 40 </think> <answer> 40 </answer>", EX, TASK,
                               num_tokens=9, truncated=False, filters=FilterConfig())
    assert scores["language_share"] is None and why == []


def test_select_dedupes_and_caps_per_prompt():
    responses = [GOOD, "x", " ".join(GOOD.split(" ")) + "  ", "y", "z"]
    why = select(responses, [[], ["wrong"], [], [], []], FilterConfig(max_per_prompt=2))
    assert why == [[], ["wrong"], ["duplicate"], [], ["max_per_prompt"]]
    assert select(responses, [[]] * 5, FilterConfig(dedupe=False)) == [[]] * 5
    assert select(["a", "a"], [["wrong"], ["wrong"]], FilterConfig()) == [["wrong"], ["wrong", "duplicate"]]


def test_reformat_for_readability():
    messy = "<think>\n  40 + 8   = 48.\n\n\n\n  48 - 8 = 40.  </think>\n\n<answer>  40 </answer>"
    assert reformat_for_readability(messy) == "<think> 40 + 8 = 48.\n\n48 - 8 = 40. </think> <answer> 40 </answer>"
    assert reformat_for_readability("40 + 8 </think> <answer>40</answer>") == "<think> 40 + 8 </think> <answer> 40 </answer>"
    assert reformat_for_readability("<think>  no   answer ") == "<think> no answer"


def test_filter_config_rejects_bad_values():
    with pytest.raises(ValueError, match="language"):
        FilterConfig(language="fr")
    with pytest.raises(ValueError, match="max_repetition"):
        FilterConfig(max_repetition=1.5)
    with pytest.raises(ValueError, match="typo"):
        FilterConfig(typo=1)


class CannedEngine:
    """Answers every prompt with the same k responses, in order (the r1-zero template pre-fills <think>)."""

    tokenizer = None

    def __init__(self, responses, fail_on_call=None):
        self.responses, self.calls, self.fail_on_call = responses, [], fail_on_call

    def generate(self, prompts, sampling, n=1):
        self.calls.append(len(prompts))
        if len(self.calls) == self.fail_on_call:
            raise RuntimeError("engine died")
        texts = [r for _ in prompts for r, _ in self.responses[:n]]
        return SimpleNamespace(texts=texts, lengths=torch.tensor([len(t.split()) for t in texts]),
                               truncated=[t for _ in prompts for _, t in self.responses[:n]])


def canned(example):
    """k=4 responses for `example`: correct, duplicate, wrong, truncated."""
    good = f" thinking hard </think> <answer> {example.answer} </answer>"
    return [(good, False), (good, False), (" guess </think> <answer> -1 </answer>", False), (" thinking", True)]


def test_generate_writes_every_sample_with_reasons(tmp_path):
    examples = [EX]  # arithmetic: the answer is the number, so canned()'s first response is right
    engine = CannedEngine(canned(examples[0]))
    out = tmp_path / "data" / "samples.jsonl"
    stats = generate(engine, TASK, examples, k=4, sampling=SamplingConfig(max_new_tokens=8), template="r1-zero",
                     system=None, filters=None, out_path=out)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [row["reasons"] for row in rows] == [[], ["duplicate"], ["wrong"], ["wrong", "format", "no_summary", "truncated"]]
    assert [row["kept"] for row in rows] == [True, False, False, False]
    assert [row["sample"] for row in rows] == [0, 1, 2, 3]
    first = rows[0]
    assert first["id"] == examples[0].id and first["prompt"] == examples[0].prompt and first["answer"] == examples[0].answer
    assert first["response"] == "<think>" + canned(examples[0])[0][0]
    assert first["completion"] == f"<think> thinking hard </think> <answer> {examples[0].answer} </answer>"
    assert first["scores"]["correct"] == 1.0 and rows[3]["scores"]["truncated"] is True
    assert stats == {"prompts": 1, "samples": 4, "kept": 1, "dropped": 3, "kept_prompts": 1, "pass@1": 0.5,
                     "drop_reasons": {"wrong": 2, "duplicate": 1, "format": 1, "no_summary": 1, "truncated": 1},
                     "out_path": str(out)}
    assert read_kept(out) == [{"prompt": examples[0].prompt, "completion": first["completion"]}]
    assert list(out.parent.iterdir()) == [out]  # no temporary file left


def test_generate_batches_prompts_and_caps_per_prompt(tmp_path):
    examples = TASK.examples("test")[:5]
    engine = CannedEngine([(" ok </think> <answer> 1 </answer>", False), (" fine </think> <answer> 2 </answer>", False)])
    stats = generate(engine, TASK, examples, k=2, sampling=SamplingConfig(), template="r1-zero", system=None,
                     filters={"require_correct": False, "max_per_prompt": 1}, out_path=tmp_path / "s.jsonl", batch_size=4)
    assert engine.calls == [2, 2, 1]  # batch_size // k prompts per call
    assert stats["kept"] == stats["kept_prompts"] == 5 and stats["drop_reasons"] == {"max_per_prompt": 5}
    assert len(read_kept(tmp_path / "s.jsonl")) == 5


def test_generate_leaves_no_partial_file_when_it_fails(tmp_path):
    out = tmp_path / "s.jsonl"
    engine = CannedEngine(canned(EX), fail_on_call=2)
    with pytest.raises(RuntimeError, match="engine died"):
        generate(engine, TASK, TASK.examples("test")[:4], k=2, sampling=SamplingConfig(), template="r1-zero",
                 system=None, filters=None, out_path=out, batch_size=4)
    assert list(tmp_path.iterdir()) == []


def test_generate_rejects_bad_arguments(tmp_path):
    args = dict(sampling=SamplingConfig(), template="r1-zero", system=None, filters=None, out_path=tmp_path / "s.jsonl")
    with pytest.raises(ValueError, match="k "):
        generate(CannedEngine(canned(EX)), TASK, [EX], k=0, **args)
    with pytest.raises(ValueError, match="no examples"):
        generate(CannedEngine(canned(EX)), TASK, [], k=2, **args)


def test_generate_uses_a_custom_reward_fn(tmp_path):
    judge = lambda response, example, **info: float("hard" in response and info["max_tokens"] == 8)  # noqa: E731
    stats = generate(CannedEngine(canned(EX)), TASK, [EX], k=4, sampling=SamplingConfig(max_new_tokens=8),
                     template="r1-zero", system=None, filters=None, out_path=tmp_path / "s.jsonl", reward_fn=judge)
    assert stats["pass@1"] == 0.5 and stats["kept"] == 1


def test_read_kept_names_the_file_and_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "p", "completion": "c", "kept": true}\n\n{"prompt": "p", "kept": true}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl, line 3: missing field 'completion'"):
        read_kept(bad)
    bad.write_text("not json\n")
    with pytest.raises(ValueError, match=r"bad.jsonl, line 1: not valid JSON"):
        read_kept(bad)
    bad.write_text('{"prompt": "p", "completion": " ", "kept": true}\n')
    with pytest.raises(ValueError, match="'completion' of a kept sample"):
        read_kept(bad)


def test_generate_end_to_end_with_the_tiny_model(tiny, tmp_path):
    model, tokenizer = tiny
    examples = TASK.examples("test")[:3]
    out = tmp_path / "gen.jsonl"
    stats = generate(make_engine("torch", model, tokenizer, seed=0), TASK, examples, k=4,
                     sampling=SamplingConfig(temperature=1.0, max_new_tokens=12), template="r1-zero", system="",
                     filters=FilterConfig(), out_path=out, batch_size=8)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == stats["samples"] == 3 * 4 and stats["prompts"] == 3
    assert stats["kept"] + stats["dropped"] == stats["samples"] == sum(row["kept"] for row in rows) + stats["dropped"]
    assert all(row["kept"] == (row["reasons"] == []) for row in rows)
    assert stats["kept_prompts"] == len({row["id"] for row in rows if row["kept"]})
    dropped_reasons = sum(len(row["reasons"]) for row in rows)
    assert sum(stats["drop_reasons"].values()) == dropped_reasons >= stats["dropped"]
    assert stats["pass@1"] == sum(row["scores"]["correct"] for row in rows) / len(rows)
    assert all(row["response"].startswith("<think>") for row in rows)
    assert len(read_kept(out)) == stats["kept"]
