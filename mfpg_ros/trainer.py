"""In-process trainer: the whole MF-REINFORCE loop without ROS (the fast path for benchmarks, and the
reference the node graph must agree with). The HF plant is a MuJoCo variant standing in for the robot."""
from __future__ import annotations

import collections
import time
from typing import Callable

import numpy as np
import torch

from mfpg_ros.core.bookkeeping import EpisodeReturns
from mfpg_ros.core.config import TrainConfig
from mfpg_ros.core.episode import HIFI, LOFI_POOL, Episode
from mfpg_ros.core.learners import make_learner, needs_paired, needs_pool
from mfpg_ros.core.policy import NumpyPolicy
from mfpg_ros.sim.engine import Engine
from mfpg_ros.sim.tasks import make_task


class Trainer:
    def __init__(self, cfg: TrainConfig, nthread: int = 2):
        torch.set_num_threads(1)
        self.cfg = cfg
        hifi_task, lofi_task = make_task(cfg.task, cfg.hifi_variant), make_task(cfg.task, cfg.lofi_variant)
        if hifi_task.contract != lofi_task.contract:
            raise ValueError('high- and low-fidelity tasks must share one contract')
        seeds = [int(s.generate_state(1)[0]) for s in np.random.SeedSequence(cfg.seed).spawn(4)]
        self.learner = make_learner(cfg.algo, lofi_task.contract, cfg.seed)
        self.hifi = Engine(hifi_task, 1, seed=seeds[0], nthread=1)
        self.pool = Engine(lofi_task, cfg.algo.pool_envs, seed=seeds[1], nthread=nthread)
        self.replayer = Engine(lofi_task, 1, seed=seeds[2], nthread=nthread)
        self.evaluator = Engine(hifi_task, 1, seed=seeds[3], nthread=1)
        self.returns = EpisodeReturns(hifi_task.max_episode_steps)
        self.recent = collections.deque(maxlen=10)  # last HF episode returns: 'solved' is judged on these
        self.hf_steps = 0

    def collect(self) -> tuple[list[Episode], list[Episode], list[Episode]]:
        """One version's data: HF segments, their paired LF replays, the independent LF pool."""
        algo, version = self.cfg.algo, self.learner.version
        policy = NumpyPolicy(self.learner.model)
        hifi = self.hifi.collect(policy, algo.hf_steps_per_iter, version, HIFI)
        paired = self.replayer.replay(policy, hifi, version) if needs_paired(algo.algorithm) else []
        pool = self.pool.collect(policy, algo.pool_steps_per_env, version, LOFI_POOL) \
            if needs_pool(algo.algorithm) else []
        return hifi, paired, pool

    def iteration(self) -> dict:
        t0 = time.perf_counter()
        hifi, paired, pool = self.collect()
        t1 = time.perf_counter()
        metrics = self.learner.update(hifi, paired, pool)
        for segment in hifi:
            self.returns.add(segment)
            self.hf_steps += len(segment)
        finished = self.returns.take()
        self.recent.extend(finished)
        metrics.update(hf_total_steps=self.hf_steps, collect_seconds=t1 - t0,
                       iteration_seconds=time.perf_counter() - t0,
                       hf_return=float(np.mean(finished)) if finished else float('nan'),
                       hf_return_recent=float(np.mean(self.recent)) if self.recent else float('nan'))
        return metrics

    def solved(self, metrics: dict) -> bool:
        target = self.cfg.target_return
        return target is not None and len(self.recent) == self.recent.maxlen and metrics['hf_return_recent'] >= target

    def evaluate(self) -> float:
        return float(np.mean(self.evaluator.evaluate(NumpyPolicy(self.learner.model), self.cfg.eval_episodes)))

    def run(self, on_metrics: Callable[[dict], None] | None = None) -> list[dict]:
        history = []
        for i in range(self.cfg.iterations):
            metrics = self.iteration()
            if self.cfg.eval_every and ((i + 1) % self.cfg.eval_every == 0 or i + 1 == self.cfg.iterations):
                metrics['eval_return'] = self.evaluate()
            history.append(metrics)
            if on_metrics:
                on_metrics(metrics)
            if self.solved(metrics):
                break
        return history
