"""Vectorised low-fidelity engine: many environments of one task in one process, batched policy inference.

Physics runs on mujoco.batch.Batch: one state row per environment (bit-identical to one MjData each; rows carry
the solver warm start, so trajectories equal Gymnasium's). The pool's environments are split into
min(nthread, n_envs) lanes, each a single-threaded Batch driven by its own Python thread: MuJoCo releases the
GIL while stepping, so one lane's policy/reward work overlaps the other lane's physics. Every environment has
its own noise and reset streams, so results depend on the seed only, never on nthread. Policy means are
computed row by row (a stacked matmul): an action depends only on its own observation, never on the batch
size, so a replay reproduces a collected segment bit for bit. Replays and evaluation run on one Batch stepped
by nthread threads.
"""
from __future__ import annotations

import itertools
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

import numpy as np
from mujoco.batch import Batch, SimulationError

from mfpg_ros.core.episode import HIFI, LOFI_PAIRED, LOFI_POOL, Episode
from mfpg_ros.sim.tasks import Task


def policy_mean(policy, obs: np.ndarray) -> np.ndarray:
    """mu(obs) of a NumpyPolicy, each row computed exactly as a batch of one (batch-size invariant)."""
    layers = getattr(policy, 'layers', None)
    if layers is None:
        return policy.mean(obs)
    h, last = np.asarray(obs, dtype=np.float64)[:, None, :], len(layers) - 1
    for i, (w, b) in enumerate(layers):
        h = np.matmul(h, w)  # (B, 1, k) @ (k, m): one BLAS call per row, the same as NumpyPolicy at batch 1
        h += b
        if i < last:
            np.tanh(h, out=h)
    return h[:, 0, :]


class Sims:
    """n simulations of a task; reset/step by row ids; reports per-row instability after each step."""

    def __init__(self, task: Task, n: int, nthread: int):
        self.task, self.n = task, n
        self.batch = Batch(task.model, nsim=n, nthread=max(1, min(nthread, n)))
        self.batch.reset()
        self._reset_row = self.batch.state[0].copy()  # mj_resetData's state: time 0, no warm start, ctrl 0
        self.qpos, self.qvel, self.ctrl, self.time = (self.batch.bind(f) for f in ('qpos', 'qvel', 'ctrl', 'time'))
        self.warnings = self.batch.warning[:, :, 1]  # live per-row counters
        self.time_tolerance = 0.5 * task.model.opt.timestep

    def reset(self, ids: np.ndarray, qpos: np.ndarray, qvel: np.ndarray) -> None:
        """As mj_resetData then set (qpos, qvel), per row; clears the rows' warning counters. (Writing the rows
        directly is ~100x cheaper than Batch.reset.)"""
        self.batch.state[ids] = self._reset_row
        self.batch.warning[ids] = 0
        self.qpos[ids] = qpos
        self.qvel[ids] = qvel

    def step(self, ctrl: np.ndarray, ids: np.ndarray | None = None) -> np.ndarray | None:
        """One control period for rows ids (None: all). Returns None if every row is fine, else a (len(ids),)
        mask of the rows that diverged: MuJoCo warned (and silently reset the row), time did not advance by
        dt, or the state is unusable (non-finite, absurd velocity)."""
        rows = slice(None) if ids is None else ids
        self.ctrl[rows] = ctrl
        t_expected = self.time[rows] + self.task.dt
        failed = None
        try:
            self.batch.step(ids, nstep=self.task.frame_skip)
        except SimulationError as err:  # those rows kept their pre-step state
            failed = np.isin(np.arange(self.n)[rows], err.ids)
        qpos, qvel, time_error = self.qpos[rows], self.qvel[rows], np.abs(self.time[rows] - t_expected)
        if (failed is None and time_error.max() < self.time_tolerance and not self.warnings.any()
                and np.abs(qvel).max() <= self.task.max_abs_qvel and math.isfinite(qpos.sum())):
            return None  # fast path: one check over all rows
        bad = (self.warnings[rows].sum(axis=1) > 0) | (time_error >= self.time_tolerance)
        bad |= self.task.diverged(qpos, qvel)
        return bad if failed is None else bad | failed


@dataclass
class _Cut:
    """Where one segment sits in the step buffers, and how it ended."""
    env: int
    start: int
    end: int
    qpos0: np.ndarray
    qvel0: np.ndarray
    start_step: int
    terminated: bool = False
    truncated: bool = False
    aborted: bool = False


class _Lane:
    """A contiguous block of the pool's environments on its own single-threaded Sims. Lanes run concurrently
    (MuJoCo releases the GIL while stepping), so one lane's Python work overlaps the other's physics."""

    def __init__(self, engine: 'Engine', envs: np.ndarray):
        self.engine, self.envs, self.first = engine, envs, int(envs[0])
        self.sims = Sims(engine.task, len(envs), nthread=1)
        self.open_cuts: list[_Cut] = []  # one per env: the segment it is in during a collect call
        self.steps = engine.steps[envs[0]:envs[-1] + 1]  # view: the engine's time-limit counters
        self.sims.reset(np.arange(len(envs)), *self.reset_states(np.arange(len(envs))))

    def reset_states(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One draw per env from its own stream, so results do not depend on how envs are split into lanes."""
        draws = [self.engine.task.reset_state(self.engine.reset_rngs[self.first + r], 1) for r in rows]
        return np.concatenate([q for q, _ in draws]), np.concatenate([v for _, v in draws])

    def run(self, policy, bufs: dict[str, np.ndarray], t0: int, t1: int, final: bool) -> list[_Cut]:
        """Steps t0..t1 of a collect call (t0 = 0 opens a segment per env): the segments ended in them and, if
        final, the open ones cut at t1."""
        task, sims, n, first = self.engine.task, self.sims, len(self.envs), self.first
        cols = slice(first, first + n)
        if t0 == 0:
            self.open_cuts = [_Cut(first + r, 0, 0, sims.qpos[r].copy(), sims.qvel[r].copy(), int(self.steps[r]))
                              for r in range(n)]
        open_cuts, cuts, no_rows = self.open_cuts, [], np.zeros(n, dtype=bool)
        for t in range(t0, t1):
            obs = task.observe(sims.qpos, sims.qvel)
            eps = bufs['eps'][t, cols]
            action = policy_mean(policy, obs) + policy.std * eps
            clipped = task.clip_action(action)
            qpos_before = sims.qpos.copy()
            unstable = sims.step(clipped)
            reward, terminated = task.outcome(qpos_before, sims.qpos, sims.qvel, clipped)
            if unstable is None:
                unstable = no_rows
            else:  # garbage outcome: zero reward, no termination, the segment is aborted below
                reward, terminated = np.where(unstable, 0.0, reward), terminated & ~unstable
            self.steps += 1
            bufs['obs'][t, cols], bufs['actions'][t, cols], bufs['rewards'][t, cols] = obs, action, reward
            done = terminated | unstable | (self.steps >= task.max_episode_steps)
            if done.any():
                rows = np.flatnonzero(done)
                qpos0, qvel0 = self.reset_states(rows)
                sims.reset(rows, qpos0, qvel0)
                self.steps[rows] = 0
                for k, r in enumerate(rows):
                    cut = open_cuts[r]
                    cut.end, cut.terminated, cut.aborted = t + 1, bool(terminated[r]), bool(unstable[r])
                    cut.truncated = not cut.terminated
                    cuts.append(cut)
                    open_cuts[r] = _Cut(first + r, t + 1, 0, qpos0[k], qvel0[k], 0)
        if final:
            for cut in open_cuts:
                if cut.start < t1:
                    cut.end, cut.truncated = t1, True
                    cuts.append(cut)
        return cuts


class Engine:
    """n_envs persistent environments of `task` (streams spawned from `seed`). Episodes continue across
    collect() calls; segments are cut at episode ends and at each call's end (truncated)."""

    def __init__(self, task: Task, n_envs: int, seed: int, nthread: int = 2):
        self.task, self.n_envs, self.seed, self.nthread = task, n_envs, seed, max(1, nthread)
        streams = np.random.SeedSequence(seed).spawn(2 * n_envs + 1)
        self.noise_rngs = [np.random.default_rng(s) for s in streams[:n_envs]]
        self.reset_rngs = [np.random.default_rng(s) for s in streams[n_envs:2 * n_envs]]
        self.eval_rng = np.random.default_rng(streams[-1])
        self.steps = np.zeros(n_envs, dtype=np.int64)  # time-limit counters
        self.lanes = [_Lane(self, envs) for envs in np.array_split(np.arange(n_envs), min(self.nthread, n_envs))]
        self._workers = ThreadPoolExecutor(len(self.lanes) - 1) if len(self.lanes) > 1 else None
        self.unstable_count = 0
        self._scratch: Sims | None = None
        self._ids = itertools.count()

    def lane_of(self, env: int) -> tuple[Sims, int]:
        """(simulations, row) holding env: to inspect or edit its state."""
        lane = next(lane for lane in self.lanes if lane.first <= env < lane.first + len(lane.envs))
        return lane.sims, env - lane.first

    def close(self) -> None:
        if self._workers is not None:
            self._workers.shutdown()

    # --- checkpointing -----------------------------------------------------------------------------------------
    def get_state(self) -> tuple[dict[str, np.ndarray], dict]:
        """(arrays, JSON-able info): everything later calls depend on. Physics rows are MuJoCo's integration state
        (qpos, qvel, act, warm start, time, ...) in env order, so the state also loads under another nthread."""
        next_id = next(self._ids)
        self._ids = itertools.count(next_id)  # peeked, not consumed
        arrays = {'physics': np.concatenate([lane.sims.batch.state for lane in self.lanes]),
                  'warnings': np.concatenate([lane.sims.batch.warning for lane in self.lanes]),
                  'steps': self.steps.copy()}
        info = {'n_envs': self.n_envs, 'seed': self.seed, 'next_id': next_id, 'unstable_count': self.unstable_count,
                'noise_rngs': [g.bit_generator.state for g in self.noise_rngs],
                'reset_rngs': [g.bit_generator.state for g in self.reset_rngs],
                'eval_rng': self.eval_rng.bit_generator.state}
        return arrays, info

    def set_state(self, arrays: dict[str, np.ndarray], info: dict) -> None:
        """Restore what get_state returned (from an engine of the same task, n_envs and seed)."""
        if (info['n_envs'], info['seed']) != (self.n_envs, self.seed):
            raise ValueError(f'engine state of n_envs={info["n_envs"]} seed={info["seed"]} does not fit '
                             f'n_envs={self.n_envs} seed={self.seed}')
        for lane in self.lanes:
            rows = slice(lane.first, lane.first + len(lane.envs))
            lane.sims.batch.state[:] = arrays['physics'][rows]  # shape mismatch (another task) raises here
            lane.sims.batch.warning[:] = arrays['warnings'][rows]
        self.steps[:] = arrays['steps']  # in place: the lanes hold views of it
        for g, state in zip([*self.noise_rngs, *self.reset_rngs, self.eval_rng],
                            [*info['noise_rngs'], *info['reset_rngs'], info['eval_rng']]):
            g.bit_generator.state = state
        self._ids, self.unstable_count = itertools.count(info['next_id']), info['unstable_count']

    # --- independent rollouts (LF pool, in-process HF env) -----------------------------------------------
    def collect(self, policy, steps_per_env: int, version: int, fidelity: str,
                emit: Callable[[list[Episode]], None] | None = None, pieces: int = 1) -> list[Episode]:
        """steps_per_env steps of every env; the segments they make. The call runs in `pieces` equal parts and
        after each hands emit (if given) the segments that ended in it (the last part: the rest, cut at the end),
        so a consumer can start on them early. The segments' data are the same whatever `pieces`; their order
        and ids follow the parts. An emit that raises leaves the call part-way (its noise drawn, envs advanced)."""
        bufs = self._buffers(steps_per_env, self.n_envs)
        for i, rng in enumerate(self.noise_rngs):  # the whole call's noise, drawn up front per env
            bufs['eps'][:, i] = rng.standard_normal((steps_per_env, self.task.contract.act_dim))
        bounds = np.linspace(0, steps_per_env, max(1, min(pieces, steps_per_env)) + 1).astype(int).tolist()
        episodes = []
        for t0, t1 in zip(bounds[:-1], bounds[1:]):
            final = t1 == steps_per_env
            others = [self._workers.submit(lane.run, policy, bufs, t0, t1, final) for lane in self.lanes[1:]]
            cuts = self.lanes[0].run(policy, bufs, t0, t1, final) + [c for job in others for c in job.result()]
            done = [self._episode(bufs, c, version, fidelity, batch_start=c.start if fidelity == HIFI else None)
                    for c in sorted(cuts, key=lambda c: (c.env, c.start))]
            if emit is not None and done:
                emit(done)
            episodes += done
        return episodes

    # --- paired replays (common random numbers) and rollouts branching from HF states -----------------------
    def replay(self, policy, hf_segments: list[Episode], version: int,
               horizons: list[int] | None = None) -> list[Episode]:
        """Replay each HF segment from its s0 and time-limit counter with its noise eps, on this engine's task.
        A replay stops at the HF length or, given horizons, runs on past it with fresh noise until horizons[i]
        steps; always at LF termination or time limit, or on instability (aborted)."""
        horizons = [len(hf) for hf in hf_segments] if horizons is None else list(horizons)
        return self._branch(policy, hf_segments, [hf.eps for hf in hf_segments], horizons, version, LOFI_PAIRED)

    def branch(self, policy, hf_segments: list[Episode], horizons: list[int], copies: int,
               version: int) -> list[Episode]:
        """`copies` independent rollouts (fresh noise) from each HF segment's s0 and time-limit counter, each up
        to its horizon, tagged pair_of = the segment's id: draws of what an unpaired replay would be."""
        starts = [hf for hf in hf_segments for _ in range(copies)]
        empty = np.zeros((0, self.task.contract.act_dim))
        return self._branch(policy, starts, [empty] * len(starts), [h for h in horizons for _ in range(copies)],
                            version, LOFI_POOL)

    def _branch(self, policy, starts: list[Episode], tapes: list[np.ndarray], horizons: list[int], version: int,
                fidelity: str) -> list[Episode]:
        """Run from each start's (qpos0, qvel0, start_step), noise from its tape then fresh, for its horizon."""
        task, n = self.task, len(starts)
        if n == 0:
            return []
        for hf in starts:
            self._check_segment(hf)
        sims = self._scratch_sims(n)
        rows = np.arange(n)
        sims.reset(rows, np.stack([hf.qpos0 for hf in starts]), np.stack([hf.qvel0 for hf in starts]))
        lengths = np.array(horizons, dtype=np.int64)
        steps = np.array([hf.start_step for hf in starts], dtype=np.int64)
        shape = (max(int(lengths.max()), 0), n, task.contract.act_dim)
        taped = all(len(tape) >= h for tape, h in zip(tapes, lengths))
        noise = np.zeros(shape) if taped else self.noise_rngs[0].standard_normal(shape)
        for k, tape in enumerate(tapes):
            noise[:min(len(tape), shape[0]), k] = tape[:shape[0]]
        bufs = self._buffers(shape[0], n)
        cuts = [_Cut(k, 0, 0, hf.qpos0.copy(), hf.qvel0.copy(), hf.start_step) for k, hf in enumerate(starts)]
        active = rows[lengths > 0]
        for t in range(shape[0]):
            if active.size == 0:
                break
            qpos, qvel = sims.qpos[active], sims.qvel[active]
            obs = task.observe(qpos, qvel)
            eps = noise[t, active]
            action = policy_mean(policy, obs) + policy.std * eps
            clipped = task.clip_action(action)
            unstable = sims.step(clipped, active)
            unstable = np.zeros(len(active), dtype=bool) if unstable is None else unstable
            qpos_after, qvel_after = sims.qpos[active], sims.qvel[active]
            reward, terminated = task.outcome(qpos, qpos_after, qvel_after, clipped)
            terminated &= ~unstable
            steps[active] += 1
            self._record(bufs, t, active, obs, action, eps, np.where(unstable, 0.0, reward))
            stop = terminated | unstable | (steps[active] >= task.max_episode_steps) | (t + 1 >= lengths[active])
            for k in np.flatnonzero(stop):
                cut = cuts[active[k]]
                cut.end, cut.terminated, cut.aborted = t + 1, bool(terminated[k]), bool(unstable[k])
                cut.truncated = not cut.terminated
            active = active[~stop]
        return [self._episode(bufs, cut, version, fidelity, pair_of=hf.episode_id) for cut, hf in zip(cuts, starts)]

    # --- deterministic evaluation ------------------------------------------------------------------------
    def evaluate(self, policy, n_episodes: int) -> np.ndarray:
        """Returns of n_episodes with a = mu(s) from fresh resets; NaN for an episode that went unstable."""
        task = self.task
        sims = self._scratch_sims(n_episodes)
        rows = np.arange(n_episodes)
        sims.reset(rows, *task.reset_state(self.eval_rng, n_episodes))
        returns = np.zeros(n_episodes)
        active = rows
        for _ in range(task.max_episode_steps):
            qpos, qvel = sims.qpos[active], sims.qvel[active]
            clipped = task.clip_action(policy_mean(policy, task.observe(qpos, qvel)))
            unstable = sims.step(clipped, active)
            unstable = np.zeros(len(active), dtype=bool) if unstable is None else unstable
            qpos_after, qvel_after = sims.qpos[active], sims.qvel[active]
            reward, terminated = task.outcome(qpos, qpos_after, qvel_after, clipped)
            returns[active] += reward
            returns[active[unstable]] = np.nan
            self.unstable_count += int(unstable.sum())
            active = active[~(unstable | terminated)]
            if active.size == 0:
                break
        return returns

    # --- helpers -----------------------------------------------------------------------------------------
    def _scratch_sims(self, n: int) -> Sims:
        if self._scratch is None or self._scratch.n < n:
            self._scratch = Sims(self.task, n, self.nthread)
        return self._scratch

    def _buffers(self, steps: int, n: int) -> dict[str, np.ndarray]:
        c = self.task.contract
        return {'obs': np.zeros((steps, n, c.obs_dim), np.float32),
                'actions': np.zeros((steps, n, c.act_dim), np.float32),
                'eps': np.zeros((steps, n, c.act_dim)), 'rewards': np.zeros((steps, n))}

    @staticmethod
    def _record(bufs, t, rows, obs, action, eps, reward) -> None:
        bufs['obs'][t, rows] = obs
        bufs['actions'][t, rows] = action
        bufs['eps'][t, rows] = eps
        bufs['rewards'][t, rows] = reward

    def _episode(self, bufs, cut: _Cut, version: int, fidelity: str, pair_of: str = '',
                 batch_start: int | None = None) -> Episode:
        part = {k: np.ascontiguousarray(v[cut.start:cut.end, cut.env]) for k, v in bufs.items()}
        extras = {'env': float(cut.env)}
        if batch_start is not None:  # an HF segment: where in this call's steps it began (replay_horizon)
            extras['batch_start'] = float(batch_start)
        if cut.aborted:
            extras['unstable'] = 1.0
            self.unstable_count += 1
        return Episode(obs=part['obs'], actions=part['actions'], eps=part['eps'], rewards=part['rewards'],
                       qpos0=np.array(cut.qpos0, dtype=np.float64), qvel0=np.array(cut.qvel0, dtype=np.float64),
                       contract=self.task.contract, policy_version=version, fidelity=fidelity,
                       start_step=cut.start_step, terminated=cut.terminated, truncated=cut.truncated,
                       aborted=cut.aborted, seed=self.seed, episode_id=f'{fidelity}-{self.seed}-{next(self._ids)}',
                       pair_of=pair_of, extras=extras)

    def _check_segment(self, hf: Episode) -> None:
        c = self.task.contract
        if hf.qpos0.shape != (c.nq,) or hf.qvel0.shape != (c.nv,) or hf.eps.shape != (len(hf), c.act_dim):
            raise ValueError(f'segment {hf.episode_id!r} does not match task {c.task!r} (nq={c.nq}, nv={c.nv}, '
                             f'act_dim={c.act_dim})')
