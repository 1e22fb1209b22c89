"""bag_recorder: records the training traffic (weights, HF and LF episodes, metrics summary) into a rosbag2 MCAP bag,
byte for byte as DDS delivers it (raw subscriptions), with the training config in the bag's metadata.

The bag is finalised (metadata.yaml written) when the node stops on Ctrl-C/SIGINT; a SIGKILL leaves only the
MCAP file. Replay a bag with `mfpg replay <bag>`.
"""
from __future__ import annotations

import time
from functools import partial
from pathlib import Path

import rclpy.logging
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import String, UInt8MultiArray

from mfpg_ros.bagfile import BagWriter, offered_qos
from mfpg_ros.nodes.common import EPISODES, EPISODES_IN, HIFI_EPISODES, LOFI_EPISODES, METRICS, WEIGHTS, WEIGHTS_OUT, \
    Diagnostics, run
from mfpg_ros.nodes.params import declare_config

SUMMARY = f'{METRICS}/summary'
# Subscriber QoS matches each publisher (reliability, durability). The readers keep more than the writers: a
# recorder writing to disk must not drop the oldest unread sample when a burst arrives (a pool is often over a
# thousand segments), and a busy one must not overwrite one weights version with the next.
RECORDED = {  # topic: (type, subscription QoS, QoS the publisher offers, stored in the bag for playback)
    WEIGHTS: (UInt8MultiArray, QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE,
                                          durability=DurabilityPolicy.TRANSIENT_LOCAL), WEIGHTS_OUT),
    HIFI_EPISODES: (UInt8MultiArray, EPISODES_IN, EPISODES),
    LOFI_EPISODES: (UInt8MultiArray, EPISODES_IN, EPISODES),
    SUMMARY: (String, QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE,
                                 durability=DurabilityPolicy.TRANSIENT_LOCAL), None),  # the learner keeps its history
}


def type_name(msg_type) -> str:
    return f'{msg_type.__module__.split(".")[0]}/msg/{msg_type.__name__}'


class BagRecorder(Node):
    def __init__(self):
        super().__init__('bag_recorder')
        cfg = declare_config(self)
        bag = self.declare_parameter('bag_path', '').value
        run_dir = self.declare_parameter('run_dir', '').value
        self.writer = None
        topics = list(self.declare_parameter('topics', list(RECORDED)).value)  # relative (this namespace) or absolute
        unknown = [t for t in topics if t.lstrip('/') not in RECORDED]
        if unknown:
            raise ValueError(f'cannot record {unknown}: known topics are {list(RECORDED)}')
        self.path = Path(bag or Path(run_dir or '.') / f'bag_{time.strftime("%Y%m%d-%H%M%S")}')
        if self.path.exists():  # e.g. a run resumed in its own folder: the bag of its first part stays as it is
            self.path = self.path.with_name(f'{self.path.name}_{time.strftime("%Y%m%d-%H%M%S")}')
        self.writer = BagWriter(self.path, config=cfg.to_dict())
        self.names: dict[str, str] = {}
        for topic in topics:
            msg_type, qos, offered = RECORDED[topic.lstrip('/')]
            sub = self.create_subscription(msg_type, topic, partial(self.on_message, topic), qos, raw=True)
            self.names[topic] = sub.topic_name  # as resolved in this node's namespace
            offered = offered or qos
            self.writer.add_topic(sub.topic_name, type_name(msg_type),
                                  offered_qos(offered.depth, offered.durability == DurabilityPolicy.TRANSIENT_LOCAL))
        Diagnostics(self, lambda: {'bag': str(self.path), 'bytes': self.writer.bytes,
                                   **{f'recorded {t}': n for t, n in self.writer.counts.items()}})
        self.get_logger().info(f'recording {", ".join(self.names.values())} into {self.path}')

    def on_message(self, topic: str, raw: bytes) -> None:
        self.writer.write(self.names[topic], self.get_clock().now().nanoseconds, raw)

    def destroy_node(self) -> None:
        if self.writer is not None:  # None: the constructor failed before opening the bag
            self.writer.close()
            # Ctrl-C has shut the context down by now: a logger outside the node's does not try /rosout
            rclpy.logging.get_logger(f'{self.get_name()}.shutdown').info(
                f'bag closed: {self.path} ({sum(self.writer.counts.values())} messages)')
        super().destroy_node()


def main(args=None):
    run(BagRecorder, args)
