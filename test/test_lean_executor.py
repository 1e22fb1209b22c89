"""LeanExecutor runs every kind of callback our nodes use, over real DDS, and stops when the context does."""
import threading
import time

import pytest
import rclpy
from rcl_interfaces.srv import SetParameters
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.parameter import Parameter
from std_msgs.msg import Float64MultiArray
from std_srvs.srv import Trigger

from mfpg_ros.nodes.lean_executor import LeanExecutor
from ros_helpers import spin_until


@pytest.fixture
def context(ros_domain):
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=ros_domain)
    yield context
    context.try_shutdown()


def test_timers_subscriptions_services_clients_and_guards_run(context):
    a, b = Node('lean_a', context=context), Node('lean_b', context=context)
    executor = LeanExecutor(context=context)
    executor.add_node(a)
    executor.add_node(b)
    seen = {'data': [], 'ticks': 0, 'guard': 0, 'requests': 0, 'responses': []}

    def on_request(request, response):
        seen['requests'] += 1
        response.success, response.message = True, f'call {seen["requests"]}'
        return response

    def tick():
        seen['ticks'] += 1

    def on_guard():
        seen['guard'] += 1

    pub = a.create_publisher(Float64MultiArray, 'ping', 10)
    b.create_subscription(Float64MultiArray, 'ping', lambda msg: seen['data'].append(list(msg.data)), 10)
    b.create_service(Trigger, 'poke', on_request)
    client = a.create_client(Trigger, 'poke')
    a.create_timer(0.01, tick)
    guard = a.create_guard_condition(on_guard)

    spin_until(executor, lambda: seen['ticks'] >= 3)
    spin_until(executor, lambda: pub.get_subscription_count() == 1 and client.service_is_ready())
    for i in range(5):
        pub.publish(Float64MultiArray(data=[float(i), 0.5]))
    spin_until(executor, lambda: len(seen['data']) == 5)
    assert seen['data'] == [[float(i), 0.5] for i in range(5)]  # every message, in order

    client.call_async(Trigger.Request()).add_done_callback(lambda f: seen['responses'].append(f.result().message))
    spin_until(executor, lambda: seen['responses'])
    assert seen['responses'] == ['call 1'] and seen['requests'] == 1

    guard.trigger()
    spin_until(executor, lambda: seen['guard'] == 1)

    # parameters (rclpy's own services) answer through it too
    params = a.create_client(SetParameters, '/lean_b/set_parameters')
    b.declare_parameter('gain', 1.0)
    spin_until(executor, params.service_is_ready)
    request = SetParameters.Request()
    request.parameters = [Parameter('gain', value=2.5).to_parameter_msg()]
    done = params.call_async(request)
    spin_until(executor, done.done)
    assert done.result().results[0].successful and b.get_parameter('gain').value == 2.5


def test_spin_returns_when_the_context_shuts_down(context):
    node = Node('lean_stop', context=context)
    executor = LeanExecutor(context=context)
    executor.add_node(node)
    threading.Timer(0.2, context.shutdown).start()
    started = time.monotonic()
    with pytest.raises(ExternalShutdownException):
        executor.spin()  # blocks in the wait with no timers: only the shutdown wakes it
    assert time.monotonic() - started < 5.0


def test_async_callbacks_are_refused_with_a_clear_error(context):
    node = Node('lean_async', context=context)
    executor = LeanExecutor(context=context)
    executor.add_node(node)

    async def coroutine_tick():
        pass

    node.create_timer(0.01, coroutine_tick)
    with pytest.raises(TypeError, match='plain callbacks only'):
        spin_until(executor, lambda: False, timeout=5.0)


def test_spin_follows_entities_created_and_destroyed_while_it_runs(context):
    """spin() keeps its wait set between wakes: an entity made in a callback must be waited on, a destroyed one
    must stop firing, and a node destroyed after spin returns must really go (no handle kept entered)."""
    node = Node('lean_dynamic', context=context)
    executor = LeanExecutor(context=context)
    executor.add_node(node)
    pub = node.create_publisher(Float64MultiArray, 'dyn', 10)
    seen = {'ticks': 0, 'data': [], 'late': 0}
    made = {}

    def on_data(msg):
        seen['data'].append(msg.data[0])
        if len(seen['data']) == 3:
            node.destroy_subscription(made['sub'])  # from its own callback: no message after this one
            made['after'] = node.create_timer(0.005, lambda: seen.__setitem__('late', seen['late'] + 1))

    def tick():
        seen['ticks'] += 1
        if seen['ticks'] == 2:
            made['sub'] = node.create_subscription(Float64MultiArray, 'dyn', on_data, 10)
        elif 'sub' in made and pub.get_subscription_count() and len(seen['data']) < 3:
            pub.publish(Float64MultiArray(data=[float(seen['ticks'])]))
        elif seen['late'] >= 3:
            for _ in range(5):
                pub.publish(Float64MultiArray(data=[-1.0]))  # nobody listens any more
            executor.shutdown(timeout_sec=0)

    ticker = node.create_timer(0.01, tick)
    spinner = threading.Thread(target=executor.spin)
    spinner.start()
    spinner.join(timeout=20)
    assert not spinner.is_alive(), 'spin did not stop'
    assert len(seen['data']) == 3 and -1.0 not in seen['data']
    assert seen['late'] >= 3  # the timer created by a callback fired
    node.destroy_node()
    assert ticker.handle.pointer == 0 and made['after'].handle.pointer == 0  # freed: spin kept no handle entered
