"""Several of this package's nodes in one process on one executor (manual composition, as rclpy offers it).

    mfpg_compose twin_plant hifi_interface policy_server --ros-args -r __ns:=/robot1 --params-file train.yaml ...

Each node keeps its own name, parameters (params files keyed by node name, `/**/policy_server:`) and topics. The ROS
arguments apply to every node in the process: no `__node:=` (every node would get that name); a remapping for one
node only is written `policy_server:hifi/action:=other/action`, a parameter for one node goes in a params file under
its name. The graph composes the lock-step twin's control loop this way (graph.COMPOSED).
"""
from __future__ import annotations

import importlib
import sys

from mfpg_ros.nodes.common import run

# executable -> node class. Not the learner (it exits when training is done, which would end every node beside it)
# nor gazebo_reset (its async callback needs rclpy's executor).
COMPOSABLE = {'twin_plant': 'TwinPlant', 'hifi_interface': 'HifiInterface', 'policy_server': 'PolicyServer',
              'lofi_sim': 'LofiSim', 'bag_recorder': 'BagRecorder'}
USAGE = f'usage: mfpg_compose NODE [NODE ...] [--ros-args ...], each NODE once, out of {", ".join(COMPOSABLE)}'


def node_classes(names: list[str]) -> dict[str, type]:
    unknown = [n for n in names if n not in COMPOSABLE]
    if not names or unknown or len(set(names)) != len(names):
        raise SystemExit(USAGE + (f'; unknown: {", ".join(unknown)}' if unknown else ''))
    return {n: getattr(importlib.import_module(f'mfpg_ros.nodes.{n}'), COMPOSABLE[n]) for n in names}


def check_ros_args(ros_args: list[str]) -> None:
    renames = [a for a in ros_args if a.split(':=')[0] in ('__node', '__name')]
    if renames:
        raise SystemExit(f'mfpg_compose: {renames[0]} would give every node of the process that name; composed '
                         'nodes keep their own')


def main(args=None):
    argv = sys.argv if args is None else args
    end = argv.index('--ros-args') if '--ros-args' in argv else len(argv)
    classes = node_classes(argv[1:end])
    check_ros_args(argv[end:])
    run(classes, argv)


if __name__ == '__main__':
    main()
