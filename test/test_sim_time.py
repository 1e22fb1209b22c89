"""Time over real DDS: with the twin profile the HF nodes run on the twin's /clock (sim time), the watchdog keeps its
steady clock while sim time stands still, and a backward jump of the clock is treated as a reset (the open segment
is dropped, never sent)."""
import array

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from ros_helpers import TASK, TWIN, check_watchdog_reaction, node_args, weights_msg
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray, UInt8MultiArray
from std_srvs.srv import Trigger

from mfpg_ros import graph
from mfpg_ros.core.codec import decode_episode
from mfpg_ros.nodes.common import LATCHED

PERIOD_NS = round(TASK.dt * 1e9)
ALL = QoSProfile(history=HistoryPolicy.KEEP_ALL, reliability=ReliabilityPolicy.RELIABLE)


def ns(stamp) -> int:
    return stamp.sec * 1_000_000_000 + stamp.nanosec


def stamp_of(t_ns: int):
    msg = Clock()
    msg.clock.sec, msg.clock.nanosec = divmod(t_ns, 1_000_000_000)
    return msg.clock


class Statuses:
    """The mfpg_ros statuses on /diagnostics: per node, (header stamp in ns, {key: value}) in arrival order."""

    def __init__(self, probe):
        self.inbox = probe.subscribe('/diagnostics', DiagnosticArray)

    def of(self, node: str) -> list[tuple[int, dict]]:
        return [(ns(m.header.stamp), {kv.key: kv.value for kv in s.values})
                for m in self.inbox for s in m.status if s.name == f'mfpg_ros: {node}']

    def latest(self, node: str) -> dict:
        found = self.of(node)
        return found[-1][1] if found else {}


def spawn_specs(spawn, specs, names):
    by_name = {s.name: s for s in specs}
    return [spawn(by_name[n].executable, by_name[n].ros_args(), name=n) for n in names]


def alive(procs):
    def check():
        dead = [p.name for p in procs if p.poll() is not None]
        assert not dead, f'died: {dead}'
    return check


def test_profiles_put_the_plant_facing_nodes_on_the_plant_clock(tmp_path):
    for hardware, sim in (('twin', True), ('gazebo', True), ('real', False)):
        specs = graph.build_graph(hardware, namespace='robot1', run_dir=tmp_path)
        clocked = {s.name: s.overrides['use_sim_time'] for s in specs if 'use_sim_time' in s.overrides}
        assert clocked == {n: sim for n in graph.SIM_TIME_NODES if n in {s.name for s in specs}}
        assert all((('/clock', '/robot1/clock') in s.remappings) == sim for s in specs)  # one clock per graph
    root = graph.build_graph('twin', run_dir=tmp_path)
    assert not any(src == '/clock' for s in root for src, _ in s.remappings)


def test_the_composed_loop_under_a_namespace_keeps_each_nodes_name_and_parameters(spawn, probe, tmp_path):
    """The twin's three loop nodes in one process: the namespace and /clock remapping reach all three, and each
    node reads its own overrides (keyed by its name) and none of the others'."""
    from rcl_interfaces.srv import GetParameters
    specs = graph.build_graph('twin', namespace='robot1', run_dir=tmp_path,
                              node_params={'twin_plant': {'clock_period_s': 0.5},
                                           'policy_server': {'watchdog_timeout_s': 0.3}})
    loop = next(u for u in graph.processes(specs) if u.composed)
    proc = spawn(loop.executable, loop.command(tmp_path / 'params'), name=loop.name)
    names = [f'/robot1/{n}' for n in ('twin_plant', 'hifi_interface', 'policy_server')]
    probe.wait_for_nodes(names, 60, alive([proc]))
    clock = probe.subscribe('/robot1/clock', Clock, ALL)
    probe.publish('/robot1/effort_controller/commands', Float64MultiArray(data=array.array('d', [0.0])),
                  QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))  # one lock-step: time moves
    probe.wait_until(lambda: clock, 30, '/robot1/clock from the composed twin', alive([proc]))

    def parameters(node, *keys):
        client = probe.node.create_client(GetParameters, f'{node}/get_parameters')
        probe.wait_until(client.service_is_ready, 30, f'{node} parameters')
        future = client.call_async(GetParameters.Request(names=list(keys)))
        probe.wait_until(future.done, 30, f'{node} parameters answer')
        return [v.double_value if v.type == 3 else v.bool_value if v.type == 1 else None
                for v in future.result().values]
    assert parameters('/robot1/twin_plant', 'clock_period_s', 'use_sim_time') == [0.5, True]
    assert parameters('/robot1/policy_server', 'watchdog_timeout_s', 'use_sim_time') == [0.3, True]
    assert parameters('/robot1/hifi_interface', 'clock_period_s', 'watchdog_timeout_s') == []  # not its own


@pytest.mark.parametrize('clock_period_s', [0.1, 0.0])
def test_twin_time_advances_one_period_per_lockstep_command(spawn, probe, tmp_path, clock_period_s):
    """Joint states carry the sim time of their step, one period per command; /clock goes out at the reset, then
    every clock_period_s of sim time (0: every step) before the joint states of that step, and when the plant
    stands still."""
    specs = graph.build_graph('twin', namespace='robot1', run_dir=tmp_path,
                              node_params={'twin_plant': {'clock_period_s': clock_period_s}})
    clock = probe.subscribe('/robot1/clock', Clock, ALL)
    states = probe.subscribe('/robot1/joint_states', JointState, ALL)
    procs = spawn_specs(spawn, specs, ['twin_plant'])
    commands = probe.node.create_publisher(Float64MultiArray, '/robot1/effort_controller/commands', 10)
    probe.wait_until(lambda: commands.get_subscription_count() > 0 and probe.matched_publishers('/robot1/clock'),
                     60, 'twin_plant up', alive(procs))
    assert probe.node.count_publishers('/clock') == 0  # remapped into the graph's namespace
    every = max(1, round(clock_period_s / (PERIOD_NS / 1e9)))
    due = []  # the sim times at which /clock must come
    for _ in range(2 * every + 1):
        n_states = len(states)
        before = ns(states[-1].header.stamp) if states else None
        commands.publish(Float64MultiArray(data=array.array('d', [0.0])))
        probe.wait_until(lambda: len(states) > n_states, 10, 'one lock-step', alive(procs))
        now = ns(states[-1].header.stamp)
        if before is not None:
            assert now - before == PERIOD_NS
        if now % (every * PERIOD_NS) == 0:
            due.append(now)
            probe.wait_until(lambda: any(ns(c.clock) == now for c in clock), 10, f'/clock at {now} ns',
                             alive(procs))
    assert len(due) >= 2
    stood = {ns(s.header.stamp) for s in states}  # between commands the plant stands still: a catch-up may come
    assert set(due) <= {ns(c.clock) for c in clock} <= set(due) | stood | {0}  # 0: the start-up reset
    if now not in due:  # standing still after the last command, the plant sends its exact time
        probe.wait_until(lambda: ns(clock[-1].clock) == now, 10, 'the clock catching up', alive(procs))


def test_hifi_side_runs_on_sim_time_and_keeps_reporting_while_it_stands_still(spawn, probe, tmp_path):
    """No learner: hifi_interface fills the budget of version 0 and pauses, the lock-step twin waits, sim time
    stands still. /diagnostics (steady timers) keeps coming, stamped with that frozen sim time."""
    budget = 150
    specs = graph.build_graph('twin', namespace='robot1', run_dir=tmp_path,
                              overrides={'algo.hf_steps_per_iter': budget})
    clock = probe.subscribe('/robot1/clock', Clock, ALL)
    episodes = probe.subscribe('/robot1/hifi/episodes', UInt8MultiArray, ALL)
    diag = Statuses(probe)
    procs = spawn_specs(spawn, specs, ['twin_plant', 'policy_server', 'hifi_interface'])
    # /clock is volatile: matched before the twin steps, or a busy machine may deliver none of it (seen once in CI)
    probe.wait_until(lambda: probe.matched_publishers('/robot1/clock') > 0, 60, '/clock matched', alive(procs))
    probe.publish('/robot1/policy/weights', weights_msg(0), LATCHED, subscribers=2, timeout=60)
    hifi, server_, twin = '/robot1/hifi_interface', '/robot1/policy_server', '/robot1/twin_plant'
    probe.wait_until(lambda: diag.latest(hifi).get('phase') == 'paused', 120, 'budget filled, paused',
                     alive(procs))
    n = {node: len(diag.of(node)) + 1 for node in (hifi, server_, twin)}  # the next may predate the pause
    probe.wait_until(lambda: all(len(diag.of(node)) >= n[node] + 2 for node in n), 30,
                     'two more statuses from each node while paused', alive(procs))
    frozen = ns(clock[-1].clock)
    for node in n:
        stamps = [stamp for stamp, _ in diag.of(node)[n[node]:]]
        assert stamps == [frozen] * len(stamps), node  # sim time (not wall time), and it stands still
    steps, sim_time = int(diag.latest(twin)['steps']), float(diag.latest(twin)['sim_time'])
    assert frozen == steps * PERIOD_NS and sim_time == pytest.approx(frozen / 1e9)  # monotonic over resets
    values = diag.latest(hifi)
    assert values['time_source'] == 'sim (/clock)' and values['clock_jumps_back'] == '0'
    segments = [decode_episode(m.data) for m in episodes]
    assert sum(len(s) for s in segments) == budget
    finished = [s for s in segments if s.terminated]
    if finished and int(values['episodes']) == len(finished):  # its duration in sim time: steps x period
        assert abs(float(values['last_episode_s']) - len(finished[-1]) * TASK.dt) <= TASK.dt + 1e-3


@pytest.mark.parametrize('server', [{'use_sim_time': True}], indirect=True)
def test_watchdog_fires_while_sim_time_stands_still(server):
    """The watchdog test of test_hifi_safety, with policy_server on sim time that never moves."""
    probe, frozen = server.probe, 42 * 1_000_000_000
    diag = Statuses(probe)
    clock = probe.node.create_publisher(Clock, '/clock', 10)

    def on_frozen_clock():
        clock.publish(Clock(clock=stamp_of(frozen)))  # the same time again and again: no jump, no progress
        return any(stamp == frozen for stamp, _ in diag.of('/policy_server'))
    probe.wait_until(on_frozen_clock, 30, 'policy_server on the frozen sim time', server.alive)
    check_watchdog_reaction(server)
    n = len(diag.of('/policy_server'))
    probe.wait_until(lambda: len(diag.of('/policy_server')) > n, 10, 'a fresh status', server.alive)
    stamp, values = diag.of('/policy_server')[-1]
    assert stamp == frozen and int(values['watchdog_trips']) >= 3


class RewindingPlant:
    """The test plays the robot side for hifi_interface: a lock-step plant publishing /clock and stamped joint
    states, with a reset service. Its state is static and encodes the reset index, so every segment names the
    reset it started from. `rewind` says how its time goes back:
      clock_first  - at command 8 of the first episode the simulator is reset behind hifi_interface's back; its
                     /clock jumps back, and the rewound joint state comes with the next reset;
      states_first - the same, but a rewound joint state answers command 8, and the /clock jump comes with the
                     next reset (a plant whose clock message is late);
      own_reset    - every reset rewinds its time to 0 (Gazebo's world reset does), and the /clock jump reaches
                     hifi_interface only with the new episode's first step, after its s0."""

    def __init__(self, probe, rewind):
        self.probe, self.rewind, node = probe, rewind, probe.node
        self.t = 100 * 1_000_000_000
        self.resets = self.episode_commands = self.commands = 0
        self.rewound = False
        self.clock_pub = node.create_publisher(Clock, '/clock', 10)
        self.states_pub = node.create_publisher(JointState, '/joint_states', 10)
        node.create_subscription(Float64MultiArray, '/effort_controller/commands', self.on_command, 10)
        node.create_service(Trigger, '/reset', self.on_reset)

    def publish_clock(self):
        self.clock_pub.publish(Clock(clock=stamp_of(self.t)))

    def publish_state(self):
        msg = JointState(name=list(TASK.joint_names), position=[0.001 * self.resets, 0.0], velocity=[0.0, 0.0])
        msg.header.stamp = stamp_of(self.t)
        self.states_pub.publish(msg)

    def on_reset(self, request, response):
        self.resets += 1
        self.episode_commands = 0
        if self.rewind == 'own_reset':
            self.t = 0  # /clock goes out with the next step only: the worst order for hifi_interface
        else:
            self.publish_clock()
        self.publish_state()
        response.success = True
        return response

    def on_command(self, msg):
        self.commands += 1
        self.episode_commands += 1
        if self.rewind != 'own_reset' and not self.rewound and self.resets == 1 and self.episode_commands == 8:
            self.rewound, self.t = True, 1_000_000_000  # reset behind hifi_interface's back
            # One signal only, so hifi_interface must act on that one (else the step would stall, a stall abort).
            self.publish_clock() if self.rewind == 'clock_first' else self.publish_state()
            return
        self.t += PERIOD_NS
        self.publish_clock()
        self.publish_state()


@pytest.mark.parametrize('rewind', ['clock_first', 'states_first', 'own_reset'])
def test_backward_clock_jump_is_a_reset_and_no_segment_straddles_it(spawn, probe, rewind):
    budget = 40
    plant = RewindingPlant(probe, rewind)
    episodes = probe.subscribe('hifi/episodes', UInt8MultiArray, ALL)
    diag = Statuses(probe)
    fast = {'algo.hf_steps_per_iter': budget, 'stall_timeout_s': 5.0}  # a loaded machine must not add stall aborts
    # policy_server holds the weights before hifi_interface starts: an observation it cannot answer yet would end in
    # a stall abort and an extra reset, which this test counts.
    procs = [spawn('policy_server', node_args(TWIN, **fast))]
    probe.publish('policy/weights', weights_msg(0), LATCHED, subscribers=1, timeout=60)
    probe.wait_until(lambda: diag.latest('/policy_server').get('policy_version') == '0', 60,
                     'policy_server holds weights version 0', alive(procs))
    procs.append(spawn('hifi_interface', node_args(TWIN, **fast)))
    start = plant.t

    def on_plant_clock():  # /clock is best effort: say it until hifi_interface reports the plant's time (it may
        plant.publish_clock()  # already be stepping: any sim stamp, neither 0 nor wall time)
        return any(0 < stamp <= start + budget * 2 * PERIOD_NS for stamp, _ in diag.of('/hifi_interface'))
    probe.wait_until(on_plant_clock, 60, "hifi_interface on the plant's clock", alive(procs))
    probe.wait_until(lambda: sum(len(decode_episode(m.data)) for m in episodes) >= budget, 120,
                     'the budget filled', alive(procs))
    n = len(diag.of('/hifi_interface'))
    probe.wait_until(lambda: len(diag.of('/hifi_interface')) > n and diag.latest('/hifi_interface')['phase'] ==
                     'paused', 30, 'a fresh status, paused', alive(procs))
    stamp, values = diag.of('/hifi_interface')[-1]
    segments = [decode_episode(m.data) for m in episodes]
    print(f'{rewind}: {plant.commands} commands, {plant.resets} resets, segments '
          f'{[(len(s), round(float(s.qpos0[0]), 3)) for s in segments]}, hifi {values}')
    assert stamp == plant.t  # hifi_interface runs on the plant's clock
    assert sum(len(s) for s in segments) == budget and not any(s.aborted for s in segments)
    assert values['clock_jumps_back'] == '1'
    if rewind == 'own_reset':  # the plant's own reset: nothing to drop, however late the /clock jump comes
        assert values['rewind_aborts'] == '0' and values['aborted_segments'] == '0' and plant.resets == 1
        assert np.allclose([s.qpos0[0] for s in segments], 0.001)
    else:  # the 7 steps recorded before the rewind were dropped; all data comes from the next reset's s0
        assert values['rewind_aborts'] == '1' and values['aborted_segments'] == '1' and plant.resets == 2
        assert np.allclose([s.qpos0[0] for s in segments], 0.002) and plant.commands >= budget + 8
