"""policy_server: the high-fidelity side's actor and the only node that commands the robot (lifecycle node).

Observation in (from hifi_interface) -> a = mu(s) + sigma * eps -> command gate (clamp, slew limit, in action
units) -> joint efforts (action x the task's effort per action unit) on the robot's forward command controller.
The action, eps, command and policy version go back to hifi_interface so the episode can be paired with
low-fidelity replays of the same noise. A safe command (below) is reported too, under SAFE_COMMAND_SEQ: the
plant moved outside any recorded step, and hifi_interface drops the open segment.

Lifecycle: configure (contract, weights subscription; done at start, where a bad parameter stops the node with its
name), activate (start commanding), deactivate and shutdown (send the safe command once, then stay silent). Safety:
stale-observation watchdog, software e-stop (latched `estop` Bool topic, `estop_reset` Trigger service: one safe
command, then silence until reset), weights under another contract refused. None of this replaces the hardware
e-stop. Parameters are read at start; a change at run time is refused (nodes/common.py).

Time: the watchdog runs on the steady clock, never on the node clock: under use_sim_time a lock-step plant's sim
time stops exactly when observations stop (nothing commands the next step), so a sim-time watchdog would never
fire. Its timeout is wall time: size it for the slowest real-time factor a simulator may run at. /diagnostics
headers carry the node clock (sim time under use_sim_time).
"""
from __future__ import annotations

import array
import time

import numpy as np
from diagnostic_msgs.msg import DiagnosticStatus
from rclpy.lifecycle import LifecycleNode, State, TransitionCallbackReturn
from std_msgs.msg import Bool, Float64MultiArray, UInt8MultiArray
from std_srvs.srv import Trigger

from mfpg_ros.core.numpy_policy import NumpyPolicy
from mfpg_ros.core.safety import CommandGate
from mfpg_ros.nodes.common import ACTION, CONTROL, IDLE, LATCHED, OBSERVATION, QUIET_PUB, QUIET_SUB, \
    WEIGHTS, Diagnostics, Rejections, newer_weights, run, signing_key, steady_timer
from mfpg_ros.nodes.params import declare_config
from mfpg_ros.sim.recorder import SAFE_COMMAND_SEQ
from mfpg_ros.sim.tasks import make_task


class PolicyServer(LifecycleNode):
    def __init__(self):
        super().__init__('policy_server')
        self.cfg = declare_config(self)
        self.params = {name: self.declare_parameter(name, default).value for name, default in (
            ('command_topic', 'effort_controller/commands'), ('deterministic', False), ('autostart', True),
            ('watchdog_timeout_s', 0.1), ('safe_command', 'zero'), ('max_command_rate', float('inf')),
            ('command_scale', 1.0), ('command_on_idle', False))}
        self.key = signing_key(self)
        self.rejections = Rejections(self)
        self.policy, self.version, self.gate = None, -1, None
        self.active = self.estopped = self.stale = self.idle = False
        self.last_obs_time = None
        self.actions = self.watchdog_trips = 0
        Diagnostics(self, self.diagnostics, level=self.health, rejections=self.rejections)
        self.create_subscription(Bool, 'estop', self.on_estop, CONTROL)  # in every lifecycle state
        self.create_service(Trigger, 'estop_reset', self.on_estop_reset)
        self.task = self.checked_task()  # a bad parameter stops the node here, with its message (not a silent failure)
        self.trigger_configure()  # configured, a lifecycle node commands nothing until it is activated
        if self.params['autostart']:
            self.trigger_activate()

    # ---- lifecycle -----------------------------------------------------------------------------------------
    def checked_task(self):
        """The parameters configure builds from, checked once up front (ValueError naming a bad one); the task."""
        p = self.params
        if p['safe_command'] not in ('hold', 'zero'):
            raise ValueError(f"safe_command must be 'hold' or 'zero', not {p['safe_command']!r}")
        for name in ('watchdog_timeout_s', 'command_scale', 'max_command_rate'):
            if not p[name] > 0:
                raise ValueError(f'{name} must be > 0, not {p[name]}')
        try:
            self.resolve_topic_name(p['command_topic'])
        except Exception as exc:  # noqa: BLE001 - rclpy raises its RCLError (a RuntimeError) for a bad name
            raise ValueError(f'command_topic {p["command_topic"]!r} is not a valid topic name ({exc})') from None
        return make_task(self.cfg.task)

    def on_configure(self, state: State) -> TransitionCallbackReturn:
        try:
            return self._configure()
        except Exception as exc:  # noqa: BLE001 - rclpy's lifecycle swallows it: say why configure failed
            self.get_logger().error(f'configure failed: {type(exc).__name__}: {exc}')
            return TransitionCallbackReturn.FAILURE

    def _configure(self) -> TransitionCallbackReturn:
        p, task = self.params, self.task
        self.contract, self.effort_per_action = task.contract, task.effort_per_action
        low, high = np.array(self.contract.action_low), np.array(self.contract.action_high)
        scale = float(p['command_scale'])  # a hardware profile may allow only part of the actuator range
        self.gate = CommandGate(low * scale, high * scale, max_delta=p['max_command_rate'] * task.dt,
                                on_stale=p['safe_command'])
        self.rng = np.random.default_rng([self.cfg.seed, 13])
        self.command_pub = self.create_lifecycle_publisher(Float64MultiArray, p['command_topic'], CONTROL, **QUIET_PUB)
        self.action_pub = self.create_lifecycle_publisher(Float64MultiArray, ACTION, CONTROL, **QUIET_PUB)
        self.configured = [  # what on_cleanup destroys, so a cleanup and a new configure do not double it
            self.create_subscription(UInt8MultiArray, WEIGHTS, self.on_weights, LATCHED, **QUIET_SUB),
            self.create_subscription(Float64MultiArray, OBSERVATION, self.on_observation, CONTROL, **QUIET_SUB),
            self.create_subscription(Bool, IDLE, self.on_idle, CONTROL, **QUIET_SUB)]  # volatile: any publisher
        self.watchdog_timer = steady_timer(self, p['watchdog_timeout_s'], self.watchdog)  # see watchdog()
        self.get_logger().info(f'{self.cfg.task}: commands on {self.resolve_topic_name(p["command_topic"])}, '
                               f'watchdog {p["watchdog_timeout_s"] * 1e3:.0f} ms -> {p["safe_command"]}'
                               + ('' if p['autostart'] else '; activate when ready: ros2 lifecycle set '
                                                            f'{self.get_fully_qualified_name()} activate'))
        return TransitionCallbackReturn.SUCCESS

    def on_cleanup(self, state: State) -> TransitionCallbackReturn:
        for sub in self.configured:
            self.destroy_subscription(sub)
        self.destroy_timer(self.watchdog_timer)
        self.destroy_lifecycle_publisher(self.command_pub)
        self.destroy_lifecycle_publisher(self.action_pub)
        self.policy, self.version, self.gate, self.configured = None, -1, None, []
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: State) -> TransitionCallbackReturn:
        self.active, self.last_obs_time, self.stale = True, None, False
        return super().on_activate(state)

    def on_deactivate(self, state: State) -> TransitionCallbackReturn:
        if not self.estopped:  # the e-stop sent it already (on a lock-step plant each one is a step)
            self.send_safe()  # last word before going silent
        self.active = False
        return super().on_deactivate(state)

    def on_shutdown(self, state: State) -> TransitionCallbackReturn:
        """Finalized from any state: an active server sends its safe command and goes silent, as on deactivate."""
        if self.active:
            self.on_deactivate(state)
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: State) -> TransitionCallbackReturn:
        """A transition raised: silent, then finalized (FAILURE; SUCCESS would leave it unconfigured with what
        configure made still alive)."""
        self.on_shutdown(state)
        return TransitionCallbackReturn.FAILURE

    # ---- inputs --------------------------------------------------------------------------------------------
    def on_weights(self, msg: UInt8MultiArray) -> None:
        weights = newer_weights(msg, self.contract, self.key, self.version, self.rejections)
        if weights is not None:
            self.policy, self.version = NumpyPolicy.from_state(weights.state), weights.version

    def on_estop(self, msg: Bool) -> None:
        if msg.data and not self.estopped:
            self.estopped = True
            self.get_logger().error('software e-stop engaged: commanding stopped until estop_reset')
            if self.active:
                self.send_safe()

    def on_idle(self, msg: Bool) -> None:
        """The HF side pauses on purpose (reset, waiting for the next policy): disarm the watchdog until
        observations resume, and send the safe command once if the profile asks for it (a real robot during an
        operator reset; not a lock-step simulator, where every command is a physics step)."""
        if msg.data and not self.idle and self.active and not self.stale and self.params['command_on_idle']:
            self.send_safe()
        self.idle = msg.data

    def on_estop_reset(self, request, response):
        response.success, response.message = True, 'e-stop released' if self.estopped else 'e-stop was not engaged'
        self.estopped = False
        self.get_logger().warning(response.message)
        return response

    def on_observation(self, msg: Float64MultiArray) -> None:
        data = np.asarray(msg.data, dtype=np.float64)
        if data.shape != (1 + self.contract.obs_dim,) or not np.isfinite(data).all():
            self.rejections(OBSERVATION, f'expected [seq, {self.contract.obs_dim} finite values], '
                                         f'got {data.size} values', 'malformed')
            return
        self.last_obs_time, self.stale, self.idle = time.monotonic(), False, False  # steady, as the watchdog
        if not self.active or self.estopped:
            return
        if self.policy is None:
            self.rejections(OBSERVATION, 'no policy weights received yet', 'no weights')
            return
        n = self.contract.act_dim
        eps = np.zeros(n) if self.params['deterministic'] else self.rng.standard_normal(n)
        action = self.policy.sample(data[1:][None], eps[None])[0]
        command = self.gate(action)
        self.send(command)
        self.report(data[0], action, eps, command)
        self.actions += 1

    def watchdog(self) -> None:
        """Runs at the deadline of the newest observation (last one + timeout): trips if none came since, else
        sleeps until the new deadline. So it wakes about once a timeout while observations flow (a fixed-rate check
        cost a callback every few control periods) and reacts at the timeout, not up to a check period later.
        Disarmed, it looks once a timeout."""
        timeout = self.params['watchdog_timeout_s']
        if not self.active or self.estopped or self.stale or self.idle or self.last_obs_time is None:
            self.watchdog_in(timeout)
            return
        remaining = self.last_obs_time + timeout - time.monotonic()
        if remaining > 0:
            self.watchdog_in(max(remaining, 1e-4))
        else:
            self.stale = True
            self.watchdog_trips += 1
            self.send_safe()
            self.get_logger().error(f'no observation for {timeout * 1e3:.0f} ms: '
                                    f'{self.params["safe_command"]} command sent', throttle_duration_sec=1.0)

    def watchdog_in(self, seconds: float) -> None:
        """The watchdog's next run: `seconds` from now (period changed and restarted only when it differs)."""
        ns = round(seconds * 1e9)
        if self.watchdog_timer.timer_period_ns != ns:
            self.watchdog_timer.timer_period_ns = ns
            self.watchdog_timer.reset()

    def send_safe(self) -> None:
        """The safe command, reported on the action topic under SAFE_COMMAND_SEQ: it is a plant step (or a
        change of effort) that no recorded step holds, and hifi_interface drops an open segment when it sees it."""
        command = self.gate.fallback()
        self.send(command)
        self.report(SAFE_COMMAND_SEQ, np.zeros(command.size), np.zeros(command.size), command)

    def report(self, seq: float, action: np.ndarray, eps: np.ndarray, command: np.ndarray) -> None:
        """Tell hifi_interface what was sent for observation seq: [seq, version, action..., eps..., command...]."""
        msg = Float64MultiArray()
        msg.data = array.array('d', [seq, float(self.version), *action, *eps, *command])
        self.action_pub.publish(msg)

    def send(self, command: np.ndarray) -> None:
        """Publish a command given in action units as joint efforts (N or N m), as ros2_control expects."""
        msg = Float64MultiArray()
        msg.data = array.array('d', command * self.effort_per_action)
        self.command_pub.publish(msg)

    # ---- status --------------------------------------------------------------------------------------------
    def health(self) -> tuple[int, str]:
        if self.estopped:
            return DiagnosticStatus.ERROR, 'software e-stop engaged'
        if self.stale:
            return DiagnosticStatus.ERROR, 'observations stale: safe command sent'
        if not self.active:
            return (DiagnosticStatus.WARN, 'inactive: not commanding (when ready: ros2 lifecycle set '
                                           f'{self.get_fully_qualified_name()} activate)')
        return DiagnosticStatus.OK, 'commanding'

    def diagnostics(self) -> dict:
        return {'policy_version': self.version, 'actions': self.actions, 'watchdog_trips': self.watchdog_trips,
                'estopped': self.estopped, 'active': self.active, 'rejected': self.rejections.total,
                'non_finite_actions': self.gate.non_finite if self.gate else 0}


def main(args=None):
    run(PolicyServer, args)
