"""Checkpoint and resume: a resumed in-process run continues bit for bit; engine state round-trips; atomic files."""
import numpy as np
import pytest
import torch

from mfpg_ros.core.checkpoint import load_arrays, read_extra
from mfpg_ros.core.config import load_config
from mfpg_ros.core.episode import LOFI_POOL
from mfpg_ros.core.numpy_policy import NumpyPolicy
from mfpg_ros.core.policy import ActorCritic
from mfpg_ros.sim.engine import Engine
from mfpg_ros.sim.tasks import make_task
from mfpg_ros.trainer import Trainer

torch.set_num_threads(1)


def small_config(iterations=6, **algo):
    return load_config({'task': 'cartpole', 'hifi_variant': 'cartpole_twin', 'seed': 3, 'iterations': iterations,
                        'eval_every': 2, 'eval_episodes': 2, 'target_return': None,
                        'algo': {'lr': 3e-3, 'pool_envs': 3, 'pool_steps_per_env': 120, 'hf_steps_per_iter': 60,
                                 **algo}})


def assert_same_state(a: Trainer, b: Trainer):
    for (name, pa), pb in zip(a.learner.model.state_dict().items(), b.learner.model.state_dict().values()):
        assert torch.equal(pa, pb), name
    assert a.learner.version == b.learner.version and a.learner.coef == b.learner.coef
    assert a.hf_steps == b.hf_steps and list(a.recent) == list(b.recent)


def comparable(history):
    return [{k: v for k, v in m.items() if not k.endswith('seconds')} for m in history]


@pytest.mark.parametrize('algo', [{}, {'algorithm': 'mf_ppo', 'lr': 1e-3,
                                       'ppo': {'n_epochs': 2, 'minibatch_size': 30}}])
def test_resumed_run_continues_bit_identically(tmp_path, algo):
    straight = Trainer(small_config(**algo))
    expected = straight.run()

    first = Trainer(small_config(**algo))
    head = first.run(iterations=3)
    path = first.save(tmp_path / 'ckpt.safetensors')
    del first
    resumed = Trainer.resume(path, nthread=1)  # lanes are a scheduling detail: another nthread resumes too
    tail = resumed.run()

    assert_same_state(straight, resumed)
    assert repr(comparable(head + tail)) == repr(comparable(expected))  # repr: NaN metrics compare equal
    assert [m['iteration'] for m in tail] == [3, 4, 5] and 'eval_return' in tail[-1]


def test_checkpoint_holds_config_engines_and_bookkeeping(tmp_path):
    trainer = Trainer(small_config())
    trainer.run(iterations=2)
    path = trainer.save(tmp_path / 'a' / 'ckpt.safetensors')
    assert [p.name for p in path.parent.iterdir()] == ['ckpt.safetensors']  # no temporary file left behind
    extra = read_extra(path)
    assert load_config(extra['config']) == trainer.cfg
    assert set(extra['engines']) == {'hifi', 'pool', 'replayer', 'evaluator'}
    arrays = load_arrays(path)
    assert arrays['pool.physics'].shape == (3, trainer.pool.lanes[0].sims.batch.nstate)
    assert (arrays['hifi.steps'] == trainer.hifi.steps).all()


def test_resume_refuses_another_config_but_allows_more_iterations(tmp_path):
    trainer = Trainer(small_config(iterations=2))
    trainer.run()
    path = trainer.save(tmp_path / 'ckpt.safetensors')
    with pytest.raises(ValueError, match='algo'):
        Trainer(small_config(lr=1e-3)).restore(path)
    longer = Trainer.resume(path, iterations=3)
    assert [m['iteration'] for m in longer.run()] == [2]
    with pytest.raises(ValueError, match='seed'):
        Trainer.resume(path, seed=4)


def test_engine_state_round_trip_continues_episodes():
    task = make_task('cartpole')
    torch.manual_seed(0)
    policy = NumpyPolicy(ActorCritic(task.contract.obs_dim, task.contract.act_dim))
    straight = Engine(task, 3, seed=7, nthread=2)
    straight.collect(policy, 80, 0, LOFI_POOL)
    expected = straight.collect(policy, 80, 1, LOFI_POOL)

    original = Engine(task, 3, seed=7, nthread=2)
    original.collect(policy, 80, 0, LOFI_POOL)
    arrays, info = original.get_state()
    restored = Engine(task, 3, seed=7, nthread=1)
    restored.set_state(arrays, info)
    got = restored.collect(policy, 80, 1, LOFI_POOL)
    assert [e.episode_id for e in got] == [e.episode_id for e in expected]
    for a, b in zip(got, expected):
        assert a.start_step == b.start_step and np.array_equal(a.qpos0, b.qpos0) and np.array_equal(a.obs, b.obs)
        assert np.array_equal(a.rewards, b.rewards) and np.array_equal(a.eps, b.eps)
    with pytest.raises(ValueError, match='n_envs'):
        Engine(task, 2, seed=7).set_state(arrays, info)
