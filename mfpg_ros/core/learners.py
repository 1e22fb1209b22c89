"""Pick the learner class for an algorithm name: REINFORCE flavours -> Learner, PPO flavours -> PPOLearner,
off-dynamics baselines (DARC, PAR) -> their REINFORCE subclasses in baselines.py."""
from __future__ import annotations

from mfpg_ros.core.algorithms import Learner
from mfpg_ros.core.baselines import OFF_DYNAMICS_LEARNERS
from mfpg_ros.core.bookkeeping import IterationAssembler
from mfpg_ros.core.config import PPO_ALGORITHMS, AlgoConfig
from mfpg_ros.core.contract import Contract
from mfpg_ros.core.pairing import branch_copies, needs_paired, needs_pool, uses_branches
from mfpg_ros.core.ppo import PPOLearner


def make_learner(cfg: AlgoConfig, contract: Contract, seed: int = 0) -> Learner | PPOLearner:
    """Both classes share update(hifi, paired, pool) -> metrics, prefetch_pool, policy_gradient, model, version
    and state_dict."""
    if cfg.algorithm in OFF_DYNAMICS_LEARNERS:
        return OFF_DYNAMICS_LEARNERS[cfg.algorithm](cfg, contract, seed)
    return PPOLearner(cfg, contract, seed) if cfg.algorithm in PPO_ALGORITHMS else Learner(cfg, contract, seed)


def iteration_assembler(algo: AlgoConfig) -> IterationAssembler:
    """The learner's bookkeeping for `algo`: the HF budget, the paired replays, and the pool budget or, under
    pairing 'matched', each segment's branches."""
    if uses_branches(algo):
        return IterationAssembler(algo.hf_steps_per_iter, 0, True, branches=branch_copies(algo))
    pool_steps = algo.pool_envs * algo.pool_steps_per_env if needs_pool(algo.algorithm) else 0
    return IterationAssembler(algo.hf_steps_per_iter, pool_steps, needs_paired(algo.algorithm))
