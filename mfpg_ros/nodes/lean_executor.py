"""A single-threaded executor with a lighter wake-up than rclpy's, for the nodes of the lock-step control loop.

rclpy's SingleThreadedExecutor spends most of a message's CPU outside the callback: on every wake it rebuilds the
wait set entity by entity in Python, then wraps each ready callback in a Task and a coroutine. In the HF loop
(four callbacks per control step) that doubled each node's CPU. This executor keeps the wait set between wakes (a
new one only when the node's entity counts change), re-adds the handles (C calls) and runs ready callbacks
directly: timers, subscriptions, guard conditions, clients (futures without an executor run their done callbacks
at once), services and waitables (QoS events). It stops when the context shuts down (Ctrl-C included: it waits on
rclpy's SIGINT guard condition like the stock executor). Callbacks must be plain functions: a coroutine callback
(async def) raises, use rclpy's executor for such a node. Callback groups are not consulted (one thread: every
callback is exclusive anyway).
"""
from __future__ import annotations

import inspect
from contextlib import ExitStack

from rclpy.exceptions import InvalidHandle, TimerCancelledError
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy
from rclpy.subscription import Subscription


class LeanExecutor(SingleThreadedExecutor):
    """SingleThreadedExecutor whose spin() runs ready callbacks straight from a reused wait set."""

    def __init__(self, *, context=None):
        super().__init__(context=context)
        self._wait_set, self._wait_set_sizes = None, None

    def spin(self) -> None:
        while self._context.ok() and not self._is_shutdown:
            self.spin_once_lean()
        if not self._context.ok():
            raise ExternalShutdownException()

    def spin_once_lean(self, timeout_sec: float | None = None) -> None:
        """Wait for work (forever when timeout_sec is None) and run every callback that is ready."""
        nodes = self.get_nodes()
        timers = [t for n in nodes for t in n.timers]
        subs = [s for n in nodes for s in n.subscriptions]
        guards = [g for n in nodes for g in n.guards]
        clients = [c for n in nodes for c in n.clients]
        services = [s for n in nodes for s in n.services]
        waitables = [w for n in nodes for w in n.waitables]
        own = [g for g in (self._guard, self._sigint_gc) if g is not None]
        events = sum(w.get_num_entities().num_events for w in waitables)
        with ExitStack() as in_use:  # entered handles cannot be destroyed under the wait (a shutdown from another
            for entity in (*subs, *guards, *own, *timers, *clients, *services, *waitables):  # thread, Ctrl-C)
                in_use.enter_context(entity.handle if hasattr(entity, 'handle') else entity)
            in_use.enter_context(self._context.handle)
            wait_set = self._reusable_wait_set(
                (len(subs), len(guards) + len(own), len(timers), len(clients), len(services), events))
            wait_set.clear_entities()
            for entities, add in ((subs, wait_set.add_subscription), (guards + own, wait_set.add_guard_condition),
                                  (timers, wait_set.add_timer), (clients, wait_set.add_client),
                                  (services, wait_set.add_service)):
                for entity in entities:
                    add(entity.handle)
            for w in waitables:
                w.add_to_wait_set(wait_set)
            wait_set.wait(-1 if timeout_sec is None else int(timeout_sec * 1e9))
        if self._is_shutdown or not self._context.ok():
            return
        ready_waitables = [w for w in waitables if w.is_ready(wait_set)]
        for entities, kind, run in ((timers, 'timer', self._run_timer), (subs, 'subscription', self._run_subscription),
                                    (guards, 'guard_condition', self._run_guard), (clients, 'client', self._run_client),
                                    (services, 'service', self._run_service)):
            ready = set(wait_set.get_ready_entities(kind))
            for entity in entities:
                if entity.handle.pointer in ready:
                    run(entity)
        for w in ready_waitables:
            _drive(w.execute(w.take_data()))

    def _reusable_wait_set(self, sizes: tuple[int, ...]):
        if sizes != self._wait_set_sizes:
            self._wait_set = _rclpy.WaitSet(*sizes, self._context.handle)
            self._wait_set_sizes = sizes
        return self._wait_set

    @staticmethod
    def _run_timer(timer) -> None:
        try:
            if not timer.handle.is_timer_ready():  # a cancelled timer can be reported ready
                return
            timer.handle.call_timer_with_info()
        except (InvalidHandle, TimerCancelledError):
            return
        if timer.callback:
            _plain(timer.callback())

    @staticmethod
    def _run_guard(guard) -> None:
        if guard.callback:
            _plain(guard.callback())

    @staticmethod
    def _run_subscription(sub) -> None:
        try:
            taken = sub.handle.take_message(sub.msg_type, sub.raw)
        except InvalidHandle:
            return
        if taken is not None:
            if sub._callback_type is Subscription.CallbackType.MessageOnly:
                _plain(sub.callback(taken[0]))
            else:
                _plain(sub.callback(*taken))

    @staticmethod
    def _run_client(client) -> None:
        try:
            header, response = client.handle.take_response(client.srv_type.Response)
        except InvalidHandle:
            return
        if header is None:
            return
        try:
            future = client.get_pending_request(header.request_id.sequence_number)
        except KeyError:  # the request was cancelled
            return
        future.set_result(response)  # a future without an executor runs its done callbacks now

    @staticmethod
    def _run_service(service) -> None:
        try:
            request, header = service.handle.service_take_request(service.srv_type.Request)
        except InvalidHandle:
            return
        if header is not None:
            service.send_response(_plain(service.callback(request, service.srv_type.Response())), header)


def _plain(result):
    if inspect.iscoroutine(result):
        result.close()
        raise TypeError('LeanExecutor runs plain callbacks only; spin a node with async callbacks on rclpy\'s '
                        'executor')
    return result


def _drive(coroutine) -> None:
    """Run a waitable's execute() coroutine, which finishes without waiting on anything."""
    try:
        coroutine.send(None)
    except StopIteration:
        return
    coroutine.close()
    raise RuntimeError('a waitable\'s execute() waited on a future; LeanExecutor cannot resume it')
