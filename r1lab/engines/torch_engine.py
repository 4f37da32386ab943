"""Rollout engines: sample completions and the log-probs they were sampled with.

`TorchEngine` works with any HF causal LM on CPU or GPU. Each prompt is prefilled once and its keys and
values copied to its n samples, then one forward per new token for the whole batch. Two paths do this:

- plain: the model's own forward with an HF cache, finished rows dropped from the batch at once. Any model.
- fast (Llama-family models: Llama, Qwen2, Mistral without a sliding window): the same computation written
  out over the model's weights, without the per-module Python of the HF forward: fused q|k|v and gate|up
  matmuls, residual adds inside the matmuls, a KV cache preallocated per call and written in place (no
  torch.cat per token), and attention as three ops per layer. Finished rows stop being sampled at once and
  leave the batch when enough of them have finished to pay for compacting the cache.

Both paths sample the same tokens for the same seed (the fast path draws only for unfinished rows, in
the same order) and agree on the log-probs and entropies up to float rounding; tests/test_rollout.py
checks that. With per-prompt `seeds`, each row's draws are taken in advance from its prompt's generator
and read by row and position, so both paths still draw the same tokens.

Episodes with turns (`run_episodes`) run on the fast path in one decode loop, tool results prefilled into the
live cache (engines/live_episodes.py); on the plain path engines/episodes.py runs them turn by turn.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

from r1lab.engines.base import Rollout, left_padded, pad_id, sample_next
from r1lab.engines.fast_decoder import FastDecoder, KVCache
from r1lab.engines.live_episodes import LiveEpisodes
from r1lab.engines.streaming import stream_text
from r1lab.models.device import autocast
from r1lab.models.memory import cache_of, with_cache


class TorchEngine:
    """The sampler for any HF causal LM in this process (CPU or GPU); the fast path where it applies."""

    in_process = True

    def __init__(self, model, tokenizer, seed: int = 0, fast: bool = True):
        """fast=False always uses the plain path (the reference the fast one is tested against)."""
        self.model, self.tokenizer, self.fast = model, tokenizer, fast
        eos = model.generation_config.eos_token_id if model.generation_config is not None else None
        eos = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        self.eos_ids = torch.tensor(sorted(eos | {tokenizer.eos_token_id}))
        self.pad_id = pad_id(tokenizer)
        self.generator = torch.Generator(device=model.device).manual_seed(seed)

    def load_weights(self, model) -> None:
        self.model = model  # same process, same tensors: nothing to copy

    def rng_state(self) -> torch.Tensor:
        return self.generator.get_state()

    def set_rng_state(self, state: torch.Tensor) -> None:
        self.generator.set_state(state)

    def close(self) -> None:
        pass

    def stream(self, prompt: str, sampling, stop_event=None):
        """One completion of `prompt`, yielded as text while it is written (chat, serving)."""
        return stream_text(self.model, self.tokenizer, prompt, sampling, stop_event)

    def generate(self, prompts: list[str], sampling, n: int = 1, seeds: list[int] | None = None) -> Rollout:
        """Samples n completions for each prompt. `sampling` has temperature, top_p, top_k, max_new_tokens, stop.
        seeds: one per prompt, its completions' own random stream (engines/base.py: Engine.generate)."""
        prompt_ids = [self.tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
        return self.generate_ids(prompt_ids, sampling, n, seeds)

    @torch.no_grad()
    def generate_ids(self, prompt_ids: list[list[int]], sampling, n: int = 1, seeds: list[int] | None = None) -> Rollout:
        """`generate` from prompts given as token ids: an episode goes on from exactly the ids it has (a tool's
        result appended), never from its text tokenised again."""
        max_new = self._room(prompt_ids, sampling.max_new_tokens)
        with self._sampling():
            decoder = FastDecoder.of(self.model) if self.fast else None
            run = self._sample_fast if decoder is not None else self._sample_plain
            uniforms = None if seeds is None else self._uniforms(seeds, n, max_new)
            tokens, logprobs, entropies, lengths, stopped = run(decoder, prompt_ids, sampling, n, max_new, uniforms)
        tokens, logprobs, entropies, lengths, stopped = (x.cpu() for x in (tokens, logprobs, entropies, lengths, stopped))
        T = int(lengths.max())
        mask = torch.arange(T)[None, :] < lengths[:, None]
        tokens = tokens[:, :T].masked_fill(~mask, self.pad_id)
        texts = self.tokenizer.batch_decode([row[:l].tolist() for row, l in zip(tokens, lengths)], skip_special_tokens=True)
        return Rollout(prompt_ids=prompt_ids, completion_ids=tokens, completion_mask=mask.long(),
                       logprobs=logprobs[:, :T] * mask, texts=texts, truncated=(~stopped).tolist(), n=n,
                       entropies=entropies[:, :T] * mask,
                       exact_logprobs=True)  # the trainer's own weights and arithmetic: its log-probs are the old log-probs

    @torch.no_grad()
    def run_episodes(self, prompt_ids: list[list[int]], sampling, n: int, respond, *, close: str, max_turns: int,
                     seeds: list[int] | None = None) -> Rollout | None:
        """Episodes with turns in one decode loop, each tool result prefilled into the live KV cache
        (engines/live_episodes.py; the protocol: engines/base.py Engine). None where the fast path does not
        apply: engines/episodes.py then runs the turns over generate_ids."""
        budget = self._room(prompt_ids, sampling.max_new_tokens)
        with self._sampling():
            decoder = FastDecoder.of(self.model) if self.fast else None
            if decoder is None:
                return None
            uniforms = None if seeds is None else self._uniforms(seeds, n, budget)
            return LiveEpisodes(self, decoder, prompt_ids, sampling, n, respond, close=close, max_turns=max_turns,
                                budget=budget, uniforms=uniforms).run()

    def _room(self, prompt_ids: list[list[int]], max_new_tokens: int) -> int:
        """Tokens the prompts leave to generate: max_new_tokens, or less in the model's context."""
        if any(len(p) == 0 for p in prompt_ids):
            raise ValueError("an empty prompt cannot be continued: every prompt needs at least one token")
        limit = getattr(self.model.config, "max_position_embeddings", None)
        longest = max(map(len, prompt_ids))
        max_new = max_new_tokens if limit is None else min(max_new_tokens, limit - longest)
        if max_new <= 0:
            raise ValueError(f"a prompt of {longest} tokens leaves no room to generate in the model's context of {limit}")
        return max_new

    @contextmanager
    def _sampling(self):
        """Eval mode, and the training pass's arithmetic (bf16: over the fp32 master weights)."""
        was_training = self.model.training
        self.model.eval()
        try:
            with autocast(self.model):
                yield
        finally:
            if was_training:
                self.model.train()

    @staticmethod
    def _uniforms(seeds: list[int], n: int, max_new: int) -> torch.Tensor:
        """(N, max_new): row i's draw for each position, from the generator of its prompt's seed (drawn on
        the CPU, so a seed means the same draws on any device)."""
        return torch.cat([torch.rand((n, max_new), generator=torch.Generator().manual_seed(seed)) for seed in seeds])

    def _sample_plain(self, _, prompt_ids, sampling, n: int, max_new: int, uniforms: torch.Tensor | None = None):
        """-> tokens, logprobs, entropies (N, max_new), lengths (N,), stopped (N,), with the model's own forward."""
        model, dev = self.model, self.model.device
        # Prefill each prompt once (left-padded), then repeat its cache for the n samples.
        ids, attn = left_padded(prompt_ids, self.pad_id, dev)
        positions = (attn.cumsum(-1) - 1).clamp(min=0)
        out = model(input_ids=ids, attention_mask=attn, position_ids=positions, use_cache=True)
        cache = cache_of(out)
        if n > 1:
            cache.batch_repeat_interleave(n)
        logits = out.logits[:, -1].float().repeat_interleave(n, 0)  # (N, V)
        attn = attn.repeat_interleave(n, 0)
        next_pos = positions[:, -1:].repeat_interleave(n, 0) + 1

        N = len(prompt_ids) * n
        tokens = torch.full((N, max_new), self.pad_id, dtype=torch.long)
        logprobs, entropies = torch.zeros((N, max_new)), torch.zeros((N, max_new))
        lengths = torch.zeros(N, dtype=torch.long)
        stopped = torch.zeros(N, dtype=torch.bool)
        active = torch.arange(N)  # rows of the batch still generating
        eos_ids = self.eos_ids.to(dev)
        stop_strings = list(sampling.stop)
        for t in range(max_new):
            draws = None if uniforms is None else uniforms[active, t]
            choice, step_logprobs, step_entropies = sample_next(logits, sampling, self.generator, draws)
            tokens[active, t] = choice.cpu()
            logprobs[active, t] = step_logprobs.cpu()
            entropies[active, t] = step_entropies.cpu()
            lengths[active] = t + 1
            done = torch.isin(choice, eos_ids).cpu()
            if stop_strings:
                done |= torch.tensor([self._hit_stop(tokens[r, : t + 1], stop_strings) for r in active.tolist()])
            stopped[active[done]] = True
            keep = ~done
            if not keep.any() or t == max_new - 1:
                break
            if not keep.all():  # drop finished rows so later steps do less work
                kept = keep.nonzero().squeeze(1).to(dev)
                cache.batch_select_indices(kept)
                choice, attn, next_pos = choice[kept], attn[kept], next_pos[kept]
                active = active[keep]
            attn = torch.cat([attn, attn.new_ones(len(active), 1)], 1)
            out = model(input_ids=choice[:, None], attention_mask=attn, position_ids=next_pos, use_cache=True,
                        **with_cache(cache))
            cache, next_pos = cache_of(out), next_pos + 1
            logits = out.logits[:, -1].float()
        return tokens, logprobs, entropies, lengths, stopped

    def _sample_fast(self, dec: "FastDecoder", prompt_ids, sampling, n: int, max_new: int, uniforms: torch.Tensor | None = None):
        """Same contract as _sample_plain, with the FastDecoder and its KVCache.

        The batch holds slots: rows still generating plus finished rows not yet dropped. Finished rows are
        never sampled again (sampling sees the live rows only, in order, as the plain path's batch does);
        they leave the batch when the cache is rebuilt: when the generated part needs more columns, or
        when carrying them costs more than copying the cache (see `KVCache.compact_now`).
        """
        dev = dec.device
        ids, attn = left_padded(prompt_ids, self.pad_id, dev)
        N = len(prompt_ids) * n
        positions = (attn.cumsum(-1) - 1).clamp(min=0)
        cache = KVCache(dec, attn.bool(), n, max_new)
        logits = dec.prefill(ids, positions, attn.bool(), cache).repeat_interleave(n, 0)  # (N, V)
        next_pos = positions[:, -1].repeat_interleave(n, 0) + 1

        tokens = torch.full((N, max_new), self.pad_id, dtype=torch.long, device=dev)
        logprobs, entropies = torch.zeros((N, max_new), device=dev), torch.zeros((N, max_new), device=dev)
        lengths = torch.zeros(N, dtype=torch.long, device=dev)
        stopped = torch.zeros(N, dtype=torch.bool, device=dev)
        live = torch.ones(N, dtype=torch.bool, device=dev)  # per slot
        n_live = N
        uniforms = uniforms.to(dev) if uniforms is not None else None
        eos_ids = self.eos_ids.to(dev)
        stop_strings = list(sampling.stop)
        for t in range(max_new):
            all_live = n_live == len(cache.rows)
            live_idx = None if all_live else live.nonzero().squeeze(1)
            rows = cache.rows if all_live else cache.rows[live_idx]
            draws = None if uniforms is None else uniforms[rows, t]
            choice, step_logprobs, step_entropies = sample_next(logits if all_live else logits[live_idx], sampling, self.generator, draws)
            tokens[rows, t] = choice
            logprobs[rows, t] = step_logprobs
            entropies[rows, t] = step_entropies
            lengths[rows] = t + 1
            done = torch.isin(choice, eos_ids)
            if stop_strings:
                hits = [self._hit_stop(tokens[r, : t + 1], stop_strings) for r in rows.tolist()]
                done |= torch.tensor(hits, device=dev)
            n_done = int(done.sum())
            if n_done:
                stopped[rows[done]] = True
                n_live -= n_done
                live[done if all_live else live_idx[done]] = False
            if n_live == 0 or t == max_new - 1:
                break
            inputs = choice if all_live else torch.full_like(cache.rows, self.pad_id).index_put_((live_idx,), choice)
            grow = t == cache.width  # token t goes into generated column t
            width = min(2 * cache.width, max_new) if grow else cache.width
            drop = n_live < len(cache.rows) and (grow or KVCache.compact_now(len(cache.rows), n_live, max_new - t - 1))
            if grow or drop:  # one copy of the cache does both
                keep = live.nonzero().squeeze(1) if drop else None
                cache.rebuild(keep, width)
                if keep is not None:
                    inputs, next_pos, live = inputs[keep], next_pos[keep], live[keep]
            cache.open(t)
            logits = dec.step(inputs, next_pos, t, cache)
            next_pos = next_pos + 1
        return tokens, logprobs, entropies, lengths, stopped

    def _hit_stop(self, row: torch.Tensor, stops: list[str]) -> bool:
        tail = self.tokenizer.decode(row[-16:].tolist(), skip_special_tokens=True)
        return any(s in tail for s in stops)
