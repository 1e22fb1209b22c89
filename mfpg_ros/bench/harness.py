"""Shared pieces of the DDS benchmarks: a private ROS domain, node processes from this package, a probe."""
from __future__ import annotations

import array
import contextlib
import os
import tempfile
from pathlib import Path

import numpy as np
from std_msgs.msg import Float64MultiArray, UInt8MultiArray

from mfpg_ros.core.codec import encode_weights
from mfpg_ros.core.policy import ActorCritic
from mfpg_ros.graph import share_file
from mfpg_ros.graph_probe import GraphProbe
from mfpg_ros.node_process import NodeProcess, stop_all
from mfpg_ros.nodes.common import LATCHED
from mfpg_ros.runner import child_env, find_executable


def reserve_domain(stack: contextlib.ExitStack) -> int:
    """A ROS domain of our own (domain_coordinator, as the tests use), else ROS_DOMAIN_ID or 0. Entered on an
    ExitStack that is closed without the body's exception: domain_coordinator swallows OSErrors thrown into it."""
    try:
        import domain_coordinator
    except ImportError:
        return int(os.environ.get('ROS_DOMAIN_ID', '0') or 0)
    return int(stack.enter_context(domain_coordinator.domain_id()))


@contextlib.contextmanager
def private_graph(nodes: dict[str, dict]):
    """Start `nodes` ({executable: params}) with config/train.yaml on a free ROS domain; yield a probe."""
    with contextlib.ExitStack() as stack, tempfile.TemporaryDirectory() as logs:
        domain = reserve_domain(stack)
        env = child_env()
        env['ROS_DOMAIN_ID'] = str(domain)
        procs = []
        for executable, params in nodes.items():
            argv = [find_executable(executable, env), '--ros-args', '--params-file', share_file('config', 'train.yaml')]
            for key, value in params.items():
                argv += ['-p', f'{key}:={value}']
            procs.append(NodeProcess(executable, argv, env, Path(logs) / f'{executable}.log').start())
        probe = GraphProbe('bench_probe', domain_id=int(domain))
        try:
            yield probe
        finally:
            probe.close()
            stop_all(procs)


def weights_msg(contract, version: int, seed: int = 0) -> UInt8MultiArray:
    import torch
    torch.manual_seed(seed)
    model = ActorCritic(contract.obs_dim, contract.act_dim)
    return UInt8MultiArray(data=array.array('B', encode_weights(model, version=version, contract=contract)))


def observation(seq: int, obs) -> Float64MultiArray:
    msg = Float64MultiArray()
    msg.data = array.array('d', [float(seq), *obs])
    return msg


def publish_latched(probe: GraphProbe, topic: str, msg):
    return probe.publish(topic, msg, LATCHED)


def percentiles(samples_s, *qs) -> list[float]:
    return [float(np.percentile(np.asarray(samples_s) * 1e3, q)) for q in qs]
