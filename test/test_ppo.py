"""PPO / MF-PPO (mfpg_ros/core/ppo.py) under the paper pairing (matched: test_pairing.py): c = 0 is plain PPO bit
for bit; the first-minibatch MF gradient is unbiased on a closed-form linear-Gaussian problem and has lower variance
at a good c; metrics, checkpoints, config, factory."""
import copy
import math

import numpy as np
import pytest
import torch

from mfpg_ros.core.algorithms import Learner
from mfpg_ros.core.checkpoint import load_checkpoint, save_checkpoint
from mfpg_ros.core.config import AlgoConfig, EstimatorConfig, PPOConfig, load_config
from mfpg_ros.core.contract import Contract
from mfpg_ros.core.episode import HIFI, LOFI_PAIRED, LOFI_POOL, Episode
from mfpg_ros.core.learners import make_learner
from mfpg_ros.core.ppo import PPOLearner, gae

torch.set_num_threads(1)
TOY = Contract('toy', ('a', 'b', 'c'), ('u',), (-1.0,), (1.0,), 50.0, 2, 2)
LINE = Contract('line', ('s',), ('u',), (-10.0,), (10.0,), 50.0, 1, 1)
# one-step task: s ~ N(0, 1), a = theta s + sigma eps, r = -(a - k s)^2; the LF twin sees s * STATE_SHIFT, wants K_LF
THETA, SIGMA, K_HF, K_LF, STATE_SHIFT = 0.3, 1.0, 1.0, 0.2, 1.6
# d E[r_HF] / d(log_std, weight, bias): the actor's parameter order (the module's own log_std comes first)
TRUE_GRAD = np.array([-2.0 * SIGMA ** 2, -2.0 * (THETA - K_HF), 0.0])


def _episode(obs, actions, rewards, fidelity, eid='', pair_of='', contract=TOY):
    n = len(rewards)
    return Episode(obs=np.asarray(obs, np.float32).reshape(n, -1),
                   actions=np.asarray(actions, np.float32).reshape(n, -1), eps=np.zeros((n, 1)),
                   rewards=np.asarray(rewards, np.float64), qpos0=np.zeros(contract.nq),
                   qvel0=np.zeros(contract.nv), contract=contract, policy_version=0, fidelity=fidelity,
                   episode_id=eid, pair_of=pair_of)


def _toy_data(seed=0, hf_lens=(70, 90), lf_lens=(70, 90), pool=(300, 300)):
    """Random segments whose paired LF rewards track the HF ones (same obs and actions on the aligned steps)."""
    rng = np.random.default_rng(seed)
    hifi, paired = [], []
    for i, (nh, nl) in enumerate(zip(hf_lens, lf_lens)):
        obs, act, rew = rng.standard_normal((nh, 3)), rng.standard_normal(nh), rng.standard_normal(nh)
        hifi.append(_episode(obs, act, rew, HIFI, eid=f'h{i}'))
        n = min(nh, nl)
        lf_obs = np.concatenate([obs[:n], rng.standard_normal((nl - n, 3))])
        lf_act = np.concatenate([act[:n], rng.standard_normal(nl - n)])
        lf_rew = np.concatenate([rew[:n] + 0.3 * rng.standard_normal(n), rng.standard_normal(nl - n)])
        paired.append(_episode(lf_obs, lf_act, lf_rew, LOFI_PAIRED, pair_of=f'h{i}'))
    pool = [_episode(rng.standard_normal((n, 3)), rng.standard_normal(n), rng.standard_normal(n), LOFI_POOL)
            for n in pool]
    return hifi, paired, pool


def _cfg(algorithm='mf_ppo', ppo=None, **estimator):
    return AlgoConfig(algorithm=algorithm, lr=3e-3, ppo=PPOConfig(**(ppo or {})),
                      estimator=EstimatorConfig(**{'pairing': 'paper', **estimator}))


def _weights(learner):
    return torch.cat([p.detach().flatten() for p in learner.model.parameters()])


# ---- c = 0 is plain PPO ------------------------------------------------------------------------------------------
@pytest.mark.parametrize('ppo', [{'minibatch_size': 32, 'n_epochs': 4},
                                 {'minibatch_size': 48, 'n_epochs': 3, 'normalize_advantage': False,
                                  'clip_value': True, 'gae_lambda': 1.0},
                                 {'minibatch_size': 32, 'n_epochs': 3, 'cv_epochs': 0, 'cv_policy': 'rollout'}])
def test_c_zero_is_bitwise_plain_ppo(ppo):
    mf, plain = PPOLearner(_cfg('mf_ppo', ppo, fixed_c=0.0), TOY, 5), PPOLearner(_cfg('ppo', ppo), TOY, 5)
    for it in range(2):
        hifi, paired, pool = _toy_data(seed=it)
        m_mf, m_plain = mf.update(hifi, paired, pool), plain.update(hifi)
        assert m_mf['c'] == 0.0 and m_mf['n_aligned'] == m_plain['n_aligned'] == 160
        assert m_mf['n_updates'] == m_plain['n_updates'] > 4
    assert torch.equal(_weights(mf), _weights(plain))
    # ...while an estimated c does change the update
    estimated = PPOLearner(_cfg('mf_ppo', ppo), TOY, 5)
    estimated.update(*_toy_data(seed=0))
    assert not torch.equal(_weights(estimated), _weights(PPOLearner(_cfg('mf_ppo', ppo), TOY, 5)))



# ---- ppo.cv_epochs -----------------------------------------------------------------------------------------------
def test_cv_epochs_at_or_above_n_epochs_is_the_old_update():
    ppo = {'minibatch_size': 64, 'n_epochs': 3}
    default = PPOLearner(_cfg(ppo={**ppo, 'cv_epochs': 0}), TOY, 4)  # 0: every epoch
    others = [PPOLearner(_cfg(ppo={**ppo, 'cv_epochs': k}), TOY, 4) for k in (3, 7)]
    for it in range(2):
        m = default.update(*_toy_data(seed=it))
        m.pop('update_seconds')
        for other in others:
            assert {k: v for k, v in other.update(*_toy_data(seed=it)).items() if k != 'update_seconds'} == m
    for other in others:
        assert torch.equal(_weights(other), _weights(default))


def test_cv_epochs_one_makes_later_epochs_plain_ppo():
    """cv_epochs = 1 is, bit for bit, the full MF-PPO update whose c is forced to 0 after the first epoch's
    minibatches (and c = 0 is plain PPO bit for bit, test_c_zero_is_bitwise_plain_ppo)."""
    every, data = {'minibatch_size': 64, 'n_epochs': 3, 'cv_epochs': 0}, _toy_data(seed=3)
    first_epoch = 3  # 160 aligned steps in minibatches of 64
    restricted = PPOLearner(_cfg(ppo={**every, 'cv_epochs': 1}), TOY, 6)
    assert PPOConfig().cv_epochs == 1  # the default
    forced, calls = PPOLearner(_cfg(ppo=every), TOY, 6), []
    coefficient = forced._coefficient

    def first_epoch_only(*args):
        c, stats = coefficient(*args)
        calls.append(c)
        return (c if len(calls) <= first_epoch else 0.0), stats
    forced._coefficient = first_epoch_only
    m = restricted.update(*data)
    forced.update(*data)
    assert len(calls) == 3 * first_epoch and all(c < 0 for c in calls[:first_epoch])
    assert torch.equal(_weights(restricted), _weights(forced))
    assert m['n_updates'] == 3 * first_epoch and m['c'] == np.mean(calls[:first_epoch])  # c: the CV epoch's
    # ...and the first epoch did use the control variate, the later ones did not
    for other in (PPOLearner(_cfg(ppo=every), TOY, 6), PPOLearner(_cfg(ppo=every, fixed_c=0.0), TOY, 6)):
        other.update(*data)
        assert not torch.equal(_weights(restricted), _weights(other))
    with pytest.raises(ValueError):
        PPOConfig(cv_epochs=-1)

# ---- ppo.cv_policy -----------------------------------------------------------------------------------------------
def test_rollout_cv_policy_is_the_same_first_gradient_and_then_a_fixed_vector():
    data = _toy_data(seed=7)
    current, rollout = (PPOLearner(_cfg(ppo={'cv_epochs': 0, 'cv_policy': mode}, fixed_c=-0.8), TOY, 3)
                        for mode in ('current', 'rollout'))
    g_current, _ = current.policy_gradient(*data, first_minibatch=True)
    g_rollout, _ = rollout.policy_gradient(*data, first_minibatch=True)
    assert torch.allclose(g_current, g_rollout, atol=1e-6) and g_current.abs().sum() > 0  # ratio 1: one estimator
    # Inside an update the LF terms' gradient is taken at the rollout weights, wherever the minibatch's weights are.
    batch, _ = rollout._batch(*data)
    idx, pool_idx = torch.arange(40), torch.arange(150)
    rollout._anchor = copy.deepcopy(rollout.model)
    actor = [q for n, q in rollout.model.named_parameters() if not n.startswith('vf.')]

    def lf_gradient():
        return torch.cat([g.flatten() for g in torch.autograd.grad(rollout._rollout_cv(batch, idx, pool_idx, -0.8),
                                                                   actor)])
    at_rollout = lf_gradient()
    with torch.no_grad():
        for q in actor:
            q.add_(0.3 * torch.randn_like(q))
    assert torch.equal(lf_gradient(), at_rollout)
    rollout._anchor = None  # outside an update: at the weights now, which have moved
    assert not torch.allclose(lf_gradient(), at_rollout)
    expected = torch.autograd.grad(0.8 * ((batch.lf.advantages[idx] * rollout.model.log_prob(
        batch.lf.obs[idx], batch.lf.actions[idx])).mean() - (batch.pool.advantages[pool_idx] * rollout.model.log_prob(
            batch.pool.obs[pool_idx], batch.pool.actions[pool_idx])).mean()), actor)
    assert torch.allclose(lf_gradient(), torch.cat([g.flatten() for g in expected]), atol=1e-6)
    for bad in ({'cv_policy': 'old'}, {'cv_policy': 'rollout', 'cv_clip': 'signed'}):
        with pytest.raises(ValueError):
            PPOConfig(**bad)


# ---- ppo.cv_clip -------------------------------------------------------------------------------------------------
def test_signed_cv_clip_has_the_same_first_gradient_and_a_trust_region_for_the_pushed_down_term():
    data = _toy_data(seed=5)
    plain, signed = (PPOLearner(_cfg(ppo={'cv_clip': mode, 'cv_epochs': 0}, fixed_c=-0.8), TOY, 2)
                     for mode in ('plain', 'signed'))
    g_plain, _ = plain.policy_gradient(*data, first_minibatch=True)
    g_signed, _ = signed.policy_gradient(*data, first_minibatch=True)
    assert torch.allclose(g_plain, g_signed, atol=1e-6) and g_plain.abs().sum() > 0  # at r = 1 the same estimator
    plain.update(*data)
    signed.update(*data)
    assert not torch.equal(_weights(plain), _weights(signed))  # later minibatches clip differently
    # Every LF ratio at 0.5, below 1 - eps: a term with weight -1 on positive advantages is being pushed down.
    batch, _ = signed._batch(*data)
    lf = batch.lf
    with torch.no_grad():
        lf.old_log_prob = signed.model.log_prob(lf.obs, lf.actions) - np.log(0.5)
    idx = torch.nonzero(lf.advantages > 0).flatten()

    def grad_norm(loss):
        signed.model.zero_grad()
        loss.backward()
        return sum(float(q.grad.abs().sum()) for q in signed.model.parameters() if q.grad is not None)
    ratio, adv = signed._ratio_and_advantages(lf, idx, False)
    assert grad_norm(-signed._clipped(ratio, adv).sum()) > 0  # 'plain': weight -1 applied outside the clip
    ratio, adv = signed._ratio_and_advantages(lf, idx, False)
    assert grad_norm(signed._clipped(ratio, -adv).sum()) == 0  # 'signed': out of its trust region
    with pytest.raises(ValueError):
        PPOConfig(cv_clip='both')


# ---- the closed-form problem -------------------------------------------------------------------------------------
def _line_learner(c, normalize=False, minibatch=64, **estimator):
    cfg = AlgoConfig(algorithm='mf_ppo', gamma=0.0, hidden=(), log_std_init=math.log(SIGMA), max_grad_norm=1e9,
                     ppo=PPOConfig(minibatch_size=minibatch, normalize_advantage=normalize),
                     estimator=EstimatorConfig(fixed_c=c, **{'pairing': 'paper', **estimator}))
    learner = PPOLearner(cfg, LINE, seed=0)
    with torch.no_grad():  # policy mean = THETA * s exactly; critic V(s) = -1.2, a plain constant baseline
        learner.model.pi[0].weight.fill_(THETA), learner.model.pi[0].bias.zero_()
        learner.model.vf[0].weight.zero_(), learner.model.vf[0].bias.fill_(-1.2)
    return learner


def _line_data(rng, n_pairs, n_pool, theta=THETA, bias=0.0, sigma=SIGMA):
    """gamma = 0, so one segment of n steps is n independent one-step episodes. Paired LF: same s, same eps."""
    def side(s, eps, k, scale):
        seen = s * scale
        a = theta * seen + bias + sigma * eps
        return seen, a, -(a - k * seen) ** 2
    s, eps = rng.standard_normal(n_pairs), rng.standard_normal(n_pairs)
    hifi = [_episode(*side(s, eps, K_HF, 1.0), HIFI, eid='h', contract=LINE)]
    paired = [_episode(*side(s, eps, K_LF, STATE_SHIFT), LOFI_PAIRED, pair_of='h', contract=LINE)]
    pool = [_episode(*side(rng.standard_normal(n_pool), rng.standard_normal(n_pool), K_LF, STATE_SHIFT), LOFI_POOL,
                     contract=LINE)]
    return hifi, paired, pool


N_PAIRS, N_POOL, MINIBATCH = 64, 256, 32  # first minibatch: 32 pairs and a 128-step pool slice
_CACHE = {}


def _first_minibatch_gradients(c, trials, seed, normalize=False, previous=None):
    """One first-minibatch gradient per trial (fresh data each), cached: tests share runs on the same data.
    c = None with `previous` (rho, sigma_h, sigma_l): c from earlier statistics only (estimator.c_from_previous)."""
    key = (c, trials, seed, normalize, previous)
    if key not in _CACHE:
        learner, rng = _line_learner(c, normalize, MINIBATCH, c_from_previous=previous is not None), \
            np.random.default_rng(seed)
        if previous is not None:
            learner.coef.load([*previous, 1.0])
        _CACHE[key] = np.stack([learner.policy_gradient(*_line_data(rng, N_PAIRS, N_POOL), first_minibatch=True)[0]
                                .numpy().astype(np.float64) for _ in range(trials)])
    return _CACHE[key]


@pytest.fixture(scope='module')
def good_c():
    """Trace-optimal c from calibration trials: g(c) = g(0) + c d is linear in c (same data, same minibatch)."""
    g0, g1 = _first_minibatch_gradients(0.0, 400, seed=99), _first_minibatch_gradients(1.0, 400, seed=99)
    d = g1 - g0
    cov = ((g0 - g0.mean(0)) * (d - d.mean(0))).sum(0)
    return float(-cov.sum() / ((d - d.mean(0)) ** 2).sum())


@pytest.mark.parametrize('c_kind', ['fixed', 'good', 'previous'])
def test_first_minibatch_mf_gradient_is_unbiased(good_c, c_kind):
    """Fixed c, or c from earlier statistics only (c_from_previous; here c = -0.72): the CV term has mean zero."""
    c, previous = {'fixed': (-0.5, None), 'good': (good_c, None), 'previous': (None, (0.47, 1.0, 0.47 / 0.72))}[c_kind]
    g = _first_minibatch_gradients(c, 1000, seed=7, previous=previous)
    se = g.std(0, ddof=1) / np.sqrt(len(g))
    print(f'c={c_kind} {-0.72 if c is None else c:+.3f} mean={np.round(g.mean(0), 4)} true={TRUE_GRAD} '
          f'se={np.round(se, 4)}')
    assert np.all(np.abs(g.mean(0) - TRUE_GRAD) < 4 * se)


def test_mf_variance_is_lower_than_ppo_at_a_good_c(good_c):
    g_ppo, g_mf = _first_minibatch_gradients(0.0, 1000, seed=7), _first_minibatch_gradients(good_c, 1000, seed=7)
    per_param = np.var(g_mf, 0, ddof=1) / np.var(g_ppo, 0, ddof=1)
    ratio = np.var(g_mf, 0, ddof=1).sum() / np.var(g_ppo, 0, ddof=1).sum()
    print(f'good c={good_c:.3f}: trace-variance ratio MF-PPO / PPO = {ratio:.3f} '
          f'(per parameter log_std, w, b: {np.round(per_param, 3)})')
    assert good_c < 0 and ratio < 0.75  # measured about 0.6 (1 - rho^2 plus the pool's own noise)


def test_control_variate_stays_zero_mean_with_advantage_normalisation():
    """Normalised advantages: paired LF and pool share one affine map, so E[g(c) - g(0)] = c E[d] is still 0."""
    d = _first_minibatch_gradients(1.0, 500, 5, True) - _first_minibatch_gradients(0.0, 500, 5, True)
    se = d.std(0, ddof=1) / np.sqrt(len(d))
    print(f'normalised: mean CV term {np.round(d.mean(0), 4)} se {np.round(se, 4)}')
    assert np.all(np.abs(d.mean(0)) < 4 * se)


def test_policy_gradient_first_minibatch_is_what_the_update_steps_on():
    learner = _line_learner(-0.4)
    data = _line_data(np.random.default_rng(0), 128, 512)
    expected, _ = learner.policy_gradient(*data, first_minibatch=True)
    seen = []
    step = learner.optimizer.step
    learner.optimizer.step = lambda: seen.append(torch.cat([learner.model.log_std.grad,
                                                            learner.model.pi[0].weight.grad.flatten(),
                                                            learner.model.pi[0].bias.grad]))
    learner.update(*data)
    learner.optimizer.step = step
    torch.testing.assert_close(-seen[0], expected, rtol=1e-5, atol=1e-6)


def test_mf_ppo_learns_the_hf_optimum_not_the_lf_one():
    """Fresh data from the current policy each iteration: the weight must reach K_HF (the LF optimum is K_LF)."""
    cfg = AlgoConfig(algorithm='mf_ppo', gamma=0.0, hidden=(), lr=0.02, ppo=PPOConfig(minibatch_size=64),
                     estimator=EstimatorConfig(pairing='paper'))
    learner, rng = PPOLearner(cfg, LINE, seed=1), np.random.default_rng(1)
    for _ in range(30):
        w, b, std = (float(p.detach()) for p in (learner.model.pi[0].weight, learner.model.pi[0].bias,
                                                 learner.model.log_std.exp()))
        m = learner.update(*_line_data(rng, 128, 512, w, b, std))
    w = float(learner.model.pi[0].weight.detach())
    print(f'weight after 30 MF-PPO iterations {w:.3f} (HF optimum {K_HF}, LF {K_LF}); last c {m["c"]:.3f}')
    assert abs(w - K_HF) < 0.15 and m['c'] < 0


# ---- bookkeeping -------------------------------------------------------------------------------------------------
def test_metrics_trimming_and_skip():
    learner = PPOLearner(_cfg(ppo={'n_epochs': 2}), TOY, 0)
    m = learner.update(*_toy_data(lf_lens=(60, 90)))
    for key in ('c', 'rho', 'n_aligned', 'clip_fraction', 'approx_kl', 'policy_loss', 'value_loss', 'var_ratio',
                'lf_clip_fraction', 'n_updates'):
        assert key in m and np.isfinite(m[key]), key
    assert m['n_aligned'] == 60 + 90 and m['n_pairs'] == 2 and m['rho'] > 0.5 and m['c'] < 0
    assert m['epochs'] == 2 and m['n_updates'] == 2 * 3 and learner.version == 1
    before = _weights(learner).clone()
    skipped = learner.update(*_toy_data(hf_lens=(10, 5), lf_lens=(10, 5)))
    assert skipped['skipped'] == 1.0 and torch.equal(before, _weights(learner)) and learner.version == 2
    assert set(skipped) == set(m)  # one metric schema whatever happens (CSV columns)
    control_variate = {'c', 'c_last', 'rho', 'sigma_h', 'sigma_l', 'rho_ema', 'lf_clip_fraction', 'var_without_cv',
                       'var_with_cv', 'var_ratio', 'n_pairs', 'n_pool'}
    plain = PPOLearner(_cfg('ppo'), TOY, 0)  # HF-only, as the REINFORCE learner: no control-variate statistics
    schema = set(plain.update(_toy_data()[0]))
    assert schema == set(plain.update(_toy_data(hf_lens=(10, 5))[0])) == set(m) - control_variate  # skipped too


def test_negative_rho_clamps_and_target_kl_stops_early():
    hifi, paired, pool = _toy_data()
    for e in paired:
        e.rewards = -e.rewards
    assert PPOLearner(_cfg(), TOY, 0).update(hifi, paired, pool)['c'] == 0.0
    m = PPOLearner(_cfg(ppo={'target_kl': 1e-9}), TOY, 0).update(*_toy_data())
    assert m['epochs'] == 1


def test_checkpoint_round_trip_continues_identically(tmp_path):
    a = PPOLearner(_cfg(), TOY, 2)
    a.update(*_toy_data(seed=0))
    save_checkpoint(a, tmp_path / 'ppo.safetensors')
    b = PPOLearner(_cfg(), TOY, 99)
    load_checkpoint(b, tmp_path / 'ppo.safetensors')
    a.update(*_toy_data(seed=1)), b.update(*_toy_data(seed=1))
    assert torch.equal(_weights(a), _weights(b)) and a.version == b.version == 2


def test_config_and_factory():
    cfg = load_config({'algo': {'algorithm': 'mf_ppo', 'ppo': {'clip_range': 0.1, 'target_kl': float('nan')}}}).algo
    assert cfg.ppo.clip_range == 0.1 and cfg.ppo.target_kl is None and cfg.ppo.n_epochs == 10
    assert isinstance(make_learner(cfg, TOY, 0), PPOLearner)
    assert isinstance(make_learner(AlgoConfig(algorithm='reinforce'), TOY, 0), Learner)
    with pytest.raises(ValueError):
        load_config({'algo': {'ppo': {'clip': 0.1}}})
    with pytest.raises(ValueError, match='^ppo supports neither'):
        PPOLearner(AlgoConfig(algorithm='ppo', estimator=EstimatorConfig(vector_c=True)), TOY, 0)


@pytest.mark.parametrize('key, value, message', [
    ('algo.hf_steps_per_iter', -5, r'algo.hf_steps_per_iter must be a number >= 1, not -5'),
    ('algo.pool_envs', 0, r'algo.pool_envs must be a number >= 1'),
    ('algo.gamma', 1.5, r'algo.gamma must be a number in \[0, 1\]'),
    ('algo.lr', float('nan'), r'algo.lr must be a number > 0, not nan'),
    ('algo.hidden', [64, 0], r'algo.hidden must list layer widths >= 1'),
    ('algo.ppo.n_epochs', 0, r'algo.ppo.n_epochs must be a number >= 1'),
    ('algo.ppo.minibatch_size', 0, r'algo.ppo.minibatch_size must be a number >= 1'),
    ('algo.ppo.clip_range', -1, r'algo.ppo.clip_range must be a number > 0'),
    ('algo.ppo.gae_lambda', 1.1, r'algo.ppo.gae_lambda must be a number in \[0, 1\]'),
    ('algo.ppo.target_kl', -0.1, r'algo.ppo.target_kl must be > 0'),
    ('iterations', 0, r'iterations must be a number >= 1'),
    ('eval_episodes', 0, r'eval_episodes must be a number >= 1'),
    ('algo.lr', '1e-3', r"algo.lr must be a number > 0, not '1e-3' \(YAML reads 1e-3 as text"),
    ('algo.hidden', 64, r'algo.hidden must be a list of layer widths'),
])
def test_config_refuses_values_no_run_can_use(key, value, message):
    """Budgets and step sizes are checked where every entry point reads them (CLI, graph, suite), by name."""
    with pytest.raises(ValueError, match=message):
        load_config(None, **{key: value})


def test_settings_the_chosen_algorithm_does_not_read_are_named():
    """A config file may serve several algorithms, so these are warned about (CLI, learner node), not refused."""
    from mfpg_ros.core.config import ALGORITHMS, ignored_settings, ignored_settings_warning
    from mfpg_ros.graph import share_file
    for algorithm in ALGORITHMS:  # the package's config sets nothing an algorithm ignores
        package_config = load_config(share_file('config', 'train.yaml'), **{'algo.algorithm': algorithm})
        assert ignored_settings(package_config.algo) == []
    ppo_keys = {'algo.ppo.n_epochs': 3, 'algo.estimator.ema_alpha': 0.5, 'algo.offdyn.beta': 2.0}
    assert ignored_settings(load_config(None, **ppo_keys).algo) == ['algo.ppo.n_epochs', 'algo.offdyn.beta']
    for algorithm in ALGORITHMS:  # every learner skips an update with too few HF steps
        cfg = load_config(None, **{'algo.algorithm': algorithm, 'algo.estimator.min_aligned_steps': 5})
        assert ignored_settings(cfg.algo) == []
    assert ignored_settings(load_config(None, **{**ppo_keys, 'algo.algorithm': 'mf_ppo'}).algo) == ['algo.offdyn.beta']
    assert ignored_settings(load_config(None, **{**ppo_keys, 'algo.algorithm': 'darc'}).algo) == [
        'algo.estimator.ema_alpha', 'algo.ppo.n_epochs']
    assert ignored_settings_warning(load_config(None, **{'algo.ppo.n_epochs': 3}).algo) == (
        'algo.ppo.n_epochs is set but mf_reinforce does not use it')
    resolved = load_config(None, **{'algo.algorithm': 'ppo', 'algo.estimator.pairing': 'paper'})  # = ppo's 'auto'
    assert ignored_settings(resolved.algo) == []


def test_gae_with_lambda_one_is_reward_to_go_minus_value():
    r, v = np.array([1.0, 2.0, 3.0]), np.array([0.5, -1.0, 2.0])
    np.testing.assert_allclose(gae(r, v, 0.5, 1.0), [1 + 0.5 * 2 + 0.25 * 3 - 0.5, 2 + 0.5 * 3 + 1.0, 3.0 - 2.0])
    np.testing.assert_allclose(gae(r, v, 0.5, 0.0), [1 + 0.5 * -1.0 - 0.5, 2 + 0.5 * 2.0 + 1.0, 3.0 - 2.0])
