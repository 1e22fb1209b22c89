"""The MF control-variate estimator on a one-step linear-Gaussian problem whose gradient is known in closed form."""
import numpy as np
import pytest
import torch

from mfpg_ros.core.estimator import Coefficient, discounted_returns, mf_policy_loss, pearson_stats, trace_optimal_c

torch.set_num_threads(1)
THETA, SIGMA, K_HF, K_LF, STATE_SHIFT = 0.3, 1.0, 1.0, 0.2, 1.6
TRUE_GRAD = -2.0 * (THETA - K_HF)  # d/dtheta E[-(theta s + sigma eps - k_h s)^2], s ~ N(0, 1)


def _per_trial_gradients(trials, n_pairs, n_pool, c, seed):
    """One MF gradient estimate per trial (theta copied per trial so autograd gives per-trial gradients)."""
    g = torch.Generator().manual_seed(seed)
    theta = torch.full((trials, 1), THETA, dtype=torch.float64, requires_grad=True)

    def surrogate(states, eps, k, state_scale):
        s_seen = states * state_scale  # the LF plant sees a biased state
        actions = (theta * s_seen + SIGMA * eps).detach()
        reward = -(actions - k * s_seen) ** 2
        log_prob = -0.5 * ((actions - theta * s_seen) / SIGMA) ** 2
        return reward * log_prob

    s, e = torch.randn(trials, n_pairs, generator=g, dtype=torch.float64), \
        torch.randn(trials, n_pairs, generator=g, dtype=torch.float64)
    x_h = surrogate(s, e, K_HF, 1.0)
    x_l = surrogate(s, e, K_LF, STATE_SHIFT)  # paired: same start state, same noise
    sp, ep = torch.randn(trials, n_pool, generator=g, dtype=torch.float64), \
        torch.randn(trials, n_pool, generator=g, dtype=torch.float64)
    x_mu = surrogate(sp, ep, K_LF, STATE_SHIFT)  # independent LF pool
    loss = mf_policy_loss(x_h, x_l, x_mu, c).sum()
    (grad,) = torch.autograd.grad(loss, theta)
    return -grad.squeeze(1).numpy()


def _per_sample_gradient_stats(n=200_000, seed=1):
    """Cov/var of per-sample HF and paired-LF gradients (analytic per-sample form), for c* and rho."""
    rng = np.random.default_rng(seed)
    s, e = rng.standard_normal(n), rng.standard_normal(n)
    def per_sample(k, scale):
        ss = s * scale
        a = THETA * ss + SIGMA * e
        return -(a - k * ss) ** 2 * (a - THETA * ss) * ss / SIGMA ** 2
    gh, gl = per_sample(K_HF, 1.0), per_sample(K_LF, STATE_SHIFT)
    cov = np.cov(gh, gl)
    return cov[0, 1] / np.sqrt(cov[0, 0] * cov[1, 1]), -cov[0, 1] / cov[1, 1], cov[0, 0], cov[1, 1]


@pytest.fixture(scope='module')
def stats():
    return _per_sample_gradient_stats()


@pytest.mark.parametrize('c_kind', ['zero', 'fixed', 'optimal', 'wrong_sign'])
def test_mf_gradient_is_unbiased_for_any_fixed_c(stats, c_kind):
    rho, c_star, _, _ = stats
    c = {'zero': 0.0, 'fixed': -0.5, 'optimal': c_star, 'wrong_sign': 0.7}[c_kind]
    g = _per_trial_gradients(trials=3000, n_pairs=40, n_pool=400, c=c, seed=11)
    standard_error = g.std(ddof=1) / np.sqrt(len(g))
    print(f'c={c:+.3f} mean={g.mean():.4f} true={TRUE_GRAD:.4f} se={standard_error:.4f} rho={rho:.3f}')
    assert abs(g.mean() - TRUE_GRAD) < 4 * standard_error


def test_variance_ratio_at_optimal_c_is_one_minus_rho_squared(stats):
    rho, c_star, var_h, var_l = stats
    n_pairs, n_pool = 40, 4000
    g_hf = _per_trial_gradients(2000, n_pairs, n_pool, 0.0, seed=21)
    g_mf = _per_trial_gradients(2000, n_pairs, n_pool, c_star, seed=21)
    measured = g_mf.var(ddof=1) / g_hf.var(ddof=1)
    pool_noise = c_star ** 2 * var_l * n_pairs / (n_pool * var_h)  # mu_l is estimated, not known
    expected = 1 - rho ** 2 + pool_noise
    print(f'rho={rho:.3f} variance ratio measured={measured:.3f} expected={expected:.3f} (1-rho^2={1 - rho**2:.3f})')
    assert rho > 0.5
    assert measured < 0.8
    assert abs(measured - expected) < 0.15 * expected + 0.02


def test_returns_are_reward_to_go_without_bootstrap():
    r = np.array([1.0, 2.0, 3.0])
    np.testing.assert_allclose(discounted_returns(r, 0.5), [1 + 0.5 * 2 + 0.25 * 3, 2 + 0.5 * 3, 3.0])


def test_pearson_and_coefficient_ema():
    rng = np.random.default_rng(0)
    a = rng.standard_normal(500)
    b = 2.0 * a + 0.1 * rng.standard_normal(500)
    rho, s_h, s_l = pearson_stats(a, b)
    assert rho == pytest.approx(np.corrcoef(a, b)[0, 1], abs=1e-12)
    assert s_h == pytest.approx(a.std()) and s_l == pytest.approx(b.std())
    coef = Coefficient()
    coef.update(rho, s_h, s_l, 0.95)
    assert coef.value() == pytest.approx(-rho * s_h / s_l)
    coef.update(0.0, s_h, s_l, 0.95)
    assert coef.rho == pytest.approx(0.95 * rho)
    assert pearson_stats(a[:1], b[:1]) == (0.0, 0.0, 0.0)
    assert pearson_stats(np.ones(5), b[:5])[0] == 0.0


def test_trace_optimal_c_matches_scalar_case():
    rng = np.random.default_rng(1)
    gl = rng.standard_normal((1000, 1))
    gh = 0.5 * gl + 0.2 * rng.standard_normal((1000, 1))
    c = trace_optimal_c(torch.tensor(gh), torch.tensor(gl))
    assert c == pytest.approx(-np.cov(gh[:, 0], gl[:, 0])[0, 1] / gl.var(ddof=1), rel=1e-9)
