"""Episodes with turns (engines/episodes.py): generated ids are kept as generated, tool results are appended as
ids outside the loss mask, max_turns and the token budget hold, failing tools become error results; and the
torch engine continues from token ids exactly as from text."""

from __future__ import annotations

import copy
import random
import time

import pytest
import torch
from helpers import EchoTask, rl_config

from r1lab.config import SamplingConfig
from r1lab.engines import make_engine
from r1lab.engines.base import Rollout
from r1lab.engines.episodes import run_episodes
from r1lab.engines.torch_engine import TorchEngine
from r1lab.rl.loop import train_rl
from r1lab.tools import calculator
from r1lab.tools.box import Tool, ToolBox

MARKERS = ["<tool>", "</tool>", "<result>", "</result>"]


class ScriptedEngine:
    """Writes, for each episode, the next of `turns` (texts) as ids that are NOT what tokenising its text would
    give (one id per character, spelled with the tokenizer's own single-character ids), so a test can tell kept
    ids from re-tokenised ones."""

    def __init__(self, tokenizer, turns: list[str], turn_end: str = "</result>"):
        self.tokenizer, self.turns, self.calls, self.turn_end = tokenizer, turns, [], turn_end

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
            done = self.tokenizer.decode(p).count(self.turn_end)  # turns so far
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


def test_an_environment_runs_per_episode_with_its_row_and_its_reward_trains(tiny, tokenizer, tmp_path):
    """rl.environment, TRL's environment_factory shape unchanged: an instance per episode, reset with that episode's
    row (its observation ends the prompt), its methods as tools (answering from its own row), its reward() scored
    by the 'environment' reward; rewards also read the episode's calls."""
    from helpers import AnswerBook

    from r1lab.engines.episodes import Turns
    from r1lab.rewards.registry import REWARD_FUNCTIONS

    engine = ScriptedEngine(tokenizer, ["<tool>look(1)</tool>", "<answer>x</answer></s>"])
    examples = EchoTask().examples("train")[:2]
    turns = Turns(ToolBox([Tool.of(calculator)]), max_turns=3, environment=AnswerBook)
    rollout = turns.rollout(engine, [e.prompt for e in examples], SamplingConfig(max_new_tokens=96), 2, examples)
    texts = [tokenizer.decode(row) for row in rollout.completion_ids]
    assert all(f"the answer is {examples[i // 2].answer}" in texts[i] for i in range(4))  # each episode its own row
    assert tokenizer.decode(engine.calls[0][0]).endswith("Compute 1 + 1 (the book is open)")
    assert rollout.environment_rewards == [1.0] * 4 and rollout.tool_calls == [1] * 4
    with pytest.raises(ValueError, match="need each prompt's example"):
        turns.rollout(engine, ["Compute 1 + 1"], SamplingConfig(max_new_tokens=96), 1)

    model, _ = tiny
    policy = copy.deepcopy(model)
    policy.resize_token_embeddings(len(tokenizer))
    seen = []
    REWARD_FUNCTIONS["calls_seen"] = lambda task, **_: lambda response, example, tool_call=None, **info: seen.append(
        (tool_call, info.get("environment_reward"))) or 0.0
    try:
        cfg = rl_config(steps=1, prompts_per_step=2, group_size=2, rewards={"environment": 1.0, "calls_seen": 1.0},
                        environment="helpers:AnswerBook", sampling=SamplingConfig(max_new_tokens=96))
        rows = []
        train_rl(policy, tokenizer, EchoTask(), cfg, tmp_path, engine=engine, template="r1-zero", system="",
                 report=rows.append, max_turns=3)
    finally:
        del REWARD_FUNCTIONS["calls_seen"]
    assert rows[0]["reward/environment"] == 1.0 and seen == [(1, 1.0)] * 4


def test_chat_template_episodes_go_on_with_the_templates_own_tool_turn(tokenizer):
    """template=chat: the tools' schemas are in the prompt, a call is Qwen's <tool_call> JSON, and its result is
    appended as the template's own `tool` turn: prompt + episode is exactly the template's rendering of the
    conversation with an assistant call and a tool message (a tiny Qwen-style template built locally)."""
    from hub_cache import TOOLS_CHAT_TEMPLATE

    from r1lab.data.format import apply_template
    from r1lab.engines.episodes import Turns

    tok = copy.deepcopy(tokenizer)
    tok.chat_template = TOOLS_CHAT_TEMPLATE
    call = '<tool_call>\n{"name": "calculator", "arguments": {"expression": "6 * 7"}}\n</tool_call>'
    engine = ScriptedEngine(tok, [call, "It is 42."], turn_end="</tool_response>")
    turns = Turns.of(ToolBox([Tool.of(calculator)]), 3, "chat")
    prompt = apply_template("What is 6 * 7?", "chat", tok, None, turns.schemas)
    assert '"name": "calculator"' in prompt and "<tools>" in prompt
    rollout = turns.rollout(engine, [prompt], SamplingConfig(max_new_tokens=200), 1)
    n = int(rollout.completion_mask[0].sum())
    episode = tok.decode(engine.calls[0][0] + rollout.completion_ids[0, :n].tolist())
    conversation = [{"role": "user", "content": "What is 6 * 7?"}, {"role": "assistant", "content": call},
                    {"role": "tool", "content": "42", "tool_call_id": "0"}]
    rendered = tok.apply_chat_template(conversation, tools=turns.schemas, tokenize=False, add_generation_prompt=True)
    assert episode == rendered + "It is 42."
    assert rollout.tool_calls == [1] and rollout.tool_errors == [0] and rollout.turns == [2]
    result = n - len(engine.spell(call)) - len(engine.spell("It is 42."))  # the tool turn's ids, none of them trained
    assert rollout.loss_mask[0, len(engine.spell(call)): len(engine.spell(call)) + result].eq(0).all() and result > 0


def test_bad_environments_are_refused_at_load_naming_the_field():
    from r1lab.errors import ConfigError
    from r1lab.recipes.load import load_config

    with pytest.raises(ConfigError, match="rl.environment: environment 'helpers:digits' is not a class"):
        load_config("r1-zero", ["rl.environment=helpers:digits"])
    with pytest.raises(ConfigError, match="rl.rewards: the 'environment' reward .* set rl.environment"):
        load_config("r1-zero", ["rl.rewards.environment=1"])
    assert load_config("r1-zero", ["rl.environment=helpers:AnswerBook", "rl.rewards.environment=1"]).rl.environment


# ---- the torch engine's live path: one decode loop, results prefilled into the live KV cache ----------------

PROMPTS = ["Compute 1 + 1", "User: Make 12 from 2, 3, 4. Assistant: <think>", "Hi"]  # lengths differ: left padding


def _lifted(model, tokenizer):
    """`model` with the markers as tokens, `</tool>` and EOS lifted so that random weights write calls (about one
    token in seven) and some episodes end early."""
    model.resize_token_embeddings(len(tokenizer))
    lift = torch.zeros(len(tokenizer))
    lift[tokenizer.convert_tokens_to_ids("</tool>")], lift[tokenizer.eos_token_id] = 4.0, 1.5
    model.lm_head.register_forward_hook(lambda m, i, out: out + lift)
    return model


@pytest.fixture
def tool_model(tiny, tokenizer):
    return _lifted(copy.deepcopy(tiny[0]), tokenizer)


@pytest.fixture
def gqa_tool_model(tokenizer):
    """A Llama whose 4 query heads share 2 key/value heads (the tiny one has 4 of each)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=0)
    return _lifted(LlamaForCausalLM(config).eval(), tokenizer)


class Responder:
    """A deterministic `respond`: row r's results are `<result>`, (r % 3) * 3 digits, `</result>` (3 lengths in a
    batch); every fourth row's second call ends its episode (None). Records what it was asked and answered."""

    def __init__(self, tokenizer):
        self.tokenizer, self.asked, self.answered = tokenizer, {}, {}
        self.head, self.tail = (tokenizer.convert_tokens_to_ids(m) for m in ("<result>", "</result>"))
        self.digit = tokenizer("7", add_special_tokens=False)["input_ids"][-1]

    def __call__(self, rows, turn_ids):
        out = []
        for r, ids in zip(rows, turn_ids):
            asked = self.asked.setdefault(r, [])
            asked.append(ids)
            digits = [self.digit + len(asked)] * (r % 3 * 3)  # each call's result has digits of its own
            out.append(None if r % 4 == 3 and len(asked) == 2 else [self.head, *digits, self.tail])
            self.answered.setdefault(r, []).append(out[-1])
        return out


def _episodes(model, tokenizer, respond, n=4, budget=48, max_turns=4, seed=0, **kw):
    engine = TorchEngine(model, tokenizer, seed=seed)
    ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in PROMPTS]
    return ids, engine.run_episodes(ids, SamplingConfig(temperature=1.0, max_new_tokens=budget), n, respond,
                                    close="</tool>", max_turns=max_turns, **kw)


def _teacher_forced(model, prompt, completion):
    """-> log-probs and entropies (len(completion),) of the model's own forward over prompt + completion (fp32)."""
    with torch.no_grad():
        logits = model(torch.tensor([prompt + completion])).logits[0, len(prompt) - 1: -1].float()
    logprobs = logits.log_softmax(-1)
    return logprobs.gather(1, torch.tensor(completion)[:, None]).squeeze(1), -(logprobs.exp() * logprobs).sum(-1)


def _segments(mask_row: list[int]) -> list[tuple[int, int]]:
    """(start, end) of each run of 0s (the results) in a loss mask."""
    runs, start = [], None
    for i, m in enumerate(mask_row + [1]):
        if m == 0 and start is None:
            start = i
        elif m == 1 and start is not None:
            runs.append((start, i))
            start = None
    return runs


def _check_structure(rollout, respond, tokenizer, budget: int, max_turns: int) -> None:
    """Each row's results are exactly the ids respond returned, in order (the last maybe cut by the budget), each
    after a turn that closed a call; turns, the budget and max_turns hold; a row ends short of the budget only
    by EOS or a turn that was no call after all, and is truncated exactly when it reached the budget."""
    close = tokenizer.convert_tokens_to_ids("</tool>")
    assert max(rollout.turns) <= max_turns and int(rollout.lengths.max()) <= budget
    for r, n in enumerate(rollout.lengths.tolist()):
        completion, mask = rollout.completion_ids[r, :n].tolist(), rollout.loss_mask[r, :n].tolist()
        asked, answered = respond.asked.get(r, []), respond.answered.get(r, [])
        results, runs = [a for a in answered if a is not None], _segments(mask)
        assert [completion[a:b] for a, b in runs] == [x[: n - a] for x, (a, _) in zip(results, runs)]
        assert len(runs) == len(results) and len(asked) <= max_turns - 1
        assert all(t[-1] == close for t in asked)  # a row waits only on a call it closed, and sends this turn's ids
        assert all(completion[a - 1] == close for a, _ in runs)
        assert rollout.turns[r] == 1 + len(results) - (n == budget and mask[-1] == 0)
        assert rollout.truncated[r] == (n == budget)
        if n < budget:
            assert completion[-1] == tokenizer.eos_token_id or answered[-1:] == [None]


@pytest.mark.parametrize("kind", ["tiny", "gqa"])
def test_live_episodes_match_a_teacher_forced_forward_and_keep_result_ids(kind, request, tokenizer, one_thread):
    tool_model = request.getfixturevalue("tool_model" if kind == "tiny" else "gqa_tool_model")
    respond = Responder(tokenizer)
    prompt_ids, rollout = _episodes(tool_model, tokenizer, respond, n=4, budget=48, max_turns=4)
    lengths, calls = rollout.lengths.tolist(), {r: len(a) for r, a in respond.answered.items()}
    # the batch holds what the test is about: rows with 3 calls, results of 3 lengths, rows that ended early
    # (EOS or no call) while others decoded on, rows at the budget
    assert max(calls.values()) == 3 and len({r % 3 for r in calls}) == 3 and min(lengths) < 48 and max(lengths) == 48
    assert any(a[-1] is None for a in respond.answered.values())
    _check_structure(rollout, respond, tokenizer, 48, 4)
    for r, n in enumerate(lengths):
        completion, trained = rollout.completion_ids[r, :n].tolist(), rollout.loss_mask[r, :n].bool()
        expected, entropies = _teacher_forced(tool_model, prompt_ids[r // 4], completion)
        torch.testing.assert_close(rollout.logprobs[r, :n][trained], expected[trained], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(rollout.entropies[r, :n][trained], entropies[trained], atol=1e-4, rtol=1e-4)
        assert rollout.logprobs[r, :n][~trained].eq(0).all() and rollout.completion_mask[r, n:].eq(0).all()


def test_live_episodes_hold_max_turns_and_the_budget(tool_model, tokenizer, one_thread):
    respond = Responder(tokenizer)
    _, rollout = _episodes(tool_model, tokenizer, respond, budget=64, max_turns=2)
    _check_structure(rollout, respond, tokenizer, 64, 2)
    last_turns = []  # what the rows in their last turn wrote: "</tool>" no longer ends a turn
    for r, n in enumerate(rollout.lengths.tolist()):
        if rollout.turns[r] == 2:
            result_end = _segments(rollout.loss_mask[r, :n].tolist())[0][1]
            last_turns.append(tokenizer.decode(rollout.completion_ids[r, result_end:n].tolist()))
    assert any("</tool>" in text for text in last_turns)
    respond = Responder(tokenizer)
    _, rollout = _episodes(tool_model, tokenizer, respond, budget=20, max_turns=6)
    _check_structure(rollout, respond, tokenizer, 20, 6)
    cut = [n == 20 and m == 0 for n, m in zip(rollout.lengths.tolist(), rollout.loss_mask[:, 19].tolist())]
    assert any(cut)  # a result cut by the budget


def test_live_episodes_without_calls_sample_what_generate_ids_samples(tool_model, tokenizer, one_thread):
    """max_turns=1: no call is waited on, the live loop is generation: the same draws give the same tokens."""
    ids, live = _episodes(tool_model, tokenizer, Responder(tokenizer), n=3, budget=24, max_turns=1, seed=5)
    sampling = SamplingConfig(temperature=1.0, max_new_tokens=24)
    plain = TorchEngine(tool_model, tokenizer, seed=5).generate_ids(ids, sampling, n=3)
    assert torch.equal(live.completion_ids, plain.completion_ids) and live.truncated == plain.truncated
    torch.testing.assert_close(live.logprobs, plain.logprobs, atol=1e-5, rtol=1e-5)


def test_seeded_live_episodes_are_the_same_twice_and_apart_from_the_batch(tool_model, tokenizer, one_thread):
    slow, jitter = Responder(tokenizer), random.Random(0)

    def slow_tools(rows, turn_ids):  # tools that take their time: rows resume at the same step all the same
        time.sleep(jitter.uniform(0, 0.02))
        return slow(rows, turn_ids)

    _, a = _episodes(tool_model, tokenizer, Responder(tokenizer), seed=3)
    _, b = _episodes(tool_model, tokenizer, slow_tools, seed=3)
    assert torch.equal(a.completion_ids, b.completion_ids) and torch.equal(a.logprobs, b.logprobs) and a.turns == b.turns
    # per-prompt seeds: a prompt's episodes are drawn from its own seed, whatever else is in the batch
    _, together = _episodes(tool_model, tokenizer, Responder(tokenizer), seeds=[11, 12, 13])
    engine = TorchEngine(tool_model, tokenizer, seed=0)
    alone = engine.run_episodes([tokenizer(PROMPTS[0], add_special_tokens=False)["input_ids"]], SamplingConfig(
        temperature=1.0, max_new_tokens=48), 4, Responder(tokenizer), close="</tool>", max_turns=4, seeds=[11])
    T = alone.completion_ids.size(1)
    assert torch.equal(together.completion_ids[:4, :T], alone.completion_ids) and together.turns[:4] == alone.turns
    torch.testing.assert_close(together.logprobs[:4, :T], alone.logprobs, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("fast", [True, False])
def test_run_episodes_with_tools_on_both_torch_paths(tool_model, tokenizer, fast, one_thread):
    """Through episodes.py with a real tool box: the fast path runs live, the plain one (no FastDecoder) turn by
    turn over generate_ids; both give the same Rollout fields, results as `<result>...</result>` ids."""
    engine = TorchEngine(tool_model, tokenizer, seed=1, fast=fast)
    ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in PROMPTS]
    if not fast:
        assert engine.run_episodes(ids, SamplingConfig(), 1, None, close="</tool>", max_turns=2) is None
    rollout = run_episodes(engine, ids, SamplingConfig(temperature=1.0, max_new_tokens=48), 3,
                           ToolBox([Tool.of(calculator)]), max_turns=3, budget=48, max_result_tokens=6)
    head, tail = (tokenizer.convert_tokens_to_ids(m) for m in ("<result>", "</result>"))
    assert sum(rollout.tool_calls) > 0 and rollout.tool_errors == rollout.tool_calls  # random text: calls are errors
    assert rollout.exact_logprobs and max(rollout.turns) <= 3 and int(rollout.lengths.max()) <= 48
    for r, n in enumerate(rollout.lengths.tolist()):
        completion, mask = rollout.completion_ids[r, :n].tolist(), rollout.loss_mask[r, :n].tolist()
        runs = _segments(mask)
        assert len(runs) == rollout.tool_calls[r] and rollout.turns[r] == len(runs) + 1 - (n == 48 and mask[-1] == 0)
        assert rollout.truncated[r] == (n == 48)
        for a, b in runs:
            assert completion[a] == head and (completion[b - 1] == tail and b - a <= 8 or b == 48)  # 6 tokens at most
            assert tokenizer.decode(completion[a:b]).startswith("<result>error") or b == 48
        expected, _ = _teacher_forced(tool_model, ids[r // 3], completion)
        trained = rollout.loss_mask[r, :n].bool()
        torch.testing.assert_close(rollout.logprobs[r, :n][trained], expected[trained], atol=1e-4, rtol=1e-4)


def test_bf16_live_episodes_log_probs_are_the_training_pass_s(tiny_model_dir, tokenizer, one_thread):
    """In bf16 (fp32 master weights) the chunks of results compute what the training pass computes, up to bf16 rounding."""
    from r1lab.models.device import autocast
    from r1lab.models.io import load_model

    model, _ = load_model(str(tiny_model_dir), device="cpu", dtype="bf16", master_weights=True)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():  # an untrained model's logits are near 0: spread them so rounding shows
            p.mul_(1 + torch.rand_like(p))
    model = _lifted(model, tokenizer)
    respond = Responder(tokenizer)
    prompt_ids, rollout = _episodes(model, tokenizer, respond, n=4, budget=40, max_turns=4)
    assert sum(len(a) for a in respond.answered.values()) >= 6
    _check_structure(rollout, respond, tokenizer, 40, 4)
    for r, n in enumerate(rollout.lengths.tolist()):
        with autocast(model):
            expected, _ = _teacher_forced(model, prompt_ids[r // 4], rollout.completion_ids[r, :n].tolist())
        trained = rollout.loss_mask[r, :n].bool()
        torch.testing.assert_close(rollout.logprobs[r, :n][trained], expected[trained], atol=0.03, rtol=0.03)
