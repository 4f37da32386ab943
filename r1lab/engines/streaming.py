"""One completion streamed as text while it is sampled: what an interactive front end (r1lab chat) shows.

HF `generate` runs in a thread and hands its tokens to a `TextIteratorStreamer`; the caller iterates
over the decoded text. Generation ends at EOS, a stop string, max_new_tokens, once `stop_event` is set,
or when the caller closes the iterator (Ctrl-C, say), which also waits for the thread to finish.
"""

from __future__ import annotations

import threading
from typing import Iterator

import torch
from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

from r1lab.models.device import autocast


class _StopWhenSet(StoppingCriteria):
    """Ends every row at the next token once the event is set (from another thread)."""

    def __init__(self, event: threading.Event):
        self.event = event

    def __call__(self, input_ids, scores, **kwargs) -> torch.BoolTensor:
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


def _generate_kwargs(sampling, tokenizer) -> dict:
    """`sampling` (temperature, top_p, top_k, max_new_tokens, stop) as HF generate's arguments, every one
    explicit: generate() would otherwise add the model's own defaults (top_k=50, ...) unasked.
    temperature 0 is greedy decoding; top_k 0 is off."""
    kwargs = ({"do_sample": True, "temperature": sampling.temperature, "top_p": sampling.top_p, "top_k": sampling.top_k}
              if sampling.temperature > 0 else {"do_sample": False, "temperature": None, "top_p": None, "top_k": None})
    if sampling.stop:
        kwargs.update(stop_strings=list(sampling.stop), tokenizer=tokenizer)
    return kwargs


def stream_text(model, tokenizer, prompt: str, sampling, stop_event: threading.Event | None = None) -> Iterator[str]:
    """Yields the text of one sampled continuation of `prompt` as it is generated (special tokens such as
    EOS left out, as the engines' `generate` leaves them out of its texts). The prompt is tokenized as the
    engines do it (no special tokens added: a chat template writes its own), and max_new_tokens is cut to
    what the model's context leaves. An error in generation is raised here, after the text before it."""
    ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"].to(model.device)
    limit = getattr(model.config, "max_position_embeddings", None)
    max_new = sampling.max_new_tokens if limit is None else min(sampling.max_new_tokens, limit - ids.shape[1])
    if max_new <= 0:
        raise ValueError(f"a prompt of {ids.shape[1]} tokens leaves no room to generate in the model's context of {limit}")
    stop_event = stop_event or threading.Event()
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    failure: list[BaseException] = []

    def run() -> None:
        try:
            with autocast(model):  # autocast's state is per thread: entered in the one that runs the model
                model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new,
                               pad_token_id=tokenizer.pad_token_id, streamer=streamer,
                               stopping_criteria=StoppingCriteriaList([_StopWhenSet(stop_event)]),
                               **_generate_kwargs(sampling, tokenizer))
        except BaseException as e:  # raised in the caller's thread below; end the stream so it doesn't wait forever
            failure.append(e)
            streamer.end()

    thread = threading.Thread(target=run, name="r1lab-stream", daemon=True)
    thread.start()
    try:
        yield from streamer
    finally:  # the normal end, an error, Ctrl-C or close(): in every case the thread stops before we return
        stop_event.set()
        thread.join()
    if failure:
        raise failure[0]
