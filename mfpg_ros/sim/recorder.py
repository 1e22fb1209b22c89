"""Robot-side episode assembly (ROS-free): joint states and policy_server's action reports checked, observations,
rewards, terminations, and HF segments carrying their start state s0, the noise eps, and the policy version.
hifi_interface is a thin wrapper."""
from __future__ import annotations

import uuid

import numpy as np

from mfpg_ros.core.episode import HIFI, Episode
from mfpg_ros.sim.tasks import Task


class JointStateError(ValueError):
    pass


FLOAT32_MAX = float(np.finfo(np.float32).max)
# seq of an action report for policy_server's safe command (watchdog, e-stop, idle, deactivation): it answers no
# observation and moves the plant outside the recorded steps, so hifi_interface aborts an open segment.
SAFE_COMMAND_SEQ = -1


def joint_vector(names, positions, velocities, wanted: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(qpos, qvel) in the task's joint order from a JointState's parallel arrays; any order, extras ignored."""
    if len(positions) != len(names) or len(velocities) != len(names):
        raise JointStateError(f'joint_states has {len(names)} names but {len(positions)} positions and '
                              f'{len(velocities)} velocities')
    index = {n: i for i, n in enumerate(names)}
    missing = [n for n in wanted if n not in index]
    if missing:
        raise JointStateError(f'joint_states lacks joints {missing} (has {list(names)})')
    qpos = np.array([positions[index[n]] for n in wanted], dtype=np.float64)
    qvel = np.array([velocities[index[n]] for n in wanted], dtype=np.float64)
    if not (np.isfinite(qpos).all() and np.isfinite(qvel).all()):
        raise JointStateError('joint_states has non-finite positions or velocities')
    if max(np.abs(qpos).max(initial=0), np.abs(qvel).max(initial=0)) > FLOAT32_MAX:
        raise JointStateError('joint_states has values beyond float32 (episodes store observations as float32)')
    return qpos, qvel


def parse_report(values, act_dim: int) -> tuple[int, int, np.ndarray, np.ndarray, np.ndarray]:
    """policy_server's report [seq, version, action, eps, command] as (seq, version, action, eps, command);
    ValueError unless it is exactly that, finite, with integer seq and version (a policy version >= 0 unless it
    reports a safe command) and values an episode can store (float32)."""
    data = np.asarray(values, dtype=np.float64)
    if data.shape != (2 + 3 * act_dim,):
        raise ValueError(f'expected [seq, version, {3 * act_dim} values], got {data.size} values')
    if not np.isfinite(data).all():
        raise ValueError('a non-finite value in the report')
    seq, version = data[:2]
    if seq != int(seq) or version != int(version) or not -1 <= version < 2 ** 31:
        raise ValueError(f'seq {seq} and version {version} must be integers, the version in [-1, 2^31)')
    if version < 0 and seq != SAFE_COMMAND_SEQ:
        raise ValueError(f'an action for seq {seq:.0f} from policy version {version:.0f}')
    a = data[2:]
    if np.abs(a).max() > FLOAT32_MAX:
        raise ValueError('a value beyond float32 (episodes store actions as float32)')
    return int(seq), int(version), a[:act_dim], a[act_dim:2 * act_dim], a[2 * act_dim:]


class SegmentRecorder:
    """Step-by-step HF episode assembly. Segments are cut at episode end, at a policy version change and when
    `steps_per_version` steps of one version were recorded (the learner's HF budget per iteration)."""

    def __init__(self, task: Task, steps_per_version: int, seed: int = 0, prefix: str = ''):
        self.task, self.budget, self.seed = task, steps_per_version, seed
        self.prefix = prefix or uuid.uuid4().hex[:8]
        self.counter = 0
        self.qpos = self.qvel = None
        self.step = 0  # steps since the episode's reset
        self.version = -1  # version of the open segment
        self.version_steps: dict[int, int] = {}
        self._clear()

    def _clear(self) -> None:
        self.obs, self.actions, self.eps, self.commands, self.rewards = [], [], [], [], []
        self.s0 = None

    def start_episode(self, qpos: np.ndarray, qvel: np.ndarray) -> None:
        self._clear()
        self.qpos, self.qvel, self.step = qpos, qvel, 0

    def resync(self, qpos: np.ndarray, qvel: np.ndarray) -> None:
        """Take the plant's current state between segments (after a pause during which it may have moved)."""
        if self.rewards or self.actions:
            raise RuntimeError('resync only between segments')
        self.qpos, self.qvel = qpos, qvel

    def observation(self) -> np.ndarray:
        return self.task.observe(self.qpos[None], self.qvel[None])[0]

    def budget_reached(self, version: int) -> bool:
        return self.version_steps.get(version, 0) >= self.budget

    def act(self, action: np.ndarray, eps: np.ndarray, command: np.ndarray, version: int) -> list[Episode]:
        """Record the action taken in the current state; returns a segment closed by a version change."""
        closed = self._close(truncated=True) if self.rewards and version != self.version else []
        if not self.rewards and not self.actions:
            self.s0 = (self.qpos.copy(), self.qvel.copy(), self.step, self.version_steps.get(version, 0))
            self.version = version
        self.obs.append(self.observation())
        self.actions.append(action)
        self.eps.append(eps)
        self.commands.append(command)
        return closed

    def transition(self, qpos: np.ndarray, qvel: np.ndarray) -> tuple[list[Episode], bool]:
        """The state after the last action. Returns (closed segments, episode over?)."""
        reward = self.task.step_reward(self.qpos[None], qpos[None], qvel[None], self.commands[-1][None])[0]
        terminated = bool(self.task.terminated(qpos[None], qvel[None])[0])
        self.rewards.append(float(reward))
        self.qpos, self.qvel, self.step = qpos, qvel, self.step + 1
        self.version_steps[self.version] = self.version_steps.get(self.version, 0) + 1
        time_limit = self.step >= self.task.max_episode_steps
        if terminated or time_limit or self.budget_reached(self.version):
            return self._close(terminated=terminated, truncated=not terminated), terminated or time_limit
        return [], False

    def abort(self) -> int:
        """Discard the open segment (stalled robot, watchdog, e-stop): it is never sent, and its steps no longer
        count against the version's budget. Returns how many recorded steps were dropped."""
        dropped = len(self.rewards)
        if dropped:
            self.version_steps[self.version] -= dropped
        self._clear()
        return dropped

    def _close(self, terminated=False, truncated=False, aborted=False) -> list[Episode]:
        n = len(self.rewards)
        qpos0, qvel0, start, batch_start = self.s0
        self.counter += 1
        segment = Episode(
            obs=np.asarray(self.obs[:n], np.float32).reshape(n, -1),
            actions=np.asarray(self.actions[:n], np.float32).reshape(n, -1),
            eps=np.asarray(self.eps[:n], np.float64).reshape(n, -1), rewards=np.asarray(self.rewards),
            qpos0=qpos0, qvel0=qvel0, contract=self.task.contract, policy_version=self.version,
            fidelity=HIFI, start_step=start, terminated=terminated, truncated=truncated, aborted=aborted,
            seed=self.seed, episode_id=f'{self.prefix}-{self.counter}', extras={'batch_start': float(batch_start)})
        self._clear()
        return [segment]
