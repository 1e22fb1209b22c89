"""Task registry: batched observation, reward, termination and reset rules on a MuJoCo model, no Gymnasium.

The Gymnasium v5 tasks re-implement their env's formulas with v5 defaults (obs, reward, termination, frame
skip, 1000-step limit, reset noise) on the env's own asset XML; test_sim_tasks checks them bit for bit.
All state arrays are batched: qpos (B, nq), qvel (B, nv), actions (B, nu).
"""
from __future__ import annotations

import importlib.util
import os

import mujoco
import numpy as np

from mfpg_ros.core.contract import Contract
from mfpg_ros.sim.variants import apply_variant, resolve_variant

GYM_ASSETS = os.path.join(os.path.dirname(importlib.util.find_spec('gymnasium').origin), 'envs', 'mujoco', 'assets')


class Task:
    """A control task on one compiled model (with its fidelity variant applied)."""

    max_abs_qvel = 1e3  # any |qvel| beyond this counts as a diverged simulation
    reset_noise_scale = 0.0

    def __init__(self, name: str, model: mujoco.MjModel, frame_skip: int, max_episode_steps: int,
                 variant: str | dict | None = None):
        self.name = name
        self.variant = resolve_variant(variant)
        self.model, self.frame_skip = apply_variant(model, frame_skip, self.variant)
        self.max_episode_steps = max_episode_steps
        self.dt = self.model.opt.timestep * self.frame_skip
        self.init_qpos = model.qpos0.copy()
        self.init_qvel = np.zeros(model.nv)
        self.joint_names = [model.joint(j).name for j in range(model.njnt)]
        if model.nq != model.njnt or model.nv != model.njnt:
            raise ValueError(f'{name}: only hinge/slide joints are supported')
        self.effort_per_action = model.actuator_gear[:, 0].copy()  # joint effort (N or N m) per unit action
        self.action_low = model.actuator_ctrlrange[:, 0].copy()
        self.action_high = model.actuator_ctrlrange[:, 1].copy()
        self.contract = Contract(
            task=name, observation_names=self.observation_names(), action_names=self.action_names(),
            action_low=self.action_low.tolist(), action_high=self.action_high.tolist(),
            control_rate_hz=1.0 / (model.opt.timestep * frame_skip), nq=model.nq, nv=model.nv)

    # --- layout --------------------------------------------------------------------------------------------
    def observation_names(self) -> list[str]:
        return [f'{j}.position' for j in self.joint_names] + [f'{j}.velocity' for j in self.joint_names]

    def action_names(self) -> list[str]:
        return [f'{self.model.joint(j).name}.effort' for j in self.model.actuator_trnid[:, 0]]

    # --- batched rules (override per task) -----------------------------------------------------------------
    def observe(self, qpos: np.ndarray, qvel: np.ndarray) -> np.ndarray:
        return np.concatenate([qpos, qvel], axis=1)

    def step_reward(self, qpos_before, qpos_after, qvel_after, action_clipped) -> np.ndarray:
        raise NotImplementedError

    def terminated(self, qpos: np.ndarray, qvel: np.ndarray) -> np.ndarray:
        return np.zeros(qpos.shape[0], dtype=bool)

    def outcome(self, qpos_before, qpos_after, qvel_after, action_clipped) -> tuple[np.ndarray, np.ndarray]:
        """(reward, terminated) of a step: the engine's one call per step (tasks may share work between them)."""
        return (self.step_reward(qpos_before, qpos_after, qvel_after, action_clipped),
                self.terminated(qpos_after, qvel_after))

    def reset_state(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        s = self.reset_noise_scale
        qpos = self.init_qpos + rng.uniform(low=-s, high=s, size=(n, self.model.nq))
        qvel = self.init_qvel + rng.uniform(low=-s, high=s, size=(n, self.model.nv))
        return qpos, qvel

    def clip_action(self, action: np.ndarray) -> np.ndarray:
        return np.minimum(np.maximum(action, self.action_low), self.action_high)  # = np.clip, cheaper

    def diverged(self, qpos: np.ndarray, qvel: np.ndarray) -> np.ndarray:
        """(B,) True where the state is unusable: non-finite or absurd velocities."""
        return ~(np.abs(qvel).max(axis=1) <= self.max_abs_qvel) | ~np.isfinite(qpos.sum(axis=1))  # NaN-safe

    # --- one MjData (twin plant, robot-side interface) -----------------------------------------------------
    def new_data(self) -> mujoco.MjData:
        return mujoco.MjData(self.model)

    def set_state(self, data: mujoco.MjData, qpos: np.ndarray, qvel: np.ndarray) -> None:
        """Reset data (time 0, no solver warm start) to (qpos, qvel), as Gymnasium's reset + set_state."""
        mujoco.mj_resetData(self.model, data)
        data.qpos[:] = qpos
        data.qvel[:] = qvel
        mujoco.mj_forward(self.model, data)

    def step(self, data: mujoco.MjData, ctrl: np.ndarray) -> bool:
        """Advance one control period with the clipped ctrl. False if the simulation diverged (MuJoCo warned,
        reset itself, or the state is unusable): the caller must treat the episode as aborted and reset."""
        warnings, t_expected = int(data.warning.number.sum()), data.time + self.dt
        data.ctrl[:] = self.clip_action(np.asarray(ctrl, dtype=np.float64))
        mujoco.mj_step(self.model, data, nstep=self.frame_skip)
        ok = int(data.warning.number.sum()) == warnings and abs(data.time - t_expected) < 0.5 * self.model.opt.timestep
        return ok and not self.diverged(data.qpos[None], data.qvel[None])[0]


class LocomotionTask(Task):
    """Hopper/Walker2d/HalfCheetah v5: forward progress minus control cost (+ healthy bonus), x not observed."""

    forward_reward_weight = 1.0
    ctrl_cost_weight = 1e-3
    healthy_reward = 1.0
    healthy_z_range = (-np.inf, np.inf)
    healthy_angle_range = (-np.inf, np.inf)
    healthy_state_range: tuple[float, float] | None = None
    clip_obs_qvel = 10.0  # None: unclipped
    terminate_when_unhealthy = True
    reset_noise_scale = 5e-3

    def __init__(self, *args, observe_x_position: bool = False, **kwargs):
        self.observe_x_position = observe_x_position  # the MFPG authors' setting (full qpos observed)
        super().__init__(*args, **kwargs)

    def observation_names(self) -> list[str]:
        return super().observation_names()[0 if self.observe_x_position else 1:]

    def observe(self, qpos, qvel):
        position = qpos if self.observe_x_position else qpos[:, 1:]
        if self.clip_obs_qvel is not None:
            qvel = np.minimum(np.maximum(qvel, -self.clip_obs_qvel), self.clip_obs_qvel)
        return np.concatenate([position, qvel], axis=1)

    def healthy(self, qpos, qvel) -> np.ndarray:
        """Gymnasium's strict range tests, as one test of [qpos, qvel] against per-column bounds (NaN fails)."""
        if not hasattr(self, '_healthy_bounds'):
            low, high = np.full(self.model.nq + self.model.nv, -np.inf), np.full(self.model.nq + self.model.nv, np.inf)
            if self.healthy_state_range is not None:  # on state_vector()[2:]
                low[2:], high[2:] = self.healthy_state_range
            (low[1], high[1]), (low[2], high[2]) = self.healthy_z_range, self.healthy_angle_range
            self._healthy_bounds = low, high
        state = np.concatenate([qpos, qvel], axis=1)
        return ((self._healthy_bounds[0] < state) & (state < self._healthy_bounds[1])).all(axis=1)

    def outcome(self, qpos_before, qpos_after, qvel_after, action_clipped):
        healthy = self.healthy(qpos_after, qvel_after)
        x_velocity = (qpos_after[:, 0] - qpos_before[:, 0]) / self.dt
        forward = x_velocity if self.forward_reward_weight == 1.0 else self.forward_reward_weight * x_velocity
        ctrl_cost = self.ctrl_cost_weight * np.sum(np.square(action_clipped), axis=1)
        if self.healthy_reward == 0.0:
            reward = forward - ctrl_cost
        else:  # Gymnasium's order of operations; a bool array adds as 0.0/1.0
            reward = forward + (healthy if self.healthy_reward == 1.0 else healthy * self.healthy_reward) - ctrl_cost
        terminated = ~healthy if self.terminate_when_unhealthy else np.zeros(len(healthy), dtype=bool)
        return reward, terminated

    def step_reward(self, qpos_before, qpos_after, qvel_after, action_clipped):
        return self.outcome(qpos_before, qpos_after, qvel_after, action_clipped)[0]

    def terminated(self, qpos, qvel):
        if not self.terminate_when_unhealthy:
            return np.zeros(qpos.shape[0], dtype=bool)
        return ~self.healthy(qpos, qvel)


class Hopper(LocomotionTask):
    healthy_z_range = (0.7, np.inf)
    healthy_angle_range = (-0.2, 0.2)
    healthy_state_range = (-100.0, 100.0)


class Walker2d(LocomotionTask):
    healthy_z_range = (0.8, 2.0)
    healthy_angle_range = (-1.0, 1.0)


class HalfCheetah(LocomotionTask):
    ctrl_cost_weight = 0.1
    healthy_reward = 0.0
    clip_obs_qvel = None
    terminate_when_unhealthy = False
    reset_noise_scale = 0.1

    def reset_state(self, rng, n):
        s = self.reset_noise_scale
        qpos = self.init_qpos + rng.uniform(low=-s, high=s, size=(n, self.model.nq))
        qvel = self.init_qvel + s * rng.standard_normal((n, self.model.nv))
        return qpos, qvel


class InvertedPendulum(Task):
    """InvertedPendulum-v5: +1 while the pole is within 0.2 rad; the terminal step earns 0."""

    reset_noise_scale = 0.01

    def terminated(self, qpos, qvel):
        obs = self.observe(qpos, qvel)
        return ~np.isfinite(obs).all(axis=1) | (np.abs(obs[:, 1]) > 0.2)

    def step_reward(self, qpos_before, qpos_after, qvel_after, action_clipped):
        return (~self.terminated(qpos_after, qvel_after)).astype(np.float64)

    def outcome(self, qpos_before, qpos_after, qvel_after, action_clipped):
        terminated = self.terminated(qpos_after, qvel_after)
        return (~terminated).astype(np.float64), terminated


# name -> (task class, asset XML, frame_skip, max_episode_steps)
_GYM_TASKS = {
    'InvertedPendulum-v5': (InvertedPendulum, 'inverted_pendulum.xml', 2, 1000),
    'Hopper-v5': (Hopper, 'hopper.xml', 4, 1000),
    'Walker2d-v5': (Walker2d, 'walker2d_v5.xml', 4, 1000),
    'HalfCheetah-v5': (HalfCheetah, 'half_cheetah.xml', 5, 1000),
}
TASK_NAMES = (*_GYM_TASKS, 'cartpole')


def make_task(name: str, variant: str | dict | None = None, **options) -> Task:
    """Build a task with its fidelity variant (preset name or knob dict, see variants.py) applied.

    options go to the task class (e.g. observe_x_position=True for the locomotion tasks)."""
    if name == 'cartpole':
        from mfpg_ros.sim.cartpole import make_cartpole
        return make_cartpole(variant, **options)
    if name not in _GYM_TASKS:
        raise ValueError(f'unknown task {name!r}; valid tasks: {list(TASK_NAMES)}')
    cls, xml, frame_skip, max_steps = _GYM_TASKS[name]
    model = mujoco.MjModel.from_xml_path(os.path.join(GYM_ASSETS, xml))
    return cls(name, model, frame_skip, max_steps, variant, **options)
