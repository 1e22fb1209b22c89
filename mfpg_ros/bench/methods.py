"""Benchmark methods: how each one turns a setting's base training config into its own.

Budget accounting. A preset gives each task family a base HF budget B (HF steps) and a base batch
(`hf_steps_per_iter`, 100 in the paper), so every method runs B / batch updates, except:
  reinforce_10x  HF-only with 10x the HF steps per iteration, same number of updates: 10 B HF steps.
  reinforce_15x  the paper's "15x": batch 3072 HF steps, lr x 9/7 (9e-4 where the base is 7e-4), 15 B HF steps,
                 so about 15 B / 3072 updates.
  ppo_10x        HF-only PPO with 10x the HF steps per iteration and 10x larger minibatches: the same number of
                 gradient steps as PPO, each on 10x the data (PPO's counterpart of reinforce_10x).
Curves of a k-x method are plotted on the common axis hf_steps / k (k-x methods consume k times the HF data).
LF steps are free in every method (as in the paper); the pool sizes follow the released configs: MF 9 envs,
LF-only and DARC 10 envs, PAR 2 envs, each `pool_steps_per_env` steps per iteration.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

from mfpg_ros.core.config import PPO_ALGORITHMS, PPOConfig

# PAR's reward-penalty scale per robot in the released configs (notes §3.3); ours for the small tasks
PAR_BETA = {'hopper': 0.5, 'walker2d': 0.1, 'halfcheetah': 1.0}
PAR_BETA_DEFAULT = 0.5


@dataclass(frozen=True)
class Method:
    name: str
    algorithm: str
    label: str
    hf_multiplier: int = 1  # k: total HF budget = k x the base budget
    batch: int | None = None  # HF steps per iteration (None: k x the base batch)
    lr_scale: float = 1.0
    algo: dict = field(default_factory=dict)  # further AlgoConfig overrides

    def configure(self, base: dict, family: str, hf_budget: int) -> tuple[dict, int]:
        """(TrainConfig dict for this method, number of iterations) from the setting's base config dict."""
        cfg = copy.deepcopy(base)
        algo = cfg.setdefault('algo', {})
        base_batch = int(algo.get('hf_steps_per_iter', 100))
        batch = self.batch or self.hf_multiplier * base_batch
        algo.update(copy.deepcopy(self.algo), algorithm=self.algorithm, hf_steps_per_iter=batch)
        algo['lr'] = algo.get('lr', 7e-4) * self.lr_scale
        if self.algorithm in PPO_ALGORITHMS and batch != base_batch:  # as many minibatch steps, on more data
            ppo = algo.setdefault('ppo', {})
            ppo['minibatch_size'] = ppo.get('minibatch_size', PPOConfig.minibatch_size) * batch // base_batch
        if self.algorithm == 'par':
            algo.setdefault('offdyn', {}).setdefault('beta', PAR_BETA.get(family, PAR_BETA_DEFAULT))
        iterations = max(1, round(self.hf_multiplier * hf_budget / batch))
        return cfg, iterations


METHODS: dict[str, Method] = {m.name: m for m in (
    Method('mf_reinforce', 'mf_reinforce', 'MF-REINFORCE'),
    Method('reinforce', 'reinforce', 'HF-only REINFORCE'),
    Method('reinforce_10x', 'reinforce', 'HF-only, 10x HF steps/iter', hf_multiplier=10),
    Method('reinforce_15x', 'reinforce', 'HF-only, 15x (batch 3072, lr x9/7)', hf_multiplier=15, batch=3072,
           lr_scale=9 / 7),
    Method('lf_reinforce', 'lf_reinforce', 'LF-only REINFORCE', algo={'pool_envs': 10}),
    Method('darc', 'darc', 'DARC (REINFORCE)', algo={'pool_envs': 10}),
    Method('par', 'par', 'PAR (REINFORCE)', algo={'pool_envs': 2}),
    Method('mf_ppo', 'mf_ppo', 'MF-PPO', lr_scale=1 / 3),  # 10 epochs x minibatches per iteration: a third of the lr
    Method('ppo', 'ppo', 'HF-only PPO', lr_scale=1 / 3),
    Method('ppo_10x', 'ppo', 'HF-only PPO, 10x HF steps/iter', hf_multiplier=10, lr_scale=1 / 3),
)}
HF_ONLY = {'mf_reinforce': 'reinforce', 'mf_ppo': 'ppo'}  # each MF method's HF-only reference
REFERENCE = 'reinforce'  # ratios and tests in the report are against this method (and ppo for mf_ppo)
