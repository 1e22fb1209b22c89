"""rosbag2 bags (MCAP storage, format version 9) of a training run, written and read with `rosbags` (ROS-free).

Messages are stored exactly as DDS delivered them (serialized CDR). The training config rides along in the bag's
metadata (custom_data 'mfpg.config', JSON), so `mfpg replay` can rebuild the learner from the bag alone.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import yaml
from rosbags.highlevel import AnyReader
from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

BYTES_TYPE = 'std_msgs/msg/UInt8MultiArray'
TEXT_TYPE = 'std_msgs/msg/String'
CONFIG_KEY = 'mfpg.config'
TYPESTORE = get_typestore(Stores.ROS2_KILTED)
_DEFAULT_TIME = QosTime(sec=0x7FFFFFFF, nsec=0xFFFFFFFF)  # rosbag2's "infinite" duration


def offered_qos(depth: int, transient_local: bool) -> Qos:
    """A reliable keep-last QoS as rosbag2 stores it per topic (what `ros2 bag play` would offer again)."""
    return Qos(history=QosHistory.KEEP_LAST, depth=depth, reliability=QosReliability.RELIABLE,
               durability=QosDurability.TRANSIENT_LOCAL if transient_local else QosDurability.VOLATILE,
               deadline=_DEFAULT_TIME, lifespan=_DEFAULT_TIME, liveliness=QosLiveliness.AUTOMATIC,
               liveliness_lease_duration=_DEFAULT_TIME, avoid_ros_namespace_conventions=False)


class BagWriter:
    """A new bag folder (must not exist). add_topic once per topic, then write raw CDR (or payload/text helpers)."""

    def __init__(self, path: str | Path, config: dict | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.writer = Writer(self.path, version=9, storage_plugin=StoragePlugin.MCAP)
        self.writer.open()
        if config is not None:
            self.writer.set_custom_data(CONFIG_KEY, json.dumps(config, sort_keys=True))
        self.connections: dict = {}
        self.counts: dict[str, int] = {}
        self.bytes = 0

    def add_topic(self, topic: str, msgtype: str, qos: Qos | None = None) -> None:
        self.connections[topic] = self.writer.add_connection(topic, msgtype, typestore=TYPESTORE,
                                                             offered_qos_profiles=[qos] if qos else [])
        self.counts[topic] = 0

    def write(self, topic: str, stamp_ns: int, raw: bytes) -> None:
        self.writer.write(self.connections[topic], stamp_ns, raw)
        self.counts[topic] += 1
        self.bytes += len(raw)

    def write_payload(self, topic: str, stamp_ns: int, payload: bytes) -> None:
        """A std_msgs/UInt8MultiArray carrying `payload` (as a node's bytes_msg would publish it)."""
        self.write(topic, stamp_ns, serialize_payload(payload))

    def write_text(self, topic: str, stamp_ns: int, text: str) -> None:
        msg = TYPESTORE.types[TEXT_TYPE](data=text)
        self.write(topic, stamp_ns, bytes(TYPESTORE.serialize_cdr(msg, TEXT_TYPE)))

    def close(self) -> None:
        """Writes metadata.yaml; without it the bag folder is not a readable rosbag2 bag."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def serialize_payload(payload: bytes) -> bytes:
    types = TYPESTORE.types
    layout = types['std_msgs/msg/MultiArrayLayout'](dim=[], data_offset=0)
    msg = types[BYTES_TYPE](layout=layout, data=np.frombuffer(payload, dtype=np.uint8))
    return bytes(TYPESTORE.serialize_cdr(msg, BYTES_TYPE))


@dataclass
class BagMessage:
    topic: str
    msgtype: str
    stamp_ns: int
    raw: bytes

    def payload(self) -> bytes:
        """The bytes of a UInt8MultiArray message (an encoded episode or weight set)."""
        return TYPESTORE.deserialize_cdr(self.raw, BYTES_TYPE).data.tobytes()

    def text(self) -> str:
        return TYPESTORE.deserialize_cdr(self.raw, TEXT_TYPE).data


def read_messages(path: str | Path) -> Iterator[BagMessage]:
    """Every message of the bag in time order, raw."""
    with AnyReader([Path(path)], default_typestore=TYPESTORE) as reader:
        for connection, stamp, raw in reader.messages():
            yield BagMessage(connection.topic, connection.msgtype, stamp, bytes(raw))


def read_config(path: str | Path) -> dict | None:
    """The training config stored with the bag, if any."""
    info = yaml.safe_load((Path(path) / 'metadata.yaml').read_text())['rosbag2_bagfile_information']
    text = (info.get('custom_data') or {}).get(CONFIG_KEY)
    return json.loads(text) if text else None
