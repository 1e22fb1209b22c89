"""gazebo_reset: the std_srvs/Trigger `reset` that hifi_interface calls, mapped onto a Gazebo Sim world reset
(ros_gz_interfaces/ControlWorld through ros_gz_bridge). Only used with hardware:=gazebo."""
from __future__ import annotations

from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from std_srvs.srv import Trigger

from mfpg_ros.nodes.common import run


class GazeboReset(Node):
    def __init__(self):
        super().__init__('gazebo_reset')
        from ros_gz_interfaces.srv import ControlWorld  # only installed where Gazebo is
        self.ControlWorld = ControlWorld
        service = self.declare_parameter('world_control_service', '/world/empty/control').value
        group = ReentrantCallbackGroup()
        self.client = self.create_client(ControlWorld, service, callback_group=group)
        self.create_service(Trigger, 'reset', self.on_reset, callback_group=group)

    async def on_reset(self, request, response):
        if not self.client.service_is_ready():
            response.success, response.message = False, f'{self.client.srv_name} not available (is the bridge up?)'
            return response
        call = self.ControlWorld.Request()
        call.world_control.reset.all = True
        call.world_control.pause = False
        result = await self.client.call_async(call)
        response.success = bool(result and result.success)
        response.message = 'world reset' if response.success else 'Gazebo refused the reset'
        return response


def main(args=None):
    run(GazeboReset, args, executor_class=SingleThreadedExecutor)  # on_reset awaits a service call
