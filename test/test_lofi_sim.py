"""lofi_sim's pool runs beside its replays: a replay goes out while the pool is still running, and a pool that
fails stops the node with the error (in-process node, real DDS for what it publishes)."""
import contextlib
import dataclasses
import threading

import pytest
import rclpy
from rclpy.node import Node
from std_msgs.msg import UInt8MultiArray

from mfpg_ros.core.bookkeeping import IterationAssembler
from mfpg_ros.core.codec import decode_episodes, decode_weights, encode_episode
from mfpg_ros.core.episode import HIFI, LOFI_PAIRED, LOFI_POOL
from mfpg_ros.core.numpy_policy import NumpyPolicy
from mfpg_ros.nodes.common import EPISODES_IN, HIFI_EPISODES, LOFI_EPISODES, lofi_episodes_qos
from mfpg_ros.nodes.lean_executor import LeanExecutor
from mfpg_ros.nodes.lofi_sim import LofiSim
from mfpg_ros.sim.engine import Engine
from mfpg_ros.sim.tasks import make_task
from ros_helpers import spin_until, weights_msg


@contextlib.contextmanager
def lofi_node(ros_domain, *params):
    """A LofiSim (pool 2 x 50, plus params 'key:=value'), a listener collecting what it publishes, an executor."""
    args = ['--ros-args'] + [a for kv in ('algo.pool_envs:=2', 'algo.pool_steps_per_env:=50', *params)
                             for a in ('-p', kv)]
    rclpy.init(domain_id=ros_domain, args=args)
    nodes = []
    try:  # the context goes even if the node refuses its parameters
        nodes += [LofiSim(), Node('listener')]
        executor = LeanExecutor()
        for node in nodes:
            executor.add_node(node)
        got = []
        nodes[1].create_subscription(UInt8MultiArray, LOFI_EPISODES,
                                     lambda msg: got.extend(decode_episodes(bytes(msg.data))), lofi_episodes_qos(100))
        yield *nodes, executor, got
    finally:
        for node in nodes:
            node.destroy_node()
        rclpy.try_shutdown()


@pytest.fixture
def lofi(ros_domain):
    with lofi_node(ros_domain) as parts:
        yield parts


def hifi_segment(weights, version):
    task = make_task('cartpole', 'cartpole_twin')
    policy = NumpyPolicy.from_state(decode_weights(bytes(weights.data)).state)
    segment = Engine(task, 1, seed=5, nthread=1).collect(policy, 30, version, HIFI)[0]
    return UInt8MultiArray(data=encode_episode(segment))


def test_a_replay_is_published_while_the_pool_still_runs(lofi):
    node, listener, executor, got = lofi
    spin_until(executor, lambda: node.episode_pub.get_subscription_count() == 1)
    hifi_pub = listener.create_publisher(UInt8MultiArray, HIFI_EPISODES, EPISODES_IN)
    started, release, collect = threading.Event(), threading.Event(), node.pool.collect

    def held_collect(*args, **kwargs):
        started.set()
        assert release.wait(20), 'pool never released'
        return collect(*args, **kwargs)

    node.pool.collect = held_collect
    weights = weights_msg(version=0)
    node.on_weights(weights)
    spin_until(executor, lambda: started.is_set() and hifi_pub.get_subscription_count() == 1)
    hifi_pub.publish(hifi_segment(weights, 0))  # arrives while the pool runs
    spin_until(executor, lambda: any(e.fidelity == LOFI_PAIRED for e in got))
    assert not any(e.fidelity == LOFI_POOL for e in got)  # the pool is still held: the replay did not wait for it
    release.set()
    spin_until(executor, lambda: sum(len(e) for e in got if e.fidelity == LOFI_POOL) == 2 * 50)


def test_a_failing_pool_stops_the_node_with_its_error(lofi):
    node, _, executor, _ = lofi

    def broken_collect(*args, **kwargs):
        raise ValueError('physics exploded')

    node.pool.collect = broken_collect
    node.on_weights(weights_msg(version=0))
    with pytest.raises(RuntimeError, match='LF pool failed') as err:
        spin_until(executor, lambda: False)
    assert isinstance(err.value.__cause__, ValueError)


def test_matched_pairing_publishes_a_run_on_replay_and_branches_per_segment(ros_domain):
    """pairing 'matched': no pool; per HF segment a replay to the batch end and pool_envs x steps / batch branches
    from its s0, all verified by the learner's assembler; a segment without batch_start is a logged rejection."""
    with lofi_node(ros_domain, 'algo.hf_steps_per_iter:=30', 'algo.estimator.pairing:=matched') as parts:
        node, listener, executor, got = parts
        assert node.pool is None and node.copies == 3
        hifi_pub = listener.create_publisher(UInt8MultiArray, HIFI_EPISODES, EPISODES_IN)
        spin_until(executor, lambda: node.episode_pub.get_subscription_count() == 1
                   and hifi_pub.get_subscription_count() == 1)
        weights = weights_msg(version=0)
        node.on_weights(weights)
        segment_msg = hifi_segment(weights, 0)
        segment = decode_episodes(bytes(segment_msg.data))[0]
        stripped = dataclasses.replace(segment, episode_id='no-start', extras={})
        hifi_pub.publish(UInt8MultiArray(data=encode_episode(stripped)))
        hifi_pub.publish(segment_msg)
        spin_until(executor, lambda: sum(e.fidelity == LOFI_POOL for e in got) == 3)
        assert node.rejections.total == 1 and node.replays == 1
        asm = IterationAssembler(hf_steps=len(segment), pool_steps=0, need_paired=True, branches=3)
        for episode in [segment, *got]:
            asm.add(episode)
        assert asm.ready()
        data = asm.take()
        assert len(data.paired) == 1 and len(data.pool) == 3 and not asm.dropped
        assert all(b.pair_of == segment.episode_id for b in data.pool)


def test_the_pool_goes_out_in_pieces_as_its_segments_end(ros_domain):
    with lofi_node(ros_domain, 'pool_pieces:=5', 'algo.pool_steps_per_env:=200') as (node, listener, executor, _):
        messages = []
        listener.create_subscription(UInt8MultiArray, LOFI_EPISODES,
                                     lambda msg: messages.append(decode_episodes(bytes(msg.data))),
                                     lofi_episodes_qos(100))
        spin_until(executor, lambda: node.episode_pub.get_subscription_count() == 2)
        node.on_weights(weights_msg(version=0))
        spin_until(executor, lambda: sum(len(e) for m in messages for e in m) == 2 * 200)
        assert len(messages) >= 3  # one message per piece that ended a segment (a random cart-pole falls soon)
        assert all(e.terminated for m in messages[:-1] for e in m)  # open segments go with the last piece only


@pytest.mark.parametrize('pieces', [0, 33])
def test_a_pool_cut_in_impossible_pieces_is_refused(ros_domain, pieces):
    with pytest.raises(ValueError, match='pool_pieces'):
        with lofi_node(ros_domain, f'pool_pieces:={pieces}'):
            pass
