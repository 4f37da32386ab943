"""The settings of an mcts stage (the R1 paper's failed attempt #2, docs/FAILED.md): one validated class,
changed from a recipe as `mcts.*` (run-wide) or a stage's `mcts:` block, as rl.* is."""

from __future__ import annotations

from pydantic import Field

from r1lab.config.base import Strict
from r1lab.config.settings import SamplingConfig


class MCTSConfig(Strict):
    """Monte-Carlo tree search over reasoning steps, guided by a value model (rl/mcts.py), and training on its
    results (rl/mcts_loop.py): the policy on each problem's best path when it is right, the value model on the
    outcomes of the finished paths the search found."""

    steps: int = Field(20, gt=0, description="training steps (each: a search on prompts_per_step problems, one update)")
    compute_budget: int = Field(0, ge=0, description="stop after the step whose cumulative compute_tokens (policy tokens "
                                "generated + value-model tokens) reaches this, if before `steps` (0 = off): equal compute "
                                "against an rl stage's compute_tokens")
    prompts_per_step: int = Field(8, gt=0, description="problems searched per step (P)")
    c_puct: float = Field(1.5, ge=0, description="PUCT's exploration weight: Q + c_puct * P * sqrt(N_parent) / (1 + N)")
    branching: int = Field(3, gt=0, description="children sampled from the policy per expansion (duplicates merged)")
    max_expansions: int = Field(12, gt=0, description="expansions (policy calls) per problem: the search's cap")
    widening: float = Field(0.5, ge=0, lt=1, description="progressive widening: an expanded node is sampled again "
                            "(another `branching` steps) while its expansions < floor(visits ** widening); 0 = never")
    step_tokens: int = Field(0, ge=0, description="what a step is: 0 = a sentence (up to '.' or the answer's end), "
                             "N = N tokens")
    lr: float = Field(1e-4, gt=0, description="policy learning rate (cross-entropy on correct best paths)")
    value_lr: float = Field(3e-4, gt=0, description="value model learning rate (regression on outcomes)")
    value_updates: int = Field(2, gt=0, description="value-model optimizer steps per training step, on the step's finished paths")
    max_grad_norm: float = Field(1.0, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    checkpoint_every: int = Field(5, ge=0, description="0 = only at the end")
    log_samples: int = Field(2, ge=0, description="best paths written to samples.jsonl per step")
    sampling: SamplingConfig = Field(default_factory=SamplingConfig, description="changes to the run's `sampling` for "
                                     "expansions; max_new_tokens is a whole answer's token budget, as in rl")
