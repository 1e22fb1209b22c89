"""Pick the learner class for an algorithm name: REINFORCE flavours -> Learner, PPO flavours -> PPOLearner,
off-dynamics baselines (DARC, PAR) -> their REINFORCE subclasses in baselines.py."""
from __future__ import annotations

from mfpg_ros.core.algorithms import Learner
from mfpg_ros.core.baselines import OFF_DYNAMICS_LEARNERS
from mfpg_ros.core.config import PPO_ALGORITHMS, AlgoConfig
from mfpg_ros.core.contract import Contract
from mfpg_ros.core.ppo import PPOLearner


def make_learner(cfg: AlgoConfig, contract: Contract, seed: int = 0) -> Learner | PPOLearner:
    """Both classes share update(hifi, paired, pool) -> metrics, policy_gradient, model, version and state_dict."""
    if cfg.algorithm in OFF_DYNAMICS_LEARNERS:
        return OFF_DYNAMICS_LEARNERS[cfg.algorithm](cfg, contract, seed)
    return PPOLearner(cfg, contract, seed) if cfg.algorithm in PPO_ALGORITHMS else Learner(cfg, contract, seed)


def needs_paired(algorithm: str) -> bool:
    """Whether the algorithm uses paired LF replays of the HF segments."""
    return algorithm in ('mf_reinforce', 'mf_ppo')


def needs_pool(algorithm: str) -> bool:
    """Whether the algorithm uses the independent LF pool."""
    return algorithm not in ('reinforce', 'ppo')
