"""The vectorised LF engine: segment bookkeeping, determinism, paired replays, instability handling."""
import dataclasses

import numpy as np
import pytest
import torch

from mfpg_ros.core.episode import HIFI, LOFI_PAIRED, LOFI_POOL
from mfpg_ros.core.numpy_policy import NumpyPolicy
from mfpg_ros.core.policy import ActorCritic
from mfpg_ros.sim.engine import Engine, policy_mean
from mfpg_ros.sim.tasks import make_task

torch.set_num_threads(1)


def random_policy(task, seed=0) -> NumpyPolicy:
    torch.manual_seed(seed)
    return NumpyPolicy(ActorCritic(task.contract.obs_dim, task.contract.act_dim))


def by_env(segments):
    out = {}
    for s in segments:
        out.setdefault(int(s.extras['env']), []).append(s)
    return out


def test_collect_segments_cover_every_step_and_continue_across_calls():
    task = make_task('Hopper-v5')
    policy, engine = random_policy(task), Engine(task, n_envs=3, seed=1)
    first = engine.collect(policy, 150, version=4, fidelity=LOFI_POOL)
    second = engine.collect(policy, 150, version=5, fidelity=LOFI_POOL)
    for env, segs in by_env(first).items():
        assert sum(len(s) for s in segs) == 150
        for a, b in zip(segs, segs[1:]):  # cut only at episode ends inside a call
            assert (a.terminated or a.truncated) and b.start_step == 0
        last, nxt = segs[-1], by_env(second)[env][0]
        assert last.truncated and not last.terminated
        assert nxt.start_step == last.start_step + len(last)  # the episode continues in the next call
    s = first[0]
    assert s.obs.dtype == np.float32 and s.actions.dtype == np.float32 and s.eps.dtype == np.float64
    assert s.rewards.dtype == np.float64 and s.qpos0.dtype == np.float64 and s.qpos0.shape == (6,)
    assert s.policy_version == 4 and s.fidelity == LOFI_POOL and s.contract == task.contract
    assert len({s.episode_id for s in first + second}) == len(first + second)
    assert any(s.terminated for s in first)  # a random hopper falls within 150 steps
    # actions are the unclipped samples mu(s) + sigma * eps of the recorded observation
    np.testing.assert_allclose(s.actions, policy.sample(s.obs.astype(np.float64), s.eps), atol=1e-5)
    assert np.abs(np.concatenate([s.actions for s in first])).max() > 1.0  # some exceed the +-1 bounds


def test_collect_is_deterministic_and_thread_count_invariant():
    task = make_task('Walker2d-v5')
    policy = random_policy(task)
    runs = [Engine(task, 5, seed=3, nthread=n).collect(policy, 120, 0, LOFI_POOL) for n in (1, 2, 2, 3)]
    for other in runs[1:]:
        assert len(other) == len(runs[0])
        for a, b in zip(runs[0], other):
            np.testing.assert_array_equal(a.obs, b.obs)
            np.testing.assert_array_equal(a.rewards, b.rewards)
            np.testing.assert_array_equal(a.eps, b.eps)


@pytest.mark.parametrize('nthread', [1, 2])
def test_collect_in_pieces_hands_out_each_segment_once_as_it_ends(nthread):
    """lofi_sim streams its pool: `pieces` parts, each handing over the segments that ended in it."""
    task = make_task('Hopper-v5')
    policy = random_policy(task)
    whole = Engine(task, 4, seed=2, nthread=nthread).collect(policy, 120, 0, LOFI_POOL)
    handed = []
    returned = Engine(task, 4, seed=2, nthread=nthread).collect(policy, 120, 0, LOFI_POOL, emit=handed.append,
                                                                 pieces=3)
    assert [e for part in handed for e in part] == returned and len(handed) == 3
    part_of = {id(e): k for k, part in enumerate(handed) for e in part}
    for segments in by_env(returned).values():  # per env in time order: each handed out in the part it ended in
        ends = np.cumsum([len(e) for e in segments])
        assert ends[-1] == 120
        for e, end in zip(segments, ends):
            k = part_of[id(e)]
            assert 40 * k < end <= 40 * (k + 1) and (e.terminated or k == 2)
    assert len(whole) == len(returned)
    for a, b in zip(*(sorted(run, key=lambda e: (e.extras['env'], e.episode_id.split('-')[-1].zfill(9)))
                      for run in (whole, returned))):
        np.testing.assert_array_equal(a.obs, b.obs)
        np.testing.assert_array_equal(a.eps, b.eps)
        assert (a.terminated, a.truncated, a.start_step) == (b.terminated, b.truncated, b.start_step)


def test_policy_mean_is_batch_size_invariant():
    task = make_task('Hopper-v5')
    policy = random_policy(task)
    for w, _ in policy.layers:
        w[:] = np.random.default_rng(0).normal(size=w.shape)
    obs = np.random.default_rng(1).normal(size=(37, 11))
    single = np.concatenate([policy.mean(obs[i:i + 1]) for i in range(37)])
    for n in (1, 5, 9, 37):
        np.testing.assert_array_equal(policy_mean(policy, obs[:n]), single[:n])


@pytest.mark.parametrize('name', ['Hopper-v5', 'cartpole'])
def test_replay_on_identical_dynamics_is_bitwise(name):
    """Same s0, same eps, same dynamics: the paired replay reproduces the HF segment exactly. Segments that start
    at a reset are bit-identical everywhere; a segment continuing an episode across calls also carries the solver's
    warm start, which (qpos, qvel) do not, so with contacts (Hopper) it may differ in the last bits."""
    task = make_task(name)
    policy = random_policy(task)
    hf_engine = Engine(task, n_envs=1, seed=11, nthread=1)
    hf = [s for it in range(6) for s in hf_engine.collect(policy, 100, it, HIFI)]
    lf = Engine(task, n_envs=9, seed=12).replay(policy, hf, version=5)
    assert len(lf) == len(hf) and all(b.fidelity == LOFI_PAIRED and b.pair_of == a.episode_id for a, b in zip(hf, lf))
    ends_episode = [True] + [a.terminated or a.start_step + len(a) >= task.max_episode_steps for a in hf[:-1]]
    for a, b, fresh in zip(hf, lf, ends_episode):
        assert len(a) == len(b) and a.terminated == b.terminated and b.start_step == a.start_step
        np.testing.assert_array_equal(a.eps, b.eps)
        if fresh or name == 'cartpole':
            np.testing.assert_array_equal(a.obs, b.obs)
            np.testing.assert_array_equal(a.actions, b.actions)
            np.testing.assert_array_equal(a.rewards, b.rewards)
        else:
            np.testing.assert_allclose(a.rewards, b.rewards, rtol=0, atol=1e-9)
    assert sum(ends_episode) >= 10


def test_replay_on_shifted_dynamics_is_correlated():
    """Hopper with gravity x0.5 as HF, nominal as LF: per-step rewards of aligned pairs correlate strongly under
    common random numbers, and barely with independent noise (same s0, fresh eps)."""
    lf_task, hf_task = make_task('Hopper-v5'), make_task('Hopper-v5', 'hopper_gravity_0.5')
    policy = random_policy(lf_task)
    hf_engine = Engine(hf_task, n_envs=1, seed=7, nthread=1)
    hf = [s for it in range(15) for s in hf_engine.collect(policy, 100, it, HIFI)]
    lf_engine = Engine(lf_task, n_envs=9, seed=8)
    rng = np.random.default_rng(0)
    fresh = [dataclasses.replace(s, eps=rng.standard_normal(s.eps.shape)) for s in hf]

    def step_rho(replays):
        n = [min(len(a), len(b)) for a, b in zip(hf, replays)]
        x = np.concatenate([a.rewards[:k] for a, k in zip(hf, n)])
        y = np.concatenate([b.rewards[:k] for b, k in zip(replays, n)])
        return np.corrcoef(x, y)[0, 1], len(x)

    rho, n = step_rho(lf_engine.replay(policy, hf, 0))
    rho_indep, _ = step_rho(lf_engine.replay(policy, fresh, 0))
    print(f'hopper gravity 0.5 vs nominal: {len(hf)} pairs, {n} aligned steps, '
          f'rho(step reward) CRN {rho:.3f}, independent noise {rho_indep:.3f}')
    assert rho > 0.8 and rho - rho_indep > 0.5


def test_pool_instability_is_flagged_and_reset():
    task = make_task('Hopper-v5')
    policy, engine = random_policy(task), Engine(task, n_envs=4, seed=2)
    sims, row = engine.lane_of(2)
    sims.qvel[row, 0] = 1e12  # MuJoCo will warn and silently reset this one
    segments = engine.collect(policy, 50, 0, LOFI_POOL)
    bad = [s for s in segments if s.aborted]
    assert len(bad) == 1 and int(bad[0].extras['env']) == 2 and bad[0].extras['unstable'] == 1
    assert len(bad[0]) == 1 and bad[0].truncated and not bad[0].terminated and bad[0].rewards[0] == 0.0
    assert engine.unstable_count == 1
    assert all(sum(len(s) for s in segs) == 50 for segs in by_env(segments).values())
    following = by_env(segments)[2][1]
    assert following.start_step == 0 and not following.aborted  # fresh episode after the reset


def test_absurd_timestep_is_never_silently_used():
    task = make_task('Hopper-v5', {'damping': 1.0})
    task.model.opt.timestep = 0.5  # no warning from MuJoCo for this one: garbage must be caught by our checks
    task.dt = task.model.opt.timestep * task.frame_skip
    segments = Engine(task, n_envs=4, seed=0).collect(random_policy(task), 30, 0, LOFI_POOL)
    bad = [s for s in segments if s.aborted]
    assert bad and all(s.extras['unstable'] == 1 for s in bad)
    for s in segments:
        assert np.isfinite(s.obs).all() and np.isfinite(s.rewards).all()


def test_replay_instability_aborts_the_pair():
    task = make_task('Hopper-v5')
    policy = random_policy(task)
    hf = Engine(task, 1, seed=0, nthread=1).collect(policy, 40, 0, HIFI)
    broken = dataclasses.replace(hf[0], qvel0=np.full(6, 1e12), episode_id='broken')
    out = Engine(task, 2, seed=1).replay(policy, [broken, hf[0]], 0)
    assert out[0].aborted and out[0].extras['unstable'] == 1 and len(out[0]) == 1
    assert not out[1].aborted and len(out[1]) == len(hf[0])


def test_evaluate_is_deterministic_and_bounded():
    task = make_task('cartpole')
    policy = random_policy(task)
    returns = Engine(task, 1, seed=4).evaluate(policy, 6)
    again = Engine(task, 1, seed=4).evaluate(policy, 6)
    assert returns.shape == (6,) and (returns == again).all()
    assert ((returns >= 1) & (returns <= task.max_episode_steps)).all()


def test_throughput_physics_limit_is_the_engines_own_physics(capsys):
    """The benchmark's physics limit replays the engine's recorded states and controls open loop: one control
    period from each recorded state lands on the engine's next state for every env not reset in between."""
    import mujoco

    from mfpg_ros.bench import throughput
    task = make_task('Hopper-v5')
    policy = random_policy(task)
    initial, warmstart, control = throughput.record_workload(task, policy, 4, seed=0, nthread=1, warmup=5, steps=30)
    assert initial.shape[0] == control.shape[0] == 4 * 30 and control.shape[1] == task.frame_skip
    state, _ = mujoco.rollout.rollout(task.model, mujoco.MjData(task.model), initial, control,
                                      nstep=task.frame_skip, initial_warmstart=warmstart)
    nq, nv = task.model.nq, task.model.nv
    after = state[:-4, -1, 1:1 + nq + nv]  # rows of step t, env order; the next step's start is 4 rows on
    next_start = initial[4:, 1:1 + nq + nv]
    continued = initial[4:, 0] > 0  # a reset row starts again at time 0
    assert continued.mean() > 0.5
    np.testing.assert_array_equal(after[continued], next_start[continued])

    assert throughput.main(['--task', 'InvertedPendulum-v5', '--envs', '2', '--large-envs', '3', '--steps', '20',
                            '--rounds', '2']) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-2].startswith('lofi_engine_vs_physics_limit: ') and lines[-1].startswith('lofi_engine_vs_gymnasium: ')
    assert all(float(line.split(': ')[1]) > 0 for line in lines[-2:])
