"""Learner.update on synthetic segments: the authors' rules (pairing, trimming, c, clamp, skip) hold."""
import dataclasses

import numpy as np
import pytest
import torch

from mfpg_ros.core.algorithms import Learner
from mfpg_ros.core.config import AlgoConfig, EstimatorConfig
from mfpg_ros.core.contract import Contract
from mfpg_ros.core.episode import HIFI, LOFI_PAIRED, LOFI_POOL, Episode
from mfpg_ros.core.estimator import pearson_stats

torch.set_num_threads(1)
CONTRACT = Contract('toy', ('a', 'b', 'c'), ('u',), (-1.0,), (1.0,), 50.0, 2, 2)


def _segment(rng, n, fidelity, rewards=None, eid='', pair_of='', obs=None, actions=None):
    return Episode(obs=obs if obs is not None else rng.standard_normal((n, 3)).astype(np.float32),
                   actions=actions if actions is not None else rng.standard_normal((n, 1)).astype(np.float32),
                   eps=rng.standard_normal((n, 1)), rewards=rng.standard_normal(n) if rewards is None else rewards,
                   qpos0=np.zeros(2), qvel0=np.zeros(2), contract=CONTRACT, policy_version=0, fidelity=fidelity,
                   episode_id=eid, pair_of=pair_of)


def _data(seed=0, lf_sign=1.0, hf_lens=(40, 60), lf_lens=(40, 50)):
    rng = np.random.default_rng(seed)
    hifi, paired = [], []
    for i, (nh, nl) in enumerate(zip(hf_lens, lf_lens)):
        h = _segment(rng, nh, HIFI, eid=f'h{i}')
        n = min(nh, nl)
        lf_rewards = np.concatenate([lf_sign * h.rewards[:n] + 0.3 * rng.standard_normal(n),
                                     rng.standard_normal(nl - n)])
        obs = np.concatenate([h.obs[:n], rng.standard_normal((nl - n, 3)).astype(np.float32)])
        act = np.concatenate([h.actions[:n], rng.standard_normal((nl - n, 1)).astype(np.float32)])
        paired.append(_segment(rng, nl, LOFI_PAIRED, lf_rewards, pair_of=f'h{i}', obs=obs, actions=act))
        hifi.append(h)
    pool = [_segment(rng, 300, LOFI_POOL) for _ in range(3)]
    return hifi, paired, pool


def _learner(**estimator):
    return Learner(AlgoConfig(estimator=EstimatorConfig(**estimator)), CONTRACT, seed=3)


def _weights(learner):
    return torch.cat([p.detach().flatten() for p in learner.model.parameters()])


def test_same_seed_same_update():
    a, b = _learner(), _learner()
    ma, mb = a.update(*_data()), b.update(*_data())
    assert torch.equal(_weights(a), _weights(b)) and ma['c'] == mb['c']
    assert a.version == 1


def test_first_iteration_c_is_minus_rho_sigma_ratio_on_trimmed_pairs():
    learner = _learner()
    hifi, paired, pool = _data()
    m = learner.update(hifi, paired, pool)
    assert m['n_aligned'] == 40 + 50  # each pair cut to the shorter segment
    assert m['rho'] > 0.5
    assert m['c'] == pytest.approx(-m['rho'] * m['sigma_h'] / m['sigma_l'])
    assert m['var_ratio'] < 1.0


def test_negative_batch_rho_clamps_c_to_zero_unless_disabled():
    m = _learner().update(*_data(lf_sign=-1.0))
    assert m['rho'] < 0 and m['c'] == 0.0
    assert _learner(clamp_negative_rho=False).update(*_data(lf_sign=-1.0))['c'] > 0


def test_mf_with_c_zero_equals_hf_only_reinforce_when_nothing_is_trimmed():
    hifi, paired, pool = _data(lf_lens=(40, 60))
    mf = _learner(fixed_c=0.0)
    mf.update(hifi, paired, pool)
    hf_only = Learner(AlgoConfig(algorithm='reinforce'), CONTRACT, seed=3)
    hf_only.update(hifi)
    assert torch.allclose(_weights(mf), _weights(hf_only), atol=1e-7)


def test_update_skipped_with_too_few_aligned_steps():
    learner = _learner()
    before = _weights(learner).clone()
    m = learner.update(*_data(hf_lens=(10, 10), lf_lens=(5, 5)))
    assert m['skipped'] == 1.0 and torch.equal(before, _weights(learner))
    assert learner.version == 1  # the version still advances: the data was consumed


def test_estimator_switches():
    data = _data()
    prev = _learner(c_from_previous=True)
    assert prev.update(*data)['c'] == 0.0  # nothing earlier to estimate from
    assert prev.update(*_data(seed=1))['c'] != 0.0
    vec = _learner(vector_c=True).update(*data)
    assert np.isfinite(vec['c']) and vec['c'] < 0
    quirk = _learner(permutation_quirk=True).update(*data)
    plain = _learner().update(*data)
    assert quirk['rho'] != plain['rho']
    pool_only = _learner(mu_from_pool_only=True)
    pool_only.update(*data)
    assert not torch.equal(_weights(pool_only), _weights(_learner()))


def test_aborted_segments_are_not_used():
    hifi, paired, pool = _data()
    for e in pool:
        e.aborted = True
    m = _learner().update(hifi, paired, pool)
    assert m['lf_steps'] == sum(len(p) for p in paired)


def test_unpaired_hf_segments_are_dropped_from_the_mf_term():
    hifi, paired, pool = _data()
    m = _learner().update(hifi, paired[:1], pool)
    assert m['n_pairs'] == 1 and m['n_aligned'] == 40


def test_pearson_of_identical_surrogates_is_one():
    x = np.arange(10.0)
    assert pearson_stats(x, x)[0] == pytest.approx(1.0)


def _clipped_grads(clip_mode, vf_coef, algorithm='mf_reinforce'):
    """Gradients after clipping (the optimiser step is disabled), split into policy and value parameters."""
    learner = Learner(AlgoConfig(algorithm=algorithm, clip_mode=clip_mode, vf_coef=vf_coef), CONTRACT, seed=3)
    learner.optimizer.step = lambda: None
    m = learner.update(*_data())
    named = list(learner.model.named_parameters())
    policy = torch.cat([p.grad.flatten() for n, p in named if not n.startswith('vf.')])
    value = torch.cat([p.grad.flatten() for n, p in named if n.startswith('vf.')])
    return policy, value, m


@pytest.mark.parametrize('algorithm', ['mf_reinforce', 'reinforce'])
def test_separate_clip_makes_the_policy_step_independent_of_the_value_loss(algorithm):
    pi_1, vf_1, m_1 = _clipped_grads('separate', 1.0, algorithm)
    pi_100, vf_100, m_100 = _clipped_grads('separate', 100.0, algorithm)
    assert m_1['value_grad_norm'] > 1.0  # the critic's gradient is clipped, as in the benchmark runs
    assert m_100['value_grad_norm'] == pytest.approx(100 * m_1['value_grad_norm'], rel=1e-4)
    assert m_100['policy_grad_norm'] == m_1['policy_grad_norm']
    assert torch.equal(pi_1, pi_100)  # the value loss scale no longer reaches the policy step
    assert float(pi_1.norm()) == pytest.approx(min(1.0, m_1['policy_grad_norm']), rel=1e-5)  # each group on its own
    assert float(vf_1.norm()) == pytest.approx(1.0, rel=1e-5) and float(vf_100.norm()) == pytest.approx(1.0, rel=1e-5)
    assert m_1['grad_norm'] == pytest.approx(np.hypot(m_1['policy_grad_norm'], m_1['value_grad_norm']), rel=1e-6)
    joint_1, _, j_1 = _clipped_grads('joint', 1.0, algorithm)
    joint_100, _, _ = _clipped_grads('joint', 100.0, algorithm)
    assert not torch.allclose(joint_1, joint_100)  # joint: a bigger critic error shrinks the policy step
    assert float(joint_100.norm()) < float(joint_1.norm())
    assert j_1['grad_norm'] == pytest.approx(np.hypot(j_1['policy_grad_norm'], j_1['value_grad_norm']), rel=1e-5)


def test_clip_mode_is_validated():
    with pytest.raises(ValueError, match='clip_mode'):
        AlgoConfig(clip_mode='both')
    with pytest.raises(ValueError, match='not implemented'):
        AlgoConfig(algorithm='ppo', clip_mode='separate')


def _pool_of(rng, version=0, aborted=False):
    return dataclasses.replace(_segment(rng, 120, LOFI_POOL), policy_version=version, aborted=aborted)


@pytest.mark.parametrize('mu_from_pool_only', [False, True])
@pytest.mark.parametrize('pieces', [[2, 2, 3], [1]], ids=['whole pool, in pieces', 'part of it'])
def test_a_pool_prefetched_piece_by_piece_gives_the_gradient_and_update_of_the_whole_pool(pieces, mu_from_pool_only):
    """The learner node sums the pool's term as its batches arrive; neither gradient nor update may change by it."""
    hifi, paired, pool = _data()
    rng = np.random.default_rng(5)
    pool = [*pool, _pool_of(rng, aborted=True)]  # an unstable rollout: left out either way
    reference, prefetching = (_learner(mu_from_pool_only=mu_from_pool_only) for _ in range(2))
    for n in pieces:  # a repeat is summed once, a next-version rollout not at all
        prefetching.prefetch_pool(pool[:n] + [_pool_of(rng, version=1)])
    covered = 300 * min(3, max(pieces))
    assert prefetching.prefetched.steps == covered
    g_ref, _ = reference.policy_gradient(hifi, paired, pool)
    g, _ = prefetching.policy_gradient(hifi, paired, pool)
    assert torch.allclose(g, g_ref, rtol=1e-5, atol=1e-7) and not torch.equal(g, torch.zeros_like(g))
    expected, got = reference.update(hifi, paired, pool), prefetching.update(hifi, paired, pool)
    assert got['pool_steps_prefetched'] == covered and expected['pool_steps_prefetched'] == 0
    for name in ('c', 'var_with_cv', 'policy_loss', 'policy_grad_norm'):
        assert got[name] == pytest.approx(expected[name], rel=1e-5), name
    assert torch.allclose(_weights(prefetching), _weights(reference), atol=1e-6)
    assert prefetching.prefetched.steps == 0  # the next version starts empty


def test_a_prefetched_pool_is_not_used_for_an_update_without_it():
    """A low-fidelity timeout turns the update HF-only: what was prefetched must not leak into it."""
    hifi, paired, pool = _data()
    reference, prefetching = _learner(), _learner()
    reference.update(hifi, paired, pool[:1])
    prefetching.prefetch_pool(pool)
    assert prefetching.update(hifi, paired, pool[:1])['pool_steps_prefetched'] == 0
    assert torch.allclose(_weights(prefetching), _weights(reference), atol=1e-6)
    hf_only, after_prefetch = _learner(), _learner()
    hf_only.update(hifi, paired, [])
    after_prefetch.prefetch_pool(pool)
    after_prefetch.update(hifi, paired, [])
    assert torch.equal(_weights(after_prefetch), _weights(hf_only))


@pytest.mark.parametrize('algorithm', ['mf_reinforce', 'reinforce', 'mf_ppo', 'ppo'])
@pytest.mark.parametrize('too_short', [False, True], ids=['stepped', 'skipped'])  # skipped: no step, c still fitted
def test_an_update_that_would_leave_nan_weights_is_undone_and_training_goes_on(algorithm, too_short):
    from mfpg_ros.core.learners import make_learner
    learner = make_learner(AlgoConfig(algorithm=algorithm), CONTRACT, seed=3)
    learner.update(*_data(seed=1))  # so the optimiser has moments to lose
    weights, coefficient = _weights(learner).clone(), learner.coef.state()
    state = {k: v.clone() for k, v in learner.optimizer.state_dict()['state'][0].items()}
    hifi, paired, pool = _data(seed=2, **({'hf_lens': (10, 10), 'lf_lens': (10, 10)} if too_short else {}))
    for h in hifi:
        h.rewards = h.rewards * 1e39  # finite (float64), so the codec passes them; in float32 they overflow
    m = learner.update(hifi, paired, pool)
    assert m['skipped'] == 1.0 and learner.version == 2 and (too_short or m['nonfinite_update'] == 1.0)
    assert torch.equal(_weights(learner), weights) and learner.coef.state() == coefficient
    assert all(torch.equal(v, state[k]) for k, v in learner.optimizer.state_dict()['state'][0].items())
    m = learner.update(*_data(seed=4))
    assert m['nonfinite_update'] == 0.0 and m['skipped'] == 0.0 and learner.version == 3
    assert torch.isfinite(_weights(learner)).all() and not torch.equal(_weights(learner), weights)
