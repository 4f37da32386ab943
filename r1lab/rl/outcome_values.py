"""The tree search's value model: PPO's critic (rl/ppo.py ValueModel: a copy of the policy's transformer and a
scalar head) read at a prefix's last token, and trained by regression on the outcomes of finished paths.

V(prefix) estimates the rule score that the search will find below that state. A finished path of outcome r
teaches every one of its prefixes (each state before one of its completion tokens) that r: one forward pass
over the whole path gives them all.

Shapes: n sequences, L the longest (prompt + completion) in tokens.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from r1lab.models.device import autocast


def right_padded(seqs: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """-> ids, attention mask (n, L), padded on the right: each sequence's tokens keep positions 0..len-1."""
    width = max(map(len, seqs))
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
    return ids.to(device), mask.to(device)


def token_values(value_model, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(n, L): at position t, V of the prefix ids[:, : t + 1]."""
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with autocast(value_model):
        hidden = value_model.body(input_ids=ids, attention_mask=mask, position_ids=positions).last_hidden_state
    head = value_model.head  # in fp32 whatever the body computes in, as ValueModel.forward does
    return F.linear(hidden.float(), head.weight.float(), head.bias.float()).squeeze(-1)


@torch.no_grad()
def prefix_values(value_model, seqs: list[list[int]], pad_id: int) -> list[float]:
    """V of each whole sequence (its last token's value), in one batched forward pass."""
    was_training = value_model.training
    value_model.eval()
    ids, mask = right_padded(seqs, pad_id, value_model.device)
    values = token_values(value_model, ids, mask)  # (n, L)
    value_model.train(was_training)
    last = mask.sum(1) - 1  # (n,)
    return values.gather(1, last[:, None]).squeeze(1).tolist()


def outcome_loss(value_model, paths: list[tuple[list[int], int, float]], pad_id: int) -> torch.Tensor:
    """Mean squared error of V against the path's outcome over every prefix of every path: paths are
    (prompt + completion ids, prompt length, outcome); the prefixes are the states before each completion token."""
    ids, mask = right_padded([p for p, _, _ in paths], pad_id, value_model.device)
    values = token_values(value_model, ids, mask)  # (n, L)
    position = torch.arange(ids.size(1), device=ids.device)[None, :]  # (1, L)
    starts = torch.tensor([n - 1 for _, n, _ in paths], device=ids.device)[:, None]  # the prompt's last token
    ends = (mask.sum(1) - 1)[:, None]  # the last token: a finished state, whose value the rule gives
    states = ((position >= starts) & (position < ends)).float()  # (n, L)
    targets = torch.tensor([r for _, _, r in paths], device=ids.device, dtype=values.dtype)[:, None]
    return (((values - targets) ** 2) * states).sum() / states.sum().clamp(min=1)
