"""`mfpg bench graph`: wall time per MF iteration through the node graph (separate processes over DDS, started by
`mfpg train`) vs the in-process trainer, same config and budget, measured side by side in one run."""
from __future__ import annotations

import argparse
import csv
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from mfpg_ros.core.config import load_config
from mfpg_ros.graph import share_file
from mfpg_ros.trainer import Trainer


def graph_iteration_seconds(iterations: int, sets: list[str], run_dir: Path) -> list[float]:
    cmd = [sys.executable, '-m', 'mfpg_ros.cli', 'train', '--run-dir', str(run_dir), '--iterations', str(iterations),
           '--target-return', 'nan', *sum((['--set', s] for s in sets), [])]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    with open(run_dir / 'metrics.csv') as f:
        return [float(row['iteration_seconds']) for row in csv.DictReader(f)]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog='mfpg bench graph', description=__doc__)
    parser.add_argument('--iterations', type=int, default=15)
    parser.add_argument('--set', action='append', default=[], metavar='KEY=VALUE', help='config override')
    args = parser.parse_args(argv)
    skip = 2  # start-up and first-iteration effects
    overrides = dict(s.split('=', 1) for s in args.set)
    cfg = load_config(share_file('config', 'train.yaml'), iterations=args.iterations, target_return=None,
                      eval_every=0, **{k: float(v) if '.' in v else int(v) for k, v in overrides.items()})

    def run_in_process() -> list[float]:
        return [m['iteration_seconds'] for m in Trainer(cfg).run()][skip:]
    # The reference runs before and after the graph: a shared machine's speed drifts, and both halves see it.
    before = run_in_process()
    with tempfile.TemporaryDirectory() as tmp:
        through_graph = graph_iteration_seconds(args.iterations, args.set, Path(tmp) / 'run')[skip:]
    after = run_in_process()
    in_process = before + after
    print(f'in-process trainer before / after the graph: {statistics.median(before) * 1e3:.0f} / '
          f'{statistics.median(after) * 1e3:.0f} ms/iteration')
    g, p = statistics.median(through_graph), statistics.median(in_process)
    print(f'{cfg.task}: {cfg.algo.hf_steps_per_iter} HF steps + {cfg.algo.pool_envs}x{cfg.algo.pool_steps_per_env} '
          f'pool steps per iteration, median over {len(in_process)} iterations')
    print(f'node graph (separate processes over DDS, recording its bag as `mfpg train` does): {g * 1e3:.0f} '
          f'ms/iteration; in-process trainer: {p * 1e3:.0f} ms/iteration')
    print(f'graph_vs_inprocess_iteration_time: {g / p:.2f}')
    return 0
