"""Episodes with turns: generate until a tool call closes (or EOS, or the episode's token budget), run the calls,
append each result as token ids, and generate on, for up to `max_turns` turns.

    rollout = run_episodes(engine, prompt_ids, sampling, n, toolbox, max_turns=3, budget=128)

Any engine with `generate_ids` runs episodes: each turn it continues every live episode from exactly the ids it
has (prompt + everything generated + results), so generated text is never tokenised again (a known source of
drift between what was sampled and what is trained). The episodes of a batch advance together, one turn at a
time; between turns their calls run at once (ToolBox.run_many), so one slow tool holds no other episode's
decoding back beyond the turn. A result's tokens are in the completion (the policy reads them) but out of its
loss mask (it did not write them): rl/step.py trains only the tokens the policy sampled.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from r1lab.engines.base import Rollout, pad_id
from r1lab.tools.box import ToolBox
from r1lab.tools.calls import PLAIN, parse_call

MAX_RESULT_TOKENS = 48  # a result longer than this is cut: an episode's budget is for the policy's tokens


@dataclass
class Turns:
    """How a run's episodes take turns: its tools, at most `max_turns` generations, the call format."""

    toolbox: ToolBox
    max_turns: int
    markers: tuple[str, str, str, str] = PLAIN
    style: str = "plain"

    def rollout(self, engine, prompts: list[str], sampling, n: int) -> Rollout:
        """n episodes per prompt (text), each within sampling.max_new_tokens tokens."""
        prompt_ids = [engine.tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
        return run_episodes(engine, prompt_ids, sampling, n, self.toolbox, max_turns=self.max_turns,
                            budget=sampling.max_new_tokens, markers=self.markers, style=self.style)


def run_episodes(engine, prompt_ids: list[list[int]], sampling, n: int, toolbox: ToolBox, *, max_turns: int,
                 budget: int, markers: tuple[str, str, str, str] = PLAIN, style: str = "plain",
                 max_result_tokens: int = MAX_RESULT_TOKENS) -> Rollout:
    """n episodes per prompt; each holds at most `budget` completion tokens (generated + results) and at most
    `max_turns` generations. `markers`: call open / close, result open / close (tools/calls.py)."""
    tokenizer = engine.tokenizer
    rows = [list(p) for p in prompt_ids for _ in range(n)]
    ids, logprobs, trained = ([[] for _ in rows] for _ in range(3))
    calls, errors, turns, truncated = [0] * len(rows), [0] * len(rows), [0] * len(rows), [False] * len(rows)
    live, exact = list(range(len(rows))), True
    for turn in range(max_turns):
        room = max(budget - len(ids[i]) for i in live)
        stops = [*sampling.stop, markers[1]] if turn < max_turns - 1 else list(sampling.stop)
        out = engine.generate_ids([rows[i] + ids[i] for i in live], sampling.model_copy(
            update={"max_new_tokens": min(sampling.max_new_tokens, room), "stop": stops}), n=1)
        exact = exact and out.exact_logprobs
        waiting = []  # (episode, call) of the episodes whose turn ended in a call
        for row, i in enumerate(live):
            length = min(int(out.completion_mask[row].sum()), budget - len(ids[i]))
            new = out.completion_ids[row, :length].tolist()
            ids[i] += new
            logprobs[i] += out.logprobs[row, :length].tolist()
            trained[i] += [1] * length
            turns[i] += 1
            text = tokenizer.decode(new)
            if turn < max_turns - 1 and text.rstrip().endswith(markers[1]) and len(ids[i]) < budget:
                inside = text.rstrip()[: -len(markers[1])].rpartition(markers[0])[2]
                waiting.append((i, parse_call(inside, toolbox.parameters, style)))
            else:
                truncated[i] = bool(out.truncated[row]) or len(ids[i]) >= budget
        results = toolbox.run_many([call for _, call in waiting])
        live = []
        for (i, call), result in zip(waiting, results):
            calls[i] += 1
            errors[i] += result.startswith("error:")
            appended = _result_ids(tokenizer, result, markers, max_result_tokens)[: budget - len(ids[i])]
            ids[i] += appended
            logprobs[i] += [0.0] * len(appended)
            trained[i] += [0] * len(appended)
            if len(ids[i]) < budget:
                live.append(i)
            else:
                truncated[i] = True
        if not live:
            break
    return _rollout(tokenizer, prompt_ids, n, ids, logprobs, trained, truncated, calls, errors, turns, exact)


def _result_ids(tokenizer, result: str, markers, max_tokens: int) -> list[int]:
    """A tool's result as the policy will read it: `<result>...</result>`, its text cut to `max_tokens`."""
    head, body, tail = (tokenizer(text, add_special_tokens=False)["input_ids"] for text in (markers[2], result, markers[3]))
    return head + body[:max_tokens] + tail


def _rollout(tokenizer, prompt_ids, n, ids, logprobs, trained, truncated, calls, errors, turns, exact) -> Rollout:
    T = max(1, max(map(len, ids)))
    pad = pad_id(tokenizer)

    def padded(rows, value, dtype):  # (N, T)
        return torch.tensor([r + [value] * (T - len(r)) for r in rows], dtype=dtype)

    completion_mask = padded([[1] * len(r) for r in ids], 0, torch.long)
    return Rollout(prompt_ids=[list(p) for p in prompt_ids], completion_ids=padded(ids, pad, torch.long),
                   completion_mask=completion_mask, logprobs=padded(logprobs, 0.0, torch.float),
                   texts=tokenizer.batch_decode(ids, skip_special_tokens=True), truncated=truncated, n=n,
                   loss_mask=padded(trained, 0, torch.long), tool_calls=calls, tool_errors=errors, turns=turns,
                   exact_logprobs=exact)
