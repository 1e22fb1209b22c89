"""One node as a child process: own session, own log file, SIGINT -> SIGKILL shutdown, always reaped."""
from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

from mfpg_ros.graph import COMPOSE_EXECUTABLE


class NodeProcess:
    def __init__(self, name: str, argv: list[str], env: dict, log_path: str | os.PathLike):
        self.name, self.argv, self.env, self.log_path = name, list(argv), env, Path(log_path)
        self.proc: subprocess.Popen | None = None
        self.killed = False  # needed SIGKILL (may leak Fast DDS shared memory)
        self.log_start = 0  # where this start's part of the log begins

    def start(self) -> 'NodeProcess':
        """Start the node; its output goes to the end of its log (a resumed run keeps its first part's lines)."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, 'a') as log:
            self.log_start = log.tell()
            log.write(f'$ {shlex.join(self.argv)}\n')
            log.flush()
            # Own session: a terminal Ctrl-C reaches only the parent, which then stops each node exactly once.
            self.proc = subprocess.Popen(self.argv, env=self.env, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        return self

    @property
    def pid(self) -> int:
        return self.proc.pid

    def poll(self) -> int | None:
        return self.proc.poll()

    def interrupt(self) -> None:
        self._signal(signal.SIGINT)

    def _signal(self, sig: int) -> None:
        if self.proc.returncode is not None:
            return  # reaped: its id may belong to someone else by now
        try:
            os.killpg(self.proc.pid, sig)  # the group: grandchildren too
        except ProcessLookupError:
            pass

    def stop(self, timeout: float = 10.0) -> int:
        """SIGINT, wait up to `timeout`, then SIGKILL; always reaps. Returns the exit code."""
        if self.proc.poll() is None:
            self.interrupt()
        return self.wait_or_kill(time.monotonic() + timeout)

    def wait_or_kill(self, deadline: float) -> int:
        try:
            return self.proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.killed = True
            self._signal(signal.SIGKILL)
            return self.proc.wait()

    def _log(self) -> list[str]:
        """This start's lines of the log."""
        try:
            with open(self.log_path, 'rb') as log:
                log.seek(self.log_start)
                return log.read().decode(errors='replace').splitlines()
        except OSError:
            return []

    def log_lines(self, containing: str) -> list[str]:
        """The lines of the log that contain `containing`; a ROS log line as 'logger: text' (the logger names the
        node, also in a process of several), without its severity and time."""
        lines = []
        for line in self._log():
            if containing in line:
                head, sep, text = line.partition(']: ')
                lines.append(f"{head[head.rfind('[') + 1:]}: {text}" if sep else line)
        return lines

    def log_tail(self, lines: int = 25) -> str:
        return '\n'.join(self._log()[-lines:])


def stop_all(processes: list[NodeProcess], timeout: float = 10.0) -> dict[str, int]:
    """Interrupt every running process at once, then wait on a shared deadline (SIGKILL stragglers)."""
    started = [p for p in processes if p.proc is not None]
    for p in started:
        if p.poll() is None:
            p.interrupt()
    deadline = time.monotonic() + timeout
    codes = {p.name: p.wait_or_kill(deadline) for p in started}
    if any(p.killed for p in started):
        clean_fastdds_shm()
    return codes


def node_name(cmdline: list[str]) -> str | None:
    """The node name a command line gives with `-r __node:=NAME` (as the runner and ros2 launch start nodes); for
    the `mfpg_compose` executable its nodes, joined by '+'."""
    for arg in cmdline:
        if arg.startswith('__node:='):
            return arg.split(':=', 1)[1]
    for i, arg in enumerate(cmdline):
        if Path(arg).name == COMPOSE_EXECUTABLE:
            nodes = cmdline[i + 1:cmdline.index('--ros-args')] if '--ros-args' in cmdline else cmdline[i + 1:]
            return '+'.join(nodes) or None
    return None


def clean_fastdds_shm() -> None:
    """Remove the shared-memory files of Fast DDS participants that died without cleaning up (SIGKILL)."""
    tool = Path(sys.prefix) / 'tools' / 'fastdds' / 'fastdds.py'
    if tool.is_file():
        subprocess.run([sys.executable, str(tool), 'shm', 'clean'], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=60, check=False)
