"""Helpers for multi-process ROS tests: an isolated environment per test, node processes that always get stopped
and reaped, node arguments, a policy_server harness, and (re-exported) the in-process GraphProbe. Waits for discovery
and messages; never sleeps."""
from __future__ import annotations

import array
import contextlib
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from std_msgs.msg import Float64MultiArray, UInt8MultiArray

from mfpg_ros.core.codec import encode_weights
from mfpg_ros.core.policy import ActorCritic
from mfpg_ros.graph_probe import GraphProbe  # noqa: F401 - re-exported for tests
from mfpg_ros.node_process import NodeProcess, stop_all
from mfpg_ros.nodes.common import LATCHED
from mfpg_ros.runner import child_env, find_executable
from mfpg_ros.sim.tasks import make_task

VENV_BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[1]
CONFIG = str(ROOT / 'config' / 'train.yaml')
TWIN = str(ROOT / 'config' / 'hardware' / 'twin.yaml')
TASK = make_task('cartpole')
EFFORT = float(TASK.effort_per_action[0])
COMMANDS = 'effort_controller/commands'


def node_args(*params_files, namespace: str = '', **params) -> list[str]:
    """`--ros-args`: config/train.yaml, then `params_files` in order, the namespace remap, then `-p key:=value`."""
    args = ['--ros-args']
    for f in (CONFIG, *params_files):
        args += ['--params-file', f]
    if namespace:
        args += ['-r', f'__ns:=/{namespace}']
    for key, value in params.items():
        args += ['-p', f'{key}:={value}']
    return args


def ros_environment(domain_id: int) -> dict:
    """The environment of every process of one test: its own domain, loopback discovery only, unbuffered."""
    env = child_env()
    env['ROS_DOMAIN_ID'] = str(domain_id)
    return env


class Spawner:
    """Starts node processes with logs in `log_dir`; `stop()` ends them all (SIGINT, then SIGKILL) and reaps."""

    def __init__(self, env: dict, log_dir: Path):
        self.env, self.log_dir, self.processes = env, Path(log_dir), []

    def __call__(self, executable: str, args=(), env: dict | None = None, name: str | None = None) -> NodeProcess:
        name = name or f'{Path(executable).name}_{len(self.processes)}'
        argv = [find_executable(executable, self.env), *args]
        proc = NodeProcess(name, argv, env or self.env, self.log_dir / f'{name}.log').start()
        self.processes.append(proc)
        return proc

    def stop(self, timeout: float = 10.0) -> dict[str, int]:
        return stop_all(self.processes, timeout)

    def report(self) -> str:
        return '\n'.join(f'--- {p.name} (exit {p.poll()}) {p.log_path}\n{p.log_tail(40)}' for p in self.processes)


@contextlib.contextmanager
def spawned(executable: str, args=(), env: dict | None = None, log_dir: str | os.PathLike = '.'):
    """One node process for the duration of a with-block; its log tail is printed if the block raises."""
    spawner = Spawner(env or child_env(), Path(log_dir))
    proc = spawner(executable, args)
    try:
        yield proc
    except BaseException:
        spawner.stop()
        print(spawner.report())
        raise
    finally:
        spawner.stop()


def spin_until(executor, condition, timeout: float = 20.0) -> None:
    """Spin a LeanExecutor until condition() holds; fails after timeout seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, 'condition not reached'
        executor.spin_once_lean(timeout_sec=0.05)


def weights_msg(version=0, bias=None, contract=TASK.contract):
    model = ActorCritic(TASK.contract.obs_dim, TASK.contract.act_dim)
    if bias is not None:
        with torch.no_grad():
            model.pi[-1].bias.fill_(bias)
    return UInt8MultiArray(data=array.array('B', encode_weights(model, version=version, contract=contract)))


def observation(seq):
    msg = Float64MultiArray()
    msg.data = array.array('d', [float(seq), 0.0, 0.01, 0.0, 0.0])
    return msg


class PolicyServerHarness:
    """A probe that plays hifi_interface for one policy_server: sends observations, watches commands/actions."""

    def __init__(self, probe, proc):
        self.probe, self.proc = probe, proc
        self.commands = probe.subscribe(COMMANDS, Float64MultiArray)
        self.actions = probe.subscribe('hifi/action', Float64MultiArray)
        self.obs_pub = probe.node.create_publisher(Float64MultiArray, 'hifi/observation', 10)
        self.seq = 0

    def ready(self):
        self.probe.wait_until(lambda: self.obs_pub.get_subscription_count() > 0, 30, 'policy_server subscribed',
                              self.alive)
        return self

    def alive(self):
        assert self.proc.poll() is None, 'policy_server died'

    def publish(self, topic, msg, qos=LATCHED):
        self.probe.publish(topic, msg, qos)

    def step(self, expect_action=True):
        """One observation; returns its action report (or None if none came within 0.3 s)."""
        self.seq += 1
        n, seq = len(self.actions), self.seq
        self.obs_pub.publish(observation(seq))
        answers = lambda: [m for m in self.actions[n:] if m.data[0] == seq]  # noqa: E731 - not a safe-command report
        try:
            self.probe.wait_until(answers, 5 if expect_action else 0.3, 'action', self.alive)
        except TimeoutError:
            if expect_action:
                raise
            return None
        return np.asarray(answers()[0].data)

    def wait_acting(self, version, timeout=30):
        """Step until an action comes from weights `version` (weights may arrive after the first observations)."""
        def acting():
            report = self.step(expect_action=False)
            return report is not None and report[1] == version
        self.probe.wait_until(acting, timeout, f'acting with weights version {version}', self.alive)


def check_watchdog_reaction(server: PolicyServerHarness):
    """Three times: a few steps, then no observations; the safe command (zero) must follow within the timeout."""
    delays = []
    for trial in range(3):
        for _ in range(5):
            last = server.step()
            assert last is not None
        # The step's own command may arrive after its action report: wait for it before watching for the next one.
        sent = last[2 + 2 * TASK.contract.act_dim:] * EFFORT
        server.probe.wait_until(lambda: np.allclose(server.commands[-1].data, sent), 5, 'the last step command')
        n = len(server.commands)
        last_obs = time.monotonic()
        server.probe.wait_until(lambda: len(server.commands) > n, 5, 'watchdog command', server.alive)
        delays.append(time.monotonic() - last_obs)
        assert list(server.commands[-1].data) == [0.0]
    print(f'watchdog reaction (s): {[round(d, 3) for d in delays]}')
    assert max(delays) < 0.1 + 0.2  # timeout + margin for a loaded machine (the watchdog runs at the deadline)
