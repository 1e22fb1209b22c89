"""How much of the HF data's noise reaches MF-PPO's whole update (docs/results.md, "MF-PPO: the whole update").

Trains MF-PPO (cv_level gradient, as in session 18's measurement) in-process on a quick_extra setting up to a
snapshot, then draws fresh iterations' data (HF batch, replays, branches) from that one policy, --trials times. For
each variant the whole update (all epochs and minibatches, from the snapshot's weights and Adam state) is run on a
copy and its change of the actor weights kept. The reference is the mean change of PPO with 10x the HF steps per
iteration and 10x larger minibatches (`ppo_10x`, the least noisy update at hand). Printed per variant: the trace of
the change's covariance over trials, its mean squared distance from the reference (MSE) and that over PPO's.

  ppo, ppo_2x, ppo_4x, ppo_10x   HF-only PPO on 1, 2, 4, 10x the HF steps (minibatches scaled alike)
  mf_gradient                    the matched correction in the first epoch (cv_level gradient, the default before
                                 session 18)
  mf_gradient_every_epoch        the same correction in every epoch (cv_epochs 0)
  mf_update                      cv_level update (the default): c x (PPO's change on the replays - on branch batches)
MF variants fit c on --warmup earlier batches first, as training does (mf_update from scratch: its c is fitted
to weight changes, not gradients).

  .venv/bin/python scripts/mfppo_update_noise.py --setting cartpole_twin --seed 0 --at 500
"""
from __future__ import annotations

import argparse
import copy
import dataclasses

import numpy as np
import torch

from mfpg_ros.bench.presets import PRESETS
from mfpg_ros.bench.suite import run_specs
from mfpg_ros.core import estimator as est
from mfpg_ros.core.config import load_config
from mfpg_ros.core.episode import HIFI
from mfpg_ros.core.numpy_policy import NumpyPolicy
from mfpg_ros.trainer import Trainer

HF_MULTIPLES = {'ppo': 1, 'ppo_2x': 2, 'ppo_4x': 4, 'ppo_10x': 10}
MF_VARIANTS = {'mf_gradient': {'cv_level': 'gradient'},
               'mf_gradient_every_epoch': {'cv_level': 'gradient', 'cv_epochs': 0},
               'mf_update': {'cv_level': 'update'}}


def actor(learner) -> np.ndarray:
    return torch.nn.utils.parameters_to_vector(learner.model.actor_parameters()).detach().numpy().copy()


def variant(snapshot, algorithm: str, k: int = 1, **ppo):
    learner = copy.deepcopy(snapshot)
    ppo = {'minibatch_size': snapshot.cfg.ppo.minibatch_size * k, **ppo}
    learner.cfg = dataclasses.replace(snapshot.cfg, algorithm=algorithm,
                                      ppo=dataclasses.replace(snapshot.cfg.ppo, **ppo))
    return learner


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--setting', default='cartpole_twin')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--at', type=int, default=500, help='HF steps of training before the snapshot')
    parser.add_argument('--trials', type=int, default=60)
    parser.add_argument('--warmup', type=int, default=20)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    spec = run_specs(PRESETS['quick_extra'], settings=[args.setting], methods=['mf_ppo'], seeds=[args.seed],
                     overrides={'algo.ppo.cv_level': 'gradient'})[0]
    trainer = Trainer(load_config(spec['config']), nthread=1)
    while trainer.hf_steps < args.at:
        trainer.iteration()
    snapshot, n = trainer.learner, trainer.cfg.algo.hf_steps_per_iter
    learners = {**{name: variant(snapshot, 'ppo', k) for name, k in HF_MULTIPLES.items()},
                **{name: variant(snapshot, 'mf_ppo', **ppo) for name, ppo in MF_VARIANTS.items()}}
    learners['mf_update'].coef = est.Coefficient()  # its c lives on weight changes, not the snapshot's gradients
    for _ in range(args.warmup):  # c's running statistics, fitted on earlier batches
        data = trainer.collect()
        for name in MF_VARIANTS:
            twin = copy.deepcopy(learners[name])
            twin.update(*data)
            learners[name].coef = twin.coef
    policy, start = NumpyPolicy(snapshot.model), actor(snapshot)
    changes = {name: [] for name in learners}
    for _ in range(args.trials):
        data = trainer.collect()
        for name, learner in learners.items():
            twin = copy.deepcopy(learner)
            k = HF_MULTIPLES.get(name, 1)
            twin.update(*data) if k == 1 else twin.update(trainer.hifi.collect(policy, k * n, 0, HIFI))
            changes[name].append(actor(twin) - start)
    ref = np.mean(changes['ppo_10x'], axis=0)
    print(f'{args.setting} seed {args.seed}, snapshot at {trainer.hf_steps} HF steps, {args.trials} trials; '
          f'|reference change| {np.linalg.norm(ref):.4f}')
    mse_ppo = ((np.stack(changes['ppo']) - ref) ** 2).sum(1).mean()
    for name, rows in changes.items():
        rows = np.stack(rows)
        mse = ((rows - ref) ** 2).sum(1).mean()
        print(f'  {name:>24}: trace cov {rows.var(0).sum():.5f}  |mean| {np.linalg.norm(rows.mean(0)):.4f}  '
              f'MSE {mse:.5f}  MSE / PPO {mse / mse_ppo:.3f}', flush=True)


if __name__ == '__main__':
    main()
