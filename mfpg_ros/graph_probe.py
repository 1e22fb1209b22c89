"""An in-process rclpy node in its own Context that watches a running graph: which nodes exist, what arrives on a
topic, and publishing into it once a subscriber has matched. Used by the runner and the tests; it never sleeps,
it spins until a condition holds."""
from __future__ import annotations

import time
from typing import Callable

import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions

DEFAULT_QOS = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)  # matches reliable volatile and latched


class GraphProbe:
    def __init__(self, name: str = 'mfpg_probe', namespace: str = '', domain_id: int | None = None):
        self.context = rclpy.Context()
        # No signal handlers: Ctrl-C stays a KeyboardInterrupt for the owner (runner or pytest).
        rclpy.init(context=self.context, domain_id=domain_id, signal_handler_options=SignalHandlerOptions.NO)
        self.node = rclpy.create_node(name, namespace='/' + namespace.strip('/'), context=self.context,
                                      start_parameter_services=False)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.inboxes: dict[str, list] = {}
        self.subscriptions: dict[str, object] = {}

    # --- spinning ------------------------------------------------------------------------------------------------
    def spin_once(self, timeout: float = 0.05) -> None:
        self.executor.spin_once(timeout_sec=timeout)

    def wait_until(self, condition: Callable[[], bool], timeout: float, what: str,
                   check: Callable[[], None] | None = None) -> None:
        """Spin until `condition()`; `check()` runs each round (e.g. raise if a watched process died)."""
        deadline = time.monotonic() + timeout
        while not condition():
            if check is not None:
                check()
            if time.monotonic() > deadline:
                raise TimeoutError(f'{what}: not within {timeout:.0f} s')
            self.spin_once(0.05)

    # --- graph ---------------------------------------------------------------------------------------------------
    def resolve(self, name: str) -> str:
        """A relative node or topic name resolved in the probe's namespace; absolute names unchanged."""
        if name.startswith('/'):
            return name
        ns = self.node.get_namespace().rstrip('/')
        return f'{ns}/{name}'

    def node_names(self) -> set[str]:
        return {f'{ns.rstrip("/")}/{n}' for n, ns in self.node.get_node_names_and_namespaces()}

    def missing_nodes(self, names) -> list[str]:
        present = self.node_names()
        return [n for n in names if self.resolve(n) not in present]

    def wait_for_nodes(self, names, timeout: float = 30.0, check=None) -> None:
        names = list(names)
        try:
            self.wait_until(lambda: not self.missing_nodes(names), timeout, 'nodes in the graph', check)
        except TimeoutError:
            raise TimeoutError(f'nodes {self.missing_nodes(names)} did not appear within {timeout:.0f} s '
                               f'(graph: {sorted(self.node_names())})') from None

    # --- topics --------------------------------------------------------------------------------------------------
    def subscribe(self, topic: str, msg_type, qos: QoSProfile = DEFAULT_QOS) -> list:
        """Start collecting `topic` (idempotent); returns the live list of received messages."""
        topic = self.resolve(topic)
        if topic not in self.inboxes:
            inbox = self.inboxes[topic] = []
            self.subscriptions[topic] = self.node.create_subscription(msg_type, topic, inbox.append, qos)
        return self.inboxes[topic]

    def matched_publishers(self, topic: str) -> int:
        """How many publishers a subscribed topic's reader has matched (0 if not subscribed)."""
        sub = self.subscriptions.get(self.resolve(topic))
        return sub.get_publisher_count() if sub is not None else 0

    def wait_for_messages(self, topic: str, msg_type, n: int = 1, timeout: float = 30.0,
                          qos: QoSProfile = DEFAULT_QOS, check=None) -> list:
        inbox = self.subscribe(topic, msg_type, qos)
        self.wait_until(lambda: len(inbox) >= n, timeout, f'{n} message(s) on {self.resolve(topic)}', check)
        return inbox

    def publish(self, topic: str, msg, qos: QoSProfile = DEFAULT_QOS, subscribers: int = 1,
                timeout: float = 30.0):
        """Publish once `subscribers` subscriptions matched (so the message is not lost to discovery)."""
        topic = self.resolve(topic)
        pub = self.node.create_publisher(type(msg), topic, qos)
        self.wait_until(lambda: pub.get_subscription_count() >= subscribers, timeout, f'a subscriber on {topic}')
        pub.publish(msg)
        return pub

    # --- lifetime ------------------------------------------------------------------------------------------------
    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        self.context.try_shutdown()

    def __enter__(self) -> 'GraphProbe':
        return self

    def __exit__(self, *exc) -> None:
        self.close()
