"""What several test files share: a task an untrained tiny model can learn, its reward, an RL config."""

import json

from r1lab.config import RLConfig, SamplingConfig
from r1lab.data.example import Example, Task
from r1lab.engines import make_engine


class EchoTask(Task):
    """Easy task for an untrained model: the `digits` reward pays for digits, which the vocabulary has plenty of."""

    name = "easy"

    def examples(self, split):
        return [Example(id=str(i), prompt=f"Compute {i} + {i}", answer=str(2 * i)) for i in range(1, 9)]

    def score(self, answer, example):
        return float(answer == example.answer)


def digits(response, example=None, **_):
    return min(1.0, sum(c.isdigit() for c in response) / 6)


def rl_config(**kw) -> RLConfig:
    base = dict(steps=12, prompts_per_step=4, group_size=8, lr=3e-2, schedule="constant", warmup_steps=0,
                sampling=SamplingConfig(temperature=1.0, max_new_tokens=8), rewards={"digits": 1.0},
                checkpoint_every=0, log_samples=1, micro_batch_size=16, minibatch_size=32)
    base.update(kw)
    return RLConfig(**base)


def metrics_rows(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def train(model, tokenizer, cfg, run_dir, seed=0, engine=None, task=None):
    """train_rl as the pipeline runs it: the torch engine from the factory."""
    from r1lab.rl.loop import train_rl

    engine = engine or make_engine("torch", model, tokenizer, seed=seed)
    return train_rl(model, tokenizer, task or EchoTask(), cfg, run_dir, engine=engine, template="r1-zero", system="",
                    seed=seed)


# A whole recipe in seconds: a micro tiny-world base, RL and evaluation (CLI overrides).
MICRO = ["model=tinyworld", "pretrain.steps=6", "pretrain.corpus_docs=300", "pretrain.vocab_size=320",
         "pretrain.hidden_size=32", "pretrain.intermediate_size=64", "pretrain.layers=2", "pretrain.heads=4", "pretrain.census=4",
         "data.test_size=4", "rl.steps=3", "rl.prompts_per_step=2", "rl.group_size=3", "rl.checkpoint_every=2",
         "sampling.max_new_tokens=12", "eval.k=2"]


class InterruptedEngine:
    """An engine interrupted (as by Ctrl-C or a kill) in its `calls`-th generate call."""

    def __init__(self, engine, calls: int):
        self.engine, self.calls = engine, calls

    def generate(self, prompts, sampling, n=1, **kw):
        self.calls -= 1
        if self.calls == 0:
            raise KeyboardInterrupt
        return self.engine.generate(prompts, sampling, n, **kw)

    def __getattr__(self, name):  # tokenizer, pad_id, load_weights, rng_state, ...
        return getattr(self.engine, name)


class AnswerBook:
    """An environment in TRL's environment_factory shape, as a TRL user writes one: reset(**row) with the example's
    row, public methods as tools, reward() for the episode."""

    def reset(self, **row) -> str:
        self.answer, self.looked = row["answer"], 0
        return " (the book is open)"

    def look(self, page: str) -> str:
        """Reads a page of the answer book.

        Args:
            page: any page name.
        """
        self.looked += 1
        return f"the answer is {self.answer}"

    def reward(self) -> float:
        return float(self.looked)
