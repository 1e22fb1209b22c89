"""Gazebo Sim with the cart-pole under gz_ros2_control: the robot side that hardware:=gazebo trains against.

    ros2 launch mfpg_ros gazebo.launch.py [headless:=true] [namespace:=robot1]

Starts gz sim (ros_gz_sim), spawns urdf/cartpole.urdf with the GazeboSimSystem hardware plugin and
config/controllers.yaml, bridges /clock, spawns joint_state_broadcaster and effort_controller, and offers the
std_srvs/Trigger `reset` that hifi_interface calls (mfpg_ros gazebo_reset -> gz world reset). Needs ros_gz_sim,
ros_gz_bridge, gz_ros2_control, ros2_controllers and robot_state_publisher (see the README).
In a namespace the clock goes to /<namespace>/clock: one simulator per graph, so one clock per graph (graph.py
remaps /clock the same way for the training nodes). Gazebo's world reset rewinds sim time (hifi_interface
takes a jump back during its own reset as that reset).
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription, OpaqueFunction
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from mfpg_ros import graph

WORLD = 'empty'


def gazebo_description(namespace: str | None = None) -> str:
    """urdf/cartpole.urdf with the Gazebo hardware plugin and the gz_ros2_control system plugin (its controller
    manager in `namespace`, beside the graph's nodes)."""
    urdf = open(graph.share_file('urdf', 'cartpole.urdf')).read()
    urdf = urdf.replace('mock_components/GenericSystem', 'gz_ros2_control/GazeboSimSystem')
    ros = (f'<ros><namespace>/{namespace}</namespace><remapping>/clock:=/{namespace}/clock</remapping></ros>'
           if namespace else '')  # the controller manager runs on this simulator's clock, as the graph does
    plugin = ('<gazebo><plugin filename="gz_ros2_control-system" name="gz_ros2_control::GazeboSimROS2ControlPlugin">'
              f'<parameters>{graph.share_file("config", "controllers.yaml")}</parameters>{ros}</plugin></gazebo>')
    return urdf.replace('</robot>', f'{plugin}\n</robot>')


def robot_side(context):
    namespace = LaunchConfiguration('namespace').perform(context).strip('/') or None
    headless = LaunchConfiguration('headless').perform(context) == 'true'
    sim_time = {'use_sim_time': True}
    clock = [('/clock', f'/{namespace}/clock')] if namespace else []  # this simulator's clock (see the docstring)
    gz = IncludeLaunchDescription(
        PathJoinSubstitution([FindPackageShare('ros_gz_sim'), 'launch', 'gz_sim.launch.py']),
        launch_arguments={'gz_args': f'-r {"-s " if headless else ""}{WORLD}.sdf'}.items())
    return [
        gz,
        Node(package='robot_state_publisher', executable='robot_state_publisher', namespace=namespace,
             parameters=[{'robot_description': gazebo_description(namespace), **sim_time}], remappings=clock),
        Node(package='ros_gz_sim', executable='create', namespace=namespace,
             arguments=['-topic', 'robot_description', '-name', 'cartpole']),
        Node(package='ros_gz_bridge', executable='parameter_bridge',
             arguments=['/clock@rosgraph_msgs/msg/Clock[gz.msgs.Clock',
                        f'/world/{WORLD}/control@ros_gz_interfaces/srv/ControlWorld'], remappings=clock),
        *(Node(package='controller_manager', executable='spawner', namespace=namespace, arguments=[name])
          for name in ('joint_state_broadcaster', 'effort_controller')),
        Node(package=graph.PACKAGE, executable='gazebo_reset', namespace=namespace,
             parameters=[{'world_control_service': f'/world/{WORLD}/control', **sim_time}], remappings=clock),
    ]


def generate_launch_description():
    return LaunchDescription([
        DeclareLaunchArgument('namespace', default_value=''),
        DeclareLaunchArgument('headless', default_value='true', choices=['true', 'false']),
        OpaqueFunction(function=robot_side),
    ])
