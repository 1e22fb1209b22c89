"""Tasks, variants and the cart-pole description: parity with Gymnasium v5, knobs, presets, URDF."""
import os
import xml.etree.ElementTree as ET

import gymnasium
import mujoco
import numpy as np
import pytest
import torch

from mfpg_ros.core.episode import Episode
from mfpg_ros.core.numpy_policy import NumpyPolicy
from mfpg_ros.core.policy import ActorCritic
from mfpg_ros.sim.cartpole import urdf_path
from mfpg_ros.sim.engine import Engine, Sims

from mfpg_ros.sim.tasks import make_task
from mfpg_ros.sim.variants import PRESETS, apply_variant

torch.set_num_threads(1)
GYM_TASKS = ['InvertedPendulum-v5', 'Hopper-v5', 'Walker2d-v5', 'HalfCheetah-v5']


def zero_mean_policy(task) -> NumpyPolicy:
    """mu(s) = 0 and sigma = 1, so an action is exactly its eps."""
    policy = NumpyPolicy(ActorCritic(task.contract.obs_dim, task.contract.act_dim))
    for w, b in policy.layers[-1:]:
        w[:] = 0.0
        b[:] = 0.0
    return policy


@pytest.mark.parametrize('name', GYM_TASKS)
def test_gym_parity_bitwise(name):
    """Same start state (Gymnasium's own reset), same actions: identical obs, rewards, terminations."""
    task, env = make_task(name), gymnasium.make(name)
    u = env.unwrapped
    assert task.frame_skip == u.frame_skip and task.dt == u.dt
    assert task.max_episode_steps == env.spec.max_episode_steps
    rng = np.random.default_rng(0)
    steps = 0
    for episode in range(8):
        env.reset(seed=episode)
        qpos0, qvel0 = task.reset_state(np.random.default_rng(episode), 1)  # same generator as reset(seed)
        np.testing.assert_array_equal(qpos0[0], u.data.qpos)
        np.testing.assert_array_equal(qvel0[0], u.data.qvel)
        sims = Sims(task, 1, 1)
        sims.reset(np.arange(1), qpos0, qvel0)
        for _ in range(150):
            action = task.clip_action(rng.normal(0.0, 1.0, (1, task.contract.act_dim)))
            obs, reward, terminated, _, _ = env.step(action[0])
            qpos_before = sims.qpos.copy()
            assert sims.step(action) is None  # no row diverged
            np.testing.assert_array_equal(task.observe(sims.qpos, sims.qvel)[0], obs)
            assert task.step_reward(qpos_before, sims.qpos, sims.qvel, action)[0] == reward
            assert task.terminated(sims.qpos, sims.qvel)[0] == terminated
            assert task.outcome(qpos_before, sims.qpos, sims.qvel, action) == ([reward], [terminated])
            steps += 1
            if terminated:
                break
    assert steps >= 40  # several episodes, each to termination or 150 steps


@pytest.mark.parametrize('name', GYM_TASKS)
def test_engine_replay_matches_gym(name):
    """The engine's own loop (replay with mu = 0, so action = eps) against Gymnasium stepped by hand."""
    task, env = make_task(name), gymnasium.make(name)
    u = env.unwrapped
    env.reset(seed=5)
    eps = np.random.default_rng(1).normal(0.0, 0.5, (60, task.contract.act_dim))
    hf = Episode(obs=np.zeros((60, task.contract.obs_dim), np.float32), actions=eps.astype(np.float32), eps=eps,
                 rewards=np.zeros(60), qpos0=u.data.qpos.copy(), qvel0=u.data.qvel.copy(), contract=task.contract,
                 policy_version=0, episode_id='hf-0')
    lf = Engine(task, 2, seed=0).replay(zero_mean_policy(task), [hf], version=0)[0]
    gym_obs, gym_rewards, gym_terminated = [u._get_obs()], [], False
    for a in eps[:len(lf)]:
        obs, reward, gym_terminated, _, _ = env.step(task.clip_action(a[None])[0])
        gym_obs.append(obs)
        gym_rewards.append(reward)
        if gym_terminated:
            break
    assert len(lf) == len(gym_rewards) and lf.terminated == gym_terminated and lf.pair_of == 'hf-0'
    np.testing.assert_array_equal(lf.obs, np.asarray(gym_obs[:len(lf)], np.float32))
    np.testing.assert_array_equal(lf.rewards, np.asarray(gym_rewards, np.float64))
    np.testing.assert_array_equal(lf.actions, eps[:len(lf)].astype(np.float32))


@pytest.mark.parametrize('name', GYM_TASKS + ['cartpole'])
def test_reset_distribution(name):
    task = make_task(name)
    qpos, qvel = task.reset_state(np.random.default_rng(0), 2000)
    assert qpos.shape == (2000, task.model.nq) and qvel.shape == (2000, task.model.nv)
    s = task.reset_noise_scale
    assert np.abs(qpos - task.init_qpos).max() <= s
    np.testing.assert_allclose((qpos - task.init_qpos).std(axis=0), s / np.sqrt(3), rtol=0.1)  # uniform(-s, s)
    qvel_std = s if name == 'HalfCheetah-v5' else s / np.sqrt(3)  # HalfCheetah: normal qvel noise
    np.testing.assert_allclose(qvel.std(axis=0), qvel_std, rtol=0.1)


def test_time_limit_synced_from_start_step():
    task = make_task('HalfCheetah-v5')  # never terminates: only the time limit can end a replay
    eps = np.zeros((10, 6))
    hf = Episode(obs=np.zeros((10, 17), np.float32), actions=np.zeros((10, 6), np.float32), eps=eps,
                 rewards=np.zeros(10), qpos0=task.init_qpos.copy(), qvel0=task.init_qvel.copy(),
                 contract=task.contract, policy_version=0, start_step=995)
    lf = Engine(task, 1, seed=0).replay(zero_mean_policy(task), [hf], 0)[0]
    assert len(lf) == 5 and lf.truncated and not lf.terminated and lf.start_step == 995


# --- variants ------------------------------------------------------------------------------------------------
def test_variant_knobs_change_the_model():
    base = make_task('Hopper-v5').model
    m, fs = apply_variant(base, 4, {'gravity': 0.5, 'friction': 2.0, 'mass': 1.5, 'damping': 3.0,
                                    'actuator_gain': {'foot_joint': 0.5}, 'joint_range': {'leg_joint': 0.2},
                                    'frictionloss': {'thigh_joint': 0.1}, 'integrator': 'euler',
                                    'timestep_mult': 2})
    np.testing.assert_allclose(m.opt.gravity, 0.5 * base.opt.gravity)
    np.testing.assert_allclose(m.geom_friction, 2.0 * base.geom_friction)  # every geom, floor (geom 0) included
    np.testing.assert_allclose(m.body_mass, 1.5 * base.body_mass)
    np.testing.assert_allclose(m.body_inertia, 1.5 * base.body_inertia)
    np.testing.assert_allclose(m.body_subtreemass, 1.5 * base.body_subtreemass)  # mj_setConst ran
    np.testing.assert_allclose(m.dof_damping, 3.0 * base.dof_damping)
    np.testing.assert_allclose(m.actuator_gainprm[:, 0], [1.0, 1.0, 0.5])
    leg = base.joint('leg_joint').id
    np.testing.assert_allclose(m.jnt_range[leg], 0.2 * base.jnt_range[leg])
    np.testing.assert_allclose(np.delete(m.jnt_range, leg, 0), np.delete(base.jnt_range, leg, 0))
    assert m.dof_frictionloss[base.joint('thigh_joint').dofadr[0]] == 0.1
    assert m.opt.integrator == mujoco.mjtIntegrator.mjINT_EULER
    assert m.opt.timestep == 2 * base.opt.timestep and fs == 2
    assert base.opt.gravity[2] == -9.81 and base.opt.integrator == mujoco.mjtIntegrator.mjINT_RK4  # untouched


def test_cheap_variant_keeps_control_period():
    nominal, cheap = make_task('Hopper-v5'), make_task('Hopper-v5', 'euler_2x')
    assert cheap.frame_skip == 2 and cheap.dt == nominal.dt and cheap.contract == nominal.contract


def test_odrl_presets():
    hopper = make_task('Hopper-v5', 'hopper_friction_0.5').model
    np.testing.assert_allclose(hopper.geom_friction[1:, 0], [0.45, 0.45, 0.45, 1.0])
    assert hopper.geom_friction[0, 0] == 1.0  # ODRL leaves the Hopper floor alone (max rule: contact mu 1.0)
    assert make_task('Walker2d-v5', 'walker2d_friction_2.0').model.geom_friction[0, 0] == pytest.approx(1.4)
    assert make_task('HalfCheetah-v5', 'halfcheetah_gravity_5.0').model.opt.gravity[2] == pytest.approx(-49.05)
    walker = make_task('Walker2d-v5', 'walker2d_kinematic_medium').model
    np.testing.assert_allclose(np.degrees(walker.joint('thigh_left_joint').range), [-75, 0])
    cheetah = make_task('HalfCheetah-v5', 'halfcheetah_kinematic_hard').model
    np.testing.assert_allclose(cheetah.joint('fthigh').range, [-0.2, 0.14])
    robots = {'hopper': 'Hopper-v5', 'walker2d': 'Walker2d-v5', 'halfcheetah': 'HalfCheetah-v5', 'cartpole': 'cartpole',
              'pendulum': 'InvertedPendulum-v5'}
    for preset in PRESETS:
        robot = preset.split('_')[0]
        for name in ([robots[robot]] if robot in robots else ['Hopper-v5', 'cartpole']):
            assert make_task(name, preset).model is not None, preset


def test_every_benchmark_variant_has_a_preset_name():
    """The node graph takes variants as ROS parameters, i.e. by name: every knob dict of a benchmark setting has one."""
    from mfpg_ros.bench.settings import SETTINGS
    dicts = [v for s in SETTINGS.values() for v in (s.hifi, s.lofi) if isinstance(v, dict)]
    assert dicts and all(v in PRESETS.values() for v in dicts)


def test_unknown_names_raise():
    with pytest.raises(ValueError, match='valid presets'):
        make_task('Hopper-v5', 'hopper_gravity_0.3')
    with pytest.raises(ValueError, match='valid keys'):
        make_task('Hopper-v5', {'gravty': 0.5})
    with pytest.raises(ValueError, match='valid names'):
        make_task('Hopper-v5', {'joint_range': {'knee': 0.5}})
    with pytest.raises(ValueError, match='divisor'):
        make_task('HalfCheetah-v5', 'euler_2x')  # frame_skip 5
    with pytest.raises(ValueError, match='valid tasks'):
        make_task('Ant-v5')
    assert make_task('Hopper-v5', {'preset': 'hopper_gravity_0.5', 'damping': 2.0}).variant == {
        'gravity': 0.5, 'damping': 2.0}


# --- cart-pole -----------------------------------------------------------------------------------------------
def test_cartpole_urdf_has_ros2_control():
    root = ET.parse(urdf_path()).getroot()
    joints = {j.get('name'): j.get('type') for j in root.findall('joint')}
    assert joints['cart_slider'] == 'prismatic' and joints['pole_hinge'] == 'revolute'
    system = root.find('ros2_control')
    assert system.get('type') == 'system' and system.find('hardware/plugin').text.strip()
    interfaces = {j.get('name'): j for j in system.findall('joint')}
    assert [c.get('name') for c in interfaces['cart_slider'].findall('command_interface')] == ['effort']
    for joint in ('cart_slider', 'pole_hinge'):
        assert [s.get('name') for s in interfaces[joint].findall('state_interface')] == ['position', 'velocity']
    assert not interfaces['pole_hinge'].findall('command_interface')


def test_cartpole_task():
    task = make_task('cartpole')
    c = task.contract
    assert task.joint_names == ['cart_slider', 'pole_hinge'] and c.act_dim == 1 and c.obs_dim == 4
    assert c.action_names == ('cart_slider.effort',) and (c.action_low, c.action_high) == ((-1.0,), (1.0,))
    assert c.control_rate_hz == pytest.approx(50.0) and task.max_episode_steps == 500 and (c.nq, c.nv) == (2, 2)
    assert task.effort_per_action[0] == 10.0  # the URDF's effort limit
    data = task.new_data()
    task.set_state(data, np.array([0.0, 0.05]), np.zeros(2))
    assert task.step(data, np.array([1.0])) and data.time == pytest.approx(task.dt)
    assert data.qvel[0] > 0  # pushed along +x
    qpos = np.array([[0.0, 0.19], [0.0, 0.21], [2.36, 0.0], [-2.36, 0.0]])
    np.testing.assert_array_equal(task.terminated(qpos, np.zeros((4, 2))), [False, True, True, True])
    twin = make_task('cartpole', 'cartpole_twin').model
    assert twin.body('pole').mass[0] == pytest.approx(0.15)


def test_single_data_step_flags_divergence():
    task = make_task('Hopper-v5')
    data = task.new_data()
    qvel = task.init_qvel.copy()
    qvel[0] = 1e12
    task.set_state(data, task.init_qpos, qvel)
    assert not task.step(data, np.zeros(3))  # MuJoCo warned and reset the state itself
    task.set_state(data, task.init_qpos, task.init_qvel)
    assert task.step(data, np.zeros(3))


def test_gym_assets_are_the_installed_ones():
    import gymnasium
    from mfpg_ros.sim.tasks import GYM_ASSETS
    assert os.path.samefile(GYM_ASSETS, os.path.join(os.path.dirname(gymnasium.__file__), 'envs', 'mujoco', 'assets'))


def test_joint_range_float_scales_limited_joints_only():
    base = make_task('Walker2d-v5').model
    m, _ = apply_variant(base, 4, {'joint_range': 0.5})
    limited = base.jnt_limited.astype(bool)
    np.testing.assert_allclose(m.jnt_range[limited], 0.5 * base.jnt_range[limited])
    with pytest.raises(ValueError, match='no limits'):
        apply_variant(base, 4, {'joint_range': {'rootz': 0.5}})
