"""The search tree of MCTS over reasoning steps, with no model in it: nodes, PUCT selection, backup, the
best path. rl/mcts.py grows it with the policy and values its leaves with the value model.

A node is the state after its step (the tokens from the root to it); its statistics are AlphaZero's:
N (visits), W (value sum), Q = W / N, P (the prior the parent's expansion gave it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass(eq=False)
class Node:
    prior: float = 1.0  # P: the share of the parent's expansion this child got (rl/mcts.py says how)
    tokens: tuple[int, ...] = ()  # the step's token ids (the root's: none, its state is the prompt)
    parent: Node | None = None
    children: list[Node] = field(default_factory=list)
    visits: int = 0  # N
    value_sum: float = 0.0  # W
    terminal: bool = False  # the answer ended here (EOS, </answer>, the token budget): nothing to expand
    outcome: float | None = None  # a terminal node's rule score: its value every time it is reached
    estimate: float | None = None  # the value model's estimate when the node was made (None: not valued by it)
    logprob: float = 0.0  # the step's sampled log-probability (what the priors of its siblings are normalised from)
    expansions: int = 0  # times the policy was sampled from this node (more than once with progressive widening)

    @property
    def q(self) -> float:
        """Mean backed-up value; 0 before any visit (no optimism for unseen steps: values are scores in [0, 1])."""
        return self.value_sum / self.visits if self.visits else 0.0

    @property
    def expanded(self) -> bool:
        return bool(self.children)

    def add_child(self, tokens: tuple[int, ...], prior: float, logprob: float = 0.0) -> Node:
        child = Node(prior=prior, tokens=tuple(tokens), parent=self, logprob=logprob)
        self.children.append(child)
        return child

    def widens(self, widening: float) -> bool:
        """Progressive widening: an expanded node is sampled again while its expansions are fewer than
        floor(N ** widening) (0: once, never again; 0.5: a second time at N = 4, a third at N = 9, ...)."""
        return widening > 0 and not self.terminal and self.expansions < math.floor(self.visits ** widening)

    def path(self) -> list[Node]:
        """Root ... self."""
        nodes, node = [], self
        while node is not None:
            nodes.append(node)
            node = node.parent
        return nodes[::-1]

    def path_tokens(self) -> list[int]:
        """The completion so far: every step's tokens from the root to this node."""
        return [t for node in self.path() for t in node.tokens]

    def leaves(self) -> list[Node]:
        """The nodes under (and including) this one that have no children."""
        if not self.children:
            return [self]
        return [leaf for child in self.children for leaf in child.leaves()]


def puct(parent: Node, child: Node, c_puct: float) -> float:
    """AlphaZero's PUCT: Q(child) + c_puct * P(child) * sqrt(N(parent)) / (1 + N(child))."""
    return child.q + c_puct * child.prior * math.sqrt(parent.visits) / (1 + child.visits)


def select_child(node: Node, c_puct: float) -> Node:
    """The child with the highest PUCT score (the first among equals: the order they were sampled in)."""
    return max(node.children, key=lambda child: puct(node, child, c_puct))


def select(root: Node, c_puct: float, widening: float = 0.0) -> list[Node]:
    """The path root -> leaf that PUCT picks, stopping at a node that has no children (to expand), is terminal,
    or may have more children (progressive widening, Node.widens)."""
    path = [root]
    while path[-1].expanded and not path[-1].terminal and not path[-1].widens(widening):
        path.append(select_child(path[-1], c_puct))
    return path


def backup(path: list[Node], value: float) -> None:
    """A leaf's value counted once at every node of its path."""
    for node in path:
        node.visits += 1
        node.value_sum += value


def best_path(root: Node) -> list[Node]:
    """The search's answer: from the root, the most visited child each time (ties: the higher Q, then the
    first sampled) down to a node without children."""
    path = [root]
    while path[-1].children:
        children = path[-1].children
        path.append(max(children, key=lambda c: (c.visits, c.q, -children.index(c))))
    return path


def visit_distribution(node: Node) -> list[float]:
    """N(child) / sum N over the node's children (AlphaZero's policy target); [] for a leaf."""
    total = sum(c.visits for c in node.children)
    return [c.visits / total if total else 0.0 for c in node.children]


def subtree_outcomes(node: Node) -> list[float]:
    """The rule scores of the finished answers found under this node (itself included)."""
    return [leaf.outcome for leaf in node.leaves() if leaf.terminal and leaf.outcome is not None]
