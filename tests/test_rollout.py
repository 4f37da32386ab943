import math

import pytest
import torch

from r1lab.config import SamplingConfig
from r1lab.engines.base import filter_logits, sample_next
from r1lab.engines.fast_decoder import FastDecoder
from r1lab.engines.torch_engine import TorchEngine
from r1lab.models.io import load_tokenizer

PROMPTS = ["User: Compute 3 + 4. Assistant: <think>", "User: Make 12 from 2, 3, 4. Assistant: <think>"]


def _forward_logprobs(model, prompt_ids, completion):
    """-> log-probs and entropies (len(completion),) of a completion, from one plain forward pass."""
    x = torch.tensor([prompt_ids + completion])
    with torch.no_grad():
        logits = model(x).logits[0, len(prompt_ids) - 1 : -1].float()
    logprobs = torch.log_softmax(logits, -1)
    return logprobs.gather(1, torch.tensor(completion)[:, None]).squeeze(1), -(logprobs.exp() * logprobs).sum(-1)


def test_sampler_logprobs_match_a_plain_forward_pass(tiny):
    model, tokenizer = tiny
    rollout = TorchEngine(model, tokenizer, seed=1).generate(PROMPTS, SamplingConfig(temperature=1.0, max_new_tokens=24), n=3)
    assert rollout.completion_ids.shape[0] == 6 and len(rollout.texts) == 6
    for i in range(6):
        length = int(rollout.lengths[i])
        completion = rollout.completion_ids[i, :length].tolist()
        expected, entropies = _forward_logprobs(model, rollout.prompt_ids[i // 3], completion)
        torch.testing.assert_close(rollout.logprobs[i, :length], expected, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(rollout.entropies[i, :length], entropies, atol=1e-4, rtol=1e-4)
        assert (rollout.logprobs[i, length:] == 0).all() and (rollout.completion_mask[i, length:] == 0).all()


def test_finished_rows_stop_and_are_masked(tiny):
    model, tokenizer = tiny
    eos = tokenizer.eos_token_id
    # Lift EOS's logit so that some rows stop early and others run to the limit.
    hook = model.lm_head.register_forward_hook(lambda m, i, out: out + 2.5 * torch.nn.functional.one_hot(torch.tensor(eos), out.size(-1)))
    try:
        rollout = TorchEngine(model, tokenizer, seed=0).generate(PROMPTS, SamplingConfig(temperature=1.0, max_new_tokens=40), n=8)
    finally:
        hook.remove()
    stopped = [not t for t in rollout.truncated]
    assert any(stopped) and not all(stopped)
    for i, done in enumerate(stopped):
        length = int(rollout.lengths[i])
        if done:
            assert rollout.completion_ids[i, length - 1].item() == eos
            assert eos not in rollout.completion_ids[i, : length - 1].tolist()
        else:
            assert length == 40


def test_same_seed_same_samples(tiny):
    model, tokenizer = tiny
    s = SamplingConfig(temperature=1.0, max_new_tokens=16)
    a = TorchEngine(model, tokenizer, seed=5).generate(PROMPTS, s, n=2)
    b = TorchEngine(model, tokenizer, seed=5).generate(PROMPTS, s, n=2)
    assert a.texts == b.texts and torch.equal(a.completion_ids, b.completion_ids)


def test_greedy_matches_hf_generate(tiny):
    model, tokenizer = tiny
    ids = tokenizer(PROMPTS[0], return_tensors="pt")["input_ids"]
    hf = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=12,
                        pad_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id)[0, ids.shape[1]:]
    ours = TorchEngine(model, tokenizer).generate(PROMPTS[:1], SamplingConfig(temperature=0, max_new_tokens=12))
    assert ours.completion_ids[0, : len(hf)].tolist() == hf.tolist()


def test_stop_string_ends_a_row(tiny):
    model, tokenizer = tiny
    s = SamplingConfig(temperature=1.0, max_new_tokens=30, stop=["e"])
    rollout = TorchEngine(model, tokenizer, seed=3).generate(PROMPTS, s, n=4)
    assert not all(rollout.truncated)
    for i, (text, truncated) in enumerate(zip(rollout.texts, rollout.truncated)):
        length = int(rollout.lengths[i])
        if not truncated and rollout.completion_ids[i, length - 1] != tokenizer.eos_token_id:
            # stopped by the string (not EOS): at the first token that completes it
            assert "e" in text
            assert "e" not in tokenizer.decode(rollout.completion_ids[i, : length - 1].tolist())


def test_filter_logits_top_p_and_top_k():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    kept = filter_logits(logits, top_p=0.7).isfinite()[0].tolist()
    assert kept == [True, True, False, False]  # 0.5 < 0.7, 0.5+0.3 crosses it: the crossing token stays
    assert filter_logits(logits, top_p=0.5).isfinite()[0].tolist() == [True, False, False, False]
    assert filter_logits(logits, top_k=3).isfinite()[0].tolist() == [True, True, True, False]
    assert filter_logits(logits).isfinite().all()


def test_tokenizer_round_trips_exactly_after_reload(tiny_model_dir):
    tokenizer = load_tokenizer(str(tiny_model_dir))
    text = "User: Compute 37 + 48 - 19. Assistant: <think> 37 + 48 = 85.  wait, recheck </think> <answer> 66 </answer>"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == text
    assert tokenizer.convert_tokens_to_ids("<think>") in ids  # tags are single tokens
    assert len([t for t in tokenizer.convert_ids_to_tokens(ids) if t.strip("Ġ").isdigit()]) == 14  # one token per digit


# ---- fast paths against the plain ones -----------------------------------------------------

MIXED = PROMPTS + ["Hi", "User: Compute 12 + 3 - 4 * 2. Assistant: <think>"]  # different lengths: left padding


def _lift_eos(model, eos, by=2.5):
    """Some rows stop early, others run on: exercises dropping finished rows and growing the cache."""
    return model.lm_head.register_forward_hook(lambda m, i, out: out + by * torch.nn.functional.one_hot(torch.tensor(eos), out.size(-1)))


def _same_rollouts(model, tokenizer, sampling, n):
    fast = TorchEngine(model, tokenizer, seed=7).generate(MIXED, sampling, n=n)
    plain = TorchEngine(model, tokenizer, seed=7, fast=False).generate(MIXED, sampling, n=n)
    assert torch.equal(fast.completion_ids, plain.completion_ids) and fast.texts == plain.texts
    assert fast.truncated == plain.truncated
    torch.testing.assert_close(fast.logprobs, plain.logprobs, atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(fast.entropies, plain.entropies, atol=2e-5, rtol=1e-4)
    return fast


def test_fast_sampler_matches_the_plain_one(tiny):
    model, tokenizer = tiny
    assert FastDecoder.of(model) is not None  # the tiny Llama takes the fast path
    hook = _lift_eos(model, tokenizer.eos_token_id)
    try:
        rollout = _same_rollouts(model, tokenizer, SamplingConfig(temperature=1.0, max_new_tokens=40), n=6)
    finally:
        hook.remove()
    assert len(set(rollout.lengths.tolist())) > 3  # rows of many lengths: rows were dropped along the way
    _same_rollouts(model, tokenizer, SamplingConfig(temperature=0.7, top_p=0.9, top_k=20, max_new_tokens=20), n=3)
    _same_rollouts(model, tokenizer, SamplingConfig(temperature=0, max_new_tokens=10), n=1)


@pytest.mark.parametrize("kind", ["llama-gqa", "qwen2"])
def test_fast_sampler_other_llama_family_models(tiny_model_dir, kind):
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    tokenizer = load_tokenizer(str(tiny_model_dir))
    common = dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=128, eos_token_id=0, pad_token_id=0)
    torch.manual_seed(0)
    if kind == "qwen2":  # q/k/v biases
        model = Qwen2ForCausalLM(Qwen2Config(**common, tie_word_embeddings=True)).eval()
        for layer in model.model.layers:
            torch.nn.init.normal_(layer.self_attn.q_proj.bias, std=0.5)
            torch.nn.init.normal_(layer.self_attn.k_proj.bias, std=0.5)
    else:
        model = LlamaForCausalLM(LlamaConfig(**common, tie_word_embeddings=False)).eval()
    assert FastDecoder.of(model) is not None
    _same_rollouts(model, tokenizer, SamplingConfig(temperature=1.0, max_new_tokens=24), n=3)


def test_fast_sampler_declines_what_it_does_not_reproduce(tiny):
    model, _ = tiny
    hook = model.model.layers[0].mlp.register_forward_hook(lambda m, i, out: out * 2)
    try:
        assert FastDecoder.of(model) is None  # a hook inside the layers: only the model's own forward runs it
    finally:
        hook.remove()
    assert FastDecoder.of(model) is not None


def test_shared_prompt_training_pass_matches_the_plain_one(tiny, monkeypatch):
    from r1lab.rl import logprobs as lp
    from r1lab.rl.batch import Batch

    model, tokenizer = tiny
    hook = _lift_eos(model, tokenizer.eos_token_id, by=3.0)
    try:
        rollout = TorchEngine(model, tokenizer, seed=1).generate(MIXED, SamplingConfig(max_new_tokens=20), n=6)
    finally:
        hook.remove()
    assert len(set(rollout.lengths.tolist())) > 3
    batch = Batch.from_rollout(rollout, torch.zeros(len(rollout.texts)), tokenizer.pad_token_id)
    monkeypatch.setattr(lp, "BUCKET_COST", 0)  # split into length buckets whenever it saves any padding
    rows = batch.take(torch.tensor([5, 0, 7, 2, 3, 11, 1, 4, 6, 8, 9, 10, 12, 13, 14, 15, 16, 23]))  # prompt 3 only once
    assert len(rows.prompt_ids) == 4
    assert len(lp.length_buckets(sorted(rows.completion_mask.sum(1).tolist(), reverse=True))) == 2
    mask = rows.completion_mask.bool()
    model.train()
    results = []
    for shared in (True, False):
        model.zero_grad()
        logprobs = lp.forward_logprobs(model, rows, 0.7, shared=shared)
        (logprobs * mask).sum().backward()
        results.append((logprobs.detach(), [p.grad.clone() for p in model.parameters()]))
    (lp_a, grad_a), (lp_b, grad_b) = results
    torch.testing.assert_close(lp_a[mask], lp_b[mask], atol=1e-5, rtol=1e-5)
    for a, b in zip(grad_a, grad_b):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    # The no-grad pass over all rows (the reference model's), micro-batch by micro-batch.
    model.eval()
    mask = rollout.completion_mask
    with torch.no_grad():
        plain = lp.forward_logprobs(model, batch, 1.0, shared=False)
    torch.testing.assert_close(lp.logprobs_no_grad(model, batch, 1.0, 16) * mask, plain * mask, atol=1e-5, rtol=1e-5)


def test_inverse_cdf_sampling_never_picks_a_filtered_token():
    logits = torch.tensor([[2.0, 1.0, 0.5, -1.0]]).repeat(4000, 1)
    gen = torch.Generator().manual_seed(0)
    tokens, logprobs, _ = sample_next(logits, SamplingConfig(temperature=1.0, top_k=2), gen)
    assert set(tokens.tolist()) == {0, 1}
    share = (tokens == 0).float().mean().item()
    assert abs(share - 1 / (1 + math.exp(-1.0))) < 0.03  # p(0) / (p(0) + p(1)) after top-k
    torch.testing.assert_close(logprobs, torch.log_softmax(logits, -1).gather(1, tokens[:, None]).squeeze(1))


def test_fast_sampler_onednn_packed_weights(tiny, monkeypatch):
    from r1lab.engines import fast_decoder as rollout

    if not rollout.onednn_works(torch.device("cpu"), torch.float32):
        pytest.skip("no oneDNN packed linear on this machine")
    model, tokenizer = tiny
    monkeypatch.setattr(rollout.DecodeLinear, "PACK_MIN", 0)  # the tiny model's weights are below the real threshold
    layer = FastDecoder.of(model).layers[0]
    assert all(layer[name].packed is not None for name in ("qkv", "o", "gate_up", "down"))
    hook = _lift_eos(model, tokenizer.eos_token_id)
    try:
        _same_rollouts(model, tokenizer, SamplingConfig(temperature=1.0, max_new_tokens=24), n=4)
    finally:
        hook.remove()


def test_fast_sampler_unfused_weights(tiny, monkeypatch):
    model, tokenizer = tiny
    monkeypatch.setattr(FastDecoder, "FUSE_PARAMETERS", 0)  # as for a large model: no concatenated copy
    assert len(FastDecoder.of(model).layers[0]["qkv"].pairs) == 3
    _same_rollouts(model, tokenizer, SamplingConfig(temperature=1.0, max_new_tokens=16), n=2)
