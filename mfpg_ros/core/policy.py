"""Gaussian MLP policy with a state-independent log-std and a separate value net (its numpy inference twin:
numpy_policy.py), and loading decoded weights into it."""
from __future__ import annotations

import math

import torch
from torch import nn

from mfpg_ros.core.codec import ShapeError, Weights


def _mlp(sizes: list[int], out_gain: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        linear = nn.Linear(sizes[i], sizes[i + 1])
        last = i == len(sizes) - 2
        nn.init.orthogonal_(linear.weight, gain=out_gain if last else math.sqrt(2))
        nn.init.zeros_(linear.bias)
        layers.append(linear)
        if not last:
            layers.append(nn.Tanh())
    return nn.Sequential(*layers)


class ActorCritic(nn.Module):
    """SB3 MlpPolicy layout: separate pi and vf tanh MLPs, orthogonal init, learnable state-independent log-std."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: tuple[int, ...] = (64, 64),
                 log_std_init: float = 0.0):
        super().__init__()
        self.obs_dim, self.act_dim, self.hidden = obs_dim, act_dim, tuple(hidden)
        self.pi = _mlp([obs_dim, *hidden, act_dim], out_gain=0.01)
        self.vf = _mlp([obs_dim, *hidden, 1], out_gain=1.0)
        self.log_std = nn.Parameter(torch.full((act_dim,), float(log_std_init)))

    def mean(self, obs: torch.Tensor) -> torch.Tensor:
        return self.pi(obs)

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        return self.vf(obs).squeeze(-1)

    def log_prob(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Diagonal-Gaussian log-density of `actions` (unclipped samples), summed over action dims."""
        std = self.log_std.exp()
        z = (actions - self.mean(obs)) / std
        return (-0.5 * z.pow(2) - self.log_std - 0.5 * math.log(2 * math.pi)).sum(-1)

    def forward(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return self.log_prob(obs, actions)

    def actor_parameters(self) -> list[torch.nn.Parameter]:
        """The policy's parameters (log_std first, then pi), in named_parameters order; the critic's are vf.*"""
        return [p for n, p in self.named_parameters() if not n.startswith('vf.')]

    def arch(self) -> dict:
        return {'obs_dim': self.obs_dim, 'act_dim': self.act_dim, 'hidden': list(self.hidden)}


def load_into(model: ActorCritic, weights: Weights) -> ActorCritic:
    """Copy decoded weights into an existing model of the same architecture."""
    if model.arch() != weights.arch:
        raise ShapeError(f'model arch {model.arch()} differs from weights arch {weights.arch}')
    with torch.no_grad():
        model.load_state_dict({k: torch.from_numpy(v) for k, v in weights.state.items()}, strict=True)
    return model


def build_model(weights: Weights) -> ActorCritic:
    """A fresh ActorCritic carrying the decoded weights."""
    arch = weights.arch
    return load_into(ActorCritic(arch['obs_dim'], arch['act_dim'], tuple(arch['hidden'])), weights)
