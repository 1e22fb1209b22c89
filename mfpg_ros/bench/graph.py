"""`mfpg bench graph`: wall time per MF iteration through the node graph (its processes as `mfpg train` starts
them, DDS between all nodes; --no-compose: one process per node) vs the in-process trainer, same config and budget,
measured side by side in one run. Also the CPU each process used per iteration (sampled from /proc while the graph
runs) against the in-process trainer's: on a machine with few cores the graph's iteration time is bounded by its
total CPU divided by the cores.

A shared VM's speed drifts by 1.5x within a minute, so the two are timed in turns: in-process, graph, in-process,
graph, ..., in-process. Each graph run is compared with the in-process runs just before and after it; the headline
is the median of those per-round ratios."""
from __future__ import annotations

import argparse
import contextlib
import csv
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from mfpg_ros.core.config import load_config
from mfpg_ros.graph import PLANT_NODES, TRAINING_NODES, share_file
from mfpg_ros.node_process import node_name
from mfpg_ros.runner import split_assignments
from mfpg_ros.trainer import Trainer


def node_cpu_seconds(runner: psutil.Process) -> dict[str, float]:
    """User + system CPU seconds so far of each node process under the runner."""
    cpu = {}
    for child in runner.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            name = node_name(child.cmdline())
            if name:
                times = child.cpu_times()
                cpu[name] = times.user + times.system
    return cpu


def completed_iterations(metrics_csv: Path) -> int:
    with contextlib.suppress(OSError), open(metrics_csv) as f:
        return max(0, sum(1 for _ in f) - 1)
    return 0


def run_graph(iterations: int, sets: list[str], run_dir: Path, skip: int, lofi_workers: int = 1,
              compose: bool = True) -> tuple[list[float], dict[str, float]]:
    """`mfpg train` for `iterations`: each iteration's wall time, and each node's CPU seconds per iteration
    between the end of iteration `skip` and the last iteration seen while every node was still up."""
    cmd = [sys.executable, '-m', 'mfpg_ros.cli', 'train', '--run-dir', str(run_dir), '--iterations', str(iterations),
           '--target-return', 'nan', '--lofi-workers', str(lofi_workers), *sum((['--set', s] for s in sets), []),
           *([] if compose else ['--no-compose'])]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    runner, first, last = psutil.Process(proc.pid), None, None
    while proc.poll() is None:
        done = completed_iterations(run_dir / 'metrics.csv')
        if skip <= done < iterations and (last is None or done > last[0]):
            last = (done, node_cpu_seconds(runner))
            first = first or last
        time.sleep(0.02)
    if proc.returncode:
        raise subprocess.CalledProcessError(proc.returncode, cmd)
    with open(run_dir / 'metrics.csv') as f:
        seconds = [float(row['iteration_seconds']) for row in csv.DictReader(f)]
    if first is None or last[0] == first[0]:
        return seconds, {}
    per_iteration = {name: (last[1][name] - first[1][name]) / (last[0] - first[0])
                     for name in first[1] if name in last[1]}
    return seconds, per_iteration


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog='mfpg bench graph', description=__doc__)
    parser.add_argument('--iterations', type=int, default=15, help='per run')
    parser.add_argument('--rounds', type=int, default=3, help='graph runs, each between two in-process runs')
    parser.add_argument('--set', action='append', default=[], metavar='KEY=VALUE',
                        help='config override, or NODE.PARAM=VALUE for a node of the graph')
    parser.add_argument('--lofi-workers', type=int, default=1, help='lofi_sim processes in the graph (mfpg train)')
    parser.add_argument('--no-compose', action='store_true',
                        help='one process per node (mfpg train --no-compose); default: the graph as mfpg train starts '
                             'it, the twin\'s control loop in one process')
    args = parser.parse_args(argv)
    skip = 2  # start-up and first-iteration effects
    # node.param ones (the twin plant's too) go to the graph alone
    overrides, _ = split_assignments(args.set, (*TRAINING_NODES, *PLANT_NODES['twin']))
    cfg = load_config(share_file('config', 'train.yaml'), iterations=args.iterations, target_return=None,
                      eval_every=0, **overrides)

    def run_in_process() -> tuple[list[float], float]:
        """Iteration wall times past the warm-up, and CPU seconds per iteration over them."""
        marks = []  # (wall seconds of the iteration, process CPU seconds at its end)
        Trainer(cfg).run(on_metrics=lambda m: marks.append((m['iteration_seconds'], time.process_time())))
        seconds, cpu = zip(*marks)
        return list(seconds[skip:]), (cpu[-1] - cpu[skip - 1]) / (len(cpu) - skip)
    in_process_runs = [run_in_process()]
    graph_runs = []
    for _ in range(args.rounds):
        with tempfile.TemporaryDirectory() as tmp:
            seconds, cpu = run_graph(args.iterations, args.set, Path(tmp) / 'run', skip, args.lofi_workers,
                                     not args.no_compose)
            graph_runs.append((seconds[skip:], cpu))
        in_process_runs.append(run_in_process())
    ratios = []
    for k, (seconds, _) in enumerate(graph_runs):
        around = in_process_runs[k][0] + in_process_runs[k + 1][0]
        ratios.append(statistics.median(seconds) / statistics.median(around))
        print(f'round {k + 1}: node graph {statistics.median(seconds) * 1e3:.0f} ms/iteration, in-process before / '
              f'after {statistics.median(in_process_runs[k][0]) * 1e3:.0f} / '
              f'{statistics.median(in_process_runs[k + 1][0]) * 1e3:.0f} ms: ratio {ratios[-1]:.2f}')
    g = statistics.median([t for seconds, _ in graph_runs for t in seconds])
    p = statistics.median([t for seconds, _ in in_process_runs for t in seconds])
    print(f'{cfg.task}: {cfg.algo.hf_steps_per_iter} HF steps + {cfg.algo.pool_envs}x{cfg.algo.pool_steps_per_env} '
          f'pool steps per iteration, {args.rounds} rounds of {args.iterations} iterations ({skip} warm-up)')
    layout = 'one process per node' if args.no_compose else 'the twin\'s control loop in one process, the rest apart'
    print(f'node graph ({layout}, DDS between all nodes, recording its bag as `mfpg train` does): {g * 1e3:.0f} '
          f'ms/iteration; in-process trainer: {p * 1e3:.0f} ms/iteration (medians over all rounds)')
    node_cpu = {name: statistics.median(cpu[name] for _, cpu in graph_runs if name in cpu)
                for name in {name for _, cpu in graph_runs for name in cpu}}
    if node_cpu:
        in_process_cpu = statistics.median(cpu for _, cpu in in_process_runs)
        total, cores = sum(node_cpu.values()), os.cpu_count()
        print('CPU per iteration: ' + ', '.join(f'{name} {sec * 1e3:.0f} ms' for name, sec in sorted(node_cpu.items()))
              + f'; graph total {total * 1e3:.0f} ms on {cores} cores (at least {total / cores * 1e3:.0f} ms of wall '
              f'time), in-process trainer {in_process_cpu * 1e3:.0f} ms')
    print(f'graph_vs_inprocess_iteration_time: {statistics.median(ratios):.2f}')
    return 0
