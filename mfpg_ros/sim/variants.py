"""Fidelity variants: edits applied to a compiled MjModel, described by a YAML-able dict or a preset name.

Knobs (every scale multiplies the nominal value; a float applies to all elements, a dict to named ones):
  gravity        float                 gravity vector scale
  friction       float | {geom: s}     all three friction coefficients. A float scales EVERY geom, floor
                                       included (MuJoCo takes the max of the two geoms' friction, so scaling
                                       only the robot leaves the floor in charge); ODRL's Hopper presets use a
                                       dict of the robot's geoms, as ODRL does, and leave the floor at 1.0
  mass           float | {body: s}     body mass and inertia (then mj_setConst)
  damping        float | {joint: s}    joint (dof) damping
  actuator_gain  float | {name: s}     motor gain (gainprm[0]); name = actuator or its joint
  joint_range    float | {joint: s}    both joint limits times s (ODRL "kinematic" shift; a float applies to
                                       the limited joints; ODRL's side edit of the foot body position is not
                                       reproduced)
  frictionloss   {joint: value}        dry friction of a joint, absolute (e.g. a cart rail's drag), SI units
  integrator     'euler'|'rk4'|'implicit'|'implicitfast'
  timestep_mult  int k                 timestep*k and frame_skip/k: cheaper, same control period
  preset         name                  start from a preset, the other keys override it
"""
from __future__ import annotations

import copy

import mujoco
import numpy as np

INTEGRATORS = {'euler': mujoco.mjtIntegrator.mjINT_EULER, 'rk4': mujoco.mjtIntegrator.mjINT_RK4,
               'implicit': mujoco.mjtIntegrator.mjINT_IMPLICIT,
               'implicitfast': mujoco.mjtIntegrator.mjINT_IMPLICITFAST}
KNOBS = ('gravity', 'friction', 'mass', 'damping', 'actuator_gain', 'joint_range', 'frictionloss',
         'integrator', 'timestep_mult', 'preset')


def _odrl_presets() -> dict[str, dict]:
    """The off-dynamics shift table (notes/paper.md 3.2; ODRL levels 0.1 and the paper's 0.8/1.2 included)."""
    levels = (0.1, 0.5, 0.8, 1.2, 2.0, 5.0)
    hopper_geoms = ('torso_geom', 'thigh_geom', 'leg_geom', 'foot_geom')
    kinematic_joints = {'hopper': ('leg_joint',), 'walker2d': ('thigh_joint', 'thigh_left_joint'),
                        'halfcheetah': ('bthigh', 'fthigh')}
    presets = {}
    for robot, joints in kinematic_joints.items():
        for s in levels:
            presets[f'{robot}_gravity_{s:.1f}'] = {'gravity': s}
            friction = {g: s for g in hopper_geoms} if robot == 'hopper' else s
            presets[f'{robot}_friction_{s:.1f}'] = {'friction': friction}
        for level, s in (('easy', 0.8), ('medium', 0.5), ('hard', 0.2)):
            presets[f'{robot}_kinematic_{level}'] = {'joint_range': {j: s for j in joints}}
    return presets


PRESETS: dict[str, dict] = {
    'nominal': {},
    **_odrl_presets(),
    # cheap ("drastically different") low-fidelity physics, same control period
    'euler': {'integrator': 'euler'},
    'euler_2x': {'integrator': 'euler', 'timestep_mult': 2},
    'timestep_2x': {'timestep_mult': 2},
    # the cart-pole twin plant's shifted dynamics (stand-in for the real rig)
    'cartpole_pole_mass_1.5': {'mass': {'pole': 1.5}},
    'cartpole_cart_friction': {'frictionloss': {'cart_slider': 0.3}},
    'cartpole_twin': {'mass': {'pole': 1.5}, 'frictionloss': {'cart_slider': 0.3}},
    # the other benchmark settings' HF variants, by name: a ROS parameter holds a name, not a knob dict
    'cartpole_heavy': {'mass': {'pole': 3.0}, 'frictionloss': {'cart_slider': 1.0}},
    'pendulum_gravity_1.2': {'gravity': 1.2},
    'pendulum_gravity_2.0': {'gravity': 2.0},
    'pendulum_pole_mass_5.0': {'mass': {'pole': 5.0}},
    'pendulum_gain_0.5': {'actuator_gain': 0.5},
}


def resolve_variant(variant: str | dict | None) -> dict:
    """A preset name, a knob dict (optionally with 'preset'), None or '' -> a knob dict without 'preset'."""
    if variant is None or variant == '':
        return {}
    if isinstance(variant, str):
        variant = {'preset': variant}
    if not isinstance(variant, dict):
        raise ValueError(f'variant must be a preset name, a dict or None, not {type(variant).__name__}')
    unknown = sorted(set(variant) - set(KNOBS))
    if unknown:
        raise ValueError(f'unknown variant keys {unknown}; valid keys: {list(KNOBS)}')
    out = dict(variant)
    name = out.pop('preset', None)
    if name is not None:
        if name not in PRESETS:
            raise ValueError(f'unknown variant preset {name!r}; valid presets: {sorted(PRESETS)}')
        out = {**PRESETS[name], **out}
    return out


def _ids(model: mujoco.MjModel, obj: mujoco.mjtObj, count: int, spec, knob: str, alias=None) -> dict[int, float]:
    """Expand a float (all elements) or {name: value} into {element id: value}; unknown names raise."""
    if not isinstance(spec, dict):
        return {i: float(spec) for i in range(count)}
    out = {}
    for name, value in spec.items():
        i = mujoco.mj_name2id(model, obj, name)
        if i < 0 and alias is not None:
            i = alias(name)
        if i < 0:
            valid = [mujoco.mj_id2name(model, obj, k) for k in range(count)]
            raise ValueError(f'{knob}: unknown name {name!r}; valid names: {[v for v in valid if v]}')
        out[i] = float(value)
    return out


def _actuator_of_joint(model: mujoco.MjModel, joint: str) -> int:
    j = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, joint)
    hits = np.flatnonzero((model.actuator_trnid[:, 0] == j) & (model.actuator_trntype == 0)) if j >= 0 else []
    return int(hits[0]) if len(hits) else -1


def apply_variant(model: mujoco.MjModel, frame_skip: int, variant: str | dict | None
                  ) -> tuple[mujoco.MjModel, int]:
    """Return (edited copy of model, frame_skip). The input model is left untouched."""
    knobs = resolve_variant(variant)
    m = copy.copy(model)
    obj = mujoco.mjtObj
    if 'gravity' in knobs:
        m.opt.gravity[:] = m.opt.gravity * float(knobs['gravity'])
    for i, s in _ids(m, obj.mjOBJ_GEOM, m.ngeom, knobs.get('friction', {}), 'friction').items():
        m.geom_friction[i] *= s
    for i, s in _ids(m, obj.mjOBJ_BODY, m.nbody, knobs.get('mass', {}), 'mass').items():
        m.body_mass[i] *= s
        m.body_inertia[i] *= s
    for j, s in _ids(m, obj.mjOBJ_JOINT, m.njnt, knobs.get('damping', {}), 'damping').items():
        m.dof_damping[m.jnt_dofadr[j]] *= s
    for a, s in _ids(m, obj.mjOBJ_ACTUATOR, m.nu, knobs.get('actuator_gain', {}), 'actuator_gain',
                     alias=lambda n: _actuator_of_joint(m, n)).items():
        m.actuator_gainprm[a, 0] *= s
    joint_range = knobs.get('joint_range', {})
    for j, s in _ids(m, obj.mjOBJ_JOINT, m.njnt, joint_range, 'joint_range').items():
        if m.jnt_limited[j]:
            m.jnt_range[j] *= s
        elif isinstance(joint_range, dict):
            raise ValueError(f'joint_range: joint {mujoco.mj_id2name(m, obj.mjOBJ_JOINT, j)!r} has no limits')
    frictionloss = knobs.get('frictionloss', {})
    if not isinstance(frictionloss, dict):
        raise ValueError('frictionloss must be a {joint: value} dict')
    for j, v in _ids(m, obj.mjOBJ_JOINT, m.njnt, frictionloss, 'frictionloss').items():
        m.dof_frictionloss[m.jnt_dofadr[j]] = v
    if 'integrator' in knobs:
        if knobs['integrator'] not in INTEGRATORS:
            raise ValueError(f"unknown integrator {knobs['integrator']!r}; valid: {sorted(INTEGRATORS)}")
        m.opt.integrator = INTEGRATORS[knobs['integrator']]
    k = int(knobs.get('timestep_mult', 1))
    if k < 1 or frame_skip % k:
        raise ValueError(f'timestep_mult {k} must be a positive divisor of frame_skip {frame_skip}')
    m.opt.timestep *= k
    if knobs:  # derived constants (subtree masses, invweights, ...) follow the edited fields
        mujoco.mj_setConst(m, mujoco.MjData(m))
    return m, frame_skip // k
