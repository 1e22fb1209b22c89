"""`mfpg bench ppo_anchor`: our plain PPO (HF-only, in-process trainer) against Stable-Baselines3 PPO on the same
Gymnasium task with the same hyper-parameters, evaluated at equal environment steps (deterministic, 10 episodes).
A sanity anchor for the PPO implementation that MF-PPO builds on. Needs `pip install -r requirements-bench.txt`.

Known difference: SB3 bootstraps V at time-limit truncations and rollout ends; our segments do not (as the
authors' REINFORCE code), which slightly lowers value targets near episode cut points."""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from mfpg_ros.core.config import load_config
from mfpg_ros.trainer import Trainer

SHARED = dict(lr=3e-4, gamma=0.99, n_steps=2048, minibatch=64, epochs=10, gae_lambda=0.95, clip=0.2,
              vf_coef=0.5, max_grad_norm=0.5)


def ours(task: str, steps: int, seed: int) -> tuple[float, float]:
    s = SHARED
    cfg = load_config({'task': task, 'hifi_variant': None, 'seed': seed, 'iterations': steps // s['n_steps'],
                       'eval_every': 0, 'target_return': None,
                       'algo': {'algorithm': 'ppo', 'lr': s['lr'], 'gamma': s['gamma'], 'vf_coef': s['vf_coef'],
                                'max_grad_norm': s['max_grad_norm'], 'hf_steps_per_iter': s['n_steps'],
                                'ppo': {'n_epochs': s['epochs'], 'minibatch_size': s['minibatch'],
                                        'gae_lambda': s['gae_lambda'], 'clip_range': s['clip']}}})
    trainer, t0 = Trainer(cfg), time.perf_counter()
    trainer.run()
    return trainer.evaluate(), time.perf_counter() - t0


def sb3(task: str, steps: int, seed: int) -> tuple[float, float]:
    try:
        from stable_baselines3 import PPO
        from stable_baselines3.common.evaluation import evaluate_policy
    except ImportError as exc:
        raise SystemExit('stable-baselines3 is missing: .venv/bin/pip install -r requirements-bench.txt') from exc
    import gymnasium
    s = SHARED
    env = gymnasium.make(task)
    model = PPO('MlpPolicy', env, learning_rate=s['lr'], n_steps=s['n_steps'], batch_size=s['minibatch'],
                n_epochs=s['epochs'], gamma=s['gamma'], gae_lambda=s['gae_lambda'], clip_range=s['clip'],
                vf_coef=s['vf_coef'], max_grad_norm=s['max_grad_norm'], seed=seed, device='cpu', verbose=0)
    t0 = time.perf_counter()
    model.learn(total_timesteps=steps)
    seconds = time.perf_counter() - t0
    mean, _ = evaluate_policy(model, gymnasium.make(task), n_eval_episodes=10, deterministic=True)
    return float(mean), seconds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog='mfpg bench ppo_anchor', description=__doc__)
    parser.add_argument('--task', default='InvertedPendulum-v5')
    parser.add_argument('--steps', type=int, default=40960, help='environment steps per run (HF steps for ours)')
    parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rows = {'mfpg_ros ppo': [ours(args.task, args.steps, s) for s in args.seeds],
            'stable-baselines3 PPO': [sb3(args.task, args.steps, s) for s in args.seeds]}
    for name, results in rows.items():
        returns = [r for r, _ in results]
        print(f'{name:24s} eval return {np.mean(returns):8.1f} ± {np.std(returns):6.1f} '
              f'(seeds {[round(r, 1) for r in returns]}), {np.mean([t for _, t in results]):.0f} s/run')
    ratio = np.mean([r for r, _ in rows['mfpg_ros ppo']]) / max(np.mean([r for r, _ in rows['stable-baselines3 PPO']]),
                                                                 1e-9)
    print(f'{args.task}, {args.steps} steps, SB3 PPO defaults shared: {SHARED}')
    print(f'ppo_vs_sb3_return: {ratio:.2f}')
    return 0
