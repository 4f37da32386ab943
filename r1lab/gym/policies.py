"""The control policies: a categorical one for discrete actions, a Gaussian one for continuous torques.

Both take observations already normalised (ObsNorm) and give, for a batch of them, sampled actions with their
log-probabilities, or the log-probabilities and entropies of given actions. Shapes: S observations of size D,
actions (S,) for a categorical policy, (S, A) for a Gaussian one.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

LOG_2PI = math.log(2 * math.pi)


def mlp(sizes: list[int], out_gain: float) -> nn.Sequential:
    """Tanh MLP with orthogonal init (CleanRL); a small out_gain starts the policy near uniform / near its mean 0."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        last = i == len(sizes) - 2
        lin = nn.Linear(a, b)
        nn.init.orthogonal_(lin.weight, out_gain if last else np.sqrt(2))
        nn.init.zeros_(lin.bias)
        layers += [lin] if last else [lin, nn.Tanh()]
    return nn.Sequential(*layers)


class ObsNorm(nn.Module):
    """Running mean and variance of the observations seen in training (CleanRL's NormalizeObservation), kept as
    buffers so that policy.pt carries them; observations are normalised by them and clipped to +-clip."""

    def __init__(self, dim: int, enabled: bool, clip: float = 10.0):
        super().__init__()
        self.enabled, self.clip = enabled, clip
        self.register_buffer("mean", torch.zeros(dim, dtype=torch.float64))
        self.register_buffer("var", torch.ones(dim, dtype=torch.float64))
        self.register_buffer("count", torch.tensor(1e-4, dtype=torch.float64))

    def forward(self, obs: np.ndarray, update: bool = False) -> torch.Tensor:
        """obs (S, D) -> normalised (S, D) float32; `update` first folds the batch into the statistics.
        In numpy on views of the buffers: one env step's worth of small torch ops cost more than the env step."""
        x = np.asarray(obs, dtype=np.float64)
        if not self.enabled:
            return torch.as_tensor(x, dtype=torch.float32)
        mean, var, count = self.mean.numpy(), self.var.numpy(), self.count.numpy()  # views: writes reach the buffers
        if update:  # parallel-variance merge of the running and the batch moments (Chan et al.)
            n, batch_mean, batch_var = x.shape[0], x.mean(0), x.var(0)
            delta, total = batch_mean - mean, count + n
            var[:] = (var * count + batch_var * n + delta**2 * count * n / total) / total
            mean += delta * n / total
            count[...] = total
        return torch.as_tensor(np.clip((x - mean) / np.sqrt(var + 1e-8), -self.clip, self.clip), dtype=torch.float32)


class CategoricalPolicy(nn.Module):
    def __init__(self, obs_dim: int, n_actions: int, hidden: list[int], normalize: bool):
        super().__init__()
        self.obs_norm = ObsNorm(obs_dim, normalize)
        self.net = mlp([obs_dim, *hidden, n_actions], 0.01)

    @torch.no_grad()
    def sample(self, obs: torch.Tensor, greedy: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised obs (S, D) -> actions (S,) and their log-probabilities (S,)."""
        logits = self.net(obs)
        actions = logits.argmax(-1) if greedy else torch.multinomial(logits.softmax(-1), 1).squeeze(-1)
        return actions, logits.log_softmax(-1).gather(-1, actions[:, None]).squeeze(-1)

    def env_actions(self, actions: torch.Tensor) -> np.ndarray:
        return actions.numpy()

    def logp_entropy(self, obs: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logp_all = self.net(obs).log_softmax(-1)  # (S, n_actions)
        return logp_all.gather(-1, actions[:, None]).squeeze(-1), -(logp_all.exp() * logp_all).sum(-1)


class GaussianPolicy(nn.Module):
    """A diagonal Gaussian over pre-squash actions u: the MLP gives the mean, one learned log-std per action
    dimension does not depend on the state (as CleanRL's and OpenAI baselines' PPO).

    squash "clip": the env gets u clipped to the action box; log-probs are the Gaussian's of u (CleanRL).
    squash "tanh": the env gets low + (tanh(u) + 1) / 2 * (high - low), and the log-prob is corrected by the
    change of variables: log p(a) = log N(u) - sum log(1 - tanh(u)^2) - sum log((high - low) / 2). The batch stores u,
    so no atanh is ever taken. The entropy is the Gaussian's (the squashed one has no closed form).
    """

    def __init__(self, obs_dim: int, low: np.ndarray, high: np.ndarray, hidden: list[int], normalize: bool, squash: str):
        super().__init__()
        self.obs_norm = ObsNorm(obs_dim, normalize)
        self.mean_net = mlp([obs_dim, *hidden, len(low)], 0.01)
        self.log_std = nn.Parameter(torch.zeros(len(low)))
        self.squash = squash
        self.register_buffer("low", torch.as_tensor(low, dtype=torch.float32))
        self.register_buffer("high", torch.as_tensor(high, dtype=torch.float32))

    def gaussian_logp(self, mean: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """log N(u; mean, exp(log_std)^2) summed over the action dimensions: (S, A) -> (S,)."""
        z = (u - mean) / self.log_std.exp()
        return (-0.5 * z**2 - self.log_std - 0.5 * LOG_2PI).sum(-1)

    def squash_correction(self, u: torch.Tensor) -> torch.Tensor:
        """log |d a / d u| summed over dimensions (S,): what tanh squashing subtracts from the Gaussian's log-prob.
        log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u)), stable for large |u|."""
        log_dtanh = 2 * (math.log(2) - u - nn.functional.softplus(-2 * u))
        return (log_dtanh + torch.log((self.high - self.low) / 2)).sum(-1)

    def log_prob(self, mean: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        logp = self.gaussian_logp(mean, u)
        return logp - self.squash_correction(u) if self.squash == "tanh" else logp

    def entropy(self, batch: int) -> torch.Tensor:
        return (0.5 + 0.5 * LOG_2PI + self.log_std).sum().expand(batch)

    @torch.no_grad()
    def sample(self, obs: torch.Tensor, greedy: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised obs (S, D) -> pre-squash actions u (S, A) and their log-probabilities (S,)."""
        mean = self.mean_net(obs)
        u = mean if greedy else mean + self.log_std.exp() * torch.randn_like(mean)
        return u, self.log_prob(mean, u)

    def env_actions(self, u: torch.Tensor) -> np.ndarray:
        """What the env is given for the pre-squash actions u (S, A)."""
        if self.squash == "tanh":
            return (self.low + (torch.tanh(u) + 1) / 2 * (self.high - self.low)).numpy()
        return torch.maximum(torch.minimum(u, self.high), self.low).numpy()

    def logp_entropy(self, obs: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.log_prob(self.mean_net(obs), u), self.entropy(len(u))


def make_policy(env, hidden: list[int], normalize: bool, squash: str) -> CategoricalPolicy | GaussianPolicy:
    obs_dim = env.observation_space.shape[0]
    space = env.action_space
    if hasattr(space, "n"):
        return CategoricalPolicy(obs_dim, int(space.n), hidden, normalize)
    return GaussianPolicy(obs_dim, space.low, space.high, hidden, normalize, squash)
