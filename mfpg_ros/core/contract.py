"""The task contract: what a policy's inputs and outputs mean, shared by every fidelity and every node."""
from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Contract:
    """Observation/action layout of a task. Weights or episodes under another contract are refused."""

    task: str
    observation_names: tuple[str, ...]
    action_names: tuple[str, ...]
    action_low: tuple[float, ...]
    action_high: tuple[float, ...]
    control_rate_hz: float
    nq: int  # size of the full simulator state (qpos, qvel) carried as each segment's start state s0
    nv: int

    def __post_init__(self):
        for name in ('observation_names', 'action_names', 'action_low', 'action_high'):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if len(self.action_low) != self.act_dim or len(self.action_high) != self.act_dim:
            raise ValueError('action_low/action_high must have one entry per action')

    @property
    def obs_dim(self) -> int:
        return len(self.observation_names)

    @property
    def act_dim(self) -> int:
        return len(self.action_names)

    def to_json(self) -> str:
        return _contract_json(self)

    @classmethod
    def from_json(cls, text: str) -> 'Contract':
        return cls(**json.loads(text))

    def digest(self) -> str:
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:16]


@functools.lru_cache(maxsize=64)  # every encoded message carries it: serialise each contract once
def _contract_json(contract: Contract) -> str:
    return json.dumps(asdict(contract), sort_keys=True)
