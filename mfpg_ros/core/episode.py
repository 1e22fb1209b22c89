"""An episode segment: the unit that crosses process boundaries (HF robot side -> learner and -> LF replay)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mfpg_ros.core.contract import Contract

HIFI, LOFI_PAIRED, LOFI_POOL = 'hifi', 'lofi_paired', 'lofi_pool'
FIDELITIES = (HIFI, LOFI_PAIRED, LOFI_POOL)


@dataclass
class Episode:
    """A contiguous run of steps under one policy version, from start state s0.

    A segment ends when the episode terminates, hits its time limit, or when the collector cuts it (buffer
    full, policy version changed). `actions` are the unclipped Gaussian samples mu(s) + sigma * eps whose
    log-probability the gradient uses; `eps` is the noise that produced them (replayed by paired LF rollouts).
    """

    obs: np.ndarray  # (T, obs_dim) float32, observation before each action
    actions: np.ndarray  # (T, act_dim) float32
    eps: np.ndarray  # (T, act_dim) float64
    rewards: np.ndarray  # (T,) float64
    qpos0: np.ndarray  # (nq,) float64, simulator state at the first step
    qvel0: np.ndarray  # (nv,) float64
    contract: Contract
    policy_version: int
    fidelity: str = HIFI
    start_step: int = 0  # time-limit counter at s0 (0 when the segment starts at a reset)
    terminated: bool = False  # the last step ended the episode (fell, left bounds)
    truncated: bool = False  # cut without termination (time limit, buffer end, version change)
    aborted: bool = False  # unusable: simulator instability, watchdog, e-stop
    seed: int = 0
    episode_id: str = ''
    pair_of: str = ''  # for LOFI_PAIRED: episode_id of the HF segment it replays
    extras: dict = field(default_factory=dict)  # free-form numeric metadata (e.g. instability counts)

    def __len__(self) -> int:
        return int(self.rewards.shape[0])

    @property
    def undiscounted_return(self) -> float:
        return float(self.rewards.sum())
