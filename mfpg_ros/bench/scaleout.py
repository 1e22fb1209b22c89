"""`mfpg bench scaleout`: low-fidelity throughput over DDS with 1 vs 2 lofi_sim processes sharing the pool.

Only lofi_sim processes run (worker_index/num_workers split the pool's environments). A probe publishes policy
weights (latched), one version at a time, and times how long until the whole pool of that version -- pool_envs x
pool_steps_per_env steps -- has arrived on lofi/episodes. Throughput = pool steps / that time; the first version
(warm-up) is not counted, the median of the rest is reported. The CPU the workers actually got is reported too:
on a machine shared with other work the ratio measures contention as much as scaling.
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
from mfpg_ros.core.codec import split_episodes
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
    headers only (cheap: the probe shares the cores with the workers it measures)."""
    steps = 0
    for part in split_episodes(payload):
        (size,) = struct.unpack_from('<Q', part, 0)
        header = json.loads(bytes(part[8:8 + size]))
        meta = header['__metadata__']
        steps += header['rewards']['shape'][0]
    return int(meta['policy_version']), meta['fidelity'], steps


def drain_qos():
    """Reliable keep-all: a pool is well over a thousand segments, sent in a burst; a keep-last(1000) reader that
    falls behind loses some (matches the publishers' reliable keep-last)."""
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
    return QoSProfile(history=HistoryPolicy.KEEP_ALL, reliability=ReliabilityPolicy.RELIABLE)


def lofi_specs(workers: int, nthread: int, overrides: dict) -> list[graph.NodeSpec]:
    config = graph.share_file('config', 'train.yaml')
    return [graph.NodeSpec(f'lofi_sim_{i}', 'lofi_sim', params_files=(config,),
                           overrides={**overrides, 'worker_index': i, 'num_workers': workers, 'nthread': nthread})
            for i in range(workers)]


def cpu_seconds(pids) -> float:
    total = 0.0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            times = psutil.Process(pid).cpu_times()
            total += times.user + times.system
    return total


def measure(env: dict, workers: int, nthread: int, overrides: dict, versions: int, log_dir: Path,
            log=print) -> tuple[list[float], float]:
    """Pool steps per second for each timed version with `workers` lofi_sim processes, and the CPU cores those
    processes got meanwhile (on a shared machine, fewer than the machine has)."""
    from std_msgs.msg import UInt8MultiArray

    from mfpg_ros.core.codec import encode_weights
    from mfpg_ros.core.policy import ActorCritic
    from mfpg_ros.graph_probe import GraphProbe
    from mfpg_ros.nodes.common import LATCHED, LOFI_EPISODES, WEIGHTS, bytes_msg
    from mfpg_ros.sim.tasks import make_task

    cfg = load_config(graph.share_file('config', 'train.yaml'), **overrides)
    drain = drain_qos()
    total = cfg.algo.pool_envs * cfg.algo.pool_steps_per_env
    contract = make_task(cfg.task, cfg.lofi_variant).contract
    model = ActorCritic(contract.obs_dim, contract.act_dim, cfg.algo.hidden)
    procs = [NodeProcess(s.name, [find_executable(s.executable, env), *s.ros_args()], env,
                         log_dir / f'{workers}_{s.name}.log') for s in lofi_specs(workers, nthread, overrides)]
    probe = GraphProbe('mfpg_scaleout', domain_id=int(env.get('ROS_DOMAIN_ID', '0') or 0))
    steps: dict[int, int] = {}
    done_at: dict[int, float] = {}

    def on_episode(msg) -> None:
        version, fidelity, n = segment_info(cdr_payload(msg))
        if fidelity == 'lofi_pool':
            steps[version] = steps.get(version, 0) + n
            if steps[version] >= total:
                done_at.setdefault(version, time.perf_counter())

    def alive() -> None:
        for p in procs:
            if p.poll() is not None:
                raise RuntimeError(f'{p.name} exited with {p.poll()}:\n{p.log_tail()}')

    rates, cores = [], 0.0
    try:
        for p in procs:
            p.start()
        sub = probe.node.create_subscription(UInt8MultiArray, LOFI_EPISODES, on_episode, drain, raw=True)
        pub = probe.node.create_publisher(UInt8MultiArray, WEIGHTS, LATCHED)
        probe.wait_until(lambda: pub.get_subscription_count() >= workers and sub.get_publisher_count() >= workers,
                         120, f'{workers} lofi_sim process(es) matched', alive)
        for version in range(versions + 1):
            if version == 1:  # after the warm-up
                cpu0, wall0 = cpu_seconds(p.pid for p in procs), time.perf_counter()
            start = time.perf_counter()
            pub.publish(bytes_msg(encode_weights(model, version=version, contract=contract)))
            probe.wait_until(lambda: version in done_at, 300, f'the pool of version {version}', alive)
            seconds = done_at[version] - start
            rate = total / seconds
            note = '' if version else ' (warm-up, not counted)'
            log(f'  {workers} lofi_sim x nthread {nthread}: version {version}: {total} pool steps in {seconds:.3f} s '
                f'= {rate:,.0f} steps/s{note}')
            if version:
                rates.append(rate)
        cores = (cpu_seconds(p.pid for p in procs) - cpu0) / (time.perf_counter() - wall0)
    finally:
        stop_all(procs)
        probe.close()
    return rates, cores


def bare_engine_rate(task_name: str, envs: int, steps: int, versions: int, seed: int, barrier=None) -> float:
    """Median pool steps/s of one process running the engine and the batch encoding alone (no ROS): what a
    lofi_sim worker does per version, without DDS."""
    from mfpg_ros.core.codec import encode_batches
    from mfpg_ros.core.policy import ActorCritic, NumpyPolicy
    from mfpg_ros.sim.engine import Engine
    from mfpg_ros.sim.tasks import make_task

    torch.set_num_threads(1)
    task = make_task(task_name)
    policy = NumpyPolicy(ActorCritic(task.contract.obs_dim, task.contract.act_dim))
    engine = Engine(task, envs, seed=seed, nthread=1)
    engine.collect(policy, min(steps, 200), 0, 'lofi_pool')  # warm-up
    if barrier is not None:
        barrier.wait()  # processes compared side by side run at the same time
    rates = []
    for version in range(versions):
        start = time.perf_counter()
        encode_batches(engine.collect(policy, steps, version, 'lofi_pool'))  # as lofi_sim publishes it
        rates.append(envs * steps / (time.perf_counter() - start))
    return statistics.median(rates)


def bare_ceiling(task_name: str, envs: int, steps: int, versions: int) -> float:
    """The same split without ROS: two bare engine processes on half the environments each, run at the same time,
    vs one process on all of them. The split itself costs (fewer environments per Python step) and two busy cores
    run slower than one: this is the most the lofi_sim processes could reach on this machine."""
    import concurrent.futures
    import multiprocessing

    context = multiprocessing.get_context('spawn')
    with context.Manager() as manager, concurrent.futures.ProcessPoolExecutor(2, mp_context=context) as pool:
        one = pool.submit(bare_engine_rate, task_name, envs, steps, versions, 1).result()
        barrier = manager.Barrier(2)
        halves = [pool.submit(bare_engine_rate, task_name, n, steps, versions, 2 + i, barrier)
                  for i, n in enumerate((envs - envs // 2, envs // 2))]
        return sum(h.result() for h in halves) / one


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='mfpg bench scaleout', description=__doc__)
    parser.add_argument('--pool-envs', type=int, default=16)
    parser.add_argument('--pool-steps', type=int, default=2000, help='steps per environment and version')
    parser.add_argument('--versions', type=int, default=5, help='timed versions (after one warm-up)')
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
        for workers in (1, 2):
            rates, cores = measure(env, workers, args.nthread, overrides, args.versions, log_dir)
            medians[workers] = statistics.median(rates)
            print(f'lofi_throughput_{workers}_node{"s" if workers > 1 else ""}: {medians[workers]:,.0f} pool steps/s '
                  f'(median of {len(rates)} versions, nthread {args.nthread}); the lofi_sim processes got '
                  f'{cores:.2f} of {os.cpu_count()} cores: {medians[workers] / max(cores, 1e-9):,.0f} steps/s per core',
                  flush=True)
    finally:
        stack.close()
    print(f'node logs: {log_dir}')
    task = overrides.get('task') or load_config(graph.share_file('config', 'train.yaml')).task
    print(f'without ROS, 2 bare engine processes (half the environments each, same work) vs 1: '
          f'{bare_ceiling(task, args.pool_envs, args.pool_steps, args.versions):.2f} (this machine\'s ceiling)')
    print(f'lofi_throughput_2_nodes_vs_1: {medians[2] / medians[1]:.2f}')
    return 0
