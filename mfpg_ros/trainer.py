"""In-process trainer: the whole MF-REINFORCE loop without ROS (the fast path for benchmarks, and the
reference the node graph must agree with). The HF plant is a MuJoCo variant standing in for the robot.

save()/resume() checkpoint everything the next iterations depend on (learner, every engine's physics rows and RNG
streams, episode-return bookkeeping, the config), so a resumed run continues bit for bit."""
from __future__ import annotations

import collections
import dataclasses
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from mfpg_ros.core.bookkeeping import EpisodeReturns
from mfpg_ros.core.checkpoint import load_arrays, load_checkpoint, read_extra, save_checkpoint
from mfpg_ros.core.config import RUN_CONTROL, AlgoConfig, TrainConfig, check_resumable, load_config
from mfpg_ros.core.episode import HIFI, LOFI_POOL, Episode
from mfpg_ros.core.learners import make_learner
from mfpg_ros.core.numpy_policy import NumpyPolicy
from mfpg_ros.core.pairing import branch_copies, needs_paired, needs_pool, replay_horizon, uses_branches
from mfpg_ros.sim.engine import Engine
from mfpg_ros.sim.tasks import make_task


ENGINES = ('hifi', 'pool', 'replayer', 'evaluator')


def lofi_data(replayer: Engine, pool: Engine, policy, hifi: list[Episode], algo: AlgoConfig,
              version: int) -> tuple[list[Episode], list[Episode]]:
    """The LF side of one version's data for `algo`: (paired replays, pool). Under pairing 'matched' each replay
    runs on to its segment's batch end and the pool is branch_copies fresh rollouts from each segment's state with
    the same stopping rule (lofi_sim does the same per segment as they stream in)."""
    if uses_branches(algo):
        horizons = [replay_horizon(h, algo.hf_steps_per_iter) for h in hifi]
        return (replayer.replay(policy, hifi, version, horizons),
                pool.branch(policy, hifi, horizons, branch_copies(algo), version))
    paired = replayer.replay(policy, hifi, version) if needs_paired(algo.algorithm) else []
    lf_pool = pool.collect(policy, algo.pool_steps_per_env, version, LOFI_POOL) if needs_pool(algo.algorithm) else []
    return paired, lf_pool


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
        return hifi, *lofi_data(self.replayer, self.pool, policy, hifi, algo, version)

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

    def run(self, on_metrics: Callable[[dict], None] | None = None, iterations: int | None = None) -> list[dict]:
        """Iterate until cfg.iterations versions exist (or solved); `iterations` caps this call's iterations."""
        history = []
        while self.learner.version < self.cfg.iterations and (iterations is None or len(history) < iterations):
            metrics = self.iteration()
            done = self.learner.version
            if self.cfg.eval_every and (done % self.cfg.eval_every == 0 or done == self.cfg.iterations):
                metrics['eval_return'] = self.evaluate()
            history.append(metrics)
            if on_metrics:
                on_metrics(metrics)
            if self.solved(metrics):
                break
        return history

    # ---- checkpoint and resume -----------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """One safetensors file: learner state, engine states, bookkeeping and the config (atomic write)."""
        arrays, engines = {}, {}
        for name in ENGINES:
            engine_arrays, engines[name] = getattr(self, name).get_state()
            arrays.update({f'{name}.{k}': v for k, v in engine_arrays.items()})
        bookkeeping = {'hf_steps': self.hf_steps, 'recent': list(self.recent), **self.returns.state()}
        return save_checkpoint(self.learner, path, arrays=arrays,
                               extra={'config': self.cfg.to_dict(), 'trainer': bookkeeping, 'engines': engines})

    def restore(self, path: str | Path) -> None:
        """Load a checkpoint of a trainer with the same config (run-control fields such as iterations may differ)."""
        extra = read_extra(path)
        if 'engines' not in extra:
            raise ValueError(f'{path} is a learner node checkpoint (`mfpg train`): resume it there with --set '
                             'learner.resume=...; train-inprocess resumes the files its --save writes')
        check_resumable(extra['config'], self.cfg, path)
        load_checkpoint(self.learner, path)
        arrays = load_arrays(path)
        for name in ENGINES:
            prefix = f'{name}.'
            getattr(self, name).set_state({k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)},
                                          extra['engines'][name])
        book = extra['trainer']
        self.hf_steps = book['hf_steps']
        self.returns.load(book)
        self.recent.clear()
        self.recent.extend(book['recent'])

    @classmethod
    def resume(cls, path: str | Path, nthread: int = 2, **run_control) -> 'Trainer':
        """A trainer rebuilt from a checkpoint's config and state; run_control overrides e.g. iterations=500."""
        unknown = set(run_control) - set(RUN_CONTROL)
        if unknown:
            raise ValueError(f'only {RUN_CONTROL} can change on resume, not {sorted(unknown)}')
        if Path(path).is_dir():
            raise ValueError(f'{path} is a folder: resume from the checkpoint file that --save wrote')
        cfg = load_config(read_extra(path)['config'])
        trainer = cls(dataclasses.replace(cfg, **run_control), nthread)
        trainer.restore(path)
        return trainer
