"""`mfpg bench latency`: policy_server observation -> action round trip over DDS (separate process) vs in-process
inference, a 500 Hz control loop held for a while, and the weights broadcast delay (learner -> acting)."""
from __future__ import annotations

import argparse
import time

import numpy as np
from std_msgs.msg import Float64MultiArray

from mfpg_ros.bench.harness import observation, percentiles, private_graph, publish_latched, weights_msg
from mfpg_ros.core.codec import decode_weights
from mfpg_ros.core.numpy_policy import NumpyPolicy
from mfpg_ros.sim.tasks import make_task


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog='mfpg bench latency', description=__doc__)
    parser.add_argument('--samples', type=int, default=2000)
    parser.add_argument('--rate', type=float, default=500.0, help='control rate to sustain (Hz)')
    parser.add_argument('--seconds', type=float, default=3.0, help='duration of the sustained-rate test')
    args = parser.parse_args(argv)
    task = make_task('cartpole')
    obs = task.observe(*task.reset_state(np.random.default_rng(0), 1))[0]
    with private_graph({'policy_server': {'watchdog_timeout_s': 1.0}}) as probe:
        actions = probe.subscribe('hifi/action', Float64MultiArray)
        obs_pub = probe.node.create_publisher(Float64MultiArray, 'hifi/observation', 10)
        probe.wait_until(lambda: obs_pub.get_subscription_count() > 0, 60, 'policy_server')
        publish_latched(probe, 'policy/weights', weights_msg(task.contract, 0))

        def round_trip(seq, timeout=1.0):
            """(seconds, the action) of one observation; (timeout, None) if no answer came."""
            n = len(actions)
            t0 = time.perf_counter()
            obs_pub.publish(observation(seq, obs))
            while len(actions) == n:
                if time.perf_counter() - t0 > timeout:
                    return timeout, None
                probe.spin_once(0.01)
            return time.perf_counter() - t0, actions[-1]

        def answered(seq, version):
            action = round_trip(seq)[1]
            return action is not None and action.data[1] == version

        # an observation that overtakes the weights is not answered: ask again until it acts with them
        probe.wait_until(lambda: answered(0, 0.0), 30, 'first action')
        rtt = [round_trip(i + 1)[0] for i in range(args.samples)]

        # sustained rate: one observation per period, on time; count late answers
        period, late, sent = 1.0 / args.rate, 0, 0
        start = time.perf_counter()
        while time.perf_counter() - start < args.seconds:
            due = start + sent * period
            while time.perf_counter() < due:
                pass
            sent += 1
            late += round_trip(10_000 + sent)[0] > period

        # weights broadcast: publish version k, measure until the first action carries version k
        broadcast = []
        for version in range(1, 11):
            t0 = time.perf_counter()
            publish_latched(probe, 'policy/weights', weights_msg(task.contract, version, seed=version))
            while not answered(20_000 + version, version):
                pass
            broadcast.append(time.perf_counter() - t0)

    policy = NumpyPolicy.from_state(decode_weights(weights_msg(task.contract, 0).data).state)
    local = []
    for _ in range(args.samples):
        t0 = time.perf_counter()
        policy.sample(obs[None], np.zeros((1, 1)))
        local.append(time.perf_counter() - t0)
    p50, p99 = percentiles(rtt, 50, 99)
    l50, l99 = percentiles(local, 50, 99)
    print(f'in-process inference (numpy, batch 1): p50 {l50:.3f} ms  p99 {l99:.3f} ms')
    print(f'DDS round trip observation -> action ({args.samples} samples): p50 {p50:.3f} ms  p99 {p99:.3f} ms '
          f'({p50 / l50:.0f}x in-process p50)')
    print(f'{args.rate:.0f} Hz for {args.seconds:.0f} s: {sent} observations, {late} answered after their period '
          f'({100 * late / max(sent, 1):.2f}%)')
    b50, bmax = percentiles(broadcast, 50, 100)
    print(f'weights broadcast (publish -> acting with the new version): p50 {b50:.1f} ms  max {bmax:.1f} ms')
    print(f'policy_roundtrip_p99_ms: {p99:.3f}')
    return 0
