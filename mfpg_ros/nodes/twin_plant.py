"""twin_plant: a MuJoCo plant with shifted dynamics that speaks the robot's ros2_control topics.

Stands in for the real robot or Gazebo: publishes sensor_msgs/JointState, takes std_msgs/Float64MultiArray effort
commands (a forward command controller's topic), offers a std_srvs/Trigger reset, and publishes /clock.
mode=lockstep advances one control period per command (fast, deterministic tests); mode=realtime steps at the
control rate with the last command held.

Time: the twin is the graph's clock under use_sim_time. Its simulated time (an integer count of control periods, so
/clock advances in whole periods) goes out on /clock before the joint states of the same step, which carry it in
their header. /clock is sent every clock_period_s of sim time (default 0.1 s, gazebo_ros's 10 Hz; 0 = every step),
at every reset, and once the plant has stood still for 50-100 ms (a lock-step plant waiting for a command): each
/clock message wakes every node of the graph, and a per-step clock cost the lock-step loop a third of its speed.
Stamps stay exact; a node's now() lags by less than clock_period_s while the plant runs, not at all while it waits.
Resets keep the time running (a monotonic clock is what bags, tf buffers and plots expect), unless
rewind_clock_on_reset is set: then a reset rewinds the clock to 0 like a Gazebo world reset.
"""
from __future__ import annotations

import numpy as np
from builtin_interfaces.msg import Time
from rclpy.node import Node
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray
from std_srvs.srv import Trigger

from mfpg_ros.nodes.common import CONTROL, QUIET_PUB, QUIET_SUB, Diagnostics, Rejections, run, steady_timer
from mfpg_ros.nodes.params import declare_config
from mfpg_ros.sim.tasks import make_task


class TwinPlant(Node):
    def __init__(self):
        super().__init__('twin_plant')
        cfg = declare_config(self)
        self.mode = self.declare_parameter('mode', 'lockstep').value
        if self.mode not in ('lockstep', 'realtime'):
            raise ValueError(f"mode must be 'lockstep' or 'realtime', got {self.mode!r}")
        self.command_topic = command_topic = self.declare_parameter('command_topic',
                                                                    'effort_controller/commands').value
        states_topic = self.declare_parameter('joint_states_topic', 'joint_states').value
        reset_service = self.declare_parameter('reset_service', 'reset').value
        self.rewind_on_reset = self.declare_parameter('rewind_clock_on_reset', False).value
        clock_period = self.declare_parameter('clock_period_s', 0.1).value
        self.task = make_task(cfg.task, cfg.hifi_variant)
        # A real driver publishes joints in its own order: the order (and any extra joints) are configurable.
        self.published_joints = list(self.declare_parameter('published_joints', list(self.task.joint_names)).value)
        self.data = self.task.new_data()
        self.rng = np.random.default_rng([cfg.seed, 11])
        self.command = np.zeros(self.task.model.nu)
        self.steps = self.resets = self.diverged = 0
        self.period_ns = round(self.task.dt * 1e9)
        self.ticks = 0  # control periods simulated: the sim time published on /clock is ticks * period_ns
        self.clock_every = max(1, round(clock_period / self.task.dt))  # /clock every this many ticks
        self.clock_due, self.clock_ticks, self.ticks_seen = True, -1, -1  # ticks last sent on /clock, last seen idle
        self.rejections = Rejections(self)
        self.states_pub = self.create_publisher(JointState, states_topic, CONTROL, **QUIET_PUB)
        self.clock_pub = self.create_publisher(Clock, '/clock', 10, **QUIET_PUB)  # the graph remaps it per namespace
        self.create_subscription(Float64MultiArray, command_topic, self.on_command, CONTROL, **QUIET_SUB)
        self.create_service(Trigger, reset_service, self.on_reset)
        if self.mode == 'realtime':  # steady clock: this timer makes the sim time, it cannot wait for it
            steady_timer(self, self.task.dt, self.advance)
        steady_timer(self, 0.05, self.catch_up_clock)
        Diagnostics(self, lambda: {'steps': self.steps, 'resets': self.resets, 'diverged': self.diverged,
                                   'rejected': self.rejections.total, 'mode': self.mode,
                                   'sim_time': f'{self.ticks * self.period_ns / 1e9:.3f}'},
                    rejections=self.rejections)
        self.reset_state()
        self.get_logger().info(f'{cfg.task} twin ({cfg.hifi_variant or "nominal"}), {self.mode}, '
                               f'{1 / self.task.dt:.0f} Hz, commands on {command_topic}')

    def on_command(self, msg: Float64MultiArray) -> None:
        command = np.asarray(msg.data, dtype=np.float64)  # joint efforts, N or N m
        if command.shape != self.command.shape or not np.isfinite(command).all():
            self.rejections(self.command_topic,
                            f'expected {self.command.size} finite efforts, got {command[:8].tolist()}', 'malformed')
            return
        self.command = command / self.task.effort_per_action  # joint efforts -> actuator control units
        if self.mode == 'lockstep':
            self.advance()

    def advance(self) -> None:
        if not self.task.step(self.data, self.command):
            self.diverged += 1
            self.get_logger().error('simulation diverged; resetting the twin')
            self.reset_state()
        self.steps += 1
        self.ticks += 1
        self.clock_due = self.ticks % self.clock_every == 0
        self.publish_state()

    def on_reset(self, request, response):
        self.reset_state()
        response.success, response.message = True, f'reset #{self.resets}'
        return response

    def reset_state(self) -> None:
        qpos, qvel = self.task.reset_state(self.rng, 1)
        self.task.set_state(self.data, qpos[0], qvel[0])
        self.command[:] = 0.0
        self.resets += 1
        if self.rewind_on_reset:
            self.ticks = 0  # a backward clock jump, as a Gazebo world reset makes
        self.clock_due = True
        self.publish_state()

    def catch_up_clock(self) -> None:
        """A plant standing still (lock-step, waiting for a command) sends its exact time if /clock lags behind."""
        if self.ticks == self.ticks_seen and self.clock_ticks != self.ticks:
            self.send_clock()
        self.ticks_seen = self.ticks

    def sim_time(self) -> Time:
        sec, nanosec = divmod(self.ticks * self.period_ns, 1_000_000_000)
        return Time(sec=sec, nanosec=nanosec)

    def send_clock(self) -> None:
        self.clock_pub.publish(Clock(clock=self.sim_time()))
        self.clock_ticks = self.ticks

    def publish_state(self) -> None:
        """/clock first (when due), then the joint states stamped with the simulated time."""
        if self.clock_due:
            self.send_clock()
        index = {name: i for i, name in enumerate(self.task.joint_names)}
        pick = [index.get(name) for name in self.published_joints]  # unknown names: extra joints, reported as 0
        value = lambda arr: [float(arr[i]) if i is not None else 0.0 for i in pick]  # noqa: E731
        msg = JointState(name=self.published_joints, position=value(self.data.qpos), velocity=value(self.data.qvel),
                         effort=value(self.data.qfrc_actuator))
        msg.header.stamp = self.sim_time()
        self.states_pub.publish(msg)


def main(args=None):
    run(TwinPlant, args)
