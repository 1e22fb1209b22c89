"""Several of this package's nodes in one process on one executor (manual composition, as rclpy offers it).

    compose twin_plant hifi_interface policy_server --ros-args --params-file train.yaml ...

Each node keeps its own name, parameters (params files keyed by node name) and topics; the ROS arguments apply to
all of them, so no `__node:=` remapping. The graph composes the lock-step twin's control loop this way (graph.COMPOSED).
"""
from __future__ import annotations

import importlib
import sys

from mfpg_ros.nodes.common import run

# executable -> node class; gazebo_reset is left out (it needs rclpy's executor for its async callback)
COMPOSABLE = {'twin_plant': 'TwinPlant', 'hifi_interface': 'HifiInterface', 'policy_server': 'PolicyServer',
              'lofi_sim': 'LofiSim', 'learner': 'LearnerNode', 'bag_recorder': 'BagRecorder'}


def node_classes(names: list[str]) -> dict[str, type]:
    unknown = [n for n in names if n not in COMPOSABLE]
    if not names or unknown or len(set(names)) != len(names):
        raise SystemExit(f'usage: compose NODE [NODE ...] [--ros-args ...], each NODE once, out of '
                         f'{", ".join(COMPOSABLE)}' + (f'; unknown: {", ".join(unknown)}' if unknown else ''))
    return {n: getattr(importlib.import_module(f'mfpg_ros.nodes.{n}'), COMPOSABLE[n]) for n in names}


def main(args=None):
    argv = sys.argv if args is None else args
    end = argv.index('--ros-args') if '--ros-args' in argv else len(argv)
    run(node_classes(argv[1:end]), argv)


if __name__ == '__main__':
    main()
