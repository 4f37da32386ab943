"""The memory settings: gradient checkpointing (RL's training pass and SFT unchanged by it), micro-batches
capped by tokens (the step unchanged), and settings the device or model cannot honour failing at the start."""

import copy

import pytest
import torch

from r1lab.config import ConfigError, LoRAConfig, RLConfig, SamplingConfig
from r1lab.engines import make_engine
from r1lab.engines.fast_decoder import FastDecoder
from r1lab.models import lora
from r1lab.models.device import check_device
from r1lab.models.memory import enable_gradient_checkpointing, gradient_checkpointing_on
from r1lab.recipes.load import load_config, validate
from r1lab.recipes.preflight import check_run
from r1lab.rl.algorithms import ALGORITHMS
from r1lab.rl.batch import Batch, micro_batches
from r1lab.rl.logprobs import forward_logprobs, logprobs_no_grad
from r1lab.rl.ppo import ValueModel
from r1lab.rl.step import rl_step
from r1lab.sft import train as sft

pytestmark = pytest.mark.usefixtures("one_thread")


def _batch(model, tokenizer, rewards=None):
    """Two prompts of different lengths, 4 completions each, of different lengths."""
    rollout = make_engine("torch", model, tokenizer, seed=0).generate(["Compute 1 + 1", "Compute 12 + 3 and then 4"],
                                                                      SamplingConfig(max_new_tokens=8), n=4)
    for row, length in ((0, 2), (5, 4), (6, 1)):
        rollout.completion_mask[row, length:] = 0
    rollout.logprobs *= rollout.completion_mask
    rewards = torch.tensor(rewards or [1.0, 0, 0, 1, 0, 0.5, 1, 0])
    return Batch.from_rollout(rollout, rewards, tokenizer.pad_token_id)


def _logprobs_and_grads(model, batch):
    model.train()
    model.zero_grad(set_to_none=True)
    logprobs = forward_logprobs(model, batch, 0.7)
    mask = batch.completion_mask.bool()
    (logprobs * mask).sum().backward()
    return logprobs.detach()[mask], {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("with_lora", [False, True], ids=["full", "lora"])
def test_checkpointing_leaves_the_rl_training_pass_unchanged(tiny, with_lora):
    model, tokenizer = tiny
    batch = _batch(model, tokenizer)
    if with_lora:
        model = lora.add_lora(model, LoRAConfig(r=4))
        for n, p in model.named_parameters():
            if "lora_B" in n:
                torch.nn.init.normal_(p, std=0.1)  # gradients reach lora_A too
    checkpointed = copy.deepcopy(model)
    enable_gradient_checkpointing(checkpointed)
    assert gradient_checkpointing_on(checkpointed) and not gradient_checkpointing_on(model)
    expected, expected_grads = _logprobs_and_grads(model, batch)
    got, grads = _logprobs_and_grads(checkpointed, batch)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert grads.keys() == expected_grads.keys() and len(grads) > 0
    for name, grad in grads.items():
        torch.testing.assert_close(grad, expected_grads[name], atol=1e-5, rtol=1e-5, msg=name)
    if not with_lora:  # checkpointing adds no hook: sampling keeps the fast decoder
        assert FastDecoder.of(checkpointed) is not None
    mask = batch.completion_mask.bool()
    with torch.no_grad():  # a no-grad pass in training mode (rollout IS): the plain pass, as transformers 5.19 needs
        torch.testing.assert_close(logprobs_no_grad(checkpointed, batch, 0.7, 3)[mask], logprobs_no_grad(model, batch, 0.7, 3)[mask])


def test_checkpointing_leaves_sft_unchanged(tiny):
    model, tok = tiny
    examples = [{"prompt": f"Compute {i} + 1", "completion": f"<think> {i} + 1 = {i + 1} </think>" * (i % 3 + 1)} for i in range(6)]
    rows, _, _ = sft.tokenize_examples(tok, examples, 64)
    results = []
    for on in (False, True):
        m = copy.deepcopy(model).train()
        if on:
            enable_gradient_checkpointing(m)
        loss, _ = sft.accumulate_gradients(m, rows, 2, tok.pad_token_id)
        results.append((loss, [p.grad for p in m.parameters()]))
    (loss_a, grads_a), (loss_b, grads_b) = results
    assert loss_a == pytest.approx(loss_b, rel=1e-6)
    for a, b in zip(grads_a, grads_b):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_micro_batches_hold_at_most_the_rows_and_tokens(tiny):
    batch = _batch(*tiny)
    P, lengths = batch.prompt_len, batch.completion_mask.sum(1)
    rows = torch.arange(len(batch))
    assert [p.tolist() for p in micro_batches(batch, rows, 3)] == [[0, 1, 2], [3, 4, 5], [6, 7]]  # rows only: in order
    for tokens in (1, P + 4, 2 * (P + 8), 10_000):
        parts = micro_batches(batch, rows, 3, tokens)
        assert sorted(torch.cat(parts).tolist()) == list(range(len(batch)))
        for part in parts:
            assert len(part) <= 3
            assert len(part) == 1 or len(part) * (P + int(lengths[part].max())) <= tokens


@pytest.mark.parametrize("algorithm, beta", [("grpo", 0.04), ("dapo", 0.0), ("ppo", 0.05)])
def test_micro_batch_tokens_leave_the_step_unchanged(tiny, algorithm, beta):
    model, tokenizer = tiny
    batch = _batch(model, tokenizer)
    ref = copy.deepcopy(model).eval() if beta else None
    steps, stats = [], []
    for tokens in (None, batch.prompt_len + 6):  # mostly one row per micro-batch
        policy = copy.deepcopy(model)
        value_model = ValueModel(policy) if algorithm == "ppo" else None
        cfg = RLConfig(algorithm=algorithm, group_size=4, minibatch_size=8, micro_batch_size=8, micro_batch_tokens=tokens,
                       beta=beta, max_grad_norm=1e9, sampling=SamplingConfig(max_new_tokens=8))
        params = [p for m in (policy, value_model) if m is not None for p in m.parameters()]
        before = [p.detach().clone() for p in params]
        torch.manual_seed(0)  # the same minibatch order
        stats.append(rl_step(policy, torch.optim.SGD(params, lr=1.0), batch, cfg, ALGORITHMS[cfg.algorithm], ref=ref,
                             value_model=value_model))
        steps.append([p.detach() - b for p, b in zip(params, before)])
    for a, b in zip(*steps):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-4)
    assert stats[0]["loss"] == pytest.approx(stats[1]["loss"], abs=1e-6)  # a sum over micro-batches, normalised by the minibatch


def test_the_reference_pass_by_tokens_keeps_the_row_order(tiny):
    model, tokenizer = tiny
    batch = _batch(model, tokenizer)
    mask = batch.completion_mask
    by_rows = logprobs_no_grad(model, batch, 1.0, 8)
    torch.testing.assert_close(logprobs_no_grad(model, batch, 1.0, 8, batch.prompt_len + 5) * mask, by_rows * mask,
                               atol=1e-5, rtol=1e-5)


def test_run_and_stage_checkpointing_settings():
    cfg = load_config("r1", ["gradient_checkpointing=true", "stages.reasoning-rl.rl.gradient_checkpointing=false"])
    assert cfg.rl.gradient_checkpointing and cfg.sft.gradient_checkpointing
    by_stage = {st.name: (cfg.stage_rl(st) if st.kind == "rl" else cfg.stage_sft(st)).gradient_checkpointing
                for st in cfg.stages if st.makes_model}
    assert not by_stage.pop("reasoning-rl") and all(by_stage.values())
    cfg = load_config("r1-zero", ["gradient_checkpointing=true", "rl.gradient_checkpointing=false"])
    assert not cfg.rl.gradient_checkpointing and cfg.sft.gradient_checkpointing
    assert not load_config("r1-zero").rl.gradient_checkpointing
    with pytest.raises(ConfigError, match="rl.micro_batch_tokens"):
        load_config("r1-zero", ["rl.micro_batch_tokens=0"])


# ---------------------------------------------------------------- settings the machine or model cannot honour


def _tiny_run(tiny_model_dir, *overrides):
    return validate({"model": str(tiny_model_dir), "task": "tinyworld"}, "test", list(overrides))


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_fails_naming_the_device(tiny_model_dir, tmp_path):
    from r1lab.recipes.run import Run
    from r1lab.ui.cli import main

    with pytest.raises(ConfigError, match="device: 'cuda' needs CUDA"):
        check_device("cuda")
    with pytest.raises(ConfigError, match="device: 'cuda:1' needs CUDA"):
        Run(_tiny_run(tiny_model_dir, "device=cuda:1", "data.test_size=4"), tmp_path / "run")
    assert not (tmp_path / "run").exists()  # failed before the run directory was written
    assert main(["eval", str(tiny_model_dir), "--task", "tinyworld", "--n", "1", "device=cuda"]) == 2


def test_a_device_name_torch_does_not_know_fails_at_load():
    with pytest.raises(ConfigError, match="device: 'gpu' is not a device"):
        load_config("r1-zero", ["device=gpu"])


def test_bf16_on_a_gpu_without_it_fails_naming_the_dtype(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla T4")
    with pytest.raises(ConfigError, match="dtype: bf16 is not native on Tesla T4"):
        check_device("cuda", "bf16")
    check_device("cuda", "fp32")
    check_device("cpu", "bf16")  # torch's CPU kernels run bf16


def test_checkpointing_a_model_without_it_fails_naming_the_setting(tiny, tiny_model_dir, monkeypatch):
    from transformers import LlamaForCausalLM

    monkeypatch.setattr(LlamaForCausalLM, "supports_gradient_checkpointing", False)
    with pytest.raises(ConfigError, match="stages.r1-zero.rl.gradient_checkpointing: .*LlamaForCausalLM.*does not support"):
        check_run(_tiny_run(tiny_model_dir, "gradient_checkpointing=true"))
    with pytest.raises(ConfigError, match="gradient_checkpointing: LlamaForCausalLM does not support"):
        enable_gradient_checkpointing(tiny[0])
    check_run(_tiny_run(tiny_model_dir))  # off: nothing to check


def test_lora_targets_are_checked_before_any_model_work(tiny_model_dir):
    with pytest.raises(ConfigError, match=r"lora.target_modules: 'qkv' matches no layer of LlamaForCausalLM; its layers are "
                                          r"down_proj, embed_tokens, gate_proj, k_proj, lm_head, o_proj, q_proj, up_proj, v_proj"):
        check_run(_tiny_run(tiny_model_dir, "lora.r=8", "lora.target_modules=[qkv]"))
    check_run(_tiny_run(tiny_model_dir, "lora.r=8", "lora.target_modules=[q_proj, v_proj]"))
    # the tiny world's base is checked from its settings, without pretraining it
    with pytest.raises(ConfigError, match="lora.target_modules: 'c_attn'"):
        check_run(load_config("r1", ["lora.r=8", "lora.target_modules=[c_attn]"]))
