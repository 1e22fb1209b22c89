"""Suite presets: which settings x methods x seeds, and each task family's budget and learner settings.

paper  The released sweeps (notes §3): the 39 ODRL settings, REINFORCE-family methods, seeds 3-7, 1M HF steps,
       100 HF steps/iteration, lr 7e-4, LF pool 9 x 1000, evaluation every 2000 HF steps. Far too long here
       (an MF run is ~10^4 iterations of ~1 s).
quick  About an hour on 2 cores (measured costs in docs/results.md): cheap cart-pole / InvertedPendulum
       settings spanning mild, moderate, large and drastic gaps plus two Hopper settings, 5 seeds, MF / HF-only /
       10x HF / LF-only. Budgets are set once per task family from measured cost, never per setting, and the LF
       pool is cut to 9 x 200 steps per iteration (1800 LF per 100 HF).
quick_extra  DARC, PAR, MF-PPO and HF-only PPO on the quick preset's mild / moderate / large cart-pole settings,
       same budgets (~40 min; run it into the same folder: the report merges every finished run).
smoke  Tiny budgets, every method, 2 seeds: an end-to-end check (test/test_bench_suite.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from mfpg_ros.bench.settings import ODRL_SETTINGS


@dataclass(frozen=True)
class Budget:
    hf_steps: int  # base HF budget per run (k-x methods use k times this)
    eval_every: int  # HF steps on the common axis between deterministic evaluations
    algo: dict = field(default_factory=dict)  # AlgoConfig overrides for this family (lr, pool size, ...)


@dataclass(frozen=True)
class Preset:
    name: str
    settings: tuple[str, ...]
    methods: tuple[str, ...]
    seeds: tuple[int, ...]
    budgets: dict[str, Budget]  # per task family; key '*' is the fallback
    eval_episodes: int = 10

    def budget(self, family: str) -> Budget:
        return self.budgets.get(family, self.budgets['*'])


PAPER_ALGO = {'lr': 7e-4, 'gamma': 0.97, 'hf_steps_per_iter': 100, 'pool_envs': 9, 'pool_steps_per_env': 1000}
SMALL_TASK_LR = 3e-3  # cart-pole / InvertedPendulum: the package's demo step size (config/train.yaml)
# DARC/PAR: the released schedule (1 classifier/encoder step per iteration) gives ~10^4 steps over 1M HF steps;
# at the quick budgets that would be 60-280 steps, so quick takes 10 per iteration
QUICK_POOL = {'pool_envs': 9, 'pool_steps_per_env': 200, 'offdyn': {'updates_per_iter': 10}}
QUICK_SMALL = ('cartpole_pole_mass_1.5', 'cartpole_twin', 'cartpole_heavy', 'cartpole_twin_lf_euler_2x',
               'pendulum_gravity_2.0', 'pendulum_pole_mass_5.0')
QUICK_BUDGETS = {'cartpole': Budget(8000, 500, {'lr': SMALL_TASK_LR, **QUICK_POOL}),
                 'pendulum': Budget(15_000, 1000, {'lr': SMALL_TASK_LR, **QUICK_POOL}),
                 '*': Budget(30_000, 2000, {'lr': 7e-4, **QUICK_POOL})}

PRESETS: dict[str, Preset] = {p.name: p for p in (
    Preset('paper', settings=ODRL_SETTINGS,
           methods=('mf_reinforce', 'reinforce', 'reinforce_15x', 'lf_reinforce', 'darc', 'par'),
           seeds=(3, 4, 5, 6, 7), budgets={'*': Budget(1_000_000, 2000, PAPER_ALGO)}),
    Preset('quick',
           settings=(*QUICK_SMALL, 'hopper_gravity_0.8', 'hopper_gravity_0.5'),
           methods=('mf_reinforce', 'reinforce', 'reinforce_10x', 'lf_reinforce'),
           seeds=(0, 1, 2, 3, 4), budgets=QUICK_BUDGETS),
    Preset('quick_extra', settings=('cartpole_pole_mass_1.5', 'cartpole_twin', 'cartpole_heavy'),
           methods=('darc', 'par', 'mf_ppo', 'ppo'), seeds=(0, 1, 2, 3, 4), budgets=QUICK_BUDGETS),
    Preset('smoke', settings=('cartpole_twin', 'pendulum_gravity_2.0'),
           methods=('mf_reinforce', 'reinforce', 'reinforce_10x', 'lf_reinforce', 'darc', 'par', 'mf_ppo', 'ppo'),
           seeds=(0, 1),
           budgets={'*': Budget(400, 200, {'lr': SMALL_TASK_LR, 'pool_envs': 2, 'pool_steps_per_env': 50,
                                           'offdyn': {'warmup_hf_steps': 100, 'hidden': 32, 'latent_dim': 16}})},
           eval_episodes=2),
)}
