"""Per-epoch gradient diagnostic for MF-PPO (docs/results.md, "Why MF-PPO rises then falls").

Trains MF-PPO with the control variate in every epoch (`ppo.cv_epochs = 0`) in-process on a quick_extra cart-pole
setting (the bench's own config: lr 1e-3, 100 HF steps and a 9 x 200 LF pool per iteration). At each snapshot
(the first iteration that starts with >= N HF steps) a copy of the learner replays that iteration's update one
epoch at a time (`_optimise` with n_epochs = 1: the same RNG streams, so the copy ends bit-identical to the real
update; checked). At the start of epoch e (weights theta_e):

  g_hf    gradient (ascent) of the HF clipped surrogate mean(x_h)
  g_pair  of c * mean(x_l)            (paired LF replays)
  g_pool  of -c * mean(x_pool)        (the pool-only term)
  g_cv = g_pair + g_pool,  g_mf = g_hf + g_cv  (the MF-PPO policy gradient; checked against -grad of _policy_loss)
  g_hf + g_pair: what is left of the HF term after its paired LF twin is subtracted (g_mf minus the pool term)

each averaged over the epoch's minibatches (same index sets and c as the epoch will use, all taken at theta_e), and
H*, L*: reference policy gradients at theta_e from fresh on-policy batches of --ref-steps HF / LF steps (GAE with
the current critic, ratio 1, advantages normalised over the batch: learner.policy_gradient). `ref split` is the
cosine between the two halves of the HF reference (its reliability). `step` is the actual Adam step of the epoch.
|log r| is the mean over the iteration's HF / paired LF / pool steps at theta_e. At the end the whole update of
that MF-PPO is compared with plain PPO (c = 0) and with cv_epochs = 1 from the same snapshot.

  nice -n 19 .venv/bin/python scripts/mfppo_epoch_diagnostic.py --seeds 0 1 2 --snapshots 500 2000 4000
"""
from __future__ import annotations

import argparse
import copy
import json

import numpy as np
import torch

from mfpg_ros.bench.presets import PRESETS
from mfpg_ros.bench.suite import run_specs
from mfpg_ros.core.config import load_config
from mfpg_ros.core.episode import HIFI, LOFI_POOL
from mfpg_ros.core.numpy_policy import NumpyPolicy
from mfpg_ros.sim.engine import Engine
from mfpg_ros.sim.tasks import make_task
from mfpg_ros.trainer import Trainer


def actor(learner):
    return learner.model.actor_parameters()


def flat_grad(value, params):
    return torch.cat([g.flatten() for g in torch.autograd.grad(value, params)])


def flat_params(learner):
    return torch.cat([p.detach().flatten() for p in actor(learner)]).clone()


def cos(a, b):
    return float(a @ b / (a.norm() * b.norm() + 1e-30))


def kept(*groups):
    return [[e for e in g if not e.aborted] for g in groups]


def epoch_gradients(L, batch):
    """Mean over this epoch's minibatches (peeked with copied RNGs and coefficient) of g_hf, g_pair, g_pool."""
    params, coef, p = actor(L), copy.deepcopy(L.coef), L.cfg.ppo
    out, cs = {'hf': 0.0, 'pair': 0.0, 'pool': 0.0}, []
    minibatches = L._epoch_minibatches(batch, copy.deepcopy(L.minibatch_rng), copy.deepcopy(L.pool_rng))
    for idx, pool_idx in minibatches:
        loss, info = L._policy_loss(batch, idx, pool_idx, coef)
        c = info['c']
        r_h, a_h = L._ratio_and_advantages(batch.hf, idx, p.normalize_advantage)
        r_l, a_l = L._ratio_and_advantages(batch.lf, idx, False)
        r_m, a_m = L._ratio_and_advantages(batch.pool, pool_idx, False)
        g = {'hf': flat_grad(L._clipped(r_h, a_h).mean(), params),
             'pair': flat_grad(c * L._clipped(r_l, a_l).mean(), params),
             'pool': flat_grad(-c * L._clipped(r_m, a_m).mean(), params)}
        full = -flat_grad(loss, params)
        assert torch.allclose(full, g['hf'] + g['pair'] + g['pool'], atol=1e-5), 'decomposition does not add up'
        for k in out:
            out[k] = out[k] + g[k] / len(minibatches)
        cs.append(c)
    return out, float(np.mean(cs))


def log_ratio(L, part):
    with torch.no_grad():
        return float((L.model.log_prob(part.obs, part.actions) - part.old_log_prob).abs().mean())


def references(L, cfg, n_envs, steps, seed):
    """HF gradient from n_envs x steps fresh HF steps (and its two halves), LF gradient likewise."""
    policy, out = NumpyPolicy(L.model), {}
    for name, variant, fid in (('H', cfg.hifi_variant, HIFI), ('L', cfg.lofi_variant, LOFI_POOL)):
        episodes = Engine(make_task(cfg.task, variant), n_envs, seed=seed, nthread=1).collect(policy, steps, 0, fid)
        out[name] = L.policy_gradient(episodes)[0]
        if name == 'H':
            out['split'] = cos(L.policy_gradient(episodes[0::2])[0], L.policy_gradient(episodes[1::2])[0])
    return out


def snapshot(trainer, data, args, ref_seed):
    cfg, rows = trainer.cfg, []
    L = copy.deepcopy(trainer.learner)
    batch, _ = L._batch(*kept(*data))
    assert batch.mf and L.cfg.ppo.cv_clip == 'plain' and L.cfg.ppo.cv_epochs == 0
    theta0, n_epochs = flat_params(L), L.cfg.ppo.n_epochs
    L.cfg.ppo.n_epochs = 1
    for epoch in range(n_epochs + 1):
        ref = references(L, cfg, args.ref_envs, args.ref_steps // args.ref_envs, ref_seed + epoch)
        row = {'epoch': epoch + 1, 'ref_split': ref['split'], 'cos_HL': cos(ref['H'], ref['L']),
               **{f'logr_{k}': log_ratio(L, getattr(batch, k)) for k in ('hf', 'lf', 'pool')}}
        if epoch < n_epochs:
            g, c = epoch_gradients(L, batch)
            g['cv'], g['mf'], g['res'] = g['pair'] + g['pool'], g['hf'] + g['pair'] + g['pool'], g['hf'] + g['pair']
            before = flat_params(L)
            L._optimise(batch)  # this epoch's real minibatch steps
            step = flat_params(L) - before
            row.update(c=c, **{f'norm_{k}': float(v.norm()) for k, v in g.items()},
                       cos_cv_pool=cos(g['cv'], g['pool']), cos_mf_pool=cos(g['mf'], g['pool']),
                       **{f'cos_{k}_{r}': cos(g[k], ref[r]) for k in ('mf', 'hf', 'pool') for r in 'HL'},
                       **{f'cos_step_{r}': cos(step, ref[r]) for r in 'HL'})
        else:
            row['epoch'] = 'end'
        row['_ref'] = ref
        rows.append(row)
    whole = {'mf_ppo': flat_params(L) - theta0}
    for name, change in (('ppo', ('estimator', 'fixed_c', 0.0)), ('cv_epochs=1', ('ppo', 'cv_epochs', 1))):
        other = copy.deepcopy(trainer.learner)
        setattr(getattr(other.cfg, change[0]), change[1], change[2])
        other._optimise(batch)
        whole[name] = (flat_params(other) - theta0,
                       {k: log_ratio(other, getattr(batch, k)) for k in ('hf', 'lf', 'pool')})
    whole['mf_ppo'] = (whole['mf_ppo'], {k: rows[-1][f'logr_{k}'] for k in ('hf', 'lf', 'pool')})
    ref0 = rows[0]['_ref']  # the references at theta_old
    summary = {name: {'norm': float(d.norm()), 'cos_H': cos(d, ref0['H']), 'cos_L': cos(d, ref0['L']), **logr}
               for name, (d, logr) in whole.items()}
    return L, [{k: v for k, v in r.items() if k != '_ref'} for r in rows], summary


def run(setting, seed, args):
    spec = run_specs(PRESETS['quick_extra'], settings=[setting], methods=['mf_ppo'], seeds=[seed],
                     overrides={'algo.ppo.cv_epochs': 0,  # the control variate in every epoch
                                'algo.ppo.cv_level': 'gradient'})[0]
    trainer, out = Trainer(load_config(spec['config']), nthread=1), []
    for target in args.snapshots:
        while trainer.hf_steps < target:
            trainer.iteration()
        data = trainer.collect()
        copy_after, rows, summary = snapshot(trainer, data, args, ref_seed=10_000 * seed + target)
        trainer.collect = lambda: data  # the real iteration on the same data
        metrics = trainer.iteration()
        del trainer.collect
        pairs = zip(copy_after.model.parameters(), trainer.learner.model.parameters())
        assert all(torch.equal(a, b) for a, b in pairs), 'the epoch-by-epoch replay diverged from the real update'
        out.append({'setting': setting, 'seed': seed, 'hf_steps': target, 'rho': metrics['rho'], 'rows': rows,
                    'whole': summary, 'hf_return_recent': metrics['hf_return_recent']})
        print_snapshot(out[-1])
    return out


COLUMNS = [('epoch', 'ep', '{}'), ('c', 'c', '{:.2f}'), ('norm_hf', '|hf|', '{:.2f}'),
           ('norm_pair', '|pair|', '{:.2f}'), ('norm_pool', '|pool|', '{:.2f}'), ('norm_cv', '|cv|', '{:.2f}'),
           ('norm_res', '|hf+pair|', '{:.2f}'), ('norm_mf', '|mf|', '{:.2f}'),
           ('cos_cv_pool', 'cv.pool', '{:.2f}'), ('cos_mf_pool', 'mf.pool', '{:.2f}'),
           ('cos_mf_H', 'mf.H*', '{:.2f}'), ('cos_hf_H', 'hf.H*', '{:.2f}'), ('cos_pool_H', 'pool.H*', '{:.2f}'),
           ('cos_mf_L', 'mf.L*', '{:.2f}'), ('cos_hf_L', 'hf.L*', '{:.2f}'), ('cos_step_H', 'step.H*', '{:.2f}'),
           ('cos_step_L', 'step.L*', '{:.2f}'), ('cos_HL', 'H*.L*', '{:.2f}'), ('ref_split', 'split', '{:.2f}'),
           ('logr_hf', 'lr_hf', '{:.3f}'), ('logr_lf', 'lr_pair', '{:.3f}'), ('logr_pool', 'lr_pool', '{:.3f}')]


def table(rows):
    lines = [' '.join(f'{h:>7}' for _, h, _ in COLUMNS)]
    for r in rows:
        lines.append(' '.join(f'{fmt.format(r[k]) if k in r else "":>7}' for k, _, fmt in COLUMNS))
    return '\n'.join(lines)


def print_snapshot(s):
    print(f"\n== {s['setting']} seed {s['seed']} at {s['hf_steps']} HF steps (rho {s['rho']:.3f}, "
          f"recent HF return {s['hf_return_recent']:.0f})", flush=True)
    print(table(s['rows']))
    for name, w in s['whole'].items():
        print(f"  whole update {name:>12}: |dtheta| {w['norm']:.3f}  cos(dtheta, H*0) {w['cos_H']:.2f}  "
              f"cos(dtheta, L*0) {w['cos_L']:.2f}  |log r| hf {w['hf']:.3f} pair {w['lf']:.3f} pool {w['pool']:.3f}")


def aggregate(results):
    """Mean (sd over seeds) per snapshot for epoch 1, epochs 2-10 averaged, and the end of the update."""
    print('\n== mean (sd) over seeds; "2-10" averages epochs 2-10 within a seed first')
    for setting in dict.fromkeys(s['setting'] for s in results):
        for target in dict.fromkeys(s['hf_steps'] for s in results):
            snaps = [s for s in results if s['setting'] == setting and s['hf_steps'] == target]
            print(f'\n-- {setting} at {target} HF steps ({len(snaps)} seeds)')
            groups = {'1': lambda rs: rs[:1], '2-10': lambda rs: rs[1:-1], 'end': lambda rs: rs[-1:]}
            print(f"{'ep':>5} " + ' '.join(f'{h:>12}' for k, h, _ in COLUMNS[1:]))
            for label, pick in groups.items():
                cells = []
                for k, _, _ in COLUMNS[1:]:
                    per_seed = [np.mean([r[k] for r in pick(s['rows']) if k in r] or [np.nan]) for s in snaps]
                    cells.append('' if np.isnan(per_seed).all()
                                 else f'{np.mean(per_seed):.2f}({np.std(per_seed):.2f})')
                print(f'{label:>5} ' + ' '.join(f'{c:>12}' for c in cells))
            for name in snaps[0]['whole']:
                w = [s['whole'][name] for s in snaps]
                print(f"  whole {name:>12}: " + '  '.join(
                    f"{k} {np.mean([x[k] for x in w]):.3f}({np.std([x[k] for x in w]):.3f})"
                    for k in ('norm', 'cos_H', 'cos_L', 'hf', 'lf', 'pool')))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--settings', nargs='+', default=['cartpole_pole_mass_1.5'])
    parser.add_argument('--seeds', nargs='+', type=int, default=[0, 1, 2])
    parser.add_argument('--snapshots', nargs='+', type=int, default=[500, 2000, 4000], help='HF steps')
    parser.add_argument('--ref-steps', type=int, default=40_000, help='HF (and LF) steps per reference gradient')
    parser.add_argument('--ref-envs', type=int, default=40)
    parser.add_argument('--json', help='write every row here')
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    results = [s for setting in args.settings for seed in args.seeds for s in run(setting, seed, args)]
    aggregate(results)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(results, f, indent=1)


if __name__ == '__main__':
    main()
