"""MF-REINFORCE learns the cart-pole in-process within a small fixed budget (fixed seeds)."""
import numpy as np

from mfpg_ros.core.config import load_config
from mfpg_ros.trainer import Trainer


def _trainer(seed, iterations, **algo):
    cfg = load_config({'task': 'cartpole', 'hifi_variant': 'cartpole_twin', 'seed': seed,
                       'iterations': iterations, 'eval_every': 0, 'target_return': None,
                       'algo': {'lr': 3e-3, 'pool_steps_per_env': 300, **algo}})
    return Trainer(cfg)


def test_mf_reinforce_raises_cartpole_return():
    before, after = [], []
    for seed in (1, 2):
        trainer = _trainer(seed, 70)
        before.append(trainer.evaluate())
        trainer.run()
        after.append(trainer.evaluate())
    print(f'deterministic eval return before {before} after {after} (max 500)')
    assert np.mean(after) > 3 * np.mean(before) and min(after) > 2 * max(before)


def test_same_seed_gives_identical_weights():
    a, b = _trainer(5, 3), _trainer(5, 3)
    a.run(), b.run()
    for pa, pb in zip(a.learner.model.parameters(), b.learner.model.parameters()):
        assert (pa == pb).all()


def test_mf_ppo_raises_cartpole_return():
    trainer = _trainer(3, 50, algorithm='mf_ppo', lr=1e-3)
    before = trainer.evaluate()
    history = trainer.run()
    after = trainer.evaluate()
    print(f'MF-PPO deterministic eval return before {before:.1f} after {after:.1f}; '
          f'c {history[-1]["c"]:+.2f} variance ratio {history[-1]["var_ratio"]:.2f}')
    assert after > 2.5 * before
