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

    Complete when the HF budget is met, every used HF segment has its replay (if `need_paired`), the pool holds its
    budget (if `pool_steps`) and, under pairing 'matched', `branches` LF rollouts branching from each HF segment
    (pool episodes whose pair_of names it). Segments of older versions are dropped and counted (on-policy); newer
    ones wait.
    """

    def __init__(self, hf_steps: int, pool_steps: int, need_paired: bool, branches: int = 0):
        self.hf_steps, self.pool_steps, self.need_paired, self.branches = hf_steps, pool_steps, need_paired, branches
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

    def _verified(self, lofi: Episode, hifi: dict[str, Episode]) -> bool:
        """A replay or branch must start from its HF segment's s0 and time-limit counter; a replay must replay exactly
        its noise (as far as both ran; only under pairing 'matched' may it run on past the segment)."""
        partner, replay = hifi.get(lofi.pair_of), lofi.fidelity == LOFI_PAIRED
        n = min(len(lofi), len(partner)) if partner is not None else 0
        ok = partner is not None and lofi.start_step == partner.start_step \
            and np.array_equal(lofi.qpos0, partner.qpos0) and np.array_equal(lofi.qvel0, partner.qvel0) \
            and (not replay or (np.array_equal(lofi.eps[:n], partner.eps[:n])
                                and (self.branches or len(lofi) <= len(partner))))
        if not ok:
            self.dropped[f'{"pairing" if replay else "branch"} mismatch' if partner is not None
                         else f'{lofi.fidelity} without HF segment'] += 1
        return ok

    def missing_branches(self) -> set[str]:
        counts = collections.Counter(e.pair_of for e in self.data.pool)
        return {e.episode_id for e in self.data.hifi if counts[e.episode_id] < self.branches}

    def missing_pairs(self) -> set[str]:
        have = {e.pair_of for e in self.data.paired}
        return {e.episode_id for e in self.data.hifi} - have

    def hf_complete(self) -> bool:
        return self.data.steps('hifi') >= self.hf_steps

    def lofi_complete(self) -> bool:
        paired_ok = not self.need_paired or not self.missing_pairs()
        branches_ok = not self.branches or not self.missing_branches()
        return paired_ok and branches_ok and self.data.steps('pool') >= self.pool_steps

    def ready(self) -> bool:
        return self.hf_complete() and self.lofi_complete()

    def waiting_for(self) -> str:
        """What the current version still lacks, in words ('' when ready)."""
        hf, pool, v, segments = self.data.steps('hifi'), self.data.steps('pool'), self.version, len(self.data.hifi)
        lacking = [f'HF steps of version {v} ({hf} of {self.hf_steps})'] if hf < self.hf_steps else []
        replays = len(self.missing_pairs()) if self.need_paired else 0
        if replays:
            lacking.append(f'LF replays of version {v} ({replays} of {segments} missing)')
        branches = len(self.missing_branches()) if self.branches else 0
        if branches:
            lacking.append(f'LF branches of version {v} ({branches} of {segments} HF segments short of '
                           f'{self.branches})')
        if pool < self.pool_steps:
            lacking.append(f'LF pool steps of version {v} ({pool} of {self.pool_steps})')
        return ', '.join(lacking)

    def take(self) -> IterationData:
        """Hand over this version's data (pairs verified) and move on to the next version."""
        data, self.data = self.data, IterationData()
        hifi = {h.episode_id: h for h in data.hifi}
        data.paired = [p for p in data.paired if self._verified(p, hifi)]
        if self.branches:
            data.pool = [b for b in data.pool if self._verified(b, hifi)]
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

    def state(self) -> dict:
        """For a checkpoint's JSON: the open episode's return so far and the finished ones not taken yet."""
        return {'returns_running': self.running, 'returns_finished': list(self.finished)}

    def load(self, state: dict) -> None:
        self.running, self.finished = state.get('returns_running', 0.0), list(state.get('returns_finished', []))
