"""`mfpg bench scaleout`: low-fidelity throughput over DDS with 1 vs 2 lofi_sim processes sharing the pool.

Only lofi_sim processes run (worker_index/num_workers split the pool's environments): one set-up with 1 process,
one with 2, each in its own namespace, both alive throughout. A probe publishes policy weights (latched), one
version at a time to one set-up at a time, in turns, and times how long until the whole pool of that version --
pool_envs x pool_steps_per_env steps -- has arrived on lofi/episodes. Throughput = pool steps / that time; the
first version (warm-up) is not counted. The headline is the median over versions of the ratio 2 nodes / 1 node
of the same version, timed back to back, so that the machine's drift hits both sides alike. The CPU the workers
actually got is reported too: on a machine shared with other work the ratio measures contention as much as
scaling.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import struct
import tempfile
import time
from pathlib import Path

import psutil
import torch

from mfpg_ros import graph
from mfpg_ros.bench.harness import reserve_domain
from mfpg_ros.core.config import load_config
from mfpg_ros.node_process import NodeProcess, stop_all
from mfpg_ros.runner import child_env, find_executable


def cdr_payload(raw: bytes) -> bytes:
    """The data of a serialized std_msgs/UInt8MultiArray with an empty layout (what the nodes publish), read in
    place: the probe takes messages raw, so it spends no time building Python messages."""
    if raw[1] != 1 or int.from_bytes(raw[4:8], 'little') != 0:  # little-endian CDR, no layout dims
        raise ValueError('not a little-endian UInt8MultiArray without layout dims')
    size = int.from_bytes(raw[12:16], 'little')
    return raw[16:16 + size]


def segment_info(payload: bytes) -> tuple[int, str, int]:
    """(policy version, fidelity, steps) of a message (one episode or a batch of one version) from its safetensors
    header only (cheap: the probe shares the cores with the workers it measures)."""
    (size,) = struct.unpack_from('<Q', payload, 0)
    header = json.loads(bytes(payload[8:8 + size]))
    meta = header['__metadata__']
    return int(meta['policy_version']), meta['fidelity'], header['rewards']['shape'][0]


def drain_qos():
    """Reliable keep-all: a pool is well over a thousand segments, sent in a burst; a keep-last(1000) reader that
    falls behind loses some (matches the publishers' reliable keep-last)."""
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
    return QoSProfile(history=HistoryPolicy.KEEP_ALL, reliability=ReliabilityPolicy.RELIABLE)


def lofi_specs(workers: int, nthread: int, overrides: dict) -> list[graph.NodeSpec]:
    """`workers` lofi_sim processes sharing one pool, in a namespace of their own (both set-ups run side by side)."""
    config = graph.share_file('config', 'train.yaml')
    return [graph.NodeSpec(f'lofi_sim_{i}', 'lofi_sim', namespace=f'workers{workers}', params_files=(config,),
                           overrides={**overrides, 'worker_index': i, 'num_workers': workers, 'nthread': nthread})
            for i in range(workers)]


def cpu_seconds(pids) -> float:
    total = 0.0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            times = psutil.Process(pid).cpu_times()
            total += times.user + times.system
    return total


class LofiSetup:
    """`workers` lofi_sim processes on a shared pool; time_version() publishes weights and times the whole pool."""

    def __init__(self, probe, env: dict, workers: int, nthread: int, overrides: dict, log_dir: Path):
        from std_msgs.msg import UInt8MultiArray

        from mfpg_ros.nodes.common import LATCHED, LOFI_EPISODES, WEIGHTS
        self.probe, self.workers = probe, workers
        specs = lofi_specs(workers, nthread, overrides)
        self.procs = [NodeProcess(s.name, [find_executable(s.executable, env), *s.ros_args()], env,
                                  log_dir / f'{workers}_{s.name}.log').start() for s in specs]
        ns = f'/{specs[0].namespace}'
        self.sub = probe.node.create_subscription(UInt8MultiArray, f'{ns}/{LOFI_EPISODES}', self.on_episode,
                                                  drain_qos(), raw=True)
        self.pub = probe.node.create_publisher(UInt8MultiArray, f'{ns}/{WEIGHTS}', LATCHED)
        cfg = load_config(graph.share_file('config', 'train.yaml'), **overrides)
        self.total = cfg.algo.pool_envs * cfg.algo.pool_steps_per_env
        self.steps: dict[int, int] = {}
        self.done_at: dict[int, float] = {}
        self.cpu = self.wall = 0.0  # CPU seconds the processes used and wall seconds, over the timed versions

    def on_episode(self, msg) -> None:
        version, fidelity, n = segment_info(cdr_payload(msg))
        if fidelity == 'lofi_pool':
            self.steps[version] = self.steps.get(version, 0) + n
            if self.steps[version] >= self.total:
                self.done_at.setdefault(version, time.perf_counter())

    def alive(self) -> None:
        for p in self.procs:
            if p.poll() is not None:
                raise RuntimeError(f'{p.name} exited with {p.poll()}:\n{p.log_tail()}')

    def wait_matched(self) -> None:
        self.probe.wait_until(lambda: self.pub.get_subscription_count() >= self.workers
                              and self.sub.get_publisher_count() >= self.workers, 120,
                              f'{self.workers} lofi_sim process(es) matched', self.alive)

    def time_version(self, weights: bytes, version: int, timed: bool) -> float:
        """Pool steps per second for this version."""
        from mfpg_ros.nodes.common import bytes_msg
        cpu0, start = cpu_seconds(p.pid for p in self.procs), time.perf_counter()
        self.pub.publish(bytes_msg(weights))
        self.probe.wait_until(lambda: version in self.done_at, 300, f'the pool of version {version}', self.alive)
        seconds = self.done_at[version] - start
        if timed:
            self.cpu += cpu_seconds(p.pid for p in self.procs) - cpu0
            self.wall += time.perf_counter() - start
        return self.total / seconds


def measure(env: dict, nthread: int, overrides: dict, versions: int, log_dir: Path,
            log=print) -> dict[int, tuple[list[float], float]]:
    """1 and 2 lofi_sim processes, alive side by side, timed in turns (1, 2, 2, 1, 1, 2, ...) so that a shared
    machine's drift hits both alike: per set-up, the pool steps per second of each timed version and the cores its
    processes got meanwhile."""
    from mfpg_ros.core.codec import encode_weights
    from mfpg_ros.core.policy import ActorCritic
    from mfpg_ros.graph_probe import GraphProbe
    from mfpg_ros.sim.tasks import make_task

    cfg = load_config(graph.share_file('config', 'train.yaml'), **overrides)
    contract = make_task(cfg.task, cfg.lofi_variant).contract
    model = ActorCritic(contract.obs_dim, contract.act_dim, cfg.algo.hidden)
    probe = GraphProbe('mfpg_scaleout', domain_id=int(env.get('ROS_DOMAIN_ID', '0') or 0))
    setups: list[LofiSetup] = []
    rates: dict[int, list[float]] = {1: [], 2: []}
    try:
        setups = [LofiSetup(probe, env, workers, nthread, overrides, log_dir) for workers in (1, 2)]
        for setup in setups:
            setup.wait_matched()
        for version in range(versions + 1):
            weights = encode_weights(model, version=version, contract=contract)
            for setup in setups if version % 2 else reversed(setups):
                rate = setup.time_version(weights, version, timed=version > 0)
                note = '' if version else ' (warm-up, not counted)'
                log(f'  {setup.workers} lofi_sim x nthread {nthread}: version {version}: {rate:,.0f} steps/s{note}')
                if version:
                    rates[setup.workers].append(rate)
    finally:
        stop_all([p for setup in setups for p in setup.procs])
        probe.close()
    return {s.workers: (rates[s.workers], s.cpu / max(s.wall, 1e-9)) for s in setups}


def bare_worker(task_name: str, envs: int, steps: int, seed: int, conn) -> None:
    """One process running the engine and the batch encoding alone (no ROS), what a lofi_sim worker does per
    version: for each version received, one pool of `envs` x `steps`; sends back its seconds."""
    from mfpg_ros.core.codec import encode_batches
    from mfpg_ros.core.numpy_policy import NumpyPolicy
    from mfpg_ros.core.policy import ActorCritic
    from mfpg_ros.sim.engine import Engine
    from mfpg_ros.sim.tasks import make_task

    torch.set_num_threads(1)
    task = make_task(task_name)
    policy = NumpyPolicy(ActorCritic(task.contract.obs_dim, task.contract.act_dim))
    engine = Engine(task, envs, seed=seed, nthread=1)
    engine.collect(policy, min(steps, 200), 0, 'lofi_pool')  # warm-up
    conn.send('ready')
    while (version := conn.recv()) is not None:
        start = time.perf_counter()
        encode_batches(engine.collect(policy, steps, version, 'lofi_pool'))  # as lofi_sim publishes it
        conn.send(time.perf_counter() - start)


def bare_ceiling(task_name: str, envs: int, steps: int, versions: int) -> float:
    """The same split without ROS, timed in the same turns: two bare engine processes on half the environments
    each, run at the same time (the pool is done when both are), vs one process on all of them; median of the
    version-by-version ratios. The split itself costs (fewer environments per Python step) and two busy cores run
    slower than one: this is about the most the lofi_sim processes could reach on this machine."""
    import multiprocessing

    context = multiprocessing.get_context('spawn')
    workers = []
    for seed, n in ((1, envs), (2, envs - envs // 2), (3, envs // 2)):
        ours, theirs = context.Pipe()
        proc = context.Process(target=bare_worker, args=(task_name, n, steps, seed, theirs), daemon=True)
        proc.start()
        workers.append((proc, ours))
    try:
        for _, conn in workers:
            conn.recv()  # ready

        def pool_seconds(group, version: int) -> float:
            for _, conn in group:
                conn.send(version)
            return max(conn.recv() for _, conn in group)
        ratios = []
        for version in range(1, versions + 1):
            turns = (workers[:1], workers[1:]) if version % 2 else (workers[1:], workers[:1])
            seconds = {len(group): pool_seconds(group, version) for group in turns}
            ratios.append(seconds[1] / seconds[2])
        return statistics.median(ratios)
    finally:
        for proc, conn in workers:
            with contextlib.suppress(OSError):
                conn.send(None)
            proc.join(10)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='mfpg bench scaleout', description=__doc__)
    parser.add_argument('--pool-envs', type=int, default=16)
    parser.add_argument('--pool-steps', type=int, default=2000, help='steps per environment and version')
    parser.add_argument('--versions', type=int, default=9, help='timed versions (after one warm-up)')
    parser.add_argument('--nthread', type=int, default=1, help='physics lanes per lofi_sim process')
    parser.add_argument('--task', default=None, help='default: the config task')
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
    overrides = {k: graph.config_value(k, v) for k, v in {
        'algo.pool_envs': args.pool_envs, 'algo.pool_steps_per_env': args.pool_steps,
        **({'task': args.task} if args.task else {})}.items()}
    log_dir = Path(tempfile.mkdtemp(prefix='mfpg_scaleout_'))
    medians = {}
    stack = contextlib.ExitStack()
    try:
        env = child_env()
        env['ROS_DOMAIN_ID'] = str(reserve_domain(stack))
        results = measure(env, args.nthread, overrides, args.versions, log_dir)
        for workers, (rates, cores) in results.items():
            medians[workers] = statistics.median(rates)
            print(f'lofi_throughput_{workers}_node{"s" if workers > 1 else ""}: {medians[workers]:,.0f} pool steps/s '
                  f'(median of {len(rates)} versions, nthread {args.nthread}); the lofi_sim processes got '
                  f'{cores:.2f} of {os.cpu_count()} cores: {medians[workers] / max(cores, 1e-9):,.0f} steps/s per core',
                  flush=True)
        paired = [two / one for one, two in zip(results[1][0], results[2][0])]
    finally:
        stack.close()
    print(f'node logs: {log_dir}')
    task = overrides.get('task') or load_config(graph.share_file('config', 'train.yaml')).task
    print(f'without ROS, 2 bare engine processes (half the environments each, same work) vs 1: '
          f'{bare_ceiling(task, args.pool_envs, args.pool_steps, args.versions):.2f} (this machine\'s ceiling)')
    print(f'2 vs 1 node, version by version (timed in turns): {" ".join(f"{r:.2f}" for r in paired)}')
    print(f'lofi_throughput_2_nodes_vs_1: {statistics.median(paired):.2f}')
    return 0
