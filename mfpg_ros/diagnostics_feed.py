"""The latest /diagnostics values of every mfpg_ros node, as seen by a GraphProbe (benchmarks and tests)."""
from __future__ import annotations

from diagnostic_msgs.msg import DiagnosticArray

PREFIX = 'mfpg_ros: '  # status names are 'mfpg_ros: <fully qualified node name>' (nodes/common.Diagnostics)


class DiagnosticsFeed:
    def __init__(self, probe):
        self.probe = probe
        self.inbox = probe.subscribe('/diagnostics', DiagnosticArray)
        self.latest: dict[str, dict[str, str]] = {}
        self.received: dict[str, int] = {}

    def poll(self) -> dict[str, dict[str, str]]:
        """Fold in what arrived; returns {node name: {key: value}}."""
        while self.inbox:
            for status in self.inbox.pop(0).status:
                if status.name.startswith(PREFIX):
                    node = status.name[len(PREFIX):]
                    self.latest[node] = {kv.key: kv.value for kv in status.values}
                    self.received[node] = self.received.get(node, 0) + 1
        return self.latest

    def value(self, node: str, key: str, default: float = 0.0) -> float:
        text = self.poll().get(node, {}).get(key)
        try:
            return float(text)
        except (TypeError, ValueError):
            return default

    def wait_fresh(self, nodes, timeout: float = 10.0, check=None) -> None:
        """Spin until every node in `nodes` sent a status after this call (so the values are current)."""
        self.poll()
        start = {n: self.received.get(n, 0) for n in nodes}
        self.probe.wait_until(lambda: all(self.poll() is not None and self.received.get(n, 0) > start[n]
                                          for n in nodes), timeout, f'fresh diagnostics from {list(nodes)}', check)
