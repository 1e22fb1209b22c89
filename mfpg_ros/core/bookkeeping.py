"""Version bookkeeping for the distributed loop (ROS-free): which segments belong to which policy version, when an
iteration's data is complete, what is stale. The learner and lofi_sim nodes are thin wrappers around these."""
from __future__ import annotations

import collections
from dataclasses import dataclass, field

import numpy as np

from mfpg_ros.core.episode import HIFI, LOFI_PAIRED, LOFI_POOL, Episode


@dataclass
class IterationData:
    hifi: list[Episode] = field(default_factory=list)
    paired: list[Episode] = field(default_factory=list)
    pool: list[Episode] = field(default_factory=list)

    def steps(self, group: str) -> int:
        return sum(len(e) for e in getattr(self, group))


MAX_FUTURE = 10_000  # segments of the next version held while the current one completes


class IterationAssembler:
    """Collects the current version's HF segments, their paired LF replays and the LF pool.

    Complete when the HF budget is met, every used HF segment has its replay (if `need_paired`) and the pool holds
    its budget (if `pool_steps`). Segments of older versions are dropped and counted (on-policy); newer ones wait.
    """

    def __init__(self, hf_steps: int, pool_steps: int, need_paired: bool):
        self.hf_steps, self.pool_steps, self.need_paired = hf_steps, pool_steps, need_paired
        self.version = 0
        self.data = IterationData()
        self.future: list[Episode] = []
        self.dropped = collections.Counter()

    def add(self, episode: Episode) -> None:
        if episode.policy_version < self.version:
            self.dropped[f'stale {episode.fidelity}'] += 1
        elif episode.policy_version > self.version + 1 or len(self.future) >= MAX_FUTURE:
            self.dropped['too far ahead'] += 1  # only the next version can legitimately start early
        elif episode.policy_version > self.version:
            self.future.append(episode)
        elif episode.fidelity == HIFI:
            if any(h.episode_id == episode.episode_id for h in self.data.hifi):
                self.dropped['duplicate hifi'] += 1
            elif self.data.steps('hifi') >= self.hf_steps:
                self.dropped['hifi over budget'] += 1
            else:
                self.data.hifi.append(episode)
        elif episode.fidelity == LOFI_PAIRED:
            if any(p.pair_of == episode.pair_of for p in self.data.paired):
                self.dropped['duplicate pair'] += 1  # a restarted lofi_sim replays what its predecessor did
            else:
                self.data.paired.append(episode)
        elif episode.fidelity == LOFI_POOL:
            self.data.pool.append(episode)

    def _verified(self, replay: Episode, hifi: list[Episode]) -> bool:
        """A paired replay must start from its HF segment's s0 and replay exactly its noise."""
        partner = next((h for h in hifi if h.episode_id == replay.pair_of), None)
        ok = partner is not None and replay.start_step == partner.start_step and len(replay) <= len(partner) \
            and np.array_equal(replay.qpos0, partner.qpos0) and np.array_equal(replay.qvel0, partner.qvel0) \
            and np.array_equal(replay.eps, partner.eps[:len(replay)])
        if not ok:
            self.dropped['pairing mismatch' if partner is not None else 'replay without HF segment'] += 1
        return ok

    def missing_pairs(self) -> set[str]:
        have = {e.pair_of for e in self.data.paired}
        return {e.episode_id for e in self.data.hifi} - have

    def hf_complete(self) -> bool:
        return self.data.steps('hifi') >= self.hf_steps

    def lofi_complete(self) -> bool:
        paired_ok = not self.need_paired or not self.missing_pairs()
        return paired_ok and self.data.steps('pool') >= self.pool_steps

    def ready(self) -> bool:
        return self.hf_complete() and self.lofi_complete()

    def take(self) -> IterationData:
        """Hand over this version's data (pairs verified) and move on to the next version."""
        data, self.data = self.data, IterationData()
        data.paired = [p for p in data.paired if self._verified(p, data.hifi)]
        self.version += 1
        waiting, self.future = self.future, []
        for episode in waiting:
            self.add(episode)
        return data


class EpisodeReturns:
    """Stitches segments back into whole-episode returns (segments are cut at iteration boundaries)."""

    def __init__(self, max_episode_steps: int):
        self.max_steps, self.running, self.finished = max_episode_steps, 0.0, []

    def add(self, segment: Episode) -> None:
        self.running += segment.undiscounted_return
        if segment.terminated or segment.aborted or segment.start_step + len(segment) >= self.max_steps:
            self.finished.append(self.running)
            self.running = 0.0

    def take(self) -> list[float]:
        done, self.finished = self.finished, []
        return done
