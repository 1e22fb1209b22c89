"""Version bookkeeping: on-policy dropping, completion rules, pair verification."""
import numpy as np

from mfpg_ros.core.bookkeeping import EpisodeReturns, IterationAssembler
from mfpg_ros.core.config import AlgoConfig
from mfpg_ros.core.contract import Contract
from mfpg_ros.core.episode import HIFI, LOFI_PAIRED, LOFI_POOL, Episode
from mfpg_ros.core.learners import iteration_assembler

CONTRACT = Contract('toy', ('x',), ('u',), (-1.0,), (1.0,), 50.0, 1, 1)


def _ep(n, fidelity, version=0, eid='', pair_of='', eps=None, qpos0=0.0, start=0, terminated=False):
    return Episode(obs=np.zeros((n, 1), np.float32), actions=np.zeros((n, 1), np.float32),
                   eps=np.arange(n, dtype=np.float64)[:, None] if eps is None else eps, rewards=np.ones(n),
                   qpos0=np.array([qpos0]), qvel0=np.zeros(1), contract=CONTRACT, policy_version=version,
                   fidelity=fidelity, episode_id=eid, pair_of=pair_of, start_step=start, terminated=terminated)


def test_iteration_completes_only_with_hf_budget_pairs_and_pool():
    asm = IterationAssembler(hf_steps=10, pool_steps=20, need_paired=True)
    asm.add(_ep(6, HIFI, eid='a'))
    assert asm.waiting_for() == ('HF steps of version 0 (6 of 10), LF replays of version 0 (1 of 1 missing), '
                                 'LF pool steps of version 0 (0 of 20)')
    asm.add(_ep(4, HIFI, eid='b'))
    assert asm.hf_complete() and not asm.ready()
    asm.add(_ep(6, LOFI_PAIRED, pair_of='a'))
    asm.add(_ep(3, LOFI_PAIRED, pair_of='b'))  # LF may terminate earlier: shorter is fine
    assert asm.missing_pairs() == set() and not asm.ready()
    assert asm.waiting_for() == 'LF pool steps of version 0 (0 of 20)'  # what the learner's diagnostics say
    asm.add(_ep(20, LOFI_POOL))
    assert asm.ready() and asm.waiting_for() == ''
    asm.add(_ep(5, HIFI, eid='over'))
    assert asm.dropped['hifi over budget'] == 1
    data = asm.take()
    assert len(data.hifi) == 2 and len(data.paired) == 2 and asm.version == 1


def test_stale_dropped_future_kept_for_next_version():
    asm = IterationAssembler(hf_steps=5, pool_steps=0, need_paired=False)
    asm.add(_ep(5, HIFI, version=1, eid='future'))
    asm.add(_ep(5, HIFI, version=0, eid='now'))
    assert asm.ready()
    asm.take()
    assert asm.ready() and asm.data.hifi[0].episode_id == 'future'
    asm.add(_ep(5, HIFI, version=0, eid='late'))
    assert asm.dropped['stale hifi'] == 1


def test_episodes_delivered_twice_count_once():
    """A restarted lofi_sim replays pairs its predecessor already sent; a history may repeat an HF segment."""
    asm = IterationAssembler(hf_steps=10, pool_steps=0, need_paired=True)
    for _ in range(2):
        asm.add(_ep(5, HIFI, eid='a'))
        asm.add(_ep(5, LOFI_PAIRED, pair_of='a'))
    assert not asm.hf_complete() and asm.data.steps('hifi') == 5
    assert asm.dropped == {'duplicate hifi': 1, 'duplicate pair': 1}
    asm.add(_ep(5, HIFI, eid='b'))
    asm.add(_ep(5, LOFI_PAIRED, pair_of='b'))
    data = asm.take()
    assert [e.episode_id for e in data.hifi] == ['a', 'b'] and [e.pair_of for e in data.paired] == ['a', 'b']


def test_pairs_with_other_s0_or_noise_are_rejected():
    asm = IterationAssembler(hf_steps=6, pool_steps=0, need_paired=True)
    for eid in 'abc':
        asm.add(_ep(2, HIFI, eid=eid))
    asm.add(_ep(2, LOFI_PAIRED, pair_of='a'))
    asm.add(_ep(2, LOFI_PAIRED, pair_of='b', qpos0=0.5))
    asm.add(_ep(2, LOFI_PAIRED, pair_of='c', eps=np.array([[0.0], [9.0]])))
    data = asm.take()
    assert [p.pair_of for p in data.paired] == ['a']
    assert asm.dropped['pairing mismatch'] == 2


def test_matched_iteration_waits_for_each_segments_branches_and_verifies_them():
    """pairing 'matched': no pool budget; each HF segment needs its replay (which may run past it) and 3 branches."""
    asm = IterationAssembler(hf_steps=6, pool_steps=0, need_paired=True, branches=3)
    asm.add(_ep(2, HIFI, eid='a'))
    asm.add(_ep(4, HIFI, eid='b'))
    asm.add(_ep(5, LOFI_PAIRED, pair_of='a'))  # ran on past its 2-step segment: fine under 'matched'
    asm.add(_ep(4, LOFI_PAIRED, pair_of='b'))
    for _ in range(3):
        asm.add(_ep(3, LOFI_POOL, pair_of='a', eps=np.zeros((3, 1))))
    assert asm.missing_branches() == {'b'} and not asm.ready()
    assert asm.waiting_for() == 'LF branches of version 0 (1 of 2 HF segments short of 3)'
    asm.add(_ep(1, LOFI_POOL, pair_of='b'))
    asm.add(_ep(1, LOFI_POOL, pair_of='b', qpos0=0.5))  # not from b's s0
    asm.add(_ep(1, LOFI_POOL, pair_of='b', start=7))  # not from b's time-limit counter
    assert asm.ready()
    data = asm.take()
    assert [p.pair_of for p in data.paired] == ['a', 'b']
    assert [b.pair_of for b in data.pool] == ['a', 'a', 'a', 'b']
    assert asm.dropped['branch mismatch'] == 2


def test_the_learners_assembler_waits_for_a_pool_or_for_branches_by_pairing():
    paper, matched = (iteration_assembler(AlgoConfig(hf_steps_per_iter=100, pool_envs=9, pool_steps_per_env=200,
                                                     estimator={'pairing': p})) for p in ('paper', 'matched'))
    assert (paper.pool_steps, paper.branches, paper.need_paired) == (1800, 0, True)
    assert (matched.pool_steps, matched.branches, matched.need_paired) == (0, 18, True)
    hf_only = iteration_assembler(AlgoConfig(algorithm='ppo'))
    assert (hf_only.pool_steps, hf_only.branches, hf_only.need_paired) == (0, 0, False)
    assert iteration_assembler(AlgoConfig(algorithm='mf_ppo')).branches > 0  # its default pairing is matched


def test_replays_longer_than_their_segment_are_refused_under_the_papers_pairing():
    asm = IterationAssembler(hf_steps=2, pool_steps=0, need_paired=True)
    asm.add(_ep(2, HIFI, eid='a'))
    asm.add(_ep(5, LOFI_PAIRED, pair_of='a'))
    assert asm.take().paired == [] and asm.dropped['pairing mismatch'] == 1


def test_episode_returns_stitch_segments():
    ret = EpisodeReturns(max_episode_steps=10)
    ret.add(_ep(4, HIFI))
    ret.add(_ep(3, HIFI, start=4, terminated=True))
    ret.add(_ep(10, HIFI))  # a whole episode to the time limit
    assert ret.take() == [7.0, 10.0] and ret.take() == []
