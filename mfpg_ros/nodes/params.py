"""The training config as ROS parameters: every TrainConfig field becomes a (dotted) parameter with a description,
so `--params-file config/train.yaml` and `-p algo.lr:=1e-3` work, and the in-process trainer reads the same file."""
from __future__ import annotations

import math
import typing

from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node

from mfpg_ros.core.config import TrainConfig, config_fields, load_config

# ROS parameters cannot be None: optional strings use '' and optional floats NaN.
_NONE = {str: '', float: math.nan}


def _ros_default(default, hint):
    if default is None:
        args = typing.get_args(hint)
        base = float if float in args else str
        return _NONE[base]
    if isinstance(default, tuple):
        return list(default)
    return default


def declare_config(node: Node) -> TrainConfig:
    """Declare every TrainConfig field on `node` and build the config from the parameter values."""
    values: dict = {}
    for name, (default, hint) in config_fields().items():
        value = node.declare_parameter(name, _ros_default(default, hint),
                                       ParameterDescriptor(description=f'TrainConfig.{name}')).value
        node_dict = values
        *path, leaf = name.split('.')
        for key in path:
            node_dict = node_dict.setdefault(key, {})
        node_dict[leaf] = value
    return load_config(values)
