"""Benchmark settings: a named (task, HF variant, LF variant) triple with a gap class.

HF = the shifted plant (the scarce target), LF = the nominal simulator, as in ODRL / the paper (notes §3.1-3.2).
Gap classes are ours (the paper's split is not recovered): shift levels 0.8 / 1.2 / kinematic easy are 'mild',
0.5 / 2.0 / medium 'moderate', 5.0 / hard 'large'. 'drastic' settings give the LF side a coarser simulator
(explicit Euler at twice the timestep) on top of a dynamics shift.
"""
from __future__ import annotations

from dataclasses import dataclass

ROBOTS = {'hopper': 'Hopper-v5', 'walker2d': 'Walker2d-v5', 'halfcheetah': 'HalfCheetah-v5'}
LEVEL_GAP = {0.8: 'mild', 1.2: 'mild', 0.5: 'moderate', 2.0: 'moderate', 5.0: 'large'}
KINEMATIC_GAP = {'easy': 'mild', 'medium': 'moderate', 'hard': 'large'}


@dataclass(frozen=True)
class Setting:
    name: str
    task: str
    hifi: str | dict | None
    lofi: str | dict | None
    gap: str  # mild | moderate | large | drastic
    family: str  # the task family, e.g. 'hopper', 'cartpole' (budgets are set per family)


def _odrl() -> list[Setting]:
    out = []
    for robot, task in ROBOTS.items():
        for shift in ('gravity', 'friction'):
            for level, gap in LEVEL_GAP.items():
                name = f'{robot}_{shift}_{level:.1f}'
                out.append(Setting(name, task, name, None, gap, robot))
        for level, gap in KINEMATIC_GAP.items():
            name = f'{robot}_kinematic_{level}'
            out.append(Setting(name, task, name, None, gap, robot))
    return out


def _small() -> list[Setting]:
    """Cheap settings on the package's URDF cart-pole and on InvertedPendulum-v5."""
    heavy = {'mass': {'pole': 3.0}, 'frictionloss': {'cart_slider': 1.0}}
    return [
        Setting('cartpole_pole_mass_1.5', 'cartpole', 'cartpole_pole_mass_1.5', None, 'mild', 'cartpole'),
        Setting('cartpole_twin', 'cartpole', 'cartpole_twin', None, 'moderate', 'cartpole'),
        Setting('cartpole_heavy', 'cartpole', heavy, None, 'large', 'cartpole'),
        Setting('cartpole_twin_lf_euler_2x', 'cartpole', 'cartpole_twin', 'euler_2x', 'drastic', 'cartpole'),
        Setting('pendulum_gravity_1.2', 'InvertedPendulum-v5', {'gravity': 1.2}, None, 'mild', 'pendulum'),
        Setting('pendulum_gravity_2.0', 'InvertedPendulum-v5', {'gravity': 2.0}, None, 'moderate', 'pendulum'),
        Setting('pendulum_pole_mass_5.0', 'InvertedPendulum-v5', {'mass': {'pole': 5.0}}, None, 'large', 'pendulum'),
        Setting('pendulum_gain_0.5_lf_euler_2x', 'InvertedPendulum-v5', {'actuator_gain': 0.5}, 'euler_2x',
                'drastic', 'pendulum'),
        Setting('hopper_nominal_lf_euler_2x', 'Hopper-v5', None, 'euler_2x', 'drastic', 'hopper'),
        Setting('hopper_gravity_0.8_lf_euler_2x', 'Hopper-v5', 'hopper_gravity_0.8', 'euler_2x', 'drastic', 'hopper'),
    ]


SETTINGS: dict[str, Setting] = {s.name: s for s in (*_odrl(), *_small())}
ODRL_SETTINGS = tuple(s.name for s in _odrl())  # the paper's 39 off-dynamics settings
