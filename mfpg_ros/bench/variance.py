"""`mfpg bench variance`: policy-gradient variance of HF-only REINFORCE vs MF-REINFORCE at one policy snapshot.

Each trial draws a fresh HF batch (on the shifted plant), its paired LF replays and an independent LF pool, and
computes both estimators' gradients from the same HF data. Variance = trace of the covariance over trials.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from mfpg_ros.core.algorithms import Learner
from mfpg_ros.core.config import AlgoConfig
from mfpg_ros.core.episode import HIFI, LOFI_POOL
from mfpg_ros.core.policy import NumpyPolicy
from mfpg_ros.sim.engine import Engine
from mfpg_ros.sim.tasks import make_task

DEFAULT_SHIFT = {'Hopper-v5': 'hopper_gravity_0.5', 'Walker2d-v5': 'walker2d_friction_0.5',
                 'HalfCheetah-v5': 'halfcheetah_gravity_0.5', 'cartpole': 'cartpole_twin'}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='mfpg bench variance', description=__doc__)
    parser.add_argument('--task', default='Hopper-v5')
    parser.add_argument('--hifi-variant', default=None, help='default: a moderate ODRL shift of the task')
    parser.add_argument('--lofi-variant', default=None)
    parser.add_argument('--trials', type=int, default=40)
    parser.add_argument('--hf-steps', type=int, default=100)
    parser.add_argument('--pool-envs', type=int, default=9)
    parser.add_argument('--pool-steps', type=int, default=1000)
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    hifi_task = make_task(args.task, args.hifi_variant or DEFAULT_SHIFT.get(args.task))
    lofi_task = make_task(args.task, args.lofi_variant)
    algo = dict(hf_steps_per_iter=args.hf_steps, pool_envs=args.pool_envs, pool_steps_per_env=args.pool_steps)
    hf_only = Learner(AlgoConfig(algorithm='reinforce', **algo), hifi_task.contract, args.seed)
    mf = Learner(AlgoConfig(algorithm='mf_reinforce', **algo), hifi_task.contract, args.seed)
    policy = NumpyPolicy(mf.model)
    hifi = Engine(hifi_task, 1, seed=args.seed * 10 + 1, nthread=1)
    replayer = Engine(lofi_task, 1, seed=args.seed * 10 + 2)
    pool = Engine(lofi_task, args.pool_envs, seed=args.seed * 10 + 3)

    grads_hf, grads_mf, rhos, cs = [], [], [], []
    t0 = time.perf_counter()
    for _ in range(args.trials):
        hf = hifi.collect(policy, args.hf_steps, 0, HIFI)
        paired = replayer.replay(policy, hf, 0)
        lf_pool = pool.collect(policy, args.pool_steps, 0, LOFI_POOL)
        grads_hf.append(hf_only.policy_gradient(hf)[0].numpy())
        g, m = mf.policy_gradient(hf, paired, lf_pool)
        grads_mf.append(g.numpy())
        rhos.append(m.get('rho', 0.0))
        cs.append(m.get('c', 0.0))
    seconds = time.perf_counter() - t0
    var_hf = float(np.var(np.stack(grads_hf), axis=0, ddof=1).sum())
    var_mf = float(np.var(np.stack(grads_mf), axis=0, ddof=1).sum())
    print(f'task {args.task}: HF {hifi_task.variant or "nominal"} vs LF {lofi_task.variant or "nominal"}, '
          f'{args.trials} trials of {args.hf_steps} HF + {args.pool_envs}x{args.pool_steps} LF steps ({seconds:.1f} s)')
    print(f'per-step surrogate rho: mean {np.mean(rhos):.3f} (min {np.min(rhos):.3f}); c: mean {np.mean(cs):+.3f}')
    print(f'gradient variance (trace): hf_only {var_hf:.4g}  mf {var_mf:.4g}')
    print(f'mf_vs_hf_gradient_variance: {var_mf / var_hf:.3f}')
    return 0
