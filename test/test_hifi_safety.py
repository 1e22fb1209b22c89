"""The high-fidelity side over real DDS: policy_server safety (watchdog, e-stop, lifecycle, contract, limits) and
hifi_interface with another plant wiring."""
import array
import json
import os
import signal
import threading

import numpy as np
import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from rcl_interfaces.srv import SetParameters
from rclpy.parameter import Parameter
from rclpy.executors import SingleThreadedExecutor
from ros_helpers import EFFORT, TASK, TWIN, check_watchdog_reaction, node_args, weights_msg
from std_msgs.msg import Bool, Float64MultiArray, String, UInt8MultiArray
from std_srvs.srv import Trigger

from mfpg_ros.core.codec import decode_episode, encode_weights
from mfpg_ros.core.contract import Contract
from mfpg_ros.core.policy import ActorCritic
from mfpg_ros.nodes.common import HISTORY, LATCHED
from mfpg_ros.sim.tasks import make_task


def service(probe, srv_type, name, request):
    client = probe.node.create_client(srv_type, probe.resolve(name))
    probe.wait_until(client.service_is_ready, 30, f'service {name}')
    future = client.call_async(request)
    probe.wait_until(future.done, 30, f'{name} response')
    return future.result()


def test_watchdog_sends_the_safe_command_within_the_timeout(server):
    check_watchdog_reaction(server)


def test_estop_latches_survives_new_weights_and_reset_releases(server):
    assert server.step() is not None
    server.publish('estop', Bool(data=True), qos=10)
    server.probe.wait_until(lambda: list(server.commands[-1].data) == [0.0], 5, 'e-stop zero command')
    n = len(server.commands)
    assert server.step(expect_action=False) is None
    server.publish('policy/weights', weights_msg(1))
    assert server.step(expect_action=False) is None
    assert server.step(expect_action=False) is None  # 0.9 s of observations, 9 watchdog timeouts: silence
    assert len(server.commands) == n  # the e-stop's one safe command, then nothing (no watchdog commands either)
    result = service(server.probe, Trigger, 'estop_reset', Trigger.Request())
    assert result.success
    server.wait_acting(1)  # acting again, with the weights received while stopped


@pytest.mark.parametrize('server', [{'watchdog_timeout_s': 30.0, 'safe_command': 'zero'}], indirect=True)
def test_ctrl_c_sends_the_safe_command_before_the_node_exits(server):
    """A forward command controller keeps the last command: a policy_server stopped while active (Ctrl-C, SIGTERM
    from ros2 launch) must leave the robot its safe command, not its last action (the watchdog is far off here)."""
    from mfpg_ros.sim.recorder import SAFE_COMMAND_SEQ
    server.publish('policy/weights', weights_msg(1, bias=0.8))
    server.wait_acting(1)
    assert server.commands[-1].data[0] != 0.0
    reports = len(server.actions)
    server.proc.interrupt()
    server.probe.wait_until(lambda: server.proc.poll() is not None, 30, 'policy_server to exit')
    assert server.proc.poll() == 0
    server.probe.wait_until(lambda: any(m.data[0] == SAFE_COMMAND_SEQ for m in server.actions[reports:]), 5,
                            'the safe command reported')
    assert list(server.commands[-1].data) == [0.0]


def test_weights_for_another_contract_are_refused_old_policy_keeps_running(server):
    assert server.step()[1] == 0.0
    other = Contract('other_rig', TASK.contract.observation_names, TASK.contract.action_names,
                     TASK.contract.action_low, TASK.contract.action_high, 100.0, 2, 2)
    model = ActorCritic(TASK.contract.obs_dim, TASK.contract.act_dim)
    server.publish('policy/weights', UInt8MultiArray(data=array.array(
        'B', encode_weights(model, version=5, contract=other))))
    diag = server.probe.subscribe('/diagnostics', DiagnosticArray)
    server.probe.wait_until(lambda: any(kv.key.startswith('rejected policy/weights ContractError')
                                        for m in diag for s in m.status for kv in s.values), 10,
                            'ContractError counted in /diagnostics')
    assert server.step()[1] == 0.0  # still version 0


# A long watchdog: a loaded machine's pause between steps must not slip a safe command (a jump to zero) in here.
@pytest.mark.parametrize('server', [{'command_scale': 0.5, 'max_command_rate': 10.0, 'watchdog_timeout_s': 5.0}],
                         indirect=True)
def test_adversarial_policy_output_is_clamped_and_slew_limited(server):
    server.publish('policy/weights', weights_msg(1, bias=1e6))  # mean action 1e6 units
    server.wait_acting(1)
    versions = [server.step()[1] for _ in range(6)]
    efforts = [m.data[0] for m in server.commands]  # every command sent, under both policies
    max_step = 10.0 * TASK.dt * EFFORT
    print(f'efforts {np.round(efforts, 3)} (limit {0.5 * EFFORT}, max step {max_step})')
    assert versions[-1] == 1.0 and efforts[-1] == pytest.approx(0.5 * EFFORT)  # pinned at the limit
    assert max(np.abs(efforts)) <= 0.5 * EFFORT + 1e-9
    assert np.all(np.abs(np.diff([0.0, *efforts])) <= max_step + 1e-9)


@pytest.mark.parametrize('server', [{'autostart': False}], indirect=True)
def test_inactive_policy_server_never_commands(server):
    """autostart false (the real-robot profile): configured at start, so the e-stop works, but never commanding
    until activated by hand."""
    change = 'policy_server/change_state'
    state = service(server.probe, GetState, 'policy_server/get_state', GetState.Request())  # configured in __init__
    assert state.current_state.label == 'inactive'
    assert service(server.probe, Trigger, 'estop_reset', Trigger.Request()).message == 'e-stop was not engaged'
    server.ready().publish('policy/weights', weights_msg(0))
    for _ in range(3):  # configured but inactive: observations are answered by nothing
        assert server.step(expect_action=False) is None
    assert not server.commands
    assert service(server.probe, ChangeState, change, ChangeState.Request(
        transition=Transition(id=Transition.TRANSITION_ACTIVATE))).success
    server.publish('policy/weights', weights_msg(1))  # subscriptions exist once configured
    server.wait_acting(1)
    assert server.commands
    assert service(server.probe, ChangeState, change, ChangeState.Request(
        transition=Transition(id=Transition.TRANSITION_DEACTIVATE))).success
    n = len(server.commands)
    assert server.step(expect_action=False) is None
    server.probe.wait_until(lambda: len(server.commands) >= n, 1, 'settle')
    assert len(server.commands) <= n + 1  # at most the one safe command sent on deactivation
    for transition in (Transition.TRANSITION_CLEANUP, Transition.TRANSITION_CONFIGURE, Transition.TRANSITION_ACTIVATE):
        assert service(server.probe, ChangeState, change, ChangeState.Request(
            transition=Transition(id=transition))).success
    server.publish('policy/weights', weights_msg(2))
    server.wait_acting(2)
    n = len(server.commands)
    assert server.step() is not None  # one observation, one command: nothing doubled by the second configure
    server.probe.wait_until(lambda: len(server.commands) > n, 5, 'the command')
    assert len(server.commands) == n + 1
    server.probe.wait_until(  # the cleaned-up subscription leaves the graph; a doubled one would stay
        lambda: server.probe.node.count_subscribers(server.probe.resolve('hifi/observation')) == 1, 5, 'one reader')
    # parameters are read at start: a change at run time is refused, not reported as set and ignored
    request = SetParameters.Request(parameters=[Parameter('command_scale', value=0.01).to_parameter_msg()])
    result = service(server.probe, SetParameters, 'policy_server/set_parameters', request).results[0]
    assert not result.successful and 'read their parameters at start' in result.reason
    # shut down while active: finalized, the safe command, then silence (it used to keep commanding)
    assert server.step() is not None
    server.probe.wait_until(lambda: list(server.commands[-1].data) == [0.0], 5, 'the watchdog trip (stale)')
    n = len(server.commands)  # stale now: the watchdog sends nothing more until an observation comes
    assert service(server.probe, ChangeState, change, ChangeState.Request(
        transition=Transition(id=Transition.TRANSITION_ACTIVE_SHUTDOWN))).success
    server.probe.wait_until(lambda: len(server.commands) == n + 1, 5, 'the safe command on shutdown')
    assert list(server.commands[-1].data) == [0.0]
    assert server.step(expect_action=False) is None and server.step(expect_action=False) is None
    assert len(server.commands) == n + 1
    state = service(server.probe, GetState, 'policy_server/get_state', GetState.Request())
    assert state.current_state.label == 'finalized'
    server.proc.interrupt()  # Ctrl-C on a finalized node: nothing left to shut down, a clean exit
    server.probe.wait_until(lambda: server.proc.poll() is not None, 30, 'policy_server to exit')
    assert server.proc.poll() == 0, server.proc.log_tail(20)


def test_a_bad_policy_server_parameter_stops_it_with_its_name(spawn, probe):
    """rclpy's lifecycle swallows an error in configure: the node checks its parameters itself, up front."""
    proc = spawn('policy_server', node_args(safe_command='bogus'))
    probe.wait_until(lambda: proc.poll() is not None, 60, 'policy_server to refuse to start')
    assert proc.poll() != 0 and "safe_command must be 'hold' or 'zero', not 'bogus'" in proc.log_tail(40)


def test_hifi_interface_says_what_it_still_waits_for(spawn, probe):
    diag = probe.subscribe('/diagnostics', DiagnosticArray)

    def says(text):
        return lambda: any(kv.key == 'waiting_for' and kv.value == text
                           for m in diag for st in m.status if 'hifi_interface' in st.name for kv in st.values)
    spawn('hifi_interface', node_args(TWIN))
    probe.wait_until(says('policy weights, reset service, policy_server'), 30, 'all three missing')
    spawn('twin_plant', node_args(TWIN))  # offers the reset service
    probe.wait_until(says('policy weights, policy_server'), 30, 'the reset service no longer missing')


def test_a_late_action_is_counted_and_one_never_asked_for_is_rejected(spawn, probe):
    """An action for an observation already given up on (its segment aborted by a watchdog trip) is normal under
    faults: counted as late, not as bad input. One for an observation never sent is rejected."""
    from mfpg_ros.nodes.common import CONTROL
    diag = probe.subscribe('/diagnostics', DiagnosticArray)

    def value(key):
        values = [kv.value for m in diag for st in m.status if 'hifi_interface' in st.name
                  for kv in st.values if kv.key == key]
        return values[-1] if values else None
    spawn('hifi_interface', node_args(TWIN))
    probe.wait_until(lambda: value('late_actions') == '0', 30, 'hifi_interface diagnostics')
    report = lambda seq: Float64MultiArray(data=array.array('d', [seq, 0.0, 0.1, 0.2, 0.1]))  # noqa: E731
    probe.publish('hifi/action', report(0.0), CONTROL)  # seq 0: the last observation it sent (none yet)
    probe.publish('hifi/action', report(1e6), CONTROL)
    probe.wait_until(lambda: value('late_actions') == '1' and value('rejected hifi/action unexpected') == '1', 30,
                     'one late action, one rejected')


def test_another_plant_wiring_trains_with_hifi_interface_unchanged(spawn, probe):
    """A plant that publishes joints in another order with an extra joint, on other topic names: only the
    hardware parameters change, hifi_interface and policy_server code do not."""
    wiring = {'command_topic': 'cart_effort_controller/commands', 'joint_states_topic': 'robot/joint_states',
              'reset_service': 'robot/reset'}
    twin = dict(wiring, published_joints='[pole_hinge, wheel_encoder, cart_slider]')
    fast = {'algo.pool_steps_per_env': 50, 'iterations': 2, 'target_return': '.nan'}
    summary = probe.subscribe('metrics/summary', String, HISTORY)  # latched: none lost to discovery
    procs = [spawn('twin_plant', node_args(TWIN, **twin, **fast)),
             spawn('policy_server', node_args(TWIN, **wiring, **fast)),
             spawn('hifi_interface', node_args(TWIN, **wiring, **fast)),
             spawn('lofi_sim', node_args(**fast)),
             spawn('learner', node_args(**fast, exit_when_done='false'))]  # latched history stays until matched
    probe.wait_until(lambda: len(summary) >= 2, 120, 'two iterations',
                     lambda: [p.poll() is None or pytest.fail(f'{p.name} exited') for p in procs])
    rows = [json.loads(m.data) for m in summary]
    assert rows[-1]['done'] and all(r['n_pairs'] == r['hf_segments'] for r in rows)


def test_stalled_step_aborts_the_segment_and_never_sends_it(spawn, probe):
    fast = {'algo.hf_steps_per_iter': 400}
    episodes = probe.subscribe('hifi/episodes', UInt8MultiArray)
    diag = probe.subscribe('/diagnostics', DiagnosticArray)
    spawn('twin_plant', node_args(TWIN, **fast))
    server = spawn('policy_server', node_args(TWIN, **fast))
    spawn('hifi_interface', node_args(TWIN, **fast))
    probe.publish('policy/weights', weights_msg(0), LATCHED, subscribers=2)
    actions = probe.subscribe('hifi/action', Float64MultiArray)
    probe.wait_until(lambda: len(actions) >= 5, 30, 'hifi steps running')
    server.interrupt()  # the actor disappears mid-episode

    def aborted():
        return any(kv.key == 'aborted_segments' and int(kv.value) >= 1
                   for m in diag for s in m.status if 'hifi_interface' in s.name for kv in s.values)
    probe.wait_until(aborted, 10, 'hifi_interface reports an aborted segment')
    sent = [decode_episode(m.data) for m in episodes]
    assert not any(e.aborted for e in sent)
    assert sum(len(e) for e in sent) < len(actions)  # the open segment's steps were dropped, not sent


def _follows_the_twin(segment, twin) -> bool:
    """The segment's observations are what its actions, replayed from its s0 on the twin's dynamics, give."""
    data = twin.new_data()
    twin.set_state(data, segment.qpos0, segment.qvel0)
    for obs, action in zip(segment.obs, segment.actions):
        if not np.allclose(twin.observe(data.qpos[None], data.qvel[None])[0], obs, atol=1e-3):
            return False
        twin.step(data, twin.clip_action(action.astype(np.float64)))
    return True


def test_a_safe_command_mid_episode_aborts_the_segment(spawn, probe):
    """A watchdog trip makes the lock-step twin take a step that no recorded step holds (and a real robot feel a
    command no action explains): hifi_interface must drop the open segment, so every segment sent follows the
    plant's dynamics. The trip is forced by freezing hifi_interface mid-episode."""
    fast = {'algo.hf_steps_per_iter': 100000}
    episodes = probe.subscribe('hifi/episodes', UInt8MultiArray)
    diag = probe.subscribe('/diagnostics', DiagnosticArray)
    actions = probe.subscribe('hifi/action', Float64MultiArray)
    spawn('twin_plant', node_args(TWIN, **fast))
    spawn('policy_server', node_args(TWIN, **fast))
    hifi = spawn('hifi_interface', node_args(TWIN, **fast))
    probe.publish('policy/weights', weights_msg(0), LATCHED, subscribers=2)

    def counter(node, name):
        values = [int(kv.value) for m in diag for s in m.status if node in s.name for kv in s.values if kv.key == name]
        return values[-1] if values else 0

    for attempt in range(20):  # the freeze must land mid-episode: between episodes the watchdog is disarmed
        seen, trips = len(actions), counter('policy_server', 'watchdog_trips')
        probe.wait_until(lambda: len(actions) >= seen + 3, 30, 'hifi steps running')
        os.killpg(hifi.pid, signal.SIGSTOP)
        try:
            probe.wait_until(lambda: counter('policy_server', 'watchdog_trips') > trips, 2, 'the watchdog trips')
            break
        except TimeoutError:
            pass
        finally:
            os.killpg(hifi.pid, signal.SIGCONT)
    else:
        raise AssertionError('the watchdog never tripped while hifi_interface was frozen mid-episode')
    sent = len(episodes)
    probe.wait_until(lambda: len(episodes) >= sent + 3, 60, 'segments after the trip')
    twin = make_task('cartpole', 'cartpole_twin')
    segments = [decode_episode(m.data) for m in episodes]
    assert all(_follows_the_twin(s, twin) for s in segments)
    probe.wait_until(lambda: counter('hifi_interface', 'safe_commands') >= 1, 10,
                     'hifi_interface counts the safe command')  # (it aborts a segment if one had steps)


def test_a_lost_reset_reply_is_given_up_and_the_reset_asked_again(spawn, probe):
    """A service may answer before it has discovered the client, and the reply is lost: hifi_interface must not wait
    for it forever. A mute reset service takes the first request and never answers; the twin comes up after that."""
    requests, release = [], threading.Event()

    def mute(request, response):
        requests.append(request)
        release.wait(120)  # blocks this server's only thread: no reply goes out
        return response
    node = rclpy.create_node('mute_reset', context=probe.context)
    node.create_service(Trigger, probe.resolve('reset'), mute)
    executor = SingleThreadedExecutor(context=probe.context)
    executor.add_node(node)
    thread = threading.Thread(target=executor.spin, daemon=True)
    thread.start()
    try:
        episodes = probe.subscribe('hifi/episodes', UInt8MultiArray)
        diag = probe.subscribe('/diagnostics', DiagnosticArray)
        spawn('policy_server', node_args(TWIN))
        spawn('hifi_interface', node_args(TWIN, reset_timeout_s=1.0))
        probe.publish('policy/weights', weights_msg(0), LATCHED, subscribers=2)
        probe.wait_until(lambda: requests, 60, 'the first reset request, to the mute service')
        spawn('twin_plant', node_args(TWIN))
        probe.wait_until(lambda: len(episodes) >= 2, 60, 'HF segments after the lost reply')
        probe.wait_until(lambda: any(kv.key == 'reset_timeouts' and int(kv.value) >= 1 for m in diag for s in m.status
                                     if 'hifi_interface' in s.name for kv in s.values), 10, 'reset_timeouts counted')
    finally:
        release.set()
        executor.shutdown()
        thread.join(10)  # the released handler's reply goes out before its service is destroyed
        node.destroy_node()
