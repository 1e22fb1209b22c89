"""A single-threaded executor with a lighter wake-up than rclpy's, for the nodes of the lock-step control loop.

rclpy's SingleThreadedExecutor spends most of a message's CPU outside the callback: on every wake it rebuilds the
wait set entity by entity in Python, then wraps each ready callback in a Task and a coroutine. In the HF loop
(four callbacks per control step) that doubled each node's CPU. While spinning, this executor keeps the entities'
handles entered, the wait set and a callback table (rebuilt only when a node's entities change), re-adds the
handles (C calls) on each wake and runs ready callbacks directly: timers, subscriptions, guard conditions, clients
(futures without an executor run their done callbacks at once), services and waitables (QoS events). A handle
destroyed meanwhile (e.g. from another thread) is freed when the entity set is next rebuilt. It stops when the
context shuts down (Ctrl-C included: it waits on rclpy's SIGINT guard condition like the stock executor), or when
spin's `until` says so (nodes/common.run: a signal caught in Python, rclpy's handlers off).
Callbacks must be plain functions: a coroutine callback (async def) raises, use rclpy's executor for such a node.
Callback groups are not consulted (one thread: every callback is exclusive anyway).
"""
from __future__ import annotations

import inspect
from contextlib import ExitStack
from typing import Callable

from rclpy.exceptions import InvalidHandle, TimerCancelledError
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy
from rclpy.subscription import Subscription


class LeanExecutor(SingleThreadedExecutor):
    """SingleThreadedExecutor whose spin() runs ready callbacks straight from a reused wait set."""

    def __init__(self, *, context=None):
        super().__init__(context=context)
        self._held: _Held | None = None

    def spin(self, wake_every: float | None = None, until: Callable[[], bool] = lambda: False) -> None:
        """Run callbacks until shutdown or until() is true, checked after each wake; wake_every (s): wake at least
        this often (a Python signal handler runs only when the wait returns; nodes/common.run sets one)."""
        timeout_ns = -1 if wake_every is None else int(wake_every * 1e9)
        try:
            while self._context.ok() and not self._is_shutdown and not until():
                self._wait_and_run(timeout_ns)
        finally:
            self._release()
        if not self._context.ok():
            raise ExternalShutdownException()

    def spin_once_lean(self, timeout_sec: float | None = None) -> None:
        """Wait for work (forever when timeout_sec is None) and run every callback that is ready."""
        try:
            self._wait_and_run(-1 if timeout_sec is None else int(timeout_sec * 1e9))
        finally:
            self._release()

    def _wait_and_run(self, timeout_ns: int) -> None:
        """One wake: wait (timeout_ns < 0: forever), then run every ready callback."""
        nodes = self.get_nodes()
        entities = (tuple(s for n in nodes for s in n.subscriptions), tuple(g for n in nodes for g in n.guards),
                    tuple(t for n in nodes for t in n.timers), tuple(c for n in nodes for c in n.clients),
                    tuple(s for n in nodes for s in n.services), tuple(w for n in nodes for w in n.waitables),
                    tuple(g for g in (self._guard, self._sigint_gc) if g is not None))
        if self._held is None or self._held.entities != entities:  # a node created or destroyed something
            self._release()
            self._held = _Held(entities, self._context)
        held = self._held
        wait_set = held.wait_set
        wait_set.clear_entities()
        for add, handle in held.adds:
            add(handle)
        for w in held.waitables:
            w.add_to_wait_set(wait_set)
        wait_set.wait(timeout_ns)
        if self._is_shutdown or not self._context.ok():
            return
        ready_waitables = [w for w in held.waitables if w.is_ready(wait_set)]
        for kind, table in held.tables:
            for pointer in wait_set.get_ready_entities(kind):
                entity = table.get(pointer)
                if entity is not None:
                    entity[0](entity[1])
        for w in ready_waitables:
            _drive(w.execute(w.take_data()))

    def _release(self) -> None:
        if self._held is not None:
            self._held, held = None, self._held
            held.stack.close()

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


class _Held:
    """The executor's entities between wakes: their handles entered (none can be destroyed under a wait, e.g. by a
    shutdown from another thread; a destroy waits until release), the wait set sized for them, the add calls and
    the callback tables by handle pointer. Rebuilt only when the entity set changes."""

    def __init__(self, entities, context):
        self.entities = entities
        subs, guards, timers, clients, services, self.waitables, own = entities
        with ExitStack() as stack:  # a failure below releases the handles entered so far
            for entity in (*subs, *guards, *own, *timers, *clients, *services, *self.waitables):
                stack.enter_context(entity.handle if hasattr(entity, 'handle') else entity)
            stack.enter_context(context.handle)
            events = sum(w.get_num_entities().num_events for w in self.waitables)
            self.wait_set = ws = _rclpy.WaitSet(len(subs), len(guards) + len(own), len(timers), len(clients),
                                                len(services), events, context.handle)
            self.stack = stack.pop_all()
        self.adds = [(add, entity.handle) for entities_, add in (
            (subs, ws.add_subscription), (guards + own, ws.add_guard_condition), (timers, ws.add_timer),
            (clients, ws.add_client), (services, ws.add_service)) for entity in entities_]
        self.tables = [(kind, {entity.handle.pointer: (run, entity) for entity in entities_})
                       for entities_, kind, run in (
            (timers, 'timer', LeanExecutor._run_timer), (subs, 'subscription', LeanExecutor._run_subscription),
            (guards, 'guard_condition', LeanExecutor._run_guard), (clients, 'client', LeanExecutor._run_client),
            (services, 'service', LeanExecutor._run_service))]


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
