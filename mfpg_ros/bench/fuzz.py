"""`mfpg bench fuzz`: malformed input on every subscribed topic of a live graph; no node may crash or miscount.

Starts the twin graph (learner, policy_server, lofi_sim, hifi_interface, twin_plant; config/train.yaml with small
budgets), each node in its own process (not the twin's composed loop: a crash must name its node), lets it finish a
few iterations so it idles at a known policy version, then publishes --cases malformed messages per topic
(mfpg_ros.bench.malformed). Each topic is settled before the next: every subscriber's /diagnostics counter
('rejected', or the stale-version counter for valid-but-old payloads) must rise by exactly the number of messages
it was sent, and every node must still be running.
"""
from __future__ import annotations

import argparse
import array
import contextlib
import os
import signal
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from mfpg_ros import graph
from mfpg_ros.bench.harness import reserve_domain
from mfpg_ros.bench.malformed import PayloadFactory, byte_cases, float_cases, joint_state_cases
from mfpg_ros.core.config import load_config
from mfpg_ros.node_process import NodeProcess, stop_all
from mfpg_ros.runner import child_env, find_executable

NODES = ('/learner', '/lofi_sim', '/policy_server', '/hifi_interface', '/twin_plant')
# Counters that move only when a node *uses* input: any change while fuzzing means a malformed message got through.
SIDE_EFFECTS = {'/learner': ('policy_version', 'hf_steps_waiting', 'pool_steps_waiting'),
                '/lofi_sim': ('policy_version', 'replays', 'pool_steps'),
                '/policy_server': ('policy_version', 'actions'),
                '/hifi_interface': ('policy_version', 'segments', 'episodes'),
                '/twin_plant': ('steps', 'resets')}
TOPIC_COUNT = 7  # len(plans(...))


@dataclass
class TopicPlan:
    topic: str
    kind: str  # weights | hifi | lofi | floats | joints
    counters: dict[str, str]  # subscriber node -> diagnostic counter a malformed message raises
    stale: dict[str, str | None] = field(default_factory=dict)  # node -> counter for a stale payload (None: ignored)
    size: int = 0  # floats: the one valid length


@dataclass
class TopicResult:
    topic: str
    cases: int
    kinds: int
    expected: dict[tuple[str, str], int]
    observed: dict[tuple[str, str], int]
    side_effects: dict[tuple[str, str], int]  # counters that should not have moved, and did
    reasons: dict[tuple[str, str], int]  # (node, reason) -> rejections, from the per-reason diagnostic keys

    @property
    def ok(self) -> bool:
        return self.expected == self.observed and not self.side_effects

    @property
    def lost(self) -> int:
        """Messages no counter saw while nothing else moved: dropped by a full reader queue, not used."""
        if self.side_effects or any(self.observed[k] > n for k, n in self.expected.items()):
            return 0
        return sum(n - self.observed[k] for k, n in self.expected.items())


def plans(task, profile: dict) -> list[TopicPlan]:
    c = task.contract
    return [
        TopicPlan('policy/weights', 'weights',
                  {n: 'rejected' for n in ('/lofi_sim', '/policy_server', '/hifi_interface')},
                  stale={'/lofi_sim': 'rejected', '/policy_server': 'rejected', '/hifi_interface': None}),
        TopicPlan('hifi/episodes', 'hifi', {'/learner': 'rejected', '/lofi_sim': 'rejected'},
                  stale={'/learner': 'dropped stale hifi', '/lofi_sim': 'stale_dropped'}),
        TopicPlan('lofi/episodes', 'lofi', {'/learner': 'rejected'}, stale={'/learner': 'dropped stale lofi_pool'}),
        TopicPlan('hifi/observation', 'floats', {'/policy_server': 'rejected'}, size=1 + c.obs_dim),
        TopicPlan('hifi/action', 'floats', {'/hifi_interface': 'rejected'}, size=2 + 3 * c.act_dim),
        TopicPlan(profile['command_topic'], 'floats', {'/twin_plant': 'rejected'}, size=task.model.nu),
        TopicPlan(profile['joint_states_topic'], 'joints', {'/hifi_interface': 'rejected'}),
    ]


def make_cases(plan: TopicPlan, factory: PayloadFactory, n: int, joints: list[str]):
    if plan.kind in ('weights', 'hifi', 'lofi'):
        return byte_cases(factory, plan.kind, n)
    if plan.kind == 'floats':
        return float_cases(factory.rng, plan.size, n)
    return joint_state_cases(factory.rng, joints, n)


def to_message(plan: TopicPlan, case):
    from sensor_msgs.msg import JointState
    from std_msgs.msg import Float64MultiArray

    from mfpg_ros.nodes.common import bytes_msg
    if plan.kind == 'floats':
        msg = Float64MultiArray()
        msg.data = array.array('d', case.data)
        return msg
    if plan.kind == 'joints':
        names, positions, velocities = case.data
        return JointState(name=names, position=array.array('d', positions), velocity=array.array('d', velocities))
    return bytes_msg(case.data)


def qos_of(plan: TopicPlan):
    from mfpg_ros.nodes.common import CONTROL, EPISODES, LATCHED
    return {'weights': LATCHED, 'hifi': EPISODES, 'lofi': EPISODES}.get(plan.kind, CONTROL)


def msg_type(plan: TopicPlan):
    from sensor_msgs.msg import JointState
    from std_msgs.msg import Float64MultiArray, UInt8MultiArray
    return {'floats': Float64MultiArray, 'joints': JointState}.get(plan.kind, UInt8MultiArray)


class NodeDied(RuntimeError):
    pass


class Fuzzer:
    def __init__(self, probe, procs: dict[str, NodeProcess], rate: float):
        from mfpg_ros.diagnostics_feed import DiagnosticsFeed
        self.probe, self.procs, self.rate = probe, procs, rate
        self.diagnostics = DiagnosticsFeed(probe)
        self.deaths: list[str] = []
        self.settled = False

    def check_alive(self, recent=()) -> None:
        for name, proc in self.procs.items():
            code = proc.poll()
            if code is not None and not any(name in d for d in self.deaths):
                last = ', '.join(f'#{i} {kind}' for i, kind in recent[-5:])
                self.deaths.append(f'{name} exited with {code} after cases [{last}]; log tail:\n{proc.log_tail(15)}')
                raise NodeDied(self.deaths[-1])

    def counters(self, keys) -> dict[tuple[str, str], int]:
        return {(node, key): int(self.diagnostics.value(node, key)) for node, key in keys}

    def reason_counters(self, nodes, topic: str) -> dict[tuple[str, str], int]:
        prefix = f'rejected {topic} '
        return {(node, key[len(prefix):]): int(value) for node in nodes
                for key, value in self.diagnostics.poll().get(node, {}).items() if key.startswith(prefix)}

    def fuzz_topic(self, plan: TopicPlan, cases, settle_timeout: float) -> TopicResult:
        expected: dict[tuple[str, str], int] = {}
        untouched = [(node, key) for node, keys in SIDE_EFFECTS.items() for key in keys]
        if not self.settled:  # the previous topic ended on fresh values already
            self.diagnostics.wait_fresh(NODES, check=self.check_alive)
        before, reasons_before = self.counters(untouched), self.reason_counters(plan.counters, plan.topic)
        start = self.counters({(n, k) for c in cases for n, k in (plan.stale if c.stale else plan.counters).items()
                               if k is not None})
        pub = self.probe.node.create_publisher(msg_type(plan), self.probe.resolve(plan.topic), qos_of(plan))
        self.probe.wait_until(lambda: pub.get_subscription_count() >= len(plan.counters), 30,
                              f'{len(plan.counters)} subscriber(s) on {plan.topic}', self.check_alive)
        depth = qos_of(plan).depth  # the subscribers' reader queue: the shallower, the slower we send
        sent, period, next_time = [], 1.0 / (self.rate * min(1.0, max(depth, 2) / 20)), time.monotonic()

        def caught_up() -> bool:
            now = self.counters(expected)
            return all(now[k] - start[k] >= n for k, n in expected.items())

        for i, case in enumerate(cases):
            while (wait := next_time - time.monotonic()) > 0:  # pace: subscribers keep short reader queues
                self.probe.spin_once(wait)
            pub.publish(to_message(plan, case))
            sent.append((i, case.kind))
            for node, key in (plan.stale if case.stale else plan.counters).items():
                if key is not None:
                    expected[(node, key)] = expected.get((node, key), 0) + 1
            if case.huge:  # megabytes take a while to handle: let the readers drain before the next message
                with contextlib.suppress(TimeoutError):
                    self.probe.wait_until(caught_up, 10, 'a huge message handled', lambda: self.check_alive(sent))
            next_time = time.monotonic() + period
            self.check_alive(sent)

        with contextlib.suppress(TimeoutError):
            self.probe.wait_until(caught_up, settle_timeout, f'counters for {plan.topic}',
                                  lambda: self.check_alive(sent))
        self.diagnostics.wait_fresh(NODES, check=lambda: self.check_alive(sent))  # nothing more arrives
        self.settled = True
        now, after = self.counters(expected), self.counters(untouched)
        reasons = self.reason_counters(plan.counters, plan.topic)
        self.probe.node.destroy_publisher(pub)
        return TopicResult(plan.topic, len(cases), len({c.kind for c in cases}), expected,
                           {k: now[k] - start[k] for k in expected},
                           {k: after[k] - before[k] for k in untouched if after[k] != before[k]},
                           {k: n - reasons_before.get(k, 0) for k, n in reasons.items()
                            if n != reasons_before.get(k, 0)})


def wait_for_idle_graph(fuzzer: Fuzzer, iterations: int, timeout: float) -> None:
    """Until training is over and the last version's data is in: the learner (done) holds a complete HF batch,
    its paired replays and the pool, and hifi_interface has paused. Nothing moves after that but our input."""
    def idle() -> bool:
        d = fuzzer.diagnostics
        return (all(d.value(n, 'policy_version', -1) >= iterations for n in
                    ('/learner', '/lofi_sim', '/policy_server', '/hifi_interface'))
                and d.poll().get('/hifi_interface', {}).get('phase') == 'paused'
                and d.value('/learner', 'hf_steps_waiting') > 0 and d.value('/learner', 'pool_steps_waiting') > 0
                and d.value('/learner', 'pairs_missing', 1) == 0)

    try:
        fuzzer.probe.wait_until(idle, timeout, f'the graph to finish {iterations} iterations', fuzzer.check_alive)
    except TimeoutError as exc:
        state = {n: {k: v for k, v in values.items() if not k.startswith('rejected ')}
                 for n, values in fuzzer.diagnostics.poll().items()}
        raise TimeoutError(f'{exc}; last diagnostics: {state}') from None


def run_fuzz(env: dict, cases: int = 1000, seed: int = 0, key: bytes | None = b'mfpg-fuzz-key', rate: float = 250.0,
             iterations: int = 2, log_dir: str | os.PathLike | None = None, log=print,
             verbose: bool = False) -> tuple[list, list[str]]:
    """Start the graph in `env` (its ROS_DOMAIN_ID), fuzz every topic; returns (per-topic results, deaths)."""
    from mfpg_ros.graph_probe import GraphProbe
    from mfpg_ros.sim.tasks import make_task

    log_dir = Path(log_dir or tempfile.mkdtemp(prefix='mfpg_fuzz_'))
    config = graph.share_file('config', 'train.yaml')
    overrides = {k: graph.config_value(k, v) for k, v in {
        'algo.pool_steps_per_env': 100, 'iterations': iterations, 'target_return': None}.items()}
    specs = graph.build_graph('twin', config=config, run_dir=log_dir / 'run', overrides=overrides,
                              node_params={'learner': {'exit_when_done': False}},  # stays up, idle, when done
                              compose=False)
    env = dict(env)
    if key:
        env['MFPG_SIGNING_KEY'] = key.decode()
    else:
        env.pop('MFPG_SIGNING_KEY', None)
    procs = {s.fully_qualified_name: NodeProcess(s.name, [find_executable(s.executable, env), *s.ros_args()], env,
                                                 log_dir / f'{s.name}.log') for s in specs}
    profile = yaml.safe_load(Path(graph.share_file('config', 'hardware', 'twin.yaml')).read_text())['/**'][
        'ros__parameters']
    task = make_task(load_config(config).task)
    factory = PayloadFactory(task.name, key, seed, stale_version=0)  # the graph is past version 0: stale
    results, fuzzer = [], None
    probe = GraphProbe('mfpg_fuzz', domain_id=int(env.get('ROS_DOMAIN_ID', '0') or 0))
    try:
        for proc in procs.values():
            proc.start()
        fuzzer = Fuzzer(probe, procs, rate)
        probe.wait_for_nodes(list(procs), 90, lambda: fuzzer.check_alive())
        wait_for_idle_graph(fuzzer, iterations, 120)
        log(f'graph idle at policy version {iterations} (domain {env.get("ROS_DOMAIN_ID")}); {cases} cases per '
            f'topic, {"signing key set" if key else "no signing key"}')
        for plan in plans(task, profile):
            batch = make_cases(plan, factory, cases, list(profile.get('joint_names', task.joint_names)))
            results.append(fuzzer.fuzz_topic(plan, batch, settle_timeout=30))
            log(format_result(results[-1]))
            if verbose:
                log(format_reasons(results[-1]))
        fuzzer.diagnostics.wait_fresh(NODES, check=fuzzer.check_alive)  # every node still answers
    except NodeDied:
        pass  # reported through fuzzer.deaths
    except TimeoutError as exc:
        log(f'error: {exc}')
    finally:
        stop_all(list(procs.values()))
        probe.close()
    return results, (fuzzer.deaths if fuzzer else [])


def format_result(r: TopicResult) -> str:
    parts = [f'{node} {key} {r.observed[(node, key)]}/{n}' for (node, key), n in sorted(r.expected.items())]
    moved = ''.join(f', MOVED {node} {key} {d:+d}' for (node, key), d in r.side_effects.items())
    verdict = 'ok' if r.ok else f'LOST {r.lost}' if r.lost else 'MISCOUNT'
    return f'{r.topic:28s} {r.cases:5d} cases {r.kinds:2d} kinds  {verdict}  ' + ', '.join(parts) + moved


def format_reasons(r: TopicResult, width: int = 110) -> str:
    """The rejection reasons one subscriber (the first) counted on this topic, most frequent first."""
    node = sorted({n for n, _ in r.reasons})[0] if r.reasons else ''
    items = sorted(((n, reason) for (nd, reason), n in r.reasons.items() if nd == node), reverse=True)
    return f'    {node}: ' + '; '.join(f'{n} {reason[:width]}' for n, reason in items)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='mfpg bench fuzz', description=__doc__)
    parser.add_argument('--cases', type=int, default=1000, help='malformed messages per topic')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--rate', type=float, default=250.0, help='messages per second')
    parser.add_argument('--iterations', type=int, default=2, help='training iterations before fuzzing')
    parser.add_argument('--no-key', action='store_true', help='nodes without a signing key')
    parser.add_argument('--log-dir', help='node logs (default: a temporary folder)')
    parser.add_argument('--verbose', action='store_true', help='rejection reasons per topic')
    args = parser.parse_args(argv)
    os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop the graph on SIGTERM as on Ctrl-C
    stack = contextlib.ExitStack()
    try:
        env = child_env()
        env['ROS_DOMAIN_ID'] = str(reserve_domain(stack))
        results, deaths = run_fuzz(env, args.cases, args.seed, None if args.no_key else b'mfpg-fuzz-key', args.rate,
                                   args.iterations, args.log_dir, verbose=args.verbose)
    finally:
        stack.close()
    for death in deaths:
        print(f'CRASH: {death}')
    miscounts = [r.topic for r in results if not r.ok and not r.lost]
    lost = {r.topic: r.lost for r in results if r.lost}
    print('rejections per topic: ' + ', '.join(
        f'{r.topic} {sum(v for (_, k), v in r.observed.items() if k == "rejected")}' for r in results))
    print(f'fuzz_topics_done: {len(results)}/{TOPIC_COUNT}, fuzz_miscounts: {len(miscounts)} {miscounts or ""}, '
          f'lost_in_transport: {sum(lost.values())} {lost or ""}')
    print(f'fuzz_crashes: {len(deaths)}')
    return 1 if deaths or miscounts or len(results) < TOPIC_COUNT else 0

