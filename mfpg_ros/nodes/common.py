"""ROS glue shared by the nodes: topic names, QoS, byte payloads, rejection counters, diagnostics, main()."""
from __future__ import annotations

import array
import collections
import contextlib
import faulthandler
import os
import signal
import sys
from typing import Callable

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import SetParametersResult
from rclpy.clock import Clock, ClockType
from rclpy.event_handler import PublisherEventCallbacks, SubscriptionEventCallbacks
from rclpy.exceptions import ParameterException
from rclpy.executors import Executor, ExternalShutdownException, SingleThreadedExecutor
from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy
from rclpy.lifecycle import LifecycleNode
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions
from std_msgs.msg import UInt8MultiArray

from mfpg_ros.core.codec import CodecError, decode_weights
from mfpg_ros.core.config import config_fields
from mfpg_ros.graph import UNKNOWN_PARAMETER
from mfpg_ros.nodes.lean_executor import LeanExecutor

# Every name is relative, so a namespace runs a second robot beside the first.
WEIGHTS = 'policy/weights'
HIFI_EPISODES = 'hifi/episodes'
LOFI_EPISODES = 'lofi/episodes'
OBSERVATION = 'hifi/observation'  # Float64MultiArray [seq, obs...]
IDLE = 'hifi/idle'  # std_msgs/Bool: the HF side is deliberately not stepping (reset, pause between iterations)
ACTION = 'hifi/action'  # Float64MultiArray [seq, version, sampled action..., eps..., command...]
METRICS = 'metrics'  # namespace of per-iteration std_msgs/Float64 topics; metrics/summary is JSON

LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
# The learner's weights writer keeps its last few versions: a reader that matched late (slow discovery under load)
# or lost a sample still gets every recent version -- a bag recorder needs them all; LATCHED readers keep the newest.
WEIGHTS_OUT = QoSProfile(depth=8, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)
# Episode streams keep their last 1000 segments for late joiners: a reader that matched late (slow discovery), a
# restarted learner or a new lofi_sim still gets what was sent meanwhile; older versions are dropped and counted.
EPISODES = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


def lofi_episodes_qos(hf_steps_per_iter: int) -> QoSProfile:
    """lofi_sim's writer: at most one replay per HF step and up to 64 pool batches per version (one per ~256 kB,
    plus at most one part-filled batch per pool piece), so this depth keeps the current version whole for a late or
    restarted learner; no deeper than needed."""
    return QoSProfile(depth=hf_steps_per_iter + 64, reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL)


EPISODES_IN = QoSProfile(history=HistoryPolicy.KEEP_ALL, reliability=ReliabilityPolicy.RELIABLE,  # readers: lose none
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)
HISTORY = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE,  # late joiners get the whole run so far
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)
CONTROL = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)

# rclpy arms two QoS-event handlers (incompatible QoS / type warnings) per publisher and subscription, and the
# executor re-adds each to its wait set on every spin: in a node of a dozen endpoints that is a good part of the
# per-message cost on the control loop. Our publishers go without (a subscriber with incompatible QoS is warned on
# its own side), as do subscriptions to topics whose publishers are ours; hardware- and user-facing subscriptions
# (joint_states, estop) keep them.
QUIET_PUB = {'event_callbacks': PublisherEventCallbacks(use_default_callbacks=False)}
QUIET_SUB = {'event_callbacks': SubscriptionEventCallbacks(use_default_callbacks=False)}


def bytes_msg(payload: bytes) -> UInt8MultiArray:
    msg = UInt8MultiArray()
    msg.data = array.array('B', payload)
    return msg


def msg_bytes(msg: UInt8MultiArray) -> bytes:
    data = msg.data
    return data.tobytes() if isinstance(data, array.array) else bytes(data)


class Rejections:
    """Counts rejected input per topic and kind; logs the first of each kind, then every 100th, with the detail.

    Kinds are bounded (an exception class or a fixed label), so /diagnostics does not grow with bad input."""

    def __init__(self, node: Node):
        self.node, self.counts = node, collections.Counter()

    def __call__(self, topic: str, error: Exception | str, kind: str | None = None) -> None:
        kind = kind or (type(error).__name__ if isinstance(error, Exception) else 'invalid')
        n = self.counts[(topic, kind)] = self.counts[(topic, kind)] + 1
        if n % 100 == 1:
            self.node.get_logger().warning(f'rejected message on {topic} ({kind} #{n}): {error}')

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def key_values(self) -> list[KeyValue]:
        return [KeyValue(key=f'rejected {t} {r}', value=str(n)) for (t, r), n in sorted(self.counts.items())]


class Diagnostics:
    """Publishes one DiagnosticStatus for this node on /diagnostics at a fixed period (steady clock, so it keeps
    going under simulated time): the node's values plus one counter per rejected topic and reason."""

    def __init__(self, node: Node, values: Callable[[], dict], rejections: Rejections | None = None,
                 period: float = 1.0, level: Callable[[], tuple[int, str]] | None = None):
        self.node, self.values, self.rejections = node, values, rejections
        self.level = level or (lambda: (DiagnosticStatus.OK, 'ok'))
        self.pub = node.create_publisher(DiagnosticArray, '/diagnostics', 10, **QUIET_PUB)
        steady_timer(node, period, self.publish)

    def publish(self) -> None:
        lvl, message = self.level()
        status = DiagnosticStatus(level=lvl, name=f'mfpg_ros: {self.node.get_fully_qualified_name()}',
                                  message=message, hardware_id=self.node.get_namespace())
        status.values = [KeyValue(key=k, value=str(v)) for k, v in self.values().items()]
        if self.rejections is not None:
            status.values += self.rejections.key_values()
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self.node.get_clock().now().to_msg()  # node clock: sim time under use_sim_time
        self.pub.publish(msg)


def steady_timer(node: Node, period: float, callback: Callable[[], None]):
    """A timer on the steady clock: it keeps running while sim time stands still (a lock-step plant waiting)."""
    return node.create_timer(period, callback, clock=Clock(clock_type=ClockType.STEADY_TIME))


def newer_weights(msg: UInt8MultiArray, contract, key: bytes | None, version: int, rejections: Rejections):
    """Decoded weights if valid for `contract` (and signed, when a key is set) and newer than `version`; else None
    with the reason counted. Weights made for another contract are refused: the current policy stays."""
    try:
        weights = decode_weights(msg_bytes(msg), contract=contract, key=key)
    except CodecError as err:
        rejections(WEIGHTS, err)
        return None
    if weights.version < version:
        rejections(WEIGHTS, f'out-of-order weights version {weights.version} < {version}', 'out-of-order')
        return None
    return weights if weights.version > version else None  # the same version again: a restarted learner's


def signing_key(node: Node) -> bytes | None:
    """The HMAC key for weights/episodes: parameter `signing_key_file`, else $MFPG_SIGNING_KEY, else none."""
    path = node.declare_parameter('signing_key_file', '').value
    if path:
        with open(path, 'rb') as f:
            return f.read().strip()
    env = os.environ.get('MFPG_SIGNING_KEY', '')
    return env.encode() if env else None


# Parameters a params file may give every node of the graph although only some declare them: the training config
# (from config/train.yaml), the hardware profile's '/**' section, and the signing key.
SHARED_PARAMETERS = {*config_fields(), 'use_sim_time', 'joint_names', 'command_topic',
                     'joint_states_topic', 'reset_service', 'signing_key_file'}


def warn_unknown_parameters(node: Node) -> list[str]:
    """Log each parameter given to `node` (params files, -p) that it does not declare: ROS ignores such a
    parameter silently, so a misspelt name would otherwise go unnoticed."""
    given = getattr(node, '_parameter_overrides', {})  # rclpy keeps the given values privately
    unknown = sorted(n for n in given if n not in SHARED_PARAMETERS and not node.has_parameter(n))
    for name in unknown:
        node.get_logger().warning(f"'{name}' {UNKNOWN_PARAMETER}")
    return unknown


def refuse_parameter_changes(parameters) -> SetParametersResult:
    """Every node reads its parameters once, at start: a change at run time would be reported as set and have no
    effect (a lower command_scale that the robot never sees), so it is refused, saying so."""
    names = ', '.join(p.name for p in parameters)
    return SetParametersResult(successful=False, reason=f'{names}: mfpg_ros nodes read their parameters at start; '
                                                        'restart the node (or the graph) with the new value')


WAKE_EVERY_S = 0.2  # the executor hands back to Python this often, where a stop request is seen


def run(node_factory: Callable[[], Node] | dict[str, Callable[[], Node]], args=None,
        executor_class: type[Executor] = LeanExecutor) -> None:
    """Standard node main: init, spin until Ctrl-C, SIGTERM or shutdown, clean up. A dict {node name: factory}: the
    nodes share the process and one executor (composition). A node with async callbacks needs rclpy's own executor
    (executor_class=SingleThreadedExecutor); MFPG_EXECUTOR=rclpy selects it for every node.

    rclpy's own signal handler shuts the context down at once, and then a lifecycle node could not publish any more:
    an active policy_server stopped by Ctrl-C would leave the robot on its last command (a forward command
    controller keeps it). So here a signal only asks the executor to stop after its current callback; then the
    lifecycle nodes are shut down (policy_server: safe command) while the context is still up."""
    if os.environ.get('MFPG_EXECUTOR', 'lean') == 'rclpy':
        executor_class = SingleThreadedExecutor
    factories = node_factory if isinstance(node_factory, dict) else {os.path.basename(sys.argv[0]): node_factory}
    faulthandler.enable()  # a crash below Python (segfault, abort) leaves every thread's Python stack in the log
    stop: list[int] = []  # the signals received
    for sig in (signal.SIGINT, signal.SIGTERM):  # SIGTERM: ros2 launch's second step after SIGINT
        signal.signal(sig, lambda signum, frame: stop.append(signum))
    nodes: list[Node] = []
    try:
        rclpy.init(args=sys.argv if args is None else args, signal_handler_options=SignalHandlerOptions.NO)
        for name, factory in factories.items():
            try:
                nodes.append(factory())
            except (ValueError, OSError, ParameterException) as exc:  # a bad parameter or file: its message only
                rclpy.logging.get_logger(name).fatal(f'cannot start: {exc}')
                raise SystemExit(1) from None
        executor = executor_class()
        for node in nodes:
            warn_unknown_parameters(node)
            node.add_on_set_parameters_callback(refuse_parameter_changes)
            executor.add_node(node)
        if isinstance(executor, LeanExecutor):
            executor.spin(WAKE_EVERY_S, until=lambda: bool(stop))
        else:
            while rclpy.ok() and not stop:
                executor.spin_once(timeout_sec=WAKE_EVERY_S)
    except ExternalShutdownException:  # the context shut down from elsewhere (signals only set `stop`)
        pass
    except Exception:  # noqa: BLE001 - a callback racing a shutdown fails on the dead context: that is a clean stop
        if rclpy.ok():
            raise
    finally:
        for node in reversed(nodes):
            if isinstance(node, LifecycleNode) and rclpy.ok():
                with contextlib.suppress(_rclpy.RCLError):  # already finalized (ros2 lifecycle set ... shutdown)
                    node.trigger_shutdown()
            node.destroy_node()
        rclpy.try_shutdown()
