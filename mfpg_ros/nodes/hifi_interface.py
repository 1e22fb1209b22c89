"""hifi_interface: the robot side's episode keeper (real robot, Gazebo or the twin plant).

joint_states (by joint name) -> observation for policy_server (which commands the robot and reports the action,
eps and version back) -> the next joint_states closes the step: reward and termination from the task. Resets go
through the plant's reset service; HF segments (s0, eps, rewards, version) are published for the learner and the
low-fidelity simulators. A stalled step (no action or no new joint state in time), or a safe command from
policy_server while a segment is open, aborts the segment: aborted data never reaches the learner. Episode logic
lives in sim.recorder.

Time: episode timing (start, duration, the /diagnostics header) uses the node clock, i.e. sim time under
use_sim_time. Liveness checks (stall timeout, reset retries) use the steady clock: a lock-step plant's sim time
stands still exactly when a step stalls or a reset is pending. Time going back is treated as a reset: a backward
jump of the node clock (simulator reset, `ros2 bag play --loop`, Gazebo world reset) or a joint state stamped
earlier than the one before aborts the open segment (never sent), and the episode restarts from a fresh s0
through the normal reset path.
"""
from __future__ import annotations

import array
import time
import uuid

from rclpy.clock import ClockChange, JumpThreshold
from rclpy.duration import Duration
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool, Float64MultiArray, UInt8MultiArray
from std_srvs.srv import Trigger

from mfpg_ros.core.codec import CodecError, decode_weights, encode_episode
from mfpg_ros.nodes.common import ACTION, CONTROL, EPISODES, HIFI_EPISODES, IDLE, LATCHED, OBSERVATION, QUIET_PUB, \
    QUIET_SUB, WEIGHTS, Diagnostics, Rejections, bytes_msg, msg_bytes, run, signing_key, steady_timer
from mfpg_ros.nodes.params import declare_config
from mfpg_ros.sim.recorder import SAFE_COMMAND_SEQ, JointStateError, SegmentRecorder, joint_vector, parse_report
from mfpg_ros.sim.tasks import make_task

WAITING, RESETTING, STARTING, OBSERVING, ACTING, PAUSED = 'waiting', 'resetting', 'starting', 'observing', \
    'acting', 'paused'


class HifiInterface(Node):
    def __init__(self):
        super().__init__('hifi_interface')
        cfg = declare_config(self)
        self.task = make_task(cfg.task)
        self.joint_names = list(self.declare_parameter('joint_names', list(self.task.joint_names)).value)
        if len(self.joint_names) != len(self.task.joint_names):
            raise ValueError(f'joint_names {self.joint_names}: task {cfg.task} has {len(self.task.joint_names)} joints '
                             f'{self.task.joint_names}; give the robot\'s name of each, in that order')
        states_topic = self.declare_parameter('joint_states_topic', 'joint_states').value
        reset_service = self.declare_parameter('reset_service', 'reset').value
        self.reset_strategy = self.declare_parameter('reset_strategy', 'service').value
        if self.reset_strategy not in ('service', 'operator'):
            raise ValueError(f"reset_strategy must be 'service' or 'operator', got {self.reset_strategy!r}")
        self.stall_timeout = self.declare_parameter('stall_timeout_s', 0.5).value
        self.reset_timeout = self.declare_parameter('reset_timeout_s', 10.0).value  # reply + first joint state
        self.on_budget = self.declare_parameter('on_budget', 'pause').value
        if self.on_budget not in ('pause', 'continue'):
            raise ValueError(f"on_budget must be 'pause' or 'continue', got {self.on_budget!r}")
        self.key = signing_key(self)
        self.contract = self.task.contract
        # Episode ids are unique per start: the learner and lofi_sim tell a version's segments apart by id, and a
        # restarted hifi_interface reusing its predecessor's ids would have its segments dropped as duplicates.
        self.recorder = SegmentRecorder(self.task, cfg.algo.hf_steps_per_iter, cfg.seed,
                                        prefix=f'{self.get_namespace().strip("/") or "hf"}-{cfg.seed}-'
                                               f'{uuid.uuid4().hex[:8]}')
        self.phase, self.latest_version, self.seq, self.pending_state = WAITING, -1, 0, None
        self.early_state, self.phase_since, self.latest_state = None, time.monotonic(), None
        self.last_stamp: int | None = None  # newest joint_states header stamp, ns
        self.episodes = self.segments = self.stale_actions = self.late_actions = self.aborted = self.idle_ticks = 0
        self.clock_jumps_back = self.rewind_aborts = self.safe_commands = self.reset_timeouts = 0
        self.reset_future = None
        # episode duration from the plant's joint_states stamps (its own time; /clock may lag them), ns
        self.episode_start, self.last_episode_s = 0, float('nan')
        self.rejections = Rejections(self)

        self.obs_pub = self.create_publisher(Float64MultiArray, OBSERVATION, CONTROL, **QUIET_PUB)
        self.idle_pub = self.create_publisher(Bool, IDLE, CONTROL, **QUIET_PUB)
        self.episode_pub = self.create_publisher(UInt8MultiArray, HIFI_EPISODES, EPISODES, **QUIET_PUB)
        self.create_subscription(JointState, states_topic, self.on_joint_states, CONTROL)
        self.action_sub = self.create_subscription(Float64MultiArray, ACTION, self.on_action, CONTROL, **QUIET_SUB)
        self.create_subscription(UInt8MultiArray, WEIGHTS, self.on_weights, LATCHED, **QUIET_SUB)
        self.reset_client = self.create_client(Trigger, reset_service)
        self.create_service(Trigger, 'confirm_reset', self.on_operator_confirm)
        steady_timer(self, 0.5, self.request_reset_when_ready)  # they run while sim time stands still (docstring)
        steady_timer(self, 0.05, self.check_stall)
        # Any backward jump of the node clock (ROS time set from /clock); switching time sources is not a jump.
        self.jump_handle = self.get_clock().create_jump_callback(
            JumpThreshold(min_forward=None, min_backward=Duration(nanoseconds=-1), on_clock_change=False),
            post_callback=self.on_clock_jump)
        time_source = 'sim (/clock)' if self.get_parameter('use_sim_time').value else 'system'
        Diagnostics(self, lambda: {'phase': self.phase, 'waiting_for': self.waiting_for(), 'episodes': self.episodes,
                                   'segments': self.segments,
                                   'policy_version': self.latest_version,
                                   'stale_actions': self.stale_actions, 'late_actions': self.late_actions,
                                   'aborted_segments': self.aborted,
                                   'time_source': time_source, 'clock_jumps_back': self.clock_jumps_back,
                                   'rewind_aborts': self.rewind_aborts, 'safe_commands': self.safe_commands,
                                   'reset_timeouts': self.reset_timeouts,
                                   'last_episode_s': f'{self.last_episode_s:.3f}',
                                   'rejected': self.rejections.total},
                    rejections=self.rejections)

    def waiting_for(self) -> str:
        if self.phase == RESETTING:
            return 'operator: confirm_reset' if self.reset_strategy == 'operator' else 'reset service'
        if self.phase == WAITING:
            return ', '.join(self.missing_to_start()) or 'the next reset'
        return {PAUSED: 'next policy version', OBSERVING: 'action', ACTING: 'joint_states',
                STARTING: 'joint_states'}[self.phase]

    def missing_to_start(self) -> list[str]:
        """What an episode still needs before its reset can be asked for."""
        missing = [] if self.latest_version >= 0 else ['policy weights']
        if self.reset_strategy != 'operator' and not self.reset_client.service_is_ready():
            missing.append('reset service')
        # An observation sent before policy_server matched is lost, and the episode would end in a stall abort.
        if not (self.obs_pub.get_subscription_count() > 0 and self.action_sub.get_publisher_count() > 0):
            missing.append('policy_server')
        return missing

    # ---- inputs --------------------------------------------------------------------------------------------
    def on_weights(self, msg: UInt8MultiArray) -> None:
        try:
            version = decode_weights(msg_bytes(msg), contract=self.contract, key=self.key).version
        except CodecError as err:
            self.rejections(WEIGHTS, err)
            return
        self.latest_version = max(self.latest_version, version)
        if self.phase == PAUSED and not self.recorder.budget_reached(self.latest_version):
            self.recorder.resync(*self.latest_state)  # the plant may have moved while we waited
            self.publish_observation()

    def on_joint_states(self, msg: JointState) -> None:
        try:
            qpos, qvel = joint_vector(msg.name, msg.position, msg.velocity, self.joint_names)
        except JointStateError as err:
            self.rejections('joint_states', err)
            return
        stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        went_back = self.last_stamp is not None and stamp < self.last_stamp
        previous, self.last_stamp, self.latest_state = self.last_stamp, stamp, (qpos, qvel)
        if went_back and self.phase in (OBSERVING, ACTING, PAUSED):
            # The plant's time went back before (or without) a /clock jump reaching this node.
            self.rewound(f'joint_states stamped {stamp / 1e9:.3f} s after {previous / 1e9:.3f} s')
        elif self.phase in (RESETTING, STARTING):
            self.pending_state = (qpos, qvel)
            if self.phase == STARTING:
                self.start_episode()
        elif self.phase == OBSERVING:
            self.early_state = (qpos, qvel)  # a lock-step plant may answer before the action report arrives
        elif self.phase == ACTING:
            self.close_step(qpos, qvel)

    def close_step(self, qpos, qvel) -> None:
        segments, over = self.recorder.transition(qpos, qvel)
        self.publish_segments(segments)
        if over:
            self.episodes += 1
            self.last_episode_s = (self.last_stamp - self.episode_start) / 1e9
            self.request_reset()
        else:
            self.continue_or_pause()

    def on_action(self, msg: Float64MultiArray) -> None:
        try:
            seq, version, action, eps, command = parse_report(msg.data, self.contract.act_dim)
        except ValueError as err:
            self.rejections(ACTION, str(err), 'malformed')
            return
        if seq == SAFE_COMMAND_SEQ:
            self.safe_commands += 1
            if self.phase in (OBSERVING, ACTING):  # e.g. a lock-step twin took an extra step under the held command
                self.abort('policy_server sent its safe command: the plant moved outside the recorded steps')
            return
        if self.phase != OBSERVING or seq != self.seq:
            if seq <= self.seq:  # the answer to an observation given up on meanwhile (segment aborted, watchdog trip)
                self.late_actions += 1
            else:  # an observation never sent
                self.rejections(ACTION, f'action for seq {seq} while {self.phase} at seq {self.seq}', 'unexpected')
            return
        if self.on_budget == 'pause' and self.recorder.budget_reached(version):
            self.stale_actions += 1  # the policy server has not switched to the new weights yet: ask again
            self.publish_observation()
            return
        self.publish_segments(self.recorder.act(action, eps, command, version))
        early = self.early_state
        self.set_phase(ACTING)
        if early is not None:
            self.close_step(*early)

    # ---- episode flow --------------------------------------------------------------------------------------
    def request_reset_when_ready(self) -> None:
        missing = self.missing_to_start() if self.phase == WAITING else []
        self.idle_ticks = self.idle_ticks + 1 if missing else 0
        if self.idle_ticks % 10 == 9:  # every 5 s while something is missing: say what
            self.get_logger().warning(f'waiting for {", ".join(missing)}: joint_states seen: '
                                      f'{self.latest_state is not None}, policy version: {self.latest_version}')
        if self.phase == WAITING and not missing:
            self.request_reset()

    def check_stall(self) -> None:
        waited = time.monotonic() - self.phase_since
        if self.phase in (OBSERVING, ACTING) and waited > self.stall_timeout:
            self.abort(f'no {"action" if self.phase == OBSERVING else "joint_states"} within '
                       f'{self.stall_timeout * 1e3:.0f} ms')
        elif self.phase in (RESETTING, STARTING) and self.reset_strategy == 'service' and waited > self.reset_timeout:
            # A reply lost on the way (a service answered before it had discovered this client) must not hang the
            # HF side for good: give up on it and ask again.
            self.reset_timeouts += 1
            self.reset_client.remove_pending_request(self.reset_future)
            missing = 'reply from the reset service' if self.phase == RESETTING else 'joint_states after the reset'
            self.get_logger().warning(f'no {missing} within {self.reset_timeout:.1f} s: resetting again')
            self.set_phase(WAITING)

    def on_clock_jump(self, jump) -> None:
        """The node clock went back. Joint states stamped later than the clock now were recorded before the jump:
        an open episode holding them is aborted, a start state taken from them is dropped. If the newest joint state
        is already from the new timeline (a plant whose own reset rewinds its clock, Gazebo's, may deliver the new
        s0 before the /clock jump), the jump was already handled or is that reset, and nothing is dropped.
        Joint states must carry the plant's time in their header, as ros2_control's joint_state_broadcaster does."""
        if jump.clock_change != ClockChange.ROS_TIME_NO_CHANGE:
            return
        self.clock_jumps_back += 1
        now = self.get_clock().now().nanoseconds
        before_jump = self.last_stamp is not None and self.last_stamp > now
        what = f'clock jumped back {-jump.delta.nanoseconds / 1e9:.3f} s to {now / 1e9:.3f} s'
        if before_jump and self.phase in (OBSERVING, ACTING, PAUSED):
            self.rewound(what)
            return
        if before_jump and self.phase in (RESETTING, STARTING):
            self.pending_state = None  # the start state must come from after the jump
        if self.phase in (OBSERVING, ACTING, PAUSED):
            self.episode_start += jump.delta.nanoseconds  # a kept episode: its start moves with the clock
        self.get_logger().info(f'{what} while {self.phase}: nothing recorded before the jump is held')

    def rewound(self, what: str) -> None:
        self.rewind_aborts += 1
        self.abort(f'time went back ({what}): treated as a reset')

    def abort(self, reason: str) -> None:
        """Drop the open segment (never sent to the learner) and start over with a reset."""
        if self.recorder.abort():
            self.aborted += 1
        self.get_logger().warning(f'segment aborted: {reason}')
        self.set_phase(WAITING)

    def set_phase(self, phase: str) -> None:
        idle = phase not in (OBSERVING, ACTING)
        if idle != (self.phase not in (OBSERVING, ACTING)) or phase == WAITING:
            self.idle_pub.publish(Bool(data=idle))  # lets policy_server tell a deliberate pause from a stall
        self.phase, self.phase_since, self.early_state = phase, time.monotonic(), None

    def request_reset(self) -> None:
        self.set_phase(RESETTING)
        self.pending_state = None
        if self.reset_strategy == 'operator':
            self.get_logger().warning('waiting for the operator: put the robot at its start pose, then call '
                                      f'`ros2 service call {self.resolve_service_name("confirm_reset")} '
                                      'std_srvs/srv/Trigger`')
            return
        self.reset_future = self.reset_client.call_async(Trigger.Request())
        self.reset_future.add_done_callback(self.on_reset_done)

    def on_operator_confirm(self, request, response):
        response.success = self.reset_strategy == 'operator' and self.phase == RESETTING
        response.message = 'starting the next episode' if response.success else \
            f'not waiting for an operator reset (strategy {self.reset_strategy}, phase {self.phase})'
        if response.success:
            self.set_phase(STARTING)
            self.pending_state = None  # s0 is the first joint state after the confirmation
        return response

    def on_reset_done(self, future) -> None:
        if future is not self.reset_future or self.phase != RESETTING:
            return  # the reply to a request given up on (reset_timeout_s)
        result = future.result()
        if result is None or not result.success:
            self.get_logger().error(f'reset failed: {getattr(result, "message", "no response")}; retrying')
            self.set_phase(WAITING)
            return
        self.set_phase(STARTING)
        if self.pending_state is not None:
            self.start_episode()

    def start_episode(self) -> None:
        self.recorder.start_episode(*self.pending_state)
        self.episode_start = self.last_stamp  # the stamp of the start state (pending_state came with it)
        self.continue_or_pause()

    def continue_or_pause(self) -> None:
        if self.on_budget == 'pause' and self.recorder.budget_reached(self.latest_version):
            self.set_phase(PAUSED)  # wait for the learner's next version (the twin and Gazebo can wait)
        else:
            self.publish_observation()

    def publish_observation(self) -> None:
        self.seq += 1
        self.set_phase(OBSERVING)
        msg = Float64MultiArray()
        msg.data = array.array('d', [float(self.seq), *self.recorder.observation()])
        self.obs_pub.publish(msg)

    def publish_segments(self, segments) -> None:
        for segment in segments:
            self.episode_pub.publish(bytes_msg(encode_episode(segment, key=self.key)))
            self.segments += 1


def main(args=None):
    run(HifiInterface, args)
