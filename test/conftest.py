"""Shared fixtures for ROS tests: `ros_env` (a private domain), `spawn` (node processes), `probe` (in-process node),
`server` (one policy_server driven by a PolicyServerHarness).

Every test gets its own ROS_DOMAIN_ID from domain_coordinator, so tests (and pytest-xdist workers) never see each
other's topics. Discovery stays on the loopback interface."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'  # before any rclpy context exists
os.environ.setdefault('AMENT_PREFIX_PATH', sys.prefix)
os.environ.setdefault('OMP_NUM_THREADS', '1')
sys.path.insert(0, str(Path(__file__).parent))  # test helpers importable as `ros_helpers`

from ros_helpers import GraphProbe, PolicyServerHarness, Spawner, node_args, ros_environment, weights_msg  # noqa: E402


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """Remember each phase's report on the item, so teardown knows whether the test failed."""
    report = yield
    setattr(item, f'report_{report.when}', report)
    return report


def _failed(request) -> bool:
    return any(getattr(getattr(request.node, f'report_{w}', None), 'failed', False) for w in ('setup', 'call'))


@pytest.fixture
def ros_domain() -> int:
    domain_coordinator = pytest.importorskip('domain_coordinator')
    with domain_coordinator.domain_id() as domain_id:
        yield int(domain_id)


@pytest.fixture
def ros_env(ros_domain) -> dict:
    """Environment for child processes: the test's domain, LOCALHOST discovery, AMENT_PREFIX_PATH, unbuffered."""
    return ros_environment(ros_domain)


@pytest.fixture
def spawn(ros_env, tmp_path, request):
    """spawn(executable, args=(), env=None, name=None) -> NodeProcess; all stopped and reaped at teardown, and
    their log tails printed if the test failed."""
    spawner = Spawner(ros_env, tmp_path / 'logs')
    yield spawner
    spawner.stop()
    if _failed(request):
        print(spawner.report())


@pytest.fixture
def probe(ros_domain):
    """An in-process rclpy node on the test's domain (own Context): wait_for_nodes, wait_for_messages, publish."""
    with GraphProbe('test_probe', domain_id=ros_domain) as node:
        yield node


@pytest.fixture
def server(spawn, probe, request):
    """One policy_server (watchdog 0.1 s, safe command zero; indirect parameters override) and its harness, acting
    with weights version 0 unless `autostart` is false."""
    params = {'watchdog_timeout_s': 0.1, 'safe_command': 'zero', **getattr(request, 'param', {})}
    proc = spawn('policy_server', node_args(**params))
    harness = PolicyServerHarness(probe, proc)
    if params.get('autostart', True):  # else configured only: it answers no observation until activated
        harness.ready().publish('policy/weights', weights_msg(0))
        harness.wait_acting(0)
    return harness
