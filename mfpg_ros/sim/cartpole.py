"""The package's default robot: urdf/cartpole.urdf compiled into MuJoCo, and its balance task."""
from __future__ import annotations

import os
from pathlib import Path

import mujoco
import numpy as np

from mfpg_ros.sim.tasks import Task

TIMESTEP, FRAME_SKIP = 0.01, 2  # 50 Hz control
MAX_EPISODE_STEPS = 500  # 10 s
ANGLE_LIMIT = 0.2  # rad: the pole counts as fallen beyond this
RAIL_MARGIN = 0.05  # m: episode ends this far before the end stops, so a valid episode never hits them


def urdf_path() -> str:
    """The URDF in the source tree, else the installed share/ copy (colcon / pip install)."""
    here = Path(__file__).resolve().parents[2] / 'urdf' / 'cartpole.urdf'
    if here.is_file():
        return str(here)
    try:
        from ament_index_python.packages import get_package_share_directory
        return os.path.join(get_package_share_directory('mfpg_ros'), 'urdf', 'cartpole.urdf')
    except Exception as exc:  # noqa: BLE001 - report where we looked
        raise FileNotFoundError(f'cartpole.urdf not found at {here} nor in the ament index') from exc


def build_model(path: str | None = None) -> mujoco.MjModel:
    """Compile the URDF: add the cart's motor (normalised ctrl in [-1, 1], gear = the URDF effort limit in N),
    RK4, no contacts."""
    spec = mujoco.MjSpec.from_file(path or urdf_path())
    spec.option.timestep = TIMESTEP
    spec.option.integrator = mujoco.mjtIntegrator.mjINT_RK4
    for geom in spec.geoms:  # the rail is the only thing the cart touches, and the slider limits model it
        geom.contype = geom.conaffinity = 0
    slider = spec.joint('cart_slider')
    effort = float(slider.actfrcrange[1]) or 10.0
    spec.add_actuator(name='cart_force', target='cart_slider', trntype=mujoco.mjtTrn.mjTRN_JOINT,
                      ctrllimited=True, ctrlrange=[-1.0, 1.0], gear=[effort, 0, 0, 0, 0, 0])
    return spec.compile()


class CartPole(Task):
    """Balance: +1 per step; ends when |pole angle| > 0.2 rad or the cart leaves the rail's usable span.

    qpos = [cart x (m), pole angle (rad, 0 upright)], the joint order of the URDF and of JointState.
    The action is the normalised cart force: effort command of cart_slider [N] = action * effort_per_action
    (the URDF effort limit, 10 N). Normalised actions keep the policy's initial scale (std 1) meaningful.
    """

    reset_noise_scale = 0.05

    def __init__(self, model: mujoco.MjModel, variant=None):
        # from the nominal URDF: the same bound for every fidelity
        self.x_limit = float(model.joint('cart_slider').range[1]) - RAIL_MARGIN
        super().__init__('cartpole', model, FRAME_SKIP, MAX_EPISODE_STEPS, variant)

    def step_reward(self, qpos_before, qpos_after, qvel_after, action_clipped):
        return np.ones(qpos_after.shape[0])

    def terminated(self, qpos, qvel):
        finite = np.isfinite(qpos).all(axis=1) & np.isfinite(qvel).all(axis=1)
        return ~finite | (np.abs(qpos[:, 1]) > ANGLE_LIMIT) | (np.abs(qpos[:, 0]) > self.x_limit)


def make_cartpole(variant=None, urdf: str | None = None) -> CartPole:
    return CartPole(build_model(urdf), variant)
