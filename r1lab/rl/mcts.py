"""Monte-Carlo tree search over reasoning steps for one problem (the R1 paper's failed attempt #2, docs/FAILED.md).

    root = the prompt
    until max_expansions expansions are spent:
        path = select(root, c_puct)                       rl/tree.py: PUCT down to a leaf
        leaf finished: back its rule score up again        (a known outcome; no expansion spent)
        else expand it: engine.generate_ids(prefix, n=branching), each sample one step:
             a sentence (up to '.') with step_tokens=0, else step_tokens tokens; the answer's end closes any step
             children = the distinct samples, prior = their sampled probabilities normalised over the children
             (progressive widening, mcts.widening > 0: an expanded node is sampled again once its visits grow)
             a child that finished (EOS, </answer>, the answer's token budget): value = the task's rule score
             any other: value = the value model's V(prefix + child)
             each child's value backed up along path + child
    best path = the most visited child at each node; if it stops before the answer's end, the policy finishes it
    (one sample), and the rule scores it: the search's answer and its accuracy

Compute is counted as the RL loop counts GRPO's: policy tokens generated (every expansion's samples and the
best path's completion) plus value-model tokens (every prefix fed to it: its whole length, prompt included,
since it keeps no cache).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

from r1lab.config.mcts import MCTSConfig
from r1lab.rl.outcome_values import prefix_values
from r1lab.rl.tree import Node, backup, best_path, select, subtree_outcomes

ANSWER_END = "</answer>"
SENTENCE_END = "."  # the tiny world's sentences; its tokenizer writes '.' as a token of its own


@dataclass
class SearchResult:
    root: Node
    prompt_ids: list[int]
    completion: list[int]  # the best path's completion, finished
    response: str  # its text, as the rewards see it (with the template's response prefix)
    score: float  # its rule score: the search's accuracy on this problem
    expansions: int = 0
    policy_tokens: int = 0
    value_tokens: int = 0
    finished: list[tuple[list[int], float]] = field(default_factory=list)  # every finished completion found, its outcome

    def value_errors(self) -> list[tuple[float, float]]:
        """(V estimate, mean outcome of the finished answers found under the node) for every node the value
        model valued that has a finished answer under it: how well V predicted what the search found."""
        pairs, stack = [], [self.root]
        while stack:
            node = stack.pop()
            stack.extend(node.children)
            outcomes = subtree_outcomes(node)
            if node.estimate is not None and outcomes:
                pairs.append((node.estimate, sum(outcomes) / len(outcomes)))
        return pairs


class TreeSearch:
    """The search of one problem at a time with `engine` (generate_ids: the torch engine) and `value_model`
    (outcome_values.py); judge(response, example) -> the rule score (rewards.rules.make_accuracy_reward)."""

    def __init__(self, engine, value_model, cfg: MCTSConfig, judge: Callable, eos_ids: set[int], pad_id: int):
        if not hasattr(engine, "generate_ids"):
            raise ValueError(f"an mcts stage continues a node from its token ids: {type(engine).__name__} has no "
                             "generate_ids; use rollout.engine=torch")
        self.engine, self.value_model, self.cfg, self.judge = engine, value_model, cfg, judge
        self.eos_ids, self.pad_id = eos_ids, pad_id
        self.budget = cfg.sampling.max_new_tokens  # a whole answer's tokens, as GRPO's completions get

    def run(self, prompt_ids: list[int], prefix: str, example) -> SearchResult:
        """Searches one problem; prefix: the response's text the template already wrote (r1-zero: '<think>')."""
        root = Node()
        out = SearchResult(root, prompt_ids, [], "", 0.0)
        simulations = 0
        while out.expansions < self.cfg.max_expansions and simulations < 4 * self.cfg.max_expansions:
            simulations += 1  # a search whose leaves are all finished stops here, not in an endless loop
            path = select(root, self.cfg.c_puct, self.cfg.widening)
            leaf = path[-1]
            if leaf.terminal:
                backup(path, leaf.outcome)  # a known outcome, counted again: the search's visits follow it
                continue
            for child in self._expand(leaf, out, prefix, example):
                backup(path + [child], child.outcome if child.terminal else child.estimate)
        self._answer(out, prefix, example)
        return out

    def _expand(self, leaf: Node, out: SearchResult, prefix: str, example) -> list[Node]:
        """`branching` samples of the next step from the leaf's state -> its new children (duplicates merged)."""
        so_far = leaf.path_tokens()
        room = self.budget - len(so_far)
        step = self.cfg.step_tokens or room
        stop = [*self.cfg.sampling.stop, ANSWER_END] + ([SENTENCE_END] if self.cfg.step_tokens == 0 else [])
        sampling = self.cfg.sampling.model_copy(update={"max_new_tokens": min(step, room), "stop": stop})
        rollout = self.engine.generate_ids([out.prompt_ids + so_far], sampling, n=self.cfg.branching)
        out.expansions += 1
        out.policy_tokens += int(rollout.lengths.sum())
        leaf.expansions += 1
        known = {c.tokens for c in leaf.children}  # a widened node: samples it already has are not new children
        children = []
        for row in range(self.cfg.branching):
            n = int(rollout.lengths[row])
            tokens = tuple(rollout.completion_ids[row, :n].tolist())
            if tokens not in known:
                known.add(tokens)
                children.append(leaf.add_child(tokens, 0.0, float(rollout.logprobs[row, :n].sum())))
        # P: the steps' sampled sequence probabilities normalised over the distinct children (a softmax of their log-probs)
        top = max(c.logprob for c in leaf.children)
        weights = [math.exp(c.logprob - top) for c in leaf.children]
        for child, weight in zip(leaf.children, weights):
            child.prior = weight / sum(weights)
        unfinished = []
        for child in children:
            completion = so_far + list(child.tokens)
            text = self.engine.tokenizer.decode(completion, skip_special_tokens=True)
            if (child.tokens and child.tokens[-1] in self.eos_ids) or ANSWER_END in text or len(completion) >= self.budget:
                child.terminal = True
                child.outcome = self.judge(prefix + text, example)
                out.finished.append((completion, child.outcome))
            else:
                unfinished.append(child)
        if unfinished:
            seqs = [out.prompt_ids + so_far + list(c.tokens) for c in unfinished]
            out.value_tokens += sum(map(len, seqs))
            for child, value in zip(unfinished, prefix_values(self.value_model, seqs, self.pad_id)):
                child.estimate = value
        return children

    def _answer(self, out: SearchResult, prefix: str, example) -> None:
        """The best path, finished by the policy when it stops short of the answer's end, and its rule score."""
        leaf = best_path(out.root)[-1]
        completion = leaf.path_tokens()
        if not leaf.terminal:
            sampling = self.cfg.sampling.model_copy(update={"max_new_tokens": self.budget - len(completion)})
            rollout = self.engine.generate_ids([out.prompt_ids + completion], sampling, n=1)
            n = int(rollout.lengths[0])
            out.policy_tokens += n
            completion = completion + rollout.completion_ids[0, :n].tolist()
        out.completion = completion
        out.response = prefix + self.engine.tokenizer.decode(completion, skip_special_tokens=True)
        out.score = leaf.outcome if leaf.terminal else self.judge(out.response, example)
        if not leaf.terminal:
            out.finished.append((completion, out.score))
