"""Episodes with turns (engines/episodes.py): generated ids are kept as generated, tool results are appended as
ids outside the loss mask, max_turns and the token budget hold, failing tools become error results; and the
torch engine continues from token ids exactly as from text."""

from __future__ import annotations

import copy

import pytest
import torch
from helpers import EchoTask, rl_config

from r1lab.config import SamplingConfig
from r1lab.engines import make_engine
from r1lab.engines.base import Rollout
from r1lab.engines.episodes import run_episodes
from r1lab.rl.loop import train_rl
from r1lab.tools import calculator
from r1lab.tools.box import Tool, ToolBox

MARKERS = ["<tool>", "</tool>", "<result>", "</result>"]


class ScriptedEngine:
    """Writes, for each episode, the next of `turns` (texts) as ids that are NOT what tokenising its text would
    give (one id per character, spelled with the tokenizer's own single-character ids), so a test can tell kept
    ids from re-tokenised ones."""

    def __init__(self, tokenizer, turns: list[str]):
        self.tokenizer, self.turns, self.calls = tokenizer, turns, []

    def spell(self, text: str) -> list[int]:
        marker = {m: self.tokenizer.convert_tokens_to_ids(m) for m in MARKERS}
        out, i = [], 0
        while i < len(text):
            m = next((m for m in MARKERS if text.startswith(m, i)), None)
            if m:
                out.append(marker[m])
                i += len(m)
            else:
                out += self.tokenizer(text[i], add_special_tokens=False)["input_ids"][-1:]
                i += 1
        return out

    def generate_ids(self, prompt_ids, sampling, n=1, seeds=None) -> Rollout:
        self.calls.append([list(p) for p in prompt_ids])
        rows = []
        for p in prompt_ids:
            done = sum(1 for t in p if t == self.tokenizer.convert_tokens_to_ids("</result>"))  # turns so far
            rows.append(self.spell(self.turns[min(done, len(self.turns) - 1)])[: sampling.max_new_tokens])
        T = max(map(len, rows))
        ids = torch.tensor([r + [0] * (T - len(r)) for r in rows])
        mask = torch.tensor([[1] * len(r) + [0] * (T - len(r)) for r in rows])
        return Rollout(prompt_ids=[list(p) for p in prompt_ids], completion_ids=ids, completion_mask=mask,
                       logprobs=-0.5 * mask.float(), texts=[""] * len(rows), truncated=[False] * len(rows), n=1,
                       exact_logprobs=False)

    def load_weights(self, model) -> None:
        pass

    def rng_state(self):
        return None

    def set_rng_state(self, state) -> None:
        pass

    def close(self) -> None:
        pass


@pytest.fixture
def tokenizer(tiny):
    _, tok = tiny
    tok = tok.__class__.from_pretrained(tok.name_or_path) if tok.name_or_path else tok
    tok.add_tokens(MARKERS)  # new tokens: the base never saw them
    return tok


def test_results_are_appended_as_ids_outside_the_loss_mask(tokenizer):
    engine = ScriptedEngine(tokenizer, ["a <tool>calculator(2 * 4 + 24)</tool>", "ok 32</s>"])
    box = ToolBox([Tool.of(calculator)])
    prompt = tokenizer("Compute 2 * 4 + 24", add_special_tokens=False)["input_ids"]
    rollout = run_episodes(engine, [prompt], SamplingConfig(max_new_tokens=64), 2, box, max_turns=3, budget=200)
    first, second = engine.spell("a <tool>calculator(2 * 4 + 24)</tool>"), engine.spell("ok 32</s>")
    result = tokenizer("<result>", add_special_tokens=False)["input_ids"] + tokenizer("32", add_special_tokens=False)[
        "input_ids"] + tokenizer("</result>", add_special_tokens=False)["input_ids"]
    row = rollout.completion_ids[0, : int(rollout.completion_mask[0].sum())].tolist()
    assert row == first + result + second  # the generated ids as generated: not the tokenised text
    assert engine.calls[1][0] == prompt + first + result  # turn 2 went on from exactly those ids
    assert rollout.loss_mask[0].tolist()[: len(row)] == [1] * len(first) + [0] * len(result) + [1] * len(second)
    assert rollout.logprobs[0, len(first): len(first) + len(result)].eq(0).all()
    assert rollout.tool_calls == [1, 1] and rollout.tool_errors == [0, 0] and rollout.turns == [2, 2]


def test_max_turns_and_the_budget_hold_and_bad_calls_are_errors(tokenizer):
    always_calls = ScriptedEngine(tokenizer, ["<tool>calculator(1 / 0)</tool>"])
    box = ToolBox([Tool.of(calculator)])
    prompt = tokenizer("Compute", add_special_tokens=False)["input_ids"]
    rollout = run_episodes(always_calls, [prompt], SamplingConfig(max_new_tokens=64), 1, box, max_turns=3, budget=500)
    assert rollout.turns == [3] and rollout.tool_calls == [2] and rollout.tool_errors == [2]  # no call after the last turn
    assert "error: calculator: division by zero" in tokenizer.decode(rollout.completion_ids[0])
    short = run_episodes(always_calls, [prompt], SamplingConfig(max_new_tokens=64), 1, box, max_turns=10, budget=40)
    assert int(short.completion_mask.sum()) <= 40 and short.truncated == [True]


def test_the_torch_engine_continues_from_ids_as_from_text(tiny):
    model, tokenizer = tiny
    sampling = SamplingConfig(max_new_tokens=8)
    prompts = ["Compute 1 + 1", "Compute 2 + 2"]
    from_text = make_engine("torch", model, tokenizer, seed=3).generate(prompts, sampling, n=2)
    ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    from_ids = make_engine("torch", model, tokenizer, seed=3).generate_ids(ids, sampling, n=2)
    assert torch.equal(from_text.completion_ids, from_ids.completion_ids)
    assert torch.equal(from_text.logprobs, from_ids.logprobs)
    episodes = run_episodes(make_engine("torch", model, tokenizer, seed=3), ids, sampling, 2, ToolBox([Tool.of(calculator)]),
                            max_turns=2, budget=8)
    assert episodes.completion_ids.shape[0] == 4 and int(episodes.completion_mask.sum(1).max()) <= 8


def test_train_rl_runs_tool_episodes_and_logs_them(tiny, tokenizer, tmp_path):
    model, _ = tiny
    policy = copy.deepcopy(model)
    policy.resize_token_embeddings(len(tokenizer))  # the call and result markers are new tokens
    engine = ScriptedEngine(tokenizer, ["<tool>calculator(6 * 7)</tool>", "<answer>42</answer></s>"])
    cfg = rl_config(steps=2, prompts_per_step=2, group_size=2, rewards={"format": 1.0}, tools=["r1lab.tools:calculator"],
                    sampling=SamplingConfig(max_new_tokens=96))
    rows = []
    train_rl(policy, tokenizer, EchoTask(), cfg, tmp_path, engine=engine, template="r1-zero", system="",
             report=rows.append, max_turns=3)
    assert [r["tool_calls_mean"] for r in rows] == [1.0, 1.0] and all(r["turns_mean"] == 2 for r in rows)
    assert all(r["tool_error_frac"] == 0 and 0 < r["masked_token_frac"] < 1 for r in rows)
