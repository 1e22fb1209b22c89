"""Inference-only numpy copy of ActorCritic's actor, for the hot paths (policy_server, lofi_sim, the engine). No torch
here: the nodes that only act or simulate start without it."""
from __future__ import annotations

import numpy as np


def _f64(value) -> np.ndarray:
    """A float64 numpy copy of a numpy array or a (CPU) torch tensor."""
    return np.array(value.detach().numpy() if hasattr(value, 'detach') else value, dtype=np.float64)


class NumpyPolicy:
    """a = mu(s) + sigma * eps with the actor's weights (about 5x cheaper than torch at batch 1)."""

    def __init__(self, model):
        """From an ActorCritic (core/policy.py)."""
        self._load(model.state_dict())

    @classmethod
    def from_state(cls, state: dict) -> NumpyPolicy:
        """From an ActorCritic state_dict of arrays or tensors (e.g. decoded weights, whose names and shapes the codec
        checked), without building the torch model: its initialisation costs several times the load."""
        policy = cls.__new__(cls)
        policy._load(state)
        return policy

    def _load(self, state: dict) -> None:
        layers = sorted({int(name.split('.')[1]) for name in state if name.startswith('pi.')})
        self.layers = [(_f64(state[f'pi.{i}.weight']).T.copy(), _f64(state[f'pi.{i}.bias'])) for i in layers]
        self.std = np.exp(_f64(state['log_std']))

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
