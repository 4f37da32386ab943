"""HF sequence-classification reward models: batched scoring equal to one row at a time, the chat template,
the policy's device and dtype, and a tokenizer without a pad token refused before any training."""

import pytest
import torch
from helpers import EchoTask, metrics_rows, rl_config, train

from r1lab.data.example import Example
from r1lab.recipes.load import load_config
from r1lab.recipes.preflight import check_run
from r1lab.rewards.registry import REWARD_FUNCTIONS, Rewards
from r1lab.rewards.reward_model import RewardModel

CHAT = "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}<|end|>{% endfor %}"
PROMPTS = ["What comes after 3?", "Compute (12 + 7) * 3 - 4 and explain every step slowly", "Hi"]
RESPONSES = ["<think> 3 then 4 </think> <answer> 4 </answer>", "<think> a long think", "<answer> 53 </answer> ok"]
SCORED = [" <answer> 4 </answer>", "", "<answer> 53 </answer> ok"]  # without the reasoning


def save_reward_model(tokenizer_dir, out, *, chat_template=None, padding_side="right", num_labels=1, pad=True,
                      config_pad=True):
    from transformers import AutoTokenizer, LlamaConfig, LlamaForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    tokenizer.chat_template, tokenizer.padding_side = chat_template, padding_side
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, num_labels=num_labels, pad_token_id=tokenizer.pad_token_id if config_pad else None)
    torch.manual_seed(0)
    model = LlamaForSequenceClassification(config).eval()
    if not pad:
        tokenizer.pad_token = None
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return model, tokenizer


@pytest.mark.parametrize("chat_template, padding_side, num_labels, config_pad", [
    (None, "right", 1, True), (None, "left", 1, False), (CHAT, "left", 1, True), (CHAT, "right", 2, False)])
def test_batched_scores_equal_each_row_alone(tiny_model_dir, tmp_path, chat_template, padding_side, num_labels, config_pad):
    """Rows padded (whatever side the tokenizer's config says) and read at their last real token, even by a
    model whose config names no pad id."""
    model, tokenizer = save_reward_model(tiny_model_dir, tmp_path / "rm", chat_template=chat_template,
                                         padding_side=padding_side, num_labels=num_labels, config_pad=config_pad)
    if chat_template:
        texts = [f"<|user|>{p}<|end|><|assistant|>{r}<|end|>" for p, r in zip(PROMPTS, SCORED)]
    else:
        texts = [f"{p}\n{r}" for p, r in zip(PROMPTS, SCORED)]
    rm = RewardModel(str(tmp_path / "rm"))
    assert [rm.text(p, r) for p, r in zip(PROMPTS, RESPONSES)] == texts
    lengths = [len(tokenizer(t)["input_ids"]) for t in texts]
    assert len(set(lengths)) == len(texts)  # mixed lengths: every row but the longest is padded
    with torch.no_grad():  # the truth: each text alone, no padding at all
        logits = [model(**tokenizer(t, return_tensors="pt")).logits[0] for t in texts]
    truth = [float(x[0]) if num_labels == 1 else float(x.softmax(-1)[-1]) for x in logits]
    assert rm(RESPONSES, PROMPTS) == pytest.approx(truth, abs=1e-5)
    assert [rm([r], [p])[0] for p, r in zip(PROMPTS, RESPONSES)] == pytest.approx(truth, abs=1e-5)


def test_a_tokenizer_without_a_pad_token_is_refused_before_any_training(tiny_model_dir, tmp_path):
    save_reward_model(tiny_model_dir, tmp_path / "rm", pad=False)
    with pytest.raises(ValueError, match=r"rl.reward_model: the tokenizer of '.*rm' has no pad token.*pad_token"):
        RewardModel(str(tmp_path / "rm"))
    cfg = load_config("r1", ["rl.general_rewards={reward_model: 1}", f"rl.reward_model={tmp_path / 'rm'}"])
    with pytest.raises(ValueError, match="no pad token"):  # the run's first check, before the first stage
        check_run(cfg)
    with pytest.raises(FileNotFoundError, match="rl.reward_model: no such directory"):
        RewardModel(str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="rl.reward_model=PATH"):
        RewardModel(None)


def test_the_reward_model_is_on_the_device_and_dtype_it_is_given(tiny_model_dir, tmp_path):
    save_reward_model(tiny_model_dir, tmp_path / "rm")
    rewards = Rewards({"reward_model": 1.0}, EchoTask(), reward_model=str(tmp_path / "rm"), device="meta",
                      dtype=torch.bfloat16)
    params = list(rewards.fns["reward_model"].model.parameters())
    assert {p.device.type for p in params} == {"meta"} and {p.dtype for p in params} == {torch.bfloat16}


def test_an_rl_run_scores_with_the_reward_model_beside_the_policy(tiny, tiny_model_dir, tmp_path, monkeypatch, one_thread):
    model, tokenizer = tiny
    save_reward_model(tiny_model_dir, tmp_path / "rm")
    given = {}
    build = REWARD_FUNCTIONS["reward_model"]
    monkeypatch.setitem(REWARD_FUNCTIONS, "reward_model", lambda task, **options: given.update(options) or build(task, **options))
    cfg = rl_config(steps=1, rewards={"reward_model": 1.0}, reward_model=str(tmp_path / "rm"))
    train(model, tokenizer, cfg, tmp_path / "run")
    policy = next(model.parameters())
    assert (given["device"], given["dtype"]) == (policy.device, policy.dtype)
    (row,) = metrics_rows(tmp_path / "run")
    assert row["reward"] == pytest.approx(row["reward/reward_model"]) and row["reward"] != 0


def test_rewards_mix_a_batched_reward_model_with_per_sample_rules(tiny_model_dir, tmp_path):
    model, tokenizer = save_reward_model(tiny_model_dir, tmp_path / "rm")
    general = Example("g", PROMPTS[0], "4", {"general": True})
    reasoning = Example("r", "3+4?", "7")
    rewards = Rewards({"format": 1.0}, EchoTask(), {"reward_model": 2.0, "format": 0.5}, reward_model=str(tmp_path / "rm"))
    totals, raw = rewards([RESPONSES[0]] * 2, [reasoning, general], [{}, {}])
    with torch.no_grad():
        expected = float(model(**tokenizer(f"{PROMPTS[0]}\n{SCORED[0]}", return_tensors="pt")).logits[0, 0])
    assert raw["reward_model"] == [None, pytest.approx(expected, abs=1e-5)]
    assert totals == [1.0, pytest.approx(2.0 * expected + 0.5, abs=1e-5)]
