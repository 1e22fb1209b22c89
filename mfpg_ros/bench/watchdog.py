"""`mfpg bench watchdog`: delay from the last observation to policy_server's safe command over DDS, many trials."""
from __future__ import annotations

import argparse
import time

import numpy as np
from std_msgs.msg import Float64MultiArray

from mfpg_ros.bench.harness import observation, percentiles, private_graph, publish_latched, weights_msg
from mfpg_ros.sim.tasks import make_task


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog='mfpg bench watchdog', description=__doc__)
    parser.add_argument('--trials', type=int, default=50)
    parser.add_argument('--timeout', type=float, default=0.1, help='watchdog_timeout_s')
    args = parser.parse_args(argv)
    task = make_task('cartpole')
    obs = task.observe(*task.reset_state(np.random.default_rng(0), 1))[0]
    params = {'watchdog_timeout_s': args.timeout, 'safe_command': 'zero'}
    with private_graph({'policy_server': params}) as probe:
        commands = probe.subscribe('effort_controller/commands', Float64MultiArray)
        actions = probe.subscribe('hifi/action', Float64MultiArray)
        obs_pub = probe.node.create_publisher(Float64MultiArray, 'hifi/observation', 10)
        probe.wait_until(lambda: obs_pub.get_subscription_count() > 0, 60, 'policy_server')
        publish_latched(probe, 'policy/weights', weights_msg(task.contract, 0))
        delays, seq = [], 0
        for _ in range(args.trials):
            for _ in range(5):  # a few control periods of normal operation
                seq += 1
                n = len(actions)
                obs_pub.publish(observation(seq, obs))
                probe.wait_until(lambda: len(actions) > n, 10, 'action')
            n, last = len(commands), time.perf_counter()
            probe.wait_until(lambda: len(commands) > n and list(commands[-1].data) == [0.0], 10, 'safe command')
            delays.append(time.perf_counter() - last)
    p50, p99, worst = percentiles(delays, 50, 99, 100)
    period_ms = task.dt * 1e3
    print(f'watchdog timeout {args.timeout * 1e3:.0f} ms, control period {period_ms:.0f} ms, {args.trials} trials')
    print(f'reaction: p50 {p50:.1f} ms  p99 {p99:.1f} ms  max {worst:.1f} ms '
          f'(goal <= {args.timeout * 1e3 + period_ms:.0f} ms)')
    print(f'watchdog_reaction_p99_ms: {p99:.1f}')
    return 0
