"""Gaussian MLP policy with a state-independent log-std, a separate value net, and a numpy inference twin."""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn


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


class NumpyPolicy:
    """Inference-only copy of the actor in numpy (about 5x cheaper than torch at batch 1; used on hot paths)."""

    def __init__(self, model: ActorCritic):
        self._load(model.state_dict())

    @classmethod
    def from_state(cls, state: dict[str, torch.Tensor]) -> 'NumpyPolicy':
        """From an ActorCritic state_dict (e.g. decoded weights, whose names and shapes the codec checked),
        without building the torch model: its initialisation costs several times the load."""
        policy = cls.__new__(cls)
        policy._load(state)
        return policy

    def _load(self, state: dict[str, torch.Tensor]) -> None:
        layers = sorted({int(name.split('.')[1]) for name in state if name.startswith('pi.')})
        self.layers = [(state[f'pi.{i}.weight'].double().numpy().T.copy(),
                        state[f'pi.{i}.bias'].double().numpy().copy()) for i in layers]
        self.std = state['log_std'].double().exp().numpy().copy()

    def mean(self, obs: np.ndarray) -> np.ndarray:
        h = np.asarray(obs, dtype=np.float64)
        for i, (w, b) in enumerate(self.layers):
            h = h @ w + b
            if i < len(self.layers) - 1:
                np.tanh(h, out=h)
        return h

    def sample(self, obs: np.ndarray, eps: np.ndarray) -> np.ndarray:
        """a = mu(s) + sigma * eps (reparameterised; the caller records eps)."""
        return self.mean(obs) + self.std * eps
