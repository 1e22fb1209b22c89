"""Is MF-PPO's control variate zero-mean on a real task? Variance and mean of the first-minibatch correction.

At the weights a run starts an update from (every ratio 1), MF-PPO's first-minibatch gradient minus plain PPO's on
the same HF data is c * (grad mean x_l - grad mean x_pool): the correction, zero-mean if the paired replays and the
pool are identically distributed. Each trial draws fresh HF segments, their paired replays and a pool; the script
prints the gradient variance of MF-PPO over PPO (all actor parameters and per parameter group) and the
correction's squared mean norm over its noise level (tr Cov / trials; about 1 when the mean is zero).

    python scripts/mfppo_cv_mean.py bench_out/mfppo20/runs/pendulum_gravity_2.0/mf_ppo/seed0/config.yaml
    python scripts/mfppo_cv_mean.py CONFIG --checkpoint run.safetensors --trials 400
    python scripts/mfppo_cv_mean.py CONFIG --pairing matched   # replays run on, branches for mu (docs/pairing.md)
CONFIG: a training YAML or a bench run's config.yaml (its `config` block). Under 'matched' c is fitted to earlier
trials (as to earlier iterations in training): --warmup trials only train it.
"""
from __future__ import annotations

import argparse
import dataclasses

import numpy as np
import torch
import yaml

from mfpg_ros.core.checkpoint import load_checkpoint
from mfpg_ros.core.config import PAIRINGS, load_config
from mfpg_ros.core.episode import HIFI
from mfpg_ros.core.numpy_policy import NumpyPolicy
from mfpg_ros.core.ppo import PPOLearner
from mfpg_ros.sim.engine import Engine
from mfpg_ros.sim.tasks import make_task
from mfpg_ros.trainer import lofi_data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config')
    parser.add_argument('--checkpoint', help='weights, critic and c statistics (default: the initial policy)')
    parser.add_argument('--trials', type=int, default=300)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--pairing', choices=PAIRINGS, help="override the config's estimator.pairing")
    parser.add_argument('--warmup', type=int, default=30, help="'matched': trials that only fit c")
    args = parser.parse_args()
    torch.set_num_threads(1)
    raw = yaml.safe_load(open(args.config))
    cfg = load_config(raw.get('config', raw))
    pairing = args.pairing or cfg.algo.estimator.pairing
    algo = dataclasses.replace(cfg.algo, algorithm='mf_ppo', ppo=dataclasses.replace(cfg.algo.ppo, cv_level='gradient'),
                               estimator=dataclasses.replace(cfg.algo.estimator, pairing=pairing))
    hifi_task, lofi_task = make_task(cfg.task, cfg.hifi_variant), make_task(cfg.task, cfg.lofi_variant)
    mf = PPOLearner(algo, hifi_task.contract, args.seed)
    ppo = PPOLearner(dataclasses.replace(algo, algorithm='ppo'), hifi_task.contract, args.seed)
    if args.checkpoint:
        for learner in (mf, ppo):
            load_checkpoint(learner, args.checkpoint)
    policy = NumpyPolicy(mf.model)
    hifi = Engine(hifi_task, 1, seed=args.seed * 10 + 1, nthread=1)
    replayer = Engine(lofi_task, 1, seed=args.seed * 10 + 2)
    pool = Engine(lofi_task, algo.pool_envs, seed=args.seed * 10 + 3)
    g_mf, g_ppo, cs = [], [], []
    for trial in range(args.trials + (args.warmup if pairing == 'matched' else 0)):
        hf = hifi.collect(policy, algo.hf_steps_per_iter, 0, HIFI)
        paired, lf = lofi_data(replayer, pool, policy, hf, algo, 0)
        if pairing != 'matched' or trial >= args.warmup:
            g, metrics = mf.policy_gradient(hf, paired, lf, first_minibatch=True)
            g_mf.append(g.numpy())
            g_ppo.append(ppo.policy_gradient(hf, first_minibatch=True)[0].numpy())
            cs.append(metrics.get('c', 0.0))
        if pairing == 'matched':
            mf._batch(hf, paired, lf, mf.coef)  # c's statistics learn from this trial for the next ones
    g_mf, g_ppo = np.stack(g_mf), np.stack(g_ppo)
    correction = g_mf - g_ppo
    print(f'{cfg.task} HF {cfg.hifi_variant} vs LF {cfg.lofi_variant or "nominal"}, pairing {pairing}, {args.trials} '
          f'trials, policy std {float(mf.model.log_std.detach().exp().mean()):.2f}, c mean {np.mean(cs):+.3f}')
    start = 0
    for name, param in mf.model.named_parameters():
        if name.startswith('vf.'):
            continue
        cols = slice(start, start + param.numel())
        start += param.numel()
        print(f'  {name:12s} variance MF-PPO / PPO {g_mf[:, cols].var(0).sum() / g_ppo[:, cols].var(0).sum():.3f}')
    se = correction[:, 0].std(ddof=1) / np.sqrt(args.trials)  # the actor's first parameter is log_std
    print(f'log_std: PPO gradient mean {g_ppo[:, 0].mean():+.4f}, correction mean {correction[:, 0].mean():+.4f} '
          f'(se {se:.4f})')
    noise = correction.var(0, ddof=1).sum() / args.trials
    mean = correction.mean(0)
    print(f'gradient variance MF-PPO / PPO: {g_mf.var(0).sum() / g_ppo.var(0).sum():.3f}')
    print(f'correction |mean|^2 / noise: {mean @ mean / noise:.2f} (about 1 if zero-mean)')


if __name__ == '__main__':
    main()
