"""Mixed precision (dtype=bf16): fp32 master weights and AdamW state, every forward pass computing in bf16
under models.autocast, final models saved in bf16; and KV-cache forwards transformers does not warn about."""

import json
import logging
import warnings

import pytest
import torch
from helpers import digits, rl_config, train
from safetensors.torch import load_file

from r1lab.config import LoRAConfig, SamplingConfig, SFTConfig
from r1lab.engines.torch_engine import TorchEngine
from r1lab.models import lora
from r1lab.models.device import autocast
from r1lab.models.io import load_model
from r1lab.rewards.registry import REWARD_FUNCTIONS
from r1lab.rl.batch import Batch
from r1lab.rl.logprobs import forward_logprobs
from r1lab.sft import train as sft

pytestmark = pytest.mark.usefixtures("one_thread")

LR = 1e-4  # AdamW moves a weight by about lr a step: far below bf16's resolution at an RMSNorm weight of 1.0 (2^-8)


def logits_dtypes(model) -> list[tuple[bool, torch.dtype]]:
    """(grad enabled, logits dtype) of every LM head call from now on: training passes and sampling alike
    (the fast decoder calls the head as the model's module)."""
    calls = []
    model.get_output_embeddings().register_forward_hook(lambda m, args, out: calls.append((torch.is_grad_enabled(), out.dtype)))
    return calls


def optimizer_dtypes(checkpoint) -> set[torch.dtype]:
    state = torch.load(checkpoint / "trainer_state.pt", weights_only=False)["optimizer"]["state"]
    return {t.dtype for moments in state.values() for t in moments.values() if t.dim() > 0}


def test_autocast_computes_in_the_recorded_dtype(tiny_model_dir):
    ids = torch.tensor([[5, 6, 7]])
    master, _ = load_model(str(tiny_model_dir), device="cpu", dtype="bf16", master_weights=True)
    inference, _ = load_model(str(tiny_model_dir), device="cpu", dtype="bf16")
    full, _ = load_model(str(tiny_model_dir), device="cpu", dtype="fp32", master_weights=True)
    assert {p.dtype for p in master.parameters()} == {torch.float32} and {p.dtype for p in full.parameters()} == {torch.float32}
    assert {p.dtype for p in inference.parameters()} == {torch.bfloat16}  # nothing updates it: loaded in bf16
    for model, dtype in ((master, torch.bfloat16), (inference, torch.bfloat16), (full, torch.float32)):
        with autocast(model):
            assert model(input_ids=ids).logits.dtype == dtype
    with autocast(master):
        bf16 = master(input_ids=ids).logits.float()
    torch.testing.assert_close(bf16, full(input_ids=ids).logits, atol=0.05, rtol=0.05)  # the same model, rounded


def test_bf16_rl_trains_fp32_master_weights_computing_in_bf16(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(REWARD_FUNCTIONS, "digits", lambda task, **_: digits)
    model, tokenizer = load_model(str(tiny_model_dir), device="cpu", dtype="bf16", master_weights=True)
    norms = {n: p.detach().clone() for n, p in model.named_parameters() if "norm" in n}
    calls = logits_dtypes(model)
    train(model, tokenizer, rl_config(steps=2, lr=LR), tmp_path)

    assert {grad for grad, _ in calls} == {True, False}  # training passes and sampling
    assert {dtype for _, dtype in calls} == {torch.bfloat16}
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    moved = [n for n, p in model.named_parameters() if n in norms and not torch.equal(p.detach(), norms[n])]
    assert sorted(moved) == sorted(norms)  # pure bf16 rounded every one of these updates away
    checkpoint = tmp_path / "checkpoints" / "step-000002"
    assert optimizer_dtypes(checkpoint) == {torch.float32}
    assert {t.dtype for t in load_file(checkpoint / "model.safetensors").values()} == {torch.float32}  # an exact resume


def test_bf16_sampling_log_probs_are_the_training_pass_s(tiny_model_dir):
    """The torch engine's log-probs are the old log-probs of the clipped objective: both of its paths
    must compute what the bf16 training pass computes, up to bf16 rounding."""
    model, tokenizer = load_model(str(tiny_model_dir), device="cpu", dtype="bf16", master_weights=True)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():  # an untrained model's logits are near 0: spread them so rounding shows
            p.mul_(1 + torch.rand_like(p))
    prompts, sampling = ["Compute 1 + 1", "Compute 12 + 3 and then 4"], SamplingConfig(temperature=1.0, max_new_tokens=12)
    for fast in (True, False):
        rollout = TorchEngine(model, tokenizer, seed=0, fast=fast).generate(prompts, sampling, n=4)
        batch = Batch.from_rollout(rollout, torch.zeros(8), tokenizer.pad_token_id)
        with torch.no_grad():
            trainer = forward_logprobs(model, batch, 1.0)
        mask = rollout.completion_mask.bool()
        torch.testing.assert_close(rollout.logprobs[mask], trainer[mask], atol=0.03, rtol=0.03)


def sft_rows() -> list[dict]:
    return [{"prompt": q, "completion": f"<think> {q}={eval(q)} </think> <answer> {eval(q)} </answer>"}
            for q in ("3+4", "9-5", "2*6", "8-1")]


@pytest.mark.parametrize("with_lora", [False, True], ids=["full", "lora"])
def test_bf16_sft_trains_in_fp32_and_saves_bf16(tiny_model_dir, tmp_path, with_lora):
    model, tokenizer = load_model(str(tiny_model_dir), device="cpu", dtype="bf16", master_weights=not with_lora)
    if with_lora:  # the frozen base stays in bf16; peft keeps the adapters in fp32
        model = lora.add_lora(model, LoRAConfig(r=4))
        assert {p.dtype for p in model.parameters() if not p.requires_grad} == {torch.bfloat16}
    trained = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    assert {t.dtype for t in trained.values()} == {torch.float32}
    calls = logits_dtypes(model)
    cfg = SFTConfig(epochs=2, lr=LR, warmup_steps=0, batch_size=4, micro_batch_size=2, max_len=64, eval_fraction=0.0,
                    eval_every=0, checkpoint_every=0)
    sft.train_sft(model, tokenizer, sft.load_sft_examples(sft_rows(), cfg, system=""), cfg, tmp_path, system="")

    assert calls and {dtype for _, dtype in calls} == {torch.bfloat16}
    moved = [n for n, p in model.named_parameters() if n in trained and not torch.equal(p.detach(), trained[n])]
    assert sorted(moved) == sorted(trained)  # norms included: updates of 1e-4 survive in fp32
    assert optimizer_dtypes(tmp_path / "checkpoints" / "step-000002") == {torch.float32}

    final = tmp_path / "final"  # the compute dtype: half the size of the fp32 masters
    saved = load_file(final / "model.safetensors")
    assert {t.dtype for t in saved.values()} == {torch.bfloat16}
    assert json.loads((final / "config.json").read_text())["dtype"] == "bfloat16"
    if with_lora:
        assert {t.dtype for t in load_file(final / "adapter" / lora.ADAPTER_FILE).values()} == {torch.float32}
    else:
        masters = model.state_dict()
        assert all(torch.equal(t, masters[name].to(torch.bfloat16)) for name, t in saved.items())
        assert next(model.parameters()).dtype == torch.float32  # saving cast a copy, not the model
    reloaded, _ = load_model(str(final), device="cpu", dtype="bf16")  # an inference load: straight in bf16
    assert {p.dtype for p in reloaded.parameters()} == {torch.bfloat16}


def test_cached_forwards_raise_no_cache_deprecation(tiny):
    """transformers 5.24 deprecates the `past_key_values` argument (a FutureWarning) and output field (a
    logged warning, once per process) for `cache`; 5.19 has only `past_key_values` (models.with_cache)."""
    model, tokenizer = tiny
    logged = []
    handler = logging.Handler()
    handler.emit = logged.append
    logging.getLogger("transformers").addHandler(handler)
    logging.Logger.warning_once.cache_clear()  # transformers' "once": forget what earlier tests were told
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("error", message=".*(past_key_values|cache_params).*")
            rollout = TorchEngine(model, tokenizer, seed=0, fast=False).generate(  # the plain path: the model's cache
                ["Compute 1 + 1", "Compute 12 + 3 and then 4"], SamplingConfig(max_new_tokens=6), n=2)
            batch = Batch.from_rollout(rollout, torch.zeros(4), tokenizer.pad_token_id)
            forward_logprobs(model, batch, 1.0)  # the shared pass: each prompt's cache handed to its completions
    finally:
        logging.getLogger("transformers").removeHandler(handler)
    assert [r.getMessage() for r in logged if "past_key_values" in r.getMessage()] == []
