"""`mfpg bench variance`: the bias statistics on draws with known means, and a run at a checkpoint's policy."""
import os

import numpy as np
import pytest

from mfpg_ros import train_inprocess
from mfpg_ros.bench import variance

os.environ.setdefault('OMP_NUM_THREADS', '1')


def _draws(mean: np.ndarray, trials: int, rng) -> np.ndarray:
    return mean + rng.standard_normal((trials, len(mean)))


def test_bias_stats_separate_an_unbiased_estimator_from_biased_ones():
    rng = np.random.default_rng(0)
    dims, trials = 50, 2000
    truth = np.zeros(dims)
    truth[:5] = 0.5
    reference = _draws(truth, trials, rng)
    shared = reference - truth  # the HF noise an MF estimate shares with its reference
    unbiased = variance.bias_stats(truth + 0.5 * shared + 0.3 * rng.standard_normal((trials, dims)), reference)
    orthogonal = np.zeros(dims)
    orthogonal[10:15] = 0.5  # as large as the true gradient, at right angles to it
    sideways = variance.bias_stats(truth + orthogonal + _draws(np.zeros(dims), trials, rng), reference)
    halved = variance.bias_stats(0.5 * truth + _draws(np.zeros(dims), trials, rng), reference)
    print(unbiased, sideways, halved, sep='\n')
    assert 0.3 < unbiased['over_noise'] < 3 and 0.7 < unbiased['progress'] < 1.3
    # expected over_noise: 1 + |bias|^2 / (tr Cov(diff) / trials) = 1 + 1.25 / 0.05 and 1 + 0.3125 / 0.05
    assert sideways['over_noise'] > 10 and 0.7 < sideways['progress'] < 1.3
    assert halved['over_noise'] > 4 and 0.3 < halved['progress'] < 0.7


def test_variance_runs_at_a_checkpoints_policy(tmp_path, capsys):
    ckpt = tmp_path / 'cartpole.safetensors'
    assert train_inprocess.main(['--set', 'algo.pool_steps_per_env=50', 'seed=3', '--iterations', '2',
                                 '--save', str(ckpt)]) == 0
    assert variance.main(['--setting', 'cartpole_twin', '--checkpoint', str(ckpt), '--trials', '6',
                          '--pool-steps', '50']) == 0
    out = capsys.readouterr().out
    assert f'policy from {ckpt}' in out
    assert 'bias vs hf_only, mf:' in out and 'HF steps kept by the pairing' in out
    ratio = float(out.strip().splitlines()[-1].split(': ')[1])
    assert 0 < ratio < 1  # the cart-pole's paired replays are highly correlated (rho ~ 0.97 at the start)
    # without --setting the checkpoint's own task and variants are used (not the Hopper default)
    assert variance.main(['--checkpoint', str(ckpt), '--trials', '3', '--pool-steps', '50']) == 0
    # what cannot give a variance, or does not fit the checkpoint, is refused by name before any sampling
    for args, message in ((['--trials', '1'], '--trials must be >= 2'),
                          (['--hf-steps', '0'], 'hf_steps_per_iter must be a number >= 1'),
                          (['--task', 'Hoper-v5'], "unknown task 'Hoper-v5'"),
                          (['--task', 'Hopper-v5'], 'holds a cartpole policy, not one for Hopper-v5')):
        with pytest.raises(SystemExit):
            variance.main(['--checkpoint', str(ckpt), *args])
        assert message in capsys.readouterr().err
