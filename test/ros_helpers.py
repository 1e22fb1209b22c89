"""Helpers for multi-process ROS tests: an isolated environment per test, node processes that always get stopped
and reaped, and (re-exported) the in-process GraphProbe. Waits for discovery and messages; never sleeps."""
from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

from mfpg_ros.graph_probe import GraphProbe  # noqa: F401 - re-exported for tests
from mfpg_ros.node_process import NodeProcess, stop_all
from mfpg_ros.runner import child_env, find_executable

VENV_BIN = Path(sys.executable).parent


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
