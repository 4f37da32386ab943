"""Episodes with turns: generate until a tool call closes (or EOS, or the episode's token budget), run the calls,
append each result as token ids, and generate on, for up to `max_turns` turns.

    rollout = run_episodes(engine, prompt_ids, sampling, n, toolbox, max_turns=3, budget=128)

An episode always goes on from exactly the ids it has (prompt + everything generated + results), so generated
text is never tokenised again (a known source of drift between what was sampled and what is trained). The torch
engine's fast path runs the whole batch in one decode loop (engines/live_episodes.py): a row that closes a call
waits while the others decode, its call runs at once with the others closed that step (ToolBox.run_many), and
its result is prefilled into the live KV cache. Any other engine (vLLM, which caches prefixes itself; the torch
engine's plain path) runs turn by turn over `generate_ids`: the episodes advance together, one turn at a time,
their calls run at once between turns. A result's tokens are in the completion (the policy reads them) but out
of its loss mask (it did not write them): rl/step.py trains only the tokens the policy sampled.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from r1lab.data.example import Example
from r1lab.engines.base import Rollout, pad_id
from r1lab.tools.box import ToolBox, environment_tools, load_environment, load_tools, run_calls
from r1lab.tools.calls import CHAT, PLAIN, parse_call

MAX_RESULT_TOKENS = 48  # a result longer than this is cut: an episode's budget is for the policy's tokens


@dataclass
class Turns:
    """How a run's episodes take turns: its tools, at most `max_turns` generations, the call format; with an
    `environment` (a class in TRL's environment_factory shape, rl.environment), an instance of it per episode."""

    toolbox: ToolBox
    max_turns: int
    markers: tuple[str, str, str, str] = PLAIN
    style: str = "plain"
    environment: type | None = None

    @classmethod
    def of(cls, toolbox: ToolBox, max_turns: int, template: str, environment: type | None = None) -> "Turns":
        """A run's turns: the plain format, or with template=chat the chat template's (Qwen's <tool_call> JSON)."""
        chat = template == "chat"
        return cls(toolbox, max_turns, CHAT if chat else PLAIN, "chat" if chat else "plain", environment)

    @classmethod
    def of_settings(cls, tools: list[str], environment: str | None, max_turns: int, template: str) -> "Turns | None":
        """A run's turns from its settings (rl.tools, rl.environment, rollout.max_turns), None without either."""
        if not (tools or environment):
            return None
        return cls.of(ToolBox(load_tools(tools)), max_turns, template, load_environment(environment) if environment else None)

    def prompt_tools(self, template: str) -> list[dict] | None:
        """What a prompt shows of the tools: their schemas in a chat template's `tools=`, nothing in the others."""
        return self.schemas if template == "chat" else None

    @property
    def schemas(self) -> list[dict]:
        """The tools' schemas (an environment's too), for a chat template's `tools=`."""
        tools = [*self.toolbox.tools.values(), *(environment_tools(self.environment()) if self.environment else [])]
        return [tool.schema for tool in tools]

    def markers_for(self, tokenizer) -> tuple[str, str, str, str]:
        """Call open / close, result open / close. A chat template's results are its own `tool` turn: the text it
        writes between an assistant turn and the next around a tool's result (`chat_result_markers`)."""
        return self.markers if self.style != "chat" else (*self.markers[:2], *chat_result_markers(tokenizer))

    def rollout(self, engine, prompts: list[str], sampling, n: int, examples: list[Example] | None = None) -> Rollout:
        """n episodes per prompt (text), each within sampling.max_new_tokens tokens. With an environment, each
        episode's instance is reset with its example's row (`examples`, one per prompt), whose first observation
        (if it returns one) ends the prompt; its methods join the tools, and its reward() is the episode's
        `environment_rewards` entry (the 'environment' reward reads it)."""
        envs, boxes = None, self.toolbox
        if self.environment is not None:
            if examples is None:
                raise ValueError("episodes with an environment need each prompt's example: its row goes to reset(**row)")
            envs = [self.environment() for _ in range(len(prompts) * n)]
            prompts = [p + _observation(envs[i * n : (i + 1) * n], ex) for i, (p, ex) in enumerate(zip(prompts, examples))]
            boxes = [ToolBox([*self.toolbox.tools.values(), *environment_tools(env)], self.toolbox.time_limit_s,
                             self.toolbox.max_result_chars) for env in envs]
        prompt_ids = [engine.tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
        rollout = run_episodes(engine, prompt_ids, sampling, n, boxes, max_turns=self.max_turns,
                               budget=sampling.max_new_tokens, markers=self.markers_for(engine.tokenizer), style=self.style)
        if envs is not None:
            rollout.environment_rewards = [float(env.reward()) if callable(getattr(env, "reward", None)) else None
                                           for env in envs]
        return rollout


def chat_result_markers(tokenizer) -> tuple[str, str]:
    r"""(before, after) a tool's result in the text a chat template writes between an assistant turn that ends in a
    call and the next assistant turn: for Qwen's, "<|im_end|>\n<|im_start|>user\n<tool_response>\n" and
    "\n</tool_response><|im_end|>\n<|im_start|>assistant\n". Read off the template itself, so an episode's ids
    are what the template writes for a conversation with a `tool` message (what `r1lab serve` renders)."""
    call, result = "\x00CALL\x00", "\x00RESULT\x00"  # sentinels no template writes
    messages = [{"role": "user", "content": "?"}, {"role": "assistant", "content": call},
                {"role": "tool", "content": result, "tool_call_id": "0"}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    if call not in text or result not in text:
        raise ValueError("the tokenizer's chat template does not write an assistant turn and a tool's result (a `tool` "
                         "message): it cannot run episodes with tools")
    before, _, after = text.split(call, 1)[1].partition(result)
    return before, after


def _observation(envs: list, example: Example) -> str:
    """Resets a prompt's episodes' environments with its row; the first one's observation (a group shares its prompt)."""
    observations = [env.reset(**{"prompt": example.prompt, "answer": example.answer, **example.fields()}) for env in envs]
    return observations[0] if isinstance(observations[0], str) else ""


def run_episodes(engine, prompt_ids: list[list[int]], sampling, n: int, toolbox: ToolBox | list[ToolBox], *, max_turns: int,
                 budget: int, markers: tuple[str, str, str, str] = PLAIN, style: str = "plain",
                 max_result_tokens: int = MAX_RESULT_TOKENS) -> Rollout:
    """n episodes per prompt; each holds at most `budget` completion tokens (generated + results) and at most
    `max_turns` generations. `markers`: call open / close, result open / close (tools/calls.py). `toolbox`: one for
    every episode, or one per episode (rows in prompt order, n per prompt: environments). An engine with
    `run_episodes` (engines/base.py Engine: the torch engine's fast path) runs them in one decode loop, results
    prefilled into its live KV cache; any other, or one that declines, turn by turn over generate_ids."""
    N, tokenizer = len(prompt_ids) * n, engine.tokenizer
    calls, errors = [0] * N, [0] * N
    boxes = toolbox if isinstance(toolbox, list) else [toolbox] * N
    # The result markers' ids, once. Encoding on this thread first also settles a fast tokenizer's truncation state:
    # `answer` encodes on a worker thread beside the engine's decodes, and resetting it there would clash.
    head, tail = (tokenizer(m, add_special_tokens=False)["input_ids"] for m in markers[2:])

    def answer(rows: list[int], texts: list[str]) -> list[list[int] | None]:
        """The turns of `rows` (their texts) ended at a call's close marker: their results' ids, run at once
        (`<result>...</result>`, the text cut to max_result_tokens); None for a turn that was no call after all."""
        found = [(i, _call_in(text, boxes[i], markers, style)) for i, text in zip(rows, texts)]
        made = [(i, call) for i, call in found if call is not None]
        results = run_calls([(boxes[i], call) for i, call in made])
        bodies = tokenizer(results, add_special_tokens=False)["input_ids"] if results else []
        out = dict.fromkeys(rows)
        for (i, _), result, body in zip(made, results, bodies):
            calls[i] += 1
            errors[i] += result.startswith("error:")
            out[i] = head + body[:max_result_tokens] + tail
        return [out[i] for i in rows]

    live, rollout = getattr(engine, "run_episodes", None), None
    if live is not None:
        rollout = live(prompt_ids, sampling.model_copy(update={"max_new_tokens": budget}), n,
                       lambda rows, ids: answer(rows, tokenizer.batch_decode(ids)), close=markers[1],
                       max_turns=max_turns)
    if rollout is None:
        rollout = _turn_by_turn(engine, prompt_ids, sampling, n, answer, max_turns, budget, markers[1])
    rollout.tool_calls, rollout.tool_errors = calls, errors
    return rollout


def _call_in(text: str, toolbox: ToolBox, markers, style: str):
    """The call a turn ends with (tools/calls.py ToolCall, maybe one with an error), or None if it ends in none."""
    if not text.rstrip().endswith(markers[1]):
        return None
    return parse_call(text.rstrip()[: -len(markers[1])].rpartition(markers[0])[2], toolbox.parameters, style)


def _turn_by_turn(engine, prompt_ids, sampling, n: int, answer, max_turns: int, budget: int, close: str) -> Rollout:
    """Episodes over generate_ids: each turn continues every live episode from all its ids (prompt + episode so far)."""
    tokenizer = engine.tokenizer
    rows = [list(p) for p in prompt_ids for _ in range(n)]
    ids, logprobs, trained = ([[] for _ in rows] for _ in range(3))
    turns, truncated = [0] * len(rows), [False] * len(rows)
    live, exact = list(range(len(rows))), True
    for turn in range(max_turns):
        room = max(budget - len(ids[i]) for i in live)
        stops = [*sampling.stop, close] if turn < max_turns - 1 else list(sampling.stop)
        out = engine.generate_ids([rows[i] + ids[i] for i in live], sampling.model_copy(
            update={"max_new_tokens": min(sampling.max_new_tokens, room), "stop": stops}), n=1)
        exact = exact and out.exact_logprobs
        waiting = []  # the episodes whose turn ended at a call's close marker, with the turn's text
        for row, i in enumerate(live):
            length = min(int(out.completion_mask[row].sum()), budget - len(ids[i]))
            new = out.completion_ids[row, :length].tolist()
            ids[i] += new
            logprobs[i] += out.logprobs[row, :length].tolist()
            trained[i] += [1] * length
            turns[i] += 1
            text = tokenizer.decode(new)
            if turn < max_turns - 1 and text.rstrip().endswith(close) and len(ids[i]) < budget:
                waiting.append((i, text))
            else:
                truncated[i] = bool(out.truncated[row]) or len(ids[i]) >= budget
        results = answer([i for i, _ in waiting], [text for _, text in waiting])
        live = []
        for (i, _), appended in zip(waiting, results):
            appended = appended[: budget - len(ids[i])]
            ids[i] += appended
            logprobs[i] += [0.0] * len(appended)
            trained[i] += [0] * len(appended)
            if len(ids[i]) < budget:
                live.append(i)
            else:
                truncated[i] = True
        if not live:
            break
    return _rollout(tokenizer, prompt_ids, n, ids, logprobs, trained, truncated, turns, exact)


def _rollout(tokenizer, prompt_ids, n, ids, logprobs, trained, truncated, turns, exact) -> Rollout:
    T = max(1, max(map(len, ids)))
    pad = pad_id(tokenizer)

    def padded(rows, value, dtype):  # (N, T)
        return torch.tensor([r + [value] * (T - len(r)) for r in rows], dtype=dtype)

    completion_mask = padded([[1] * len(r) for r in ids], 0, torch.long)
    return Rollout(prompt_ids=[list(p) for p in prompt_ids], completion_ids=padded(ids, pad, torch.long),
                   completion_mask=completion_mask, logprobs=padded(logprobs, 0.0, torch.float),
                   texts=tokenizer.batch_decode(ids, skip_special_tokens=True), truncated=truncated, n=n,
                   loss_mask=padded(trained, 0, torch.long), turns=turns,
                   exact_logprobs=exact)
