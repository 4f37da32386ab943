"""LoRA through peft (r1lab/models/lora.py): only the adapters train in RL and SFT, the reference is the base with the
adapter disabled, final/ holds the merged model (plain transformers loads it) and final/adapter, resume works."""

import copy

import pytest
import torch
from helpers import InterruptedEngine, digits, metrics_rows, rl_config, train

from r1lab.config import ConfigError, LoRAConfig, SamplingConfig, SFTConfig
from r1lab.engines import make_engine
from r1lab.engines.fast_decoder import FastDecoder
from r1lab.models import lora
from r1lab.models.io import load_model, save_model
from r1lab.recipes.load import load_config
from r1lab.rewards.registry import REWARD_FUNCTIONS
from r1lab.rl.batch import Batch
from r1lab.rl.logprobs import forward_logprobs, logprobs_no_grad
from r1lab.sft import train as sft

pytest.importorskip("peft")

LORA = LoRAConfig(r=4, alpha=8)
PAIRS = [{"prompt": f"Compute {i} + 1", "completion": f"<think> {i} + 1 = {i + 1} </think> <answer> {i + 1} </answer>"}
         for i in range(8)]


@pytest.fixture(autouse=True)
def digits_reward(monkeypatch):
    monkeypatch.setitem(REWARD_FUNCTIONS, "digits", lambda task, **_: digits)


pytestmark = pytest.mark.usefixtures("one_thread")


def _rl(**kw):
    return rl_config(prompts_per_step=2, group_size=4, micro_batch_size=8, minibatch_size=8, lr=1e-2, **kw)


def _base_weights(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _assert_only_adapters_changed(policy, before):
    base = policy.get_base_model()
    for name, p in base.named_parameters():
        plain = name.replace(".base_layer.", ".")
        if "lora_" in name:
            assert p.requires_grad, name
        else:
            assert not p.requires_grad and torch.equal(p, before[plain]), name  # bit-identical
    trained = [n for n, p in base.named_parameters() if "lora_B" in n and p.abs().sum() > 0]
    assert len(trained) == sum("lora_B" in n for n, _ in base.named_parameters())  # every adapter moved off B = 0


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


def _check_final(final, policy, base_dir):
    """final/ loads with plain transformers and answers as the policy (merged exactly as peft merges); the
    adapter in final/adapter, on the base, is the policy."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    assert not (final / "adapter_config.json").exists() and (final / "adapter" / "adapter_config.json").exists()
    plain = AutoModelForCausalLM.from_pretrained(final, dtype=torch.float32).eval()
    ids = torch.randint(1, 300, (2, 12))
    policy.eval()
    peft_merged = copy.deepcopy(policy).merge_and_unload()
    assert torch.equal(_logits(plain, ids), _logits(peft_merged, ids))
    torch.testing.assert_close(_logits(plain, ids), _logits(policy, ids), atol=1e-5, rtol=1e-5)
    adapter = PeftModel.from_pretrained(load_model(str(base_dir), device="cpu", dtype="fp32")[0], final / "adapter")
    assert torch.equal(_logits(adapter, ids), _logits(policy, ids))
    return plain


def test_rl_trains_only_the_adapter_against_the_base_as_reference(tiny_model_dir, tmp_path):
    base, tokenizer = load_model(str(tiny_model_dir), device="cpu", dtype="fp32")
    original = copy.deepcopy(base)
    before = _base_weights(base)
    policy = lora.add_lora(base, LORA)
    train(policy, tokenizer, _rl(steps=3, beta=0.1), tmp_path)
    _assert_only_adapters_changed(policy, before)
    rows = metrics_rows(tmp_path)
    assert rows[0]["kl"] == pytest.approx(0.0, abs=1e-6) and rows[-1]["kl"] > 0  # step 1: the policy is its base

    # The reference is the base itself: same log-probs as the model before the adapter was added.
    rollout = make_engine("torch", policy, tokenizer, seed=0).generate(["Compute 1 + 1", "Compute 2 + 2"],
                                                                       SamplingConfig(max_new_tokens=6), n=3)
    batch = Batch.from_rollout(rollout, torch.zeros(6), tokenizer.pad_token_id)
    ref = lora.AdapterDisabled(policy)
    assert torch.equal(logprobs_no_grad(ref, batch, 1.0, 4), logprobs_no_grad(original, batch, 1.0, 4))
    assert not torch.equal(logprobs_no_grad(policy, batch, 1.0, 4), logprobs_no_grad(original, batch, 1.0, 4))

    save_model(policy, tokenizer, tmp_path / "final", {"built_by": "test"})
    _check_final(tmp_path / "final", policy, tiny_model_dir)
    ckpt = tmp_path / "checkpoints" / "step-000003"
    assert (ckpt / "adapter_model.safetensors").exists() and not (ckpt / "model.safetensors").exists()  # adapter only


def test_a_lora_model_samples_through_the_plain_path(tiny):
    model, tokenizer = tiny
    policy = lora.add_lora(model, LORA)
    for n, p in policy.named_parameters():
        if "lora_B" in n:
            torch.nn.init.normal_(p, std=0.5)  # an adapter that changes the outputs
    assert FastDecoder.of(policy) is None
    rollout = make_engine("torch", policy, tokenizer, seed=0).generate(["Compute 1 + 1", "Compute 3 + 4"],
                                                                       SamplingConfig(max_new_tokens=8), n=3)
    batch = Batch.from_rollout(rollout, torch.zeros(6), tokenizer.pad_token_id)
    with torch.no_grad():
        trained = forward_logprobs(policy, batch, 1.0)
    mask = rollout.completion_mask.bool()
    torch.testing.assert_close(rollout.logprobs[mask], trained[mask], atol=1e-5, rtol=1e-5)


def test_rl_resume_restores_the_adapter_and_optimizer(tiny_model_dir, tmp_path):
    cfg = _rl(steps=3, checkpoint_every=1, beta=0.05)

    def fresh():
        model, tok = load_model(str(tiny_model_dir), device="cpu", dtype="fp32")
        return lora.add_lora(model, LORA), tok

    straight, tok = fresh()
    train(straight, tok, cfg, tmp_path / "straight", seed=3)
    killed, tok = fresh()
    with pytest.raises(KeyboardInterrupt):  # in step 2, after step 1's checkpoint
        train(killed, tok, cfg, tmp_path / "resumed", seed=3, engine=InterruptedEngine(make_engine("torch", killed, tok, seed=3), 2))
    resumed, tok = fresh()  # a new process: the adapter comes from the checkpoint
    train(resumed, tok, cfg, tmp_path / "resumed", seed=3)
    a, b = metrics_rows(tmp_path / "straight"), metrics_rows(tmp_path / "resumed")
    assert [r["step"] for r in b] == [1, 2, 3]
    for ra, rb in zip(a, b):
        assert ra["reward"] == pytest.approx(rb["reward"], abs=1e-6) and ra["kl"] == pytest.approx(rb["kl"], abs=1e-6)
    for (name, pa), pb in zip(straight.named_parameters(), resumed.parameters()):
        torch.testing.assert_close(pa, pb, atol=1e-6, rtol=1e-5, msg=name)


def test_sft_trains_only_the_adapter_resumes_and_saves_the_merged_model(tiny_model_dir, tmp_path):
    cfg = SFTConfig(epochs=2, lr=1e-2, warmup_steps=0, batch_size=4, micro_batch_size=2, max_len=64, eval_fraction=0.0,
                    checkpoint_every=2)
    straight = sft.sft_from_config(str(tiny_model_dir), PAIRS, cfg, tmp_path / "straight", system="", device="cpu",
                                   dtype="fp32", lora=LORA)
    assert straight["steps"] == 4

    model, tok = load_model(str(tiny_model_dir), device="cpu", dtype="fp32")
    before = _base_weights(model)
    policy = lora.add_lora(model, LORA)
    forwards = []

    def killed_in_step_3(module, args):
        forwards.append(1)
        if len(forwards) == 5:  # 2 micro-batches a step: step 3's first, after step 2's checkpoint
            raise KeyboardInterrupt

    hook = policy.register_forward_pre_hook(killed_in_step_3)
    examples = sft.load_sft_examples(PAIRS, cfg, system="")
    with pytest.raises(KeyboardInterrupt):
        sft.train_sft(policy, tok, examples, cfg, tmp_path / "resumed", system="")
    hook.remove()
    _assert_only_adapters_changed(policy, before)

    policy = lora.add_lora(load_model(str(tiny_model_dir), device="cpu", dtype="fp32")[0], LORA)
    resumed = sft.train_sft(policy, tok, examples, cfg, tmp_path / "resumed", system="")
    assert resumed["train_loss"] == pytest.approx(straight["train_loss"], rel=1e-5)
    plain = _check_final(tmp_path / "resumed" / "final", policy, tiny_model_dir)
    straight_final, _ = load_model(str(tmp_path / "straight" / "final"), device="cpu", dtype="fp32")
    for (name, pa), pb in zip(plain.named_parameters(), straight_final.parameters()):
        torch.testing.assert_close(pa, pb, atol=1e-6, rtol=1e-5, msg=name)


def test_a_checkpoint_without_an_adapter_is_refused(tiny, tmp_path):
    model, _ = tiny
    model.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="no LoRA adapter"):
        lora.load_adapter(lora.add_lora(model, LORA), tmp_path)


def test_targets_that_match_nothing_name_the_layers(tiny):
    model, _ = tiny
    with pytest.raises(ConfigError, match=r"lora.target_modules: 'qproj' matches no layer.*q_proj.*v_proj"):
        lora.add_lora(model, LoRAConfig(r=4, target_modules=["q_proj", "qproj"]))
    with pytest.raises(ConfigError, match="lora.target_modules: 'attn.*' matches no layer"):
        lora.check_targets(model, "attn.*")  # a regex matches whole names
    lora.check_targets(model, r".*\.self_attn\.(q|v)_proj")
    with pytest.raises(ConfigError, match="LM head"):
        lora.check_targets(model, ["lm_head"])  # tied to the embeddings in the tiny model


@pytest.mark.parametrize("override, field", [
    ("rl.algorithm=ppo", "stages.r1-zero.rl.algorithm"),
    ("rl.ref_reset_every=5", "stages.r1-zero.rl.ref_reset_every"),
    ("lora.target_modules=[]", "lora.target_modules"),
    ("lora.target_modules='(q'", "lora.target_modules"),
    ("lora.r=-1", "lora.r"),
])
def test_lora_settings_that_cannot_work_fail_at_load(override, field):
    with pytest.raises(ConfigError) as err:
        load_config("r1-zero", ["lora.r=8", override])
    assert field in str(err.value)
    load_config("r1-zero", ["rl.algorithm=ppo"])  # without LoRA: fine


@pytest.mark.slow
def test_a_recipe_with_lora_checkpointing_and_token_micro_batches(tiny_model_dir, tmp_path):
    """rl (beta > 0) then sft from its model, LoRA in both: each final/ is merged (the next stage and the
    evaluation load it as a plain model) with its adapter beside."""
    import json

    from r1lab.ui.cli import main

    recipe = tmp_path / "lora.yaml"
    recipe.write_text(f"""
recipe: lora
model: {tiny_model_dir}
data: {{test_size: 2}}
sampling: {{max_new_tokens: 6}}
lora: {{r: 4, alpha: 8}}
gradient_checkpointing: true
rl: {{steps: 2, prompts_per_step: 2, group_size: 2, beta: 0.05, micro_batch_tokens: 64, checkpoint_every: 1}}
sft: {{epochs: 1, batch_size: 2, micro_batch_size: 1, warmup_steps: 0, eval_fraction: 0}}
eval: {{k: 1}}
stages:
  - {{name: zero, kind: rl}}
  - {{name: plain, kind: answers, prompts: 4}}
  - {{name: tuned, kind: sft, init: zero, data: [plain]}}
""")
    run = tmp_path / "run"
    assert main(["run", str(recipe), "--out", str(run)]) == 0
    for stage in ("zero", "tuned"):
        assert (run / stage / "final" / "model.safetensors").exists()
        assert (run / stage / "final" / "adapter" / "adapter_model.safetensors").exists()
    assert [s["name"] for s in json.loads((run / "summary.json").read_text())["stages"]] == ["zero", "tuned"]
