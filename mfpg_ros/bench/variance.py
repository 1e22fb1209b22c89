"""`mfpg bench variance`: policy-gradient variance and bias of HF-only REINFORCE vs MF-REINFORCE at one policy
snapshot (the initial policy, or a checkpoint's with --checkpoint).

Each trial draws a fresh HF batch (on the shifted plant), its paired LF replays and an independent LF pool, and
computes three gradients from the same HF data: HF-only (every HF step), MF with c = 0 (the HF steps that the
pairing keeps, i.e. each HF segment cut to its LF replay's length) and MF. Variance = trace of the covariance over
trials. Bias = the mean of the per-trial differences to HF-only, an unbiased reference: its squared norm over its
own noise level (tr Cov / trials) is about 1 when the means agree and grows with trials when they do not.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from mfpg_ros.bench.settings import SETTINGS
from mfpg_ros.core.algorithms import Learner
from mfpg_ros.core.checkpoint import load_checkpoint, read_extra
from mfpg_ros.core.config import PAIRINGS, AlgoConfig, EstimatorConfig, load_config
from mfpg_ros.core.episode import HIFI
from mfpg_ros.core.numpy_policy import NumpyPolicy
from mfpg_ros.sim.engine import Engine
from mfpg_ros.sim.tasks import make_task
from mfpg_ros.trainer import lofi_data

DEFAULT_SHIFT = {'Hopper-v5': 'hopper_gravity_0.5', 'Walker2d-v5': 'walker2d_friction_0.5',
                 'HalfCheetah-v5': 'halfcheetah_gravity_0.5', 'cartpole': 'cartpole_twin'}


def bias_stats(grads: np.ndarray, reference: np.ndarray) -> dict:
    """Mean per-trial difference to the reference estimator (trials x params each): its norm relative to the
    reference mean's, its squared norm over tr(Cov)/trials (~1 without bias), and `progress`: the inner product of
    the two expected gradients over the reference's squared norm, <E g, E ref> / |E ref|^2 (1 for an unbiased
    estimator), from independent halves of the trials so that their shared HF noise does not enter."""
    diff = grads - reference
    mean_diff, mean_ref = diff.mean(0), reference.mean(0)
    noise = np.var(diff, axis=0, ddof=1).sum() / len(diff)
    a, b = slice(0, len(grads) // 2), slice(len(grads) // 2, None)
    cross = (grads[a].mean(0) @ reference[b].mean(0) + grads[b].mean(0) @ reference[a].mean(0)) / 2
    signal = reference[a].mean(0) @ reference[b].mean(0)
    return {'relative': float(np.linalg.norm(mean_diff) / np.linalg.norm(mean_ref)),
            'over_noise': float(mean_diff @ mean_diff / noise) if noise > 0 else 0.0,
            'progress': float(cross / signal), 'signal': float(signal)}


def sample_gradients(hifi_task, lofi_task, algo: dict, pairing: str, trials: int, seed: int,
                     checkpoint: str | None = None) -> tuple[dict[str, np.ndarray], dict[str, list[float]]]:
    """Per trial (fresh HF batch and LF data at one fixed policy) the HF-only, MF c = 0 and MF policy gradients:
    ({name: trials x params}, {'rho', 'c', 'kept': per trial})."""
    mf_cfg = AlgoConfig(algorithm='mf_reinforce', estimator=EstimatorConfig(pairing=pairing), **algo)
    learners = {'hf_only': Learner(AlgoConfig(algorithm='reinforce', **algo), hifi_task.contract, seed),
                'mf_c0': Learner(AlgoConfig(algorithm='mf_reinforce', estimator=EstimatorConfig(
                    fixed_c=0.0, pairing=pairing), **algo), hifi_task.contract, seed),
                'mf': Learner(mf_cfg, hifi_task.contract, seed)}
    if checkpoint:
        for learner in learners.values():
            load_checkpoint(learner, checkpoint)
    policy = NumpyPolicy(learners['mf'].model)
    hifi = Engine(hifi_task, 1, seed=seed * 10 + 1, nthread=1)
    replayer = Engine(lofi_task, 1, seed=seed * 10 + 2)
    pool = Engine(lofi_task, mf_cfg.pool_envs, seed=seed * 10 + 3)
    grads, info = {name: [] for name in learners}, {'rho': [], 'c': [], 'kept': []}
    for _ in range(trials):
        hf = hifi.collect(policy, mf_cfg.hf_steps_per_iter, 0, HIFI)
        paired, lf_pool = lofi_data(replayer, pool, policy, hf, mf_cfg, 0)
        for name, learner in learners.items():
            g, m = learner.policy_gradient(hf, paired, lf_pool) if name != 'hf_only' else learner.policy_gradient(hf)
            grads[name].append(g.numpy())
        info['rho'].append(m.get('rho', 0.0))
        info['c'].append(m.get('c', 0.0))
        info['kept'].append(m['n_aligned'] / sum(len(e) for e in hf if not e.aborted))
    return {name: np.stack(rows) for name, rows in grads.items()}, info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='mfpg bench variance', description=__doc__)
    parser.add_argument('--task', default=None, help="default: the --checkpoint's task, else Hopper-v5")
    parser.add_argument('--hifi-variant', default=None,
                        help="default: the checkpoint's (same task), else a moderate ODRL shift of the task")
    parser.add_argument('--lofi-variant', default=None, help="default: the checkpoint's (same task), else nominal")
    parser.add_argument('--setting', choices=sorted(SETTINGS), default=None,
                        help="a benchmark setting's task and HF/LF variants (instead of the three options above)")
    parser.add_argument('--checkpoint', default=None, help='policy, critic and c statistics from this checkpoint '
                        '(written by mfpg train-inprocess --save or the learner node); default: a fresh policy')
    parser.add_argument('--trials', type=int, default=40)
    parser.add_argument('--hf-steps', type=int, default=100)
    parser.add_argument('--pool-envs', type=int, default=9)
    parser.add_argument('--pool-steps', type=int, default=1000)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--pairing', choices=PAIRINGS, default='paper', help='estimator.pairing of the MF learners')
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.trials < 2:
        parser.error('--trials must be >= 2 (a variance needs two samples)')
    algo = dict(hf_steps_per_iter=args.hf_steps, pool_envs=args.pool_envs, pool_steps_per_env=args.pool_steps)
    try:
        load_config({'algo': algo})  # the budgets, by their config names
        saved = load_config(read_extra(args.checkpoint)['config']) if args.checkpoint else None
        if saved is not None and not args.setting and args.task in (None, saved.task):  # the checkpoint's own
            args.task = saved.task
            args.hifi_variant = args.hifi_variant or saved.hifi_variant
            args.lofi_variant = args.lofi_variant or saved.lofi_variant
        args.task = args.task or 'Hopper-v5'
        if args.setting:
            setting = SETTINGS[args.setting]
            args.task, hifi_task, lofi_task = setting.task, make_task(setting.task, setting.hifi), \
                make_task(setting.task, setting.lofi)
        else:
            hifi_task = make_task(args.task, args.hifi_variant or DEFAULT_SHIFT.get(args.task))
            lofi_task = make_task(args.task, args.lofi_variant)
        if saved is not None and saved.task != args.task:
            raise ValueError(f'{args.checkpoint} holds a {saved.task} policy, not one for {args.task}')
    except (ValueError, KeyError, OSError) as exc:
        parser.error(str(exc))
    t0 = time.perf_counter()
    g, info = sample_gradients(hifi_task, lofi_task, algo, args.pairing, args.trials, args.seed, args.checkpoint)
    rhos, cs, kept = info['rho'], info['c'], info['kept']
    seconds = time.perf_counter() - t0
    var = {name: float(np.var(rows, axis=0, ddof=1).sum()) for name, rows in g.items()}
    print(f'task {args.task}: HF {hifi_task.variant or "nominal"} vs LF {lofi_task.variant or "nominal"}, '
          f'{args.trials} trials of {args.hf_steps} HF + {args.pool_envs}x{args.pool_steps} LF steps, pairing '
          f'{args.pairing} ({seconds:.1f} s)'
          f'{", policy from " + args.checkpoint if args.checkpoint else ""}')
    rho = f'per-step surrogate rho: mean {np.mean(rhos):.3f} (min {np.min(rhos):.3f}); ' \
        if args.pairing == 'paper' else ''  # 'matched' fits c to segment gradients, without a rho
    print(f'{rho}c: mean {np.mean(cs):+.3f}; HF steps kept by the pairing: {np.mean(kept):.1%} '
          f'(min {np.min(kept):.1%})')
    print(f'gradient variance (trace): hf_only {var["hf_only"]:.4g}  mf {var["mf"]:.4g}')
    bias = {name: bias_stats(g[name], g['hf_only']) for name in ('mf_c0', 'mf')}
    for name, b in bias.items():
        print(f'bias vs hf_only, {name}: |mean diff| / |mean hf_only| {b["relative"]:.3f}, '
              f'|mean diff|^2 / noise {b["over_noise"]:.1f} (~1 if unbiased), progress {b["progress"]:.2f} '
              '(1 if unbiased)')
    print(f'HF-only expected gradient: split-half <mean A, mean B> {bias["mf"]["signal"]:.4g}, per-half noise level '
          f'{var["hf_only"] / (args.trials // 2):.4g} (tr Cov / trials per half)')
    print(f'mf_vs_hf_gradient_variance: {var["mf"] / var["hf_only"]:.3f}')
    return 0
