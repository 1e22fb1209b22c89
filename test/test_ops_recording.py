"""bag_recorder over real DDS: what a probe publishes (encoded episodes, latched weights, a summary) comes back from
the MCAP bag byte for byte, decodes with the project codec, and is also what rclpy itself would serialize."""
import json

import torch
from rclpy.serialization import deserialize_message
from std_msgs.msg import String, UInt8MultiArray

from mfpg_ros.bagfile import read_config, read_messages
from mfpg_ros.core.codec import decode_episodes, decode_weights, encode_episode, encode_episodes, encode_weights
from mfpg_ros.core.episode import HIFI, LOFI_POOL
from mfpg_ros.core.numpy_policy import NumpyPolicy
from mfpg_ros.core.policy import ActorCritic
from mfpg_ros.diagnostics_feed import DiagnosticsFeed
from mfpg_ros.nodes.bag_recorder import RECORDED, SUMMARY
from mfpg_ros.nodes.common import EPISODES, HIFI_EPISODES, LOFI_EPISODES, WEIGHTS, WEIGHTS_OUT, bytes_msg, \
    msg_bytes
from mfpg_ros.sim.engine import Engine
from mfpg_ros.sim.tasks import make_task

torch.set_num_threads(1)


def sample_payloads():
    task = make_task('cartpole')
    torch.manual_seed(0)
    model = ActorCritic(task.contract.obs_dim, task.contract.act_dim)
    weights = [encode_weights(model, version=v, contract=task.contract) for v in (0, 1)]
    hifi = Engine(task, 1, seed=1, nthread=1).collect(NumpyPolicy(model), 60, 0, HIFI)
    replays = Engine(task, 1, seed=2, nthread=1).replay(NumpyPolicy(model), hifi, 0)
    pool = Engine(task, 2, seed=3, nthread=1).collect(NumpyPolicy(model), 40, 0, LOFI_POOL)
    return task, weights, [encode_episode(e) for e in hifi], [encode_episode(e) for e in replays] + [
        encode_episodes(pool)]  # lofi_sim sends its pool as one batch


def test_recorder_writes_what_was_sent(spawn, probe, tmp_path):
    bag = tmp_path / 'bag'
    recorder = spawn('bag_recorder', ['--ros-args', '-p', f'bag_path:={bag}', '-p', 'seed:=7'])

    def alive():
        assert recorder.poll() is None, recorder.log_tail()

    probe.wait_for_nodes(['/bag_recorder'], check=alive)
    task, weights, hifi, lofi = sample_payloads()
    sent = {'/' + WEIGHTS: weights, '/' + HIFI_EPISODES: hifi, '/' + LOFI_EPISODES: lofi,
            '/metrics/summary': [json.dumps({'iteration': 0, 'c': -0.5})]}
    # the learner's weights writer QoS (depth 8): a depth-1 writer may replace version 0 before a busy reader got it
    for topic, qos, payloads in ((WEIGHTS, WEIGHTS_OUT, weights), (HIFI_EPISODES, EPISODES, hifi),
                                 (LOFI_EPISODES, EPISODES, lofi)):
        pub = probe.publish(topic, bytes_msg(payloads[0]), qos)
        for payload in payloads[1:]:
            pub.publish(bytes_msg(payload))
    probe.publish(SUMMARY, String(data=sent['/metrics/summary'][0]), RECORDED[SUMMARY][1])

    diagnostics = DiagnosticsFeed(probe)
    expected = {f'recorded {t}': len(p) for t, p in sent.items()}
    probe.wait_until(lambda: all(diagnostics.value('/bag_recorder', k) == n for k, n in expected.items()), 30,
                     'the recorder to count every message', alive)
    assert recorder.stop() == 0  # SIGINT: the bag is finalised

    got: dict[str, list] = {}
    for m in read_messages(bag):
        if m.topic == '/metrics/summary':
            got.setdefault(m.topic, []).append(m.text())
            continue
        payload = m.payload()
        assert msg_bytes(deserialize_message(m.raw, UInt8MultiArray)) == payload  # rclpy reads the bag's bytes
        got.setdefault(m.topic, []).append(payload)
        if m.topic == '/' + WEIGHTS:
            assert decode_weights(payload, contract=task.contract).version in (0, 1)
        else:
            decode_episodes(payload, contract=task.contract)
    assert got == sent
    assert read_config(bag)['seed'] == 7


def test_recorder_started_late_records_every_recent_weights_version(spawn, probe, tmp_path):
    """The learner's weights writer keeps a short history: a recorder that matched after several versions were
    published (slow discovery) still records each of them, in order (a depth-1 writer hands over only the last)."""
    task = make_task('cartpole')
    model = ActorCritic(task.contract.obs_dim, task.contract.act_dim)
    payloads = [encode_weights(model, version=v, contract=task.contract) for v in range(3)]
    pub = probe.publish(WEIGHTS, bytes_msg(payloads[0]), WEIGHTS_OUT, subscribers=0)  # nobody listens yet
    for payload in payloads[1:]:
        pub.publish(bytes_msg(payload))
    bag = tmp_path / 'bag'
    recorder = spawn('bag_recorder', ['--ros-args', '-p', f'bag_path:={bag}', '-p', 'topics:=["/policy/weights"]'])

    def alive():
        assert recorder.poll() is None, recorder.log_tail()

    diagnostics = DiagnosticsFeed(probe)
    probe.wait_until(lambda: diagnostics.value('/bag_recorder', 'recorded /policy/weights') >= 3, 30,
                     'the recorder to hold the three versions', alive)
    assert recorder.stop() == 0
    assert [m.payload() for m in read_messages(bag)] == payloads


def test_recorder_refuses_an_unknown_topic_cleanly(spawn, tmp_path):
    recorder = spawn('bag_recorder', ['--ros-args', '-p', f'bag_path:={tmp_path / "bag"}',
                                      '-p', 'topics:=["/policy/weights", "/cmd_vel"]'])
    assert recorder.proc.wait(timeout=60) != 0
    log = recorder.log_tail(60)
    assert "cannot record ['/cmd_vel']" in log and 'another exception' not in log, log
    assert not (tmp_path / 'bag').exists()
