"""Which MF-PPO term moves the policy's log-std? (docs/results.md, "MF-PPO's exploration noise")

Trains MF-PPO in-process on a quick_extra cart-pole setting (the bench's own config) with the control variate in
every epoch (`ppo.cv_epochs = 0`) and with it in the first epoch only (`cv_epochs = 1`), and plain PPO; prints the
policy std every 10 iterations. For the every-epoch run it also records, at every minibatch step that applies the
CV, the ascent gradient with respect to log-std of each term of the MF surrogate mean(x_h) + c mean(x_l) - c
mean(x_pool): `hf`, `pair` (c mean(x_l)), `pool` (-c mean(x_pool)) and their sum `mf`, taken at the step's weights
before it is made. Means and standard errors are grouped by epoch (1 / 2-10) and half of the run. Recording only
reads the model: the runs are bit-identical to unrecorded ones.

  .venv/bin/python scripts/mfppo_std_diagnostic.py --setting cartpole_heavy --seeds 0 1 2
"""
from __future__ import annotations

import argparse
import collections
import math

import numpy as np
import torch

from mfpg_ros.bench.presets import PRESETS
from mfpg_ros.bench.suite import run_specs
from mfpg_ros.core.config import load_config
from mfpg_ros.trainer import Trainer

VARIANTS = {'cv every epoch': ('mf_ppo', {'algo.ppo.cv_epochs': 0, 'algo.ppo.cv_level': 'gradient'}),
            'cv_epochs=1': ('mf_ppo', {'algo.ppo.cv_epochs': 1, 'algo.ppo.cv_level': 'gradient'}), 'ppo': ('ppo', {})}


def record_log_std_pulls(learner, iterations: int, pulls: dict) -> None:
    """Wrap the learner's minibatch loss so that each CV step adds its terms' log-std gradients to `pulls`."""
    loss_of, update_of, state = learner._policy_loss, learner.update, {'step': 0, 'iteration': 0}

    def update(*data):
        state['step'], state['iteration'] = 0, state['iteration'] + 1
        return update_of(*data)

    def policy_loss(batch, idx, pool_idx, coef, cv=True):
        loss, info = loss_of(batch, idx, pool_idx, coef, cv)
        if batch.mf and cv:
            p, c = learner.cfg.ppo, info['c']
            epoch = state['step'] // math.ceil(len(batch.hf) / max(1, p.minibatch_size))
            group = ('first half' if state['iteration'] <= iterations // 2 else 'second half',
                     'epoch 1' if epoch == 0 else 'epochs 2+')
            terms = {'hf': learner._clipped(*learner._ratio_and_advantages(batch.hf, idx, p.normalize_advantage)),
                     'pair': c * learner._clipped(*learner._ratio_and_advantages(batch.lf, idx, False)),
                     'pool': -c * learner._clipped(*learner._ratio_and_advantages(batch.pool, pool_idx, False))}
            grads = {name: float(torch.autograd.grad(x.mean(), learner.model.log_std)[0].sum())
                     for name, x in terms.items()}
            for name, g in {**grads, 'mf': sum(grads.values())}.items():
                pulls[(*group, name)].append(g)
        state['step'] += 1
        return loss, info
    learner._policy_loss, learner.update = policy_loss, update


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--setting', default='cartpole_heavy')
    parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    pulls, final = collections.defaultdict(list), collections.defaultdict(list)
    for label, (method, overrides) in VARIANTS.items():
        for spec in run_specs(PRESETS['quick_extra'], settings=[args.setting], methods=[method], seeds=args.seeds,
                              overrides=overrides):
            cfg = load_config(spec['config'])
            trainer, stds = Trainer(cfg, nthread=1), []
            if label == 'cv every epoch':
                record_log_std_pulls(trainer.learner, cfg.iterations, pulls)
            trainer.run(lambda m: stds.append(m['std']))
            final[label].append(stds[-1])
            print(f'{label:>15} seed {spec["seed"]}: std every 10 iterations',
                  ' '.join(f'{s:.3f}' for s in stds[::10]), f'final {stds[-1]:.3f}', flush=True)
    print('\nfinal std, mean over seeds:', ', '.join(f'{k} {np.mean(v):.3f}' for k, v in final.items()))
    print('\nlog-std ascent gradient per CV minibatch step (cv every epoch): mean (standard error), steps')
    for key in sorted(pulls):
        v = np.asarray(pulls[key])
        se = v.std() / math.sqrt(len(v))
        print(f'  {key[0]:>11}  {key[1]:>9}  {key[2]:>4}  {v.mean():+.4f} ({se:.4f})  {len(v)}')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
