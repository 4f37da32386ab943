import torch

from r1lab.config import SamplingConfig
from r1lab.models import load_tokenizer
from r1lab.rollout import TorchEngine, filter_logits

PROMPTS = ["User: Compute 3 + 4. Assistant: <think>", "User: Make 12 from 2, 3, 4. Assistant: <think>"]


def _forward_logprobs(model, prompt_ids, completion):
    x = torch.tensor([prompt_ids + completion])
    with torch.no_grad():
        logits = model(x).logits[0, len(prompt_ids) - 1 : -1].float()
    return torch.log_softmax(logits, -1).gather(1, torch.tensor(completion)[:, None]).squeeze(1)


def test_sampler_logprobs_match_a_plain_forward_pass(tiny):
    model, tokenizer = tiny
    rollout = TorchEngine(model, tokenizer, seed=1).generate(PROMPTS, SamplingConfig(temperature=1.0, max_new_tokens=24), n=3)
    assert rollout.completion_ids.shape[0] == 6 and len(rollout.texts) == 6
    for i in range(6):
        length = int(rollout.lengths[i])
        completion = rollout.completion_ids[i, :length].tolist()
        expected = _forward_logprobs(model, rollout.prompt_ids[i // 3], completion)
        torch.testing.assert_close(rollout.logprobs[i, :length], expected, atol=1e-4, rtol=1e-4)
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
        if not truncated:  # stops at the first token that completes the stop string
            length = int(rollout.lengths[i])
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
