"""`mfpg train-inprocess`: the whole training loop in one process, no ROS (benchmarks, quick experiments)."""
from __future__ import annotations

import argparse
import json
import math
import os
import sys

import yaml

from mfpg_ros.core.config import ignored_settings_warning, load_config
from mfpg_ros.graph import check_variants, config_value, share_file
from mfpg_ros.trainer import Trainer

VARIANT_KEYS = ('hifi_variant', 'lofi_variant')


def parse_overrides(pairs: list[str]) -> dict:
    """['algo.lr=1e-3', ...] -> {'algo.lr': 0.001}, typed as TrainConfig declares (ValueError otherwise). A variant
    may also be a dict of knobs here (`lofi_variant={gravity: 1.2}`): no ROS parameter has to hold it."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition('=')
        if not sep:
            raise ValueError(f'--set expects KEY=VALUE, got {pair!r}')
        knobs = yaml.safe_load(value) if key in VARIANT_KEYS else None
        out[key] = knobs if isinstance(knobs, dict) else config_value(key, value)
    return out


def json_ready(values: dict) -> dict:
    """As standard JSON (jq, other languages) takes it: a float that is not finite (no HF return yet; NaN, a ROS
    file's stand-in for null) becomes None (null)."""
    return {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in values.items()}


def json_line(metrics: dict) -> str:
    return json.dumps(json_ready(metrics))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='mfpg train-inprocess', description=__doc__)
    parser.add_argument('--config', default=None, help='training YAML (default: the package config/train.yaml)')
    parser.add_argument('--set', nargs='+', action='extend', default=[], metavar='KEY=VALUE',
                        help='config overrides, e.g. --set algo.lr=1e-3 seed=3 (repeatable)')
    parser.add_argument('--json', action='store_true', help='print one JSON line per iteration')
    parser.add_argument('--resume', metavar='CKPT', help='continue from a --save checkpoint (its config; --iterations '
                        'and --set of iterations, eval_every, eval_episodes, target_return may change)')
    parser.add_argument('--iterations', type=int, help='total iterations (overrides the config)')
    parser.add_argument('--save', metavar='CKPT', help='write a checkpoint here every --save-every iterations and at '
                        'the end')
    parser.add_argument('--save-every', type=int, default=10)
    args = parser.parse_args(argv)
    if args.save_every < 1:
        parser.error('--save-every must be >= 1')
    if args.save and os.path.exists(args.save) and not (args.resume and os.path.exists(args.resume)
                                                        and os.path.samefile(args.save, args.resume)):
        parser.error(f'{args.save} exists: another run would be overwritten (choose another --save, delete it, or '
                     'continue it with --resume and the same --save)')
    total = {} if args.iterations is None else {'iterations': args.iterations}
    try:
        if args.resume:
            if args.config:
                raise ValueError('--config does not go with --resume: the checkpoint carries its config')
            trainer = Trainer.resume(args.resume, **{**parse_overrides(args.set), **total})
            if trainer.learner.version >= trainer.cfg.iterations:
                raise ValueError(f'{args.resume} is at version {trainer.learner.version}: nothing to train up to '
                                 f'iterations={trainer.cfg.iterations} (raise --iterations)')
        else:
            cfg = load_config(args.config or share_file('config', 'train.yaml'), **parse_overrides(args.set), **total)
            check_variants(cfg)
            trainer = Trainer(cfg)
    except (ValueError, TypeError, OSError) as exc:
        parser.error(str(exc))
    unused = ignored_settings_warning(trainer.cfg.algo)
    if unused:
        print(f'warning: {unused}', file=sys.stderr, flush=True)

    def show(m: dict) -> None:
        if args.json:
            print(json_line(m), flush=True)
        elif 'eval_return' in m or m['iteration'] % 10 == 0:
            ev = f" eval {m['eval_return']:.1f}" if 'eval_return' in m else ''
            ret = '' if math.isnan(m['hf_return']) else f" hf_return {m['hf_return']:.1f}"
            rho = f" rho {m['rho']:+.2f}" if 'rho' in m else ''
            print(f"iter {m['iteration']:4d} hf_steps {m['hf_total_steps']}{ret} c {m.get('c', 0):+.2f}{rho} "
                  f"{m['iteration_seconds'] * 1e3:.0f} ms{ev}", flush=True)

    def save(m: dict) -> None:
        show(m)
        if args.save and trainer.learner.version % args.save_every == 0:
            trainer.save(args.save)

    history = trainer.run(save)
    if history and trainer.solved(history[-1]):
        print(f"solved at iteration {history[-1]['iteration']}: recent HF return "
              f"{history[-1]['hf_return_recent']:.1f} >= target_return {trainer.cfg.target_return:g}", flush=True)
    if args.save:
        print(f'checkpoint: {trainer.save(args.save)} (version {trainer.learner.version})', flush=True)
    return 0
