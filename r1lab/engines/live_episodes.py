"""Episodes with turns on the torch engine's fast path: one decode loop for the whole batch, every tool result
prefilled into the live KV cache, no episode ever prefilled again (engines/episodes.py runs other engines turn
by turn over `generate_ids`, re-reading each episode from its prompt).

Rows diverge, so each has its own output cursor (`length`: tokens written, sampled or read) and its own place in
the cache (`fed`: tokens whose keys and values are in its slot; its RoPE position is prompt length + fed). A row
is LIVE (sampled every step), WAITING (its turn ended in a call: not sampled, its cache columns untouched and
still masked for it) or DONE. A call is handed to `respond` (in a worker thread) the step it closes; its result
is taken the next step, so the tools run while the other rows decode one step, and a row always resumes at the
same step whatever the tools' timing: a seed gives the same rollout. Every forward is one `FastDecoder.extend`:
each live row feeds what it has not fed yet, its last sampled token, or a call's last token and the result.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import torch

from r1lab.engines.base import Rollout, left_padded, sample_next
from r1lab.engines.fast_decoder import FastDecoder, KVCache

LIVE, WAITING, DONE = 0, 1, 2
TAIL = 16  # tokens decoded to look for a stop string or the call's close marker: each row's turn, at its end


class LiveEpisodes:
    """n episodes per prompt, each at most `budget` completion tokens (generated + results) and `max_turns`
    generations. respond(rows, turn_ids) -> one result per row: its ids, or None to end that episode."""

    def __init__(self, engine, dec: FastDecoder, prompt_ids: list[list[int]], sampling, n: int, respond, *,
                 close: str, max_turns: int, budget: int, uniforms: torch.Tensor | None):
        self.engine, self.dec, self.sampling, self.respond = engine, dec, sampling, respond
        self.close, self.max_turns, self.budget, self.uniforms = close, max_turns, budget, uniforms
        self.ends, self.pieces = [s for s in [*sampling.stop, close] if s], {}  # strings that end a turn; _may_end
        self.eos = set(engine.eos_ids.tolist())
        self.prompt_ids, self.n, N, dev = prompt_ids, n, len(prompt_ids) * n, dec.device
        self.tokens = torch.full((N, budget), engine.pad_id, dtype=torch.long)  # on the CPU: read by stop checks
        self.logprobs, self.entropies = torch.zeros((N, budget), device=dev), torch.zeros((N, budget), device=dev)
        self.trained = torch.zeros((N, budget), dtype=torch.bool)  # 0 on the results the policy read
        self.length, self.fed, self.turn_start = (torch.zeros(N, dtype=torch.long) for _ in range(3))
        self.turns = torch.ones(N, dtype=torch.long)  # generations begun
        self.state = torch.full((N,), LIVE, dtype=torch.int8)
        self.stopped = torch.zeros(N, dtype=torch.bool)  # ended by EOS, a stop string or a turn that was no call
        self.prompt_len = torch.tensor([len(p) for p in prompt_ids]).repeat_interleave(n)
        ids, attn = left_padded(prompt_ids, engine.pad_id, dev)
        self.cache = KVCache(dec, attn.bool(), n, budget)
        positions = (attn.cumsum(-1) - 1).clamp(min=0)
        self.logits = dec.prefill(ids, positions, attn.bool(), self.cache).repeat_interleave(n, 0)  # (live slots, V)
        self.rows = torch.arange(N)  # slot -> row, on the CPU (cache.rows on the device)

    def run(self) -> Rollout:
        """Each step: sample the live rows, take the results of the calls closed last step, hand out the calls
        closed now, feed the live rows; until no row is live and no call is out."""
        calls = None  # (rows, future of their results)
        with ThreadPoolExecutor(1) as pool:
            while True:
                closed = self._sample()
                if calls is not None:
                    self._resume(*calls)
                calls = (closed, pool.submit(self.respond, closed, self._turn_ids(closed))) if closed else None
                if calls is not None and not (self.state == LIVE).any():  # nothing to decode meanwhile: wait
                    self._resume(*calls)
                    calls = None
                if not (self.state == LIVE).any():
                    break
                self._forward()
        return self._rollout()

    def _sample(self) -> list[int]:
        """The next token of every live row (at its own output position); -> the rows whose turn just ended in a call."""
        live = (self.state[self.rows] == LIVE).nonzero().squeeze(1)  # slots: run() samples only when some are live
        rows, at = self.rows[live], self.length[self.rows[live]]
        draws = None if self.uniforms is None else self.uniforms[rows, at]  # a seed's draws, by output position
        choice, logprobs, entropies = sample_next(self.logits, self.sampling, self.engine.generator, draws)
        on_dev = (rows.to(self.dec.device), at.to(self.dec.device))
        self.logprobs[on_dev], self.entropies[on_dev] = logprobs, entropies
        choice = choice.cpu()
        self.tokens[rows, at], self.trained[rows, at] = choice, True
        self.length[rows] += 1
        return self._end_turns(rows, choice)

    def _end_turns(self, rows: torch.Tensor, choice: torch.Tensor) -> list[int]:
        """Ends the rows that wrote EOS or a stop string, or used up the budget; sets WAITING the ones that closed
        a call (turns left). Looks at each row's current turn only: an earlier call's marker stops nothing."""
        rows, choice, ends = rows.tolist(), choice.tolist(), self.length[rows].tolist()
        eos = [i for i, t in enumerate(choice) if t in self.eos]
        full = [i for i, end in enumerate(ends) if end >= self.budget]
        look = [i for i, t in enumerate(choice) if t not in self.eos and self._may_end(t)]  # decode these rows' turns
        tails = dict(zip(look, self.engine.tokenizer.batch_decode([self.tokens[rows[i], max(
            int(self.turn_start[rows[i]]), ends[i] - TAIL): ends[i]].tolist() for i in look], skip_special_tokens=True)))
        closed = []
        for i in sorted({*eos, *full, *look}):  # the others go on
            r, tail = rows[i], tails.get(i, "")
            if choice[i] in self.eos or any(s in tail for s in self.sampling.stop):
                self.state[r], self.stopped[r] = DONE, True
            elif ends[i] >= self.budget:
                self.state[r] = DONE
            elif self.turns[r] < self.max_turns and self.close in tail:
                self.state[r] = WAITING
                closed.append(r)
        return closed

    def _may_end(self, token: int) -> bool:
        """Whether `token` can complete a stop string or the close marker: its text holds the last character of
        one, or alone tells nothing (blank, part of a character). Only those rows' turns are decoded."""
        if token not in self.pieces:
            text = self.engine.tokenizer.decode([token])
            self.pieces[token] = not text.strip() or "\ufffd" in text or any(s[-1] in text for s in self.ends)
        return self.pieces[token]

    def _turn_ids(self, rows: list[int]) -> list[list[int]]:
        return [self.tokens[r, int(self.turn_start[r]): int(self.length[r])].tolist() for r in rows]

    def _resume(self, rows: list[int], results) -> None:
        """The calls of `rows` came back (results: a future of one result per row): each result's ids, cut to the
        budget, go into the row's output as read, not trained, and the row is live again. None ends the row."""
        results = results.result()
        assert len(results) == len(rows), "respond returns one result per row"
        for r, ids in zip(rows, results):
            if ids is None:  # the turn was no call after all
                self.state[r], self.stopped[r] = DONE, True
                continue
            at = int(self.length[r])
            ids = list(ids)[: self.budget - at]
            self.tokens[r, at: at + len(ids)] = torch.tensor(ids, dtype=torch.long)
            self.length[r] = at + len(ids)
            if at + len(ids) >= self.budget:
                self.state[r] = DONE
            else:
                self.state[r], self.turn_start[r] = LIVE, at + len(ids)
                self.turns[r] += 1

    def _forward(self) -> None:
        """Feeds every live row what it has not fed, one chunk per slot -> self.logits (live slots, V)."""
        self._fit_cache(int(self.length[self.rows[self.state[self.rows] == LIVE]].max()))
        rows, dev = self.rows, self.dec.device
        live = (self.state[rows] == LIVE).nonzero().squeeze(1)  # the slots that feed, in order
        chunk = self.length[rows[live]] - self.fed[rows[live]]
        later = torch.repeat_interleave(torch.arange(len(live)), chunk - 1)  # chunk of each later token
        at = torch.arange(len(later)) - (chunk - 1).cumsum(0)[later] + chunk[later]  # its place in the chunk, from 1
        slots = torch.cat([live, live[later]])  # (R,) first tokens, then the later ones (FastDecoder.extend)
        row, column = rows[slots], self.fed[rows[slots]] + torch.cat([torch.zeros_like(live), at])
        ids, positions = self.tokens[row, column], self.prompt_len[row] + column
        self.logits = self.dec.extend(*(x.to(dev) for x in (ids, positions, slots, column)), len(live), self.cache)
        self.fed[rows[live]] += chunk

    def _fit_cache(self, columns: int) -> None:
        """Widens the cache (doubling) to hold `columns` generated columns per slot, and drops the slots of ended
        rows when carrying them costs more than a copy."""
        cache, slots = self.cache, len(self.rows)
        width = cache.width
        while width < columns:
            width = min(2 * width, self.budget)
        keep = self.state[self.rows] != DONE
        kept = int(keep.sum())
        steps_left = self.budget - int(self.fed[self.rows[keep]].min()) if kept else 0
        drop = kept < slots and (width > cache.width or KVCache.compact_now(slots, kept, steps_left))
        if width > cache.width or drop:  # one copy of the cache does both
            index = keep.nonzero().squeeze(1) if drop else None
            cache.rebuild(index.to(self.dec.device) if drop else None, width)
            if drop:
                self.rows = self.rows[index]

    def _rollout(self) -> Rollout:
        T = max(1, int(self.length.max()))
        mask = torch.arange(T)[None, :] < self.length[:, None]
        trained = self.trained[:, :T] & mask
        tokens = self.tokens[:, :T].masked_fill(~mask, self.engine.pad_id)
        texts = self.engine.tokenizer.batch_decode([row[:n].tolist() for row, n in zip(tokens, self.length)],
                                                   skip_special_tokens=True)
        return Rollout(prompt_ids=[list(p) for p in self.prompt_ids], completion_ids=tokens, completion_mask=mask.long(),
                       logprobs=self.logprobs[:, :T].cpu() * trained, texts=texts,
                       truncated=(~self.stopped | (self.length >= self.budget)).tolist(), n=self.n,
                       entropies=self.entropies[:, :T].cpu() * trained, loss_mask=trained.long(),
                       turns=self.turns.tolist(), exact_logprobs=True)
