#!/usr/bin/env python3
"""Soak test (not run in CI): train through the embedded runner for a long time and watch every node's memory.

Runs `mfpg train` (never stopping early) for --duration seconds, samples the resident memory (RSS) of every node
process every --interval seconds with psutil, and reports per node the RSS after the warm-up, at the end, the
growth and its linear trend in MB/hour; then the Fast DDS shared-memory files (/dev/shm/fastdds_*) that appeared
during the run and are still there after it ended.

    .venv/bin/python scripts/soak.py --duration 1800
"""
from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil

from mfpg_ros.node_process import node_name

MB = 1 << 20


def sample(runner: psutil.Process) -> dict[str, float]:
    rss = {}
    with contextlib.suppress(psutil.Error):
        rss['runner (mfpg train)'] = runner.memory_info().rss / MB
        for child in runner.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                name = node_name(child.cmdline())
                if name:
                    rss[name] = child.memory_info().rss / MB
    return rss


def shm_files() -> dict[str, int]:
    out = {}
    for path in Path('/dev/shm').glob('fastdds_*'):
        with contextlib.suppress(OSError):
            out[path.name] = path.stat().st_size
    return out


def is_zombie(lock_file: Path) -> bool:
    """A Fast DDS segment whose owner is gone: its `_el` lock file can be locked (as `fastdds shm clean` tests)."""
    try:
        with open(lock_file, 'ab') as f:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released when the file closes
        return True
    except OSError:
        return False


def report(samples: list[tuple[float, dict]], warmup: float, csv_path: Path) -> None:
    names = sorted({n for _, rss in samples for n in rss})
    with open(csv_path, 'w') as f:
        f.write('seconds,' + ','.join(names) + '\n')
        for t, rss in samples:
            f.write(f'{t:.1f},' + ','.join(f'{rss[n]:.2f}' if n in rss else '' for n in names) + '\n')
    width = max([22, *map(len, names)])  # a composed process: its nodes joined by '+'
    print(f'{"process":{width}s} {"RSS after warm-up":>18s} {"RSS at end":>11s} {"growth":>9s} {"2nd half":>9s} '
          f'{"trend":>11s}')
    for name in names:
        series = [(t, rss[name]) for t, rss in samples if name in rss and t >= warmup]
        if len(series) < 4:
            print(f'{name:{width}s} too few samples after the warm-up')
            continue
        t, mb = np.array(series).T
        slope = np.polyfit(t, mb, 1)[0] * 3600
        half = mb[-1] - mb[len(mb) // 2]
        print(f'{name:{width}s} {mb[0]:15.1f} MB {mb[-1]:8.1f} MB {mb[-1] - mb[0]:+6.1f} MB {half:+6.1f} MB '
              f'{slope:+7.1f} MB/h')


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--duration', type=float, default=1800.0, help='seconds of training (default 30 min)')
    parser.add_argument('--interval', type=float, default=5.0, help='seconds between RSS samples')
    parser.add_argument('--warmup', type=float, default=60.0, help='seconds not counted in the growth (start-up)')
    parser.add_argument('--run-dir', help='run folder (default: a temporary one)')
    parser.add_argument('train_args', nargs='*', help='more `mfpg train` arguments after --, e.g. -- --set ...')
    args = parser.parse_args()
    mfpg = Path(sys.executable).parent / 'mfpg'
    run_dir = args.run_dir or tempfile.mkdtemp(prefix='mfpg_soak_')
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, ROS_AUTOMATIC_DISCOVERY_RANGE='LOCALHOST', OMP_NUM_THREADS='1')
    env.setdefault('AMENT_PREFIX_PATH', sys.prefix)
    domain = contextlib.ExitStack()
    if 'ROS_DOMAIN_ID' not in env:  # a domain of our own, as the tests and benchmarks take
        from mfpg_ros.bench.harness import reserve_domain
        env['ROS_DOMAIN_ID'] = str(reserve_domain(domain))
    shm_before = shm_files()
    cmd = [str(mfpg), 'train', '--run-dir', run_dir, '--iterations', '1000000', '--target-return', 'nan',
           '--timeout', str(args.duration), *args.train_args]
    print(f'$ ROS_DOMAIN_ID={env["ROS_DOMAIN_ID"]}', ' '.join(cmd), flush=True)
    log = open(Path(run_dir) / 'soak_runner.log', 'w')
    runner = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    samples: list[tuple[float, dict]] = []
    start = time.monotonic()
    try:
        proc = psutil.Process(runner.pid)
        while runner.poll() is None:
            samples.append((time.monotonic() - start, sample(proc)))
            with contextlib.suppress(subprocess.TimeoutExpired):
                runner.wait(args.interval)
    except KeyboardInterrupt:
        print('interrupted: stopping the runner', flush=True)
    finally:
        if runner.poll() is None:
            os.killpg(runner.pid, signal.SIGINT)  # the runner stops its nodes (SIGINT, then SIGKILL) and exits
            try:
                runner.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(runner.pid, signal.SIGKILL)
                runner.wait()
        log.close()
        domain.close()
    elapsed = time.monotonic() - start
    print(f'runner exit code {runner.returncode} after {elapsed:.0f} s; {len(samples)} samples; run folder {run_dir}')
    tail = (Path(run_dir) / 'soak_runner.log').read_text().splitlines()[-3:]
    print('runner said: ' + ' | '.join(tail))
    report(samples, min(args.warmup, elapsed / 2), Path(run_dir) / 'rss.csv')
    leftover = {k: v for k, v in shm_files().items() if k not in shm_before}
    zombies = [k for k in leftover if k.endswith('_el') and is_zombie(Path('/dev/shm') / k)]
    print(f'fastdds shm files created during the run and still present: {len(leftover)} '
          f'({sum(leftover.values()) / MB:.1f} MB); segments among them without a live owner (zombies): '
          f'{len(zombies)}{" " + ", ".join(z[:-3] for z in zombies[:8]) if zombies else ""}')
    print(f'RSS samples: {Path(run_dir) / "rss.csv"}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
