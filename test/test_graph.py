"""The node graph as separate processes over real DDS (LOCALHOST discovery, one ROS_DOMAIN_ID per test)."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from diagnostic_msgs.msg import DiagnosticArray
from ros_helpers import CONFIG, node_args
from test_ops_tensorboard import read_scalars
from std_msgs.msg import String, UInt8MultiArray

from mfpg_ros.core.codec import decode_episode, decode_episodes, decode_weights
from mfpg_ros.core.config import load_config
from mfpg_ros.core.episode import HIFI
from mfpg_ros.core.learners import make_learner
from mfpg_ros.nodes.common import HISTORY, WEIGHTS_OUT
from mfpg_ros.sim.tasks import make_task
from mfpg_ros.tensorboard_log import TensorBoardLog

NODES = ('learner', 'policy_server', 'lofi_sim', 'hifi_interface', 'twin_plant')


def start_graph(spawn, namespace='', before_learner=None, **params):
    """Spawn the five nodes; `before_learner()` runs once the others are up (nothing is published before the
    learner's first weights)."""
    procs = [spawn(n, node_args(namespace=namespace, **params), name=f'{namespace}{n}') for n in NODES[1:]]
    if before_learner is not None:
        before_learner()
    procs.append(spawn(NODES[0], node_args(namespace=namespace, **params), name=f'{namespace}{NODES[0]}'))

    def check():
        dead = [p.name for p in procs if p.poll() not in (None, 0)]  # the learner exits 0 when done
        assert not dead, f'nodes died: {dead}'
    return check


def summaries(probe, topic, n, check, timeout=120.0):
    """The learner's summaries; subscribed with its latched history, so none are lost to slow discovery."""
    diagnostics = probe.subscribe('/diagnostics', DiagnosticArray)
    try:
        inbox = probe.wait_for_messages(topic, String, n=n, timeout=timeout, qos=HISTORY, check=check)
    except TimeoutError as err:  # say where the graph stood: what each node waits for
        got = probe.inboxes.get(probe.resolve(topic), [])
        latest = {s.name: {kv.key: kv.value for kv in s.values} for m in diagnostics[-50:] for s in m.status}
        raise TimeoutError(f'{err}; {len(got)} received, last {got[-1].data if got else None}; '
                           f'node diagnostics: {json.dumps(latest)}') from None
    return [json.loads(m.data) for m in inbox]


def test_graph_trains_the_cartpole_with_paired_replays(spawn, probe):
    check = start_graph(spawn, **{'algo.pool_steps_per_env': 300, 'iterations': 40, 'target_return': '.nan',
                                  'seed': 4})
    rows = summaries(probe, 'metrics/summary', 40, check, timeout=240.0)
    assert [r['iteration'] for r in rows] == list(range(40))  # every version, in order
    assert rows[-1]['done'] and all(r['dropped'] == 0 for r in rows)  # nothing stale, no pairing mismatch
    assert all(r['n_pairs'] == r['hf_segments'] and r['hf_steps'] == 100 for r in rows)  # every HF segment paired
    assert np.mean([r['rho'] for r in rows]) > 0.5
    early = np.nanmean([r['hf_return'] for r in rows[:8]])
    late = np.nanmean([r['hf_return'] for r in rows[-8:]])
    print(f'HF return first 8 iterations {early:.1f}, last 8 {late:.1f}')
    assert late > 2 * early
    # Only the learner needs torch: the nodes that act or simulate start seconds sooner and ~180 MB lighter.
    with_torch = {p.name: 'libtorch' in Path(f'/proc/{p.pid}/maps').read_text() for p in spawn.processes[:-1]}
    assert with_torch == dict.fromkeys(NODES[1:], False)


# matched: c is fixed, since the estimated one comes from earlier iterations only (0 at the first update)
@pytest.mark.parametrize('pairing', [{}, {'algo.estimator.pairing': 'matched', 'algo.estimator.fixed_c': -0.5},
                                     {'algo.algorithm': 'mf_ppo', 'algo.estimator.fixed_c': -0.5}],
                         ids=['paper', 'matched', 'mf_ppo'])  # mf_ppo: its default pairing, matched
def test_graph_update_equals_the_in_process_learner(spawn, probe, pairing):
    params = {'algo.pool_steps_per_env': 50, 'iterations': 1, 'target_return': '.nan', 'seed': 7,
              'lofi_timeout_s': 600.0,  # a loaded machine must not turn this into an HF-only update
              'exit_when_done': 'false', **pairing}  # its latched summary stays up until the probe has matched it
    weights = probe.subscribe('policy/weights', UInt8MultiArray, WEIGHTS_OUT)  # the learner's short history
    hifi = probe.subscribe('hifi/episodes', UInt8MultiArray)
    lofi = probe.subscribe('lofi/episodes', UInt8MultiArray)
    def episode_writers_matched():  # every episode of version 0 reaches the probe as well as the learner
        probe.wait_until(lambda: probe.matched_publishers('hifi/episodes') and probe.matched_publishers(
            'lofi/episodes'), 60, 'episode publishers matched')
    check = start_graph(spawn, before_learner=episode_writers_matched, **params)
    summary = summaries(probe, 'metrics/summary', 1, check)[0]
    assert summary['lofi_timeouts'] == 0
    received = {}

    def both_versions():  # the writer keeps its last versions: a probe matched late still gets 0 and 1
        while weights:
            w = decode_weights(weights.pop(0).data)
            received[w.version] = w
        return set(received) == {0, 1}
    probe.wait_until(both_versions, 30, 'weights versions 0 and 1', check)

    def version0():  # the probe's reader may still be receiving what the learner's already had
        episodes = [e for m in (*hifi, *lofi) for e in decode_episodes(m.data)]  # lofi_sim batches its pool
        return [e for e in episodes if e.policy_version == 0]

    def probe_has_it_all():
        steps = {f: sum(len(e) for e in version0() if (e.fidelity == HIFI) == f) for f in (True, False)}
        return steps[True] >= summary['hf_steps'] and steps[False] >= summary['lf_steps']
    probe.wait_until(probe_has_it_all, 30, "the learner's version-0 episodes at the probe", check)
    version0 = version0()
    cfg = load_config(CONFIG, **{k: v for k, v in params.items() if k.startswith('algo.') or k in ('iterations',
                                                                                                      'seed')})
    learner = make_learner(cfg.algo, make_task(cfg.task).contract, cfg.seed)
    for name, value in learner.model.state_dict().items():  # same seed -> same initial weights
        assert torch.equal(value, torch.from_numpy(received[0].state[name])), name
    metrics = learner.update([e for e in version0 if e.fidelity == HIFI],
                             [e for e in version0 if e.fidelity == 'lofi_paired'],
                             [e for e in version0 if e.fidelity == 'lofi_pool'])
    assert metrics['n_pairs'] == metrics['hf_segments'] and metrics['c'] != 0
    if not pairing:  # the learner node summed the pool's term as lofi_sim's pieces came (the same update, below)
        pool_steps = sum(len(e) for e in version0 if e.fidelity == 'lofi_pool' and not e.aborted)
        assert summary['pool_steps_prefetched'] == pool_steps > 0
    for name, value in learner.model.state_dict().items():  # float32 summation order may differ slightly
        # (Adam's first step moves each weight by ~lr = 3e-3)
        assert torch.allclose(value, torch.from_numpy(received[1].state[name]), atol=1e-5), name


def test_two_namespaces_train_side_by_side_without_cross_talk(spawn, probe):
    fast = {'algo.pool_steps_per_env': 50, 'iterations': 3, 'target_return': '.nan', 'exit_when_done': 'false'}
    inboxes = {ns: probe.subscribe(f'/{ns}/hifi/episodes', UInt8MultiArray) for ns in ('robot1', 'robot2')}
    for ns in ('robot1', 'robot2'):
        probe.subscribe(f'/{ns}/metrics/summary', String, HISTORY)
    checks = [start_graph(spawn, ns, **fast, seed=i) for i, ns in enumerate(('robot1', 'robot2'))]

    def check():
        for c in checks:
            c()
    for ns in ('robot1', 'robot2'):
        rows = summaries(probe, f'/{ns}/metrics/summary', 3, check, timeout=180.0)
        assert rows[-1]['done'] and all(r['dropped'] == 0 for r in rows)
    for ns, inbox in inboxes.items():
        ids = {decode_episode(m.data).episode_id.split('-')[0] for m in inbox}
        assert ids == {ns}, f'{ns} saw episodes from {ids}'


def test_learner_resumes_from_its_checkpoint(spawn, probe, tmp_path):
    from mfpg_ros.core.checkpoint import save_checkpoint
    cfg = load_config(CONFIG)
    learner = make_learner(cfg.algo, make_task(cfg.task).contract, seed=11)
    learner.version = 3  # as if three iterations had run
    run = tmp_path / 'run'
    book = {'hf_total': 300, 'lofi_timeouts': 2, 'nonfinite_updates': 1, 'recent': [20.0, 30.0],
            'returns_running': 5.0, 'returns_finished': []}
    save_checkpoint(learner, run / 'checkpoints' / 'learner_000003.safetensors',
                    extra={'config': cfg.to_dict(), 'learner_node': book})
    (run / 'checkpoints' / '.tmp-cut-short.safetensors').write_bytes(b'half a checkpoint')  # a crash mid-write
    # The dead learner had also logged iterations 3 and 4, but never checkpointed them: the resumed one redoes them.
    # Its last row was cut short by the crash.
    (run / 'metrics.csv').write_text('hf_return,iteration\n' + ''.join(f'{i}.5,{i}\n' for i in range(4)) + '4.5')
    tensorboard = TensorBoardLog(run / 'tensorboard')
    for i in range(5):
        tensorboard.log(i + 1, {'hf_return': i + 0.5})  # an iteration's step is the version it produced
    tensorboard.close()
    def refused(args, reason):
        proc = spawn('learner', node_args(**args))
        probe.wait_until(lambda: proc.poll() is not None, 60, 'the learner to refuse to start')
        assert proc.poll() != 0 and reason in proc.log_tail(40), proc.log_tail(40)
    refused({'run_dir': str(run)}, 'holds a run already')  # a new run would overwrite this one's metrics.csv
    refused({'resume': str(run), 'run_dir': str(run), 'algo.lr': 1e-4}, 'differs in algo.lr')
    refused({'resume': str(run), 'run_dir': str(run), 'iterations': 3}, 'nothing to train')
    newer = run / 'checkpoints' / 'learner_000005.safetensors'  # an older checkpoint resumed into its own folder
    newer.write_bytes((run / 'checkpoints' / 'learner_000003.safetensors').read_bytes())
    refused({'resume': str(run / 'checkpoints' / 'learner_000003.safetensors'), 'run_dir': str(run)},
            'newer than version 3 (versions [5])')
    newer.unlink()

    weights = probe.subscribe('policy/weights', UInt8MultiArray, WEIGHTS_OUT)  # the learner's short history
    diagnostics = probe.subscribe('/diagnostics', DiagnosticArray)
    proc = spawn('learner', node_args(resume=str(run), run_dir=str(run), iterations=50))  # run control may change
    probe.wait_until(lambda: weights, 60, 'weights', lambda: proc.poll() is None or pytest.fail('learner died'))
    resumed = decode_weights(weights[-1].data)
    assert resumed.version == 3
    for name, value in learner.model.state_dict().items():
        assert torch.equal(value, torch.from_numpy(resumed.state[name])), name
    assert (run / 'metrics.csv').read_text() == 'hf_return,iteration\n0.5,0\n1.5,1\n2.5,2\n'
    assert read_scalars(run / 'tensorboard') == {'mfpg/hf_return': [(1, 0.5), (2, 1.5), (3, 2.5)]}
    assert not list((run / 'checkpoints').glob('.tmp-*'))

    def learner_status():
        found = [{kv.key: kv.value for kv in st.values} for m in diagnostics for st in m.status if 'learner' in st.name]
        return found[-1] if found else None
    probe.wait_until(learner_status, 30, 'the learner on /diagnostics')
    status = learner_status()  # the counters go on from the checkpoint
    assert (status['hf_total_steps'], status['lofi_timeouts'], status['nonfinite_updates']) == ('300', '2', '1')
