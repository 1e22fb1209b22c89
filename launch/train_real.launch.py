"""Train a policy with MFPG on real hardware, in Gazebo, or on the MuJoCo twin plant.

    ros2 launch mfpg_ros train_real.launch.py hardware:=twin
    ros2 launch mfpg_ros train_real.launch.py hardware:=real namespace:=robot1 run_dir:=/data/runs/r1
    ros2 launch mfpg_ros train_real.launch.py hardware:=real namespace:=robot1 run_dir:=/data/runs/r1 \
        resume:=/data/runs/r1    # after a crash: the learner goes on from the run's newest checkpoint

The nodes, their parameters and remappings come from mfpg_ros.graph, the same spec `mfpg train` starts.
Launch arguments are strings; typed values reach the nodes through graph.build_graph, never raw.
"""
from pathlib import Path

from ament_index_python.packages import PackageNotFoundError, get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription, LogInfo, OpaqueFunction, Shutdown
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from mfpg_ros import graph

GAZEBO_PACKAGES = ('ros_gz_sim', 'ros_gz_bridge', 'gz_ros2_control')
CONFIG_ARGUMENTS = {  # training config keys settable as launch arguments
    'task': 'task name',
    'hifi_variant': "the HF plant's variant preset (nominal: the task's own model); the twin plant runs it",
    'lofi_variant': "the LF simulator's variant preset (nominal: the task's own model)",
    'iterations': 'iterations to train',
}


def gazebo_hook(context, namespace):
    """hardware:=gazebo: start Gazebo Sim with the cart-pole under gz_ros2_control (launch/gazebo.launch.py)."""
    for package in GAZEBO_PACKAGES:
        try:
            get_package_share_directory(package)
        except PackageNotFoundError:
            raise RuntimeError(f'hardware:=gazebo needs {package}, which is not installed: sudo apt install '
                               'ros-$ROS_DISTRO-ros-gz ros-$ROS_DISTRO-gz-ros2-control') from None
    return [IncludeLaunchDescription(
        PathJoinSubstitution([FindPackageShare(graph.PACKAGE), 'launch', 'gazebo.launch.py']),
        launch_arguments={'namespace': namespace}.items())]


def real_hook(context, namespace):
    """hardware:=real: the robot's own bringup must be running; hifi_interface reports what it waits for."""
    return [LogInfo(msg='hardware:=real: expecting the robot bringup (joint_state_broadcaster, effort controller, '
                        'see config/hardware/real.yaml); activate policy_server when ready')]


def nodes_from_graph(context):
    def arg(name):
        return LaunchConfiguration(name).perform(context).strip()

    hardware, namespace = arg('hardware'), arg('namespace')
    overrides = {key: graph.config_value(key, arg(key)) for key in CONFIG_ARGUMENTS if arg(key)}
    resume = {'learner': {'resume': arg('resume')}} if arg('resume') else {}
    specs = graph.build_graph(hardware=hardware, namespace=namespace, config=arg('config') or None,
                              run_dir=arg('run_dir') or None, overrides=overrides, record=arg('record') == 'true',
                              node_params=resume, compose=arg('compose') == 'true', profile=arg('profile') or None)
    actions = {'gazebo': gazebo_hook, 'real': real_hook}.get(hardware, lambda *_: [])(context, namespace)
    run_dir = next(s.overrides['run_dir'] for s in specs if s.name == 'learner')
    for unit in graph.processes(specs):
        actions.append(Node(
            package=graph.PACKAGE, executable=unit.executable, arguments=unit.arguments,
            name=None if unit.composed else unit.name,  # composed nodes keep their own names
            namespace=unit.namespace or None,
            # the overrides as a file keyed by the node's name (a dict, launch_ros writes under /**, which a node's own
            # section of config:= would beat), in the run folder as `mfpg train` writes them
            parameters=unit.parameter_files(Path(run_dir) / 'params'),
            remappings=list(unit.remappings), output='screen',
            emulate_tty=True, on_exit=Shutdown(reason=f'{unit.describe} exited') if unit.required else None))
    return [LogInfo(msg=f'mfpg_ros: {hardware} graph, run folder {run_dir}'), *actions]


def generate_launch_description():
    return LaunchDescription([
        DeclareLaunchArgument('hardware', default_value='twin', choices=list(graph.HARDWARE),
                              description='twin: MuJoCo twin plant; gazebo: Gazebo (gz_ros2_control); real: robot'),
        *(DeclareLaunchArgument(key, default_value='', description=f'{text} (default: the config file)')
          for key, text in CONFIG_ARGUMENTS.items()),
        DeclareLaunchArgument('config', default_value=graph.share_file('config', 'train.yaml'),
                              description='training params file'),
        DeclareLaunchArgument('profile', default_value='',
                              description="hardware profile: your robot's topics, joints, reset and watchdog "
                                          '(default: the package config/hardware/<hardware>.yaml)'),
        DeclareLaunchArgument('namespace', default_value='', description='namespace of the whole graph'),
        DeclareLaunchArgument('run_dir', default_value='',
                              description='run folder for checkpoints and metrics.csv (default runs/<timestamp>)'),
        DeclareLaunchArgument('resume', default_value='',
                              description='a learner checkpoint, or a run folder (its newest): the learner goes on '
                                          'from there (give the same run_dir to continue that run folder)'),
        DeclareLaunchArgument('record', default_value='true', choices=['true', 'false'],
                              description='record episodes, weights and metrics into <run_dir>/bag (MCAP)'),
        DeclareLaunchArgument('compose', default_value='true', choices=['true', 'false'],
                              description='twin: run the plant, hifi_interface and policy_server in one process '
                                          '(false: one process per node)'),
        DeclareLaunchArgument('sigterm_timeout', default_value='20',
                              description='seconds from SIGINT to SIGTERM for each node: a node saves and closes its '
                                          'files first, which takes a few seconds on a busy machine'),
        OpaqueFunction(function=nodes_from_graph),
    ])
