"""`mfpg bench suite`: settings x methods x seeds -> one results folder (resumable, parallel, one torch thread each).

Layout of OUT:
  suite_<preset>.json                     the preset, the settings, methods and seeds run into OUT, the --set overrides
  runs/<setting>/<method>/seed<k>/        config.yaml, curve.csv, summary.json (written last: the run is done)
  curves.csv                              one row per finished run in OUT x evaluation point
  summary.csv                             one row per finished run in OUT (timings, LF throughput, mean rho and c,
                                          final return)
Evaluations: deterministic (mean action), eval_episodes episodes on the HF plant, at HF step 0 and every
`eval_every` HF steps on the common axis hf_steps / k (k-x methods), plus after the last iteration.
`--set KEY=VALUE` (dotted TrainConfig keys, e.g. algo.clip_mode=separate) overrides every run's config after the
preset and the method; the overrides are kept in each run's config.yaml and, by default, in the folder name
(bench_out/<preset>__algo.clip_mode=separate).
A re-run skips the finished runs, but only those whose config.yaml holds the config this code would run now
(defaults included); a run made under other defaults stops the suite with the keys that changed.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import fcntl
import json
import math
import os
import time
from pathlib import Path

from mfpg_ros.bench.methods import METHODS
from mfpg_ros.bench.presets import PRESETS, Preset
from mfpg_ros.bench.settings import SETTINGS

CURVE_FIELDS = ('setting', 'gap', 'family', 'method', 'seed', 'iteration', 'hf_steps', 'x_steps', 'eval_return')
SUMMARY_FIELDS = ('setting', 'gap', 'family', 'task', 'method', 'seed', 'hf_multiplier', 'iterations', 'hf_steps',
                  'lf_steps', 'final_return', 'wall_seconds', 'eval_seconds', 'iteration_seconds',
                  'collect_seconds', 'update_seconds', 'lf_steps_per_s', 'rho_mean', 'c_mean', 'var_ratio_mean',
                  'n_aligned_mean', 'skipped_fraction', 'clamped_fraction', 'reward_correction_mean', 'final_std',
                  'unstable_lf_segments', 'policy_grad_norm_mean', 'value_grad_norm_mean')


def run_specs(preset: Preset, settings=None, methods=None, seeds=None, overrides=None) -> list[dict]:
    """Everything one run needs, as plain data (picklable, written to config.yaml). `overrides`: {dotted key: value}
    applied to every run's config last."""
    specs = []
    for name in settings or preset.settings:
        setting = SETTINGS[name]
        budget = preset.budget(setting.family)
        base = {'task': setting.task, 'hifi_variant': setting.hifi, 'lofi_variant': setting.lofi,
                'eval_every': 0, 'eval_episodes': preset.eval_episodes, 'target_return': None,
                'algo': dict(budget.algo)}
        for method_name in methods or preset.methods:
            method = METHODS[method_name]
            for seed in seeds or preset.seeds:
                cfg, iterations = method.configure(base, setting.family, budget.hf_steps)
                cfg.update(seed=int(seed), iterations=iterations)
                for dotted, value in (overrides or {}).items():
                    *path, leaf = dotted.split('.')
                    node = cfg
                    for key in path:
                        node = node.setdefault(key, {})
                    node[leaf] = value
                specs.append({'setting': name, 'gap': setting.gap, 'family': setting.family, 'method': method_name,
                              'seed': int(seed), 'hf_multiplier': method.hf_multiplier,
                              'eval_every': budget.eval_every, 'overrides': dict(overrides or {}), 'config': cfg})
    return specs


FINISHED = 'runs/*/*/seed*/summary.json'  # a run's summary.json is written last


def run_dir(out: Path, spec: dict) -> Path:
    return out / 'runs' / spec['setting'] / spec['method'] / f"seed{spec['seed']}"


def _cost(spec: dict) -> float:
    """Rough relative cost (simulated steps), to start the longest runs first."""
    algo, family = spec['config']['algo'], spec['family']
    pool = algo.get('pool_envs', 9) * algo.get('pool_steps_per_env', 1000)
    lf = 0 if algo['algorithm'] in ('reinforce', 'ppo') else pool
    weight = {'cartpole': 1.0, 'pendulum': 0.6}.get(family, 1.6)
    return spec['config']['iterations'] * (algo['hf_steps_per_iter'] + lf) * weight


def execute(spec: dict, out: str) -> dict:
    """Train one run and write its files; returns its summary. Runs in a worker process."""
    os.environ['OMP_NUM_THREADS'] = '1'
    import torch
    import yaml

    from mfpg_ros.core.config import load_config
    from mfpg_ros.trainer import Trainer

    torch.set_num_threads(1)
    folder = run_dir(Path(out), spec)
    folder.mkdir(parents=True, exist_ok=True)
    cfg = load_config(spec['config'])
    (folder / 'config.yaml').write_text(yaml.safe_dump(
        {**{k: v for k, v in spec.items() if k != 'config'}, 'config': _plain(cfg.to_dict())}, sort_keys=False))
    k, every = spec['hf_multiplier'], spec['eval_every']
    t_start = time.perf_counter()
    trainer = Trainer(cfg, nthread=1)
    history, rows, eval_seconds, next_x = [], [], [0.0], [every]
    keys = {key: spec[key] for key in ('setting', 'gap', 'family', 'method', 'seed')}

    def evaluate(iteration: int, hf_steps: int) -> None:
        t0 = time.perf_counter()
        value = trainer.evaluate()
        eval_seconds[0] += time.perf_counter() - t0
        rows.append({**keys, 'iteration': iteration, 'hf_steps': hf_steps, 'x_steps': hf_steps / k,
                     'eval_return': value})

    def on_metrics(m: dict) -> None:
        history.append(m)
        x = m['hf_total_steps'] / k
        if x >= next_x[0] or m['iteration'] + 1 == cfg.iterations:
            evaluate(m['iteration'] + 1, m['hf_total_steps'])
            next_x[0] = (math.floor(x / every) + 1) * every

    evaluate(0, 0)
    trainer.run(on_metrics)
    wall = time.perf_counter() - t_start
    summary = {**keys, 'task': cfg.task, 'hf_multiplier': k, **_summarise(history, trainer), 'wall_seconds': wall,
               'eval_seconds': eval_seconds[0], 'final_return': rows[-1]['eval_return']}
    _write_csv(folder / 'curve.csv', CURVE_FIELDS, rows)
    tmp = folder / 'summary.json.tmp'
    tmp.write_text(json.dumps(summary, indent=1, default=float))
    tmp.replace(folder / 'summary.json')
    return summary


def _summarise(history: list[dict], trainer) -> dict:
    import numpy as np

    def mean(key, rows=history):
        values = [r[key] for r in rows if key in r and r[key] is not None and math.isfinite(r[key])]
        return float(np.mean(values)) if values else float('nan')

    used = [r for r in history if not r.get('skipped', 0.0)]
    collect, lf = sum(r['collect_seconds'] for r in history), sum(r['lf_steps'] for r in history)
    mf = 'c' in (history[0] if history else {})  # a control-variate learner (pairing 'matched' has no rho)
    clamped = [r for r in used if r.get('rho', 0.0) < 0 and r.get('c', 0.0) == 0.0] if mf else []
    return {'iterations': len(history), 'hf_steps': trainer.hf_steps, 'lf_steps': lf,
            'iteration_seconds': mean('iteration_seconds'), 'collect_seconds': mean('collect_seconds'),
            'update_seconds': mean('update_seconds'), 'lf_steps_per_s': lf / collect if lf and collect else 0.0,
            'rho_mean': mean('rho', used) if mf else float('nan'), 'c_mean': mean('c', used) if mf else float('nan'),
            'var_ratio_mean': mean('var_ratio', used) if mf else float('nan'),
            'n_aligned_mean': mean('n_aligned'), 'skipped_fraction': 1 - len(used) / max(1, len(history)),
            'clamped_fraction': len(clamped) / max(1, len(used)) if mf else float('nan'),
            'reward_correction_mean': mean('reward_correction'),  # DARC / PAR: mean LF reward change per step
            'final_std': history[-1]['std'] if history else float('nan'),
            'policy_grad_norm_mean': mean('policy_grad_norm', used),  # pre-clip norms (REINFORCE family)
            'value_grad_norm_mean': mean('value_grad_norm', used),
            'unstable_lf_segments': trainer.pool.unstable_count + trainer.replayer.unstable_count}


def _flat(tree: dict, prefix: str = '') -> dict:
    out = {}
    for key, value in tree.items():
        out.update(_flat(value, f'{prefix}{key}.') if isinstance(value, dict) else {f'{prefix}{key}': value})
    return out


def _config_changes(stored: dict, now: dict) -> list[str]:
    """Dotted keys whose values differ (NaN equals NaN), as 'key: old -> new'."""
    def same(x, y) -> bool:
        return x == y or (isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y))
    a, b = _flat(stored), _flat(now)
    return [f'{k}: {a.get(k)} -> {b.get(k)}' for k in sorted(a.keys() | b.keys()) if not same(a.get(k), b.get(k))]


class Refused(ValueError):
    """OUT cannot take this call's runs (the message says why)."""


@contextlib.contextmanager
def claim(out: Path):
    """Hold OUT for one suite call at a time (two calls would run the same runs into the same folders)."""
    out.mkdir(parents=True, exist_ok=True)
    with open(out / '.suite.lock', 'w') as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Refused(f'another mfpg bench suite is running into {out}; wait for it or use another --out') from None
        yield


def _refuse_stale(out: Path, done: list[dict]) -> None:
    """A finished run is reused only if it was made with the config this code would run now (defaults included):
    results of an older default must not pass for the current one."""
    import yaml

    from mfpg_ros.core.config import load_config
    for spec in done:
        config = run_dir(out, spec) / 'config.yaml'  # a run without one counts as changed in every key
        stored = ((yaml.safe_load(config.read_text()) if config.exists() else None) or {}).get('config', {})
        changes = _config_changes(stored, _plain(load_config(spec['config']).to_dict()))
        if changes:
            raise Refused(f'{run_dir(out, spec)} was run with another config ({"; ".join(changes[:3])}): '
                             'the code or its defaults changed since; use another --out or delete the old runs')


def _plain(value):
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _write_csv(path: Path, fields, rows: list[dict]) -> None:
    tmp = path.with_suffix('.tmp')
    with tmp.open('w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction='ignore')
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)


def _execute_star(args):
    return execute(*args)


def collect_results(out: Path) -> tuple[list[dict], list[dict]]:
    """Aggregate every finished run in OUT (earlier calls' too) into OUT/curves.csv and OUT/summary.csv; returns
    (curves, summaries)."""
    curves, summaries = [], []
    for summary in sorted(out.glob(FINISHED)):
        summaries.append(json.loads(summary.read_text()))
        with (summary.parent / 'curve.csv').open() as f:
            curves.extend(csv.DictReader(f))
    _write_csv(out / 'curves.csv', CURVE_FIELDS, curves)
    _write_csv(out / 'summary.csv', SUMMARY_FIELDS, summaries)
    return curves, summaries


def prepare(preset: Preset, out: Path, specs: list[dict], overrides=None) -> list[dict]:
    """Check OUT (held with claim) and record this call in OUT/suite_<preset>.json (merged with earlier calls);
    returns the runs left to do. Refused if OUT holds finished runs (of any call) made with other --set overrides or
    another config. Overrides are compared as JSON stores them (NaN as null)."""
    from mfpg_ros.train_inprocess import json_ready
    given, record = overrides or {}, out / f'suite_{preset.name}.json'
    overrides = json_ready(given)
    earlier = json.loads(record.read_text()) if record.exists() else {}
    if earlier and json_ready(earlier.get('overrides', {})) != overrides and any(out.glob(FINISHED)):
        raise Refused(f'{out} holds runs made with other --set overrides ({earlier.get("overrides")}, see '
                         f'{record}); use another --out')
    _refuse_stale(out, finished_specs(preset, out, given))  # every run the report aggregates, not only this call's
    merged = {key: sorted({*earlier.get(key, []), *(spec[key[:-1]] for spec in specs)})
              for key in ('settings', 'methods', 'seeds')}
    record.write_text(json.dumps({'preset': preset.name, **merged, 'overrides': overrides}, indent=1))
    return sorted((s for s in specs if not (run_dir(out, s) / 'summary.json').exists()), key=_cost, reverse=True)


def finished_specs(preset: Preset, out: Path, overrides: dict) -> list[dict]:
    """The spec this code would run for each finished run folder in OUT (runs/<setting>/<method>/seed<k>)."""
    specs = []
    for summary in sorted(out.glob(FINISHED)):
        folder = summary.parent
        setting, method, seed = folder.parent.parent.name, folder.parent.name, folder.name.removeprefix('seed')
        if setting not in SETTINGS or method not in METHODS or not seed.isdigit():
            raise Refused(f'{folder} is no run of a known setting, method and seed: use another --out')
        specs += run_specs(preset, [setting], [method], [int(seed)], overrides)
    return specs


def run_suite(preset: Preset, out: Path, workers: int = 2, settings=None, methods=None, seeds=None,
              progress: bool = True, overrides=None) -> tuple[list[dict], list[dict]]:
    """Run what is not finished yet of the preset (or the subsets given) into OUT; aggregate everything in OUT."""
    specs = run_specs(preset, settings, methods, seeds, overrides)
    with claim(out):
        todo = prepare(preset, out, specs, overrides)
        _run(todo, out, len(specs), workers, progress, preset.name)
        return collect_results(out)


def _run(todo: list[dict], out: Path, total: int, workers: int, progress: bool, name: str) -> None:
    from tqdm import tqdm
    bar = tqdm(total=total, initial=total - len(todo), desc=f'suite {name}', unit='run', disable=not progress,
               smoothing=0.05)
    jobs = [(spec, str(out)) for spec in todo]
    if workers <= 1:
        for job in jobs:
            _execute_star(job)
            bar.update()
    else:
        import multiprocessing
        os.environ['OMP_NUM_THREADS'] = '1'  # inherited by the workers before they import numpy / torch
        with multiprocessing.get_context('spawn').Pool(workers) as pool:
            for summary in pool.imap_unordered(_execute_star, jobs):
                bar.update()
                bar.set_postfix_str(f"{summary['setting']}/{summary['method']}/{summary['seed']}")
    bar.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='mfpg bench suite', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--preset', default='quick', choices=sorted(PRESETS))
    parser.add_argument('--out', default=None, help='results folder (default: bench_out/<preset>)')
    parser.add_argument('--workers', type=int, default=2, help='parallel runs (one torch thread each)')
    parser.add_argument('--settings', nargs='*', default=None, help='subset (or extra) settings by name')
    parser.add_argument('--methods', nargs='*', default=None, help='subset (or extra) methods by name')
    parser.add_argument('--seeds', nargs='*', type=int, default=None)
    parser.add_argument('--set', action='append', default=[], metavar='KEY=VALUE',
                        help='config override for every run, e.g. algo.clip_mode=separate (repeatable)')
    parser.add_argument('--list', action='store_true', help='print the runs and exit')
    args = parser.parse_args(argv)
    preset = PRESETS[args.preset]
    from mfpg_ros.core.config import load_config
    from mfpg_ros.train_inprocess import parse_overrides
    try:  # typed as `mfpg train-inprocess` types them (algo.lr=1e-3 is a float, not YAML's text)
        overrides = parse_overrides(args.set)
    except ValueError as exc:
        parser.error(str(exc))
    tag = ''.join(f'__{item}' for item in args.set)
    for name in args.settings or ():
        if name not in SETTINGS:
            parser.error(f'unknown setting {name!r}; valid: {sorted(SETTINGS)}')
    for name in args.methods or ():
        if name not in METHODS:
            parser.error(f'unknown method {name!r}; valid: {sorted(METHODS)}')
    specs = run_specs(preset, args.settings, args.methods, args.seeds, overrides)
    for spec in specs:
        try:
            load_config(spec['config'])
        except (ValueError, TypeError) as exc:
            parser.error(f"{spec['setting']}/{spec['method']}: {exc}")
    out = Path(args.out or f'bench_out/{preset.name}{tag}')
    if args.list:
        for s in specs:
            print(s['setting'], s['method'], s['seed'], s['config']['iterations'], 'iterations of',
                  s['config']['algo']['hf_steps_per_iter'], 'HF steps')
        return 0
    t0, before = time.perf_counter(), len(list(out.glob(FINISHED)))
    try:  # Refused comes before any run starts
        _, summaries = run_suite(preset, out, args.workers, args.settings, args.methods, args.seeds,
                                 overrides=overrides)
    except Refused as exc:
        parser.error(str(exc))
    print(f'{len(summaries) - before} runs made in {time.perf_counter() - t0:.0f} s; {out} holds {len(summaries)} '
          f'finished runs (summary.csv, curves.csv; `mfpg bench report --out {out}` for the tables)')
    return 0
