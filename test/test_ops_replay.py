"""`mfpg replay`: the learner re-run on a bag lands exactly on the recorded weights -- for a synthetic bag written
through the same BagWriter (including an LF-timeout iteration), and for a bag recorded from a real graph run."""
import json
import shutil

import torch
import yaml

from mfpg_ros import graph
from mfpg_ros.bagfile import BYTES_TYPE, TEXT_TYPE, BagWriter
from mfpg_ros.core.codec import encode_episode, encode_episodes, encode_weights
from mfpg_ros.core.config import load_config
from mfpg_ros.diagnostics_feed import DiagnosticsFeed
from mfpg_ros.replay import load_recording, main, replay
from mfpg_ros.trainer import Trainer

torch.set_num_threads(1)
TOPICS = {'/policy/weights': BYTES_TYPE, '/hifi/episodes': BYTES_TYPE, '/lofi/episodes': BYTES_TYPE,
          '/metrics/summary': TEXT_TYPE}


def small_config(**algo):
    return load_config({'task': 'cartpole', 'seed': 2, 'iterations': 4, 'target_return': None,
                        'algo': {'lr': 3e-3, 'hf_steps_per_iter': 60, 'pool_envs': 2, 'pool_steps_per_env': 100,
                                 **algo}})


def record_synthetic(bag, cfg, versions=4, lofi_timeout_at=2):
    """What the learner node would see and publish, written through BagWriter; at `lofi_timeout_at` the LF pool
    never arrives and the learner takes an HF-only update."""
    trainer = Trainer(cfg, nthread=1)
    contract = trainer.learner.contract
    writer = BagWriter(bag, config=cfg.to_dict())
    for topic, msgtype in TOPICS.items():
        writer.add_topic(topic, msgtype)
    clock, timeouts = iter(range(1, 10 ** 6)), 0
    for version in range(versions):
        writer.write_payload('/policy/weights', next(clock), encode_weights(trainer.learner.model, version=version,
                                                                            contract=contract))
        hifi, paired, pool = trainer.collect()
        if version == lofi_timeout_at:
            pool, timeouts = [], timeouts + 1
        for segment in hifi:
            writer.write_payload('/hifi/episodes', next(clock), encode_episode(segment))
        for segment in paired:
            writer.write_payload('/lofi/episodes', next(clock), encode_episode(segment))
        if pool:  # one message (lofi_sim sends it in pieces: test_replay_of_a_recorded_graph_run covers that)
            writer.write_payload('/lofi/episodes', next(clock), encode_episodes(pool))
        metrics = trainer.learner.update(hifi, [] if version == lofi_timeout_at else paired, pool)
        metrics['lofi_timeouts'] = timeouts
        writer.write_text('/metrics/summary', next(clock), json.dumps(metrics))
    writer.write_payload('/policy/weights', next(clock), encode_weights(trainer.learner.model, version=versions,
                                                                        contract=contract))
    writer.close()


def test_replay_of_a_synthetic_bag_is_exact(tmp_path, capsys):
    bag, cfg = tmp_path / 'bag', small_config()
    record_synthetic(bag, cfg)
    rec = load_recording(bag)
    assert sorted(rec.weights) == [0, 1, 2, 3, 4] and rec.undecodable == 0
    lines = []
    assert replay(rec, cfg, log=lines.append) == [(v, 0.0) for v in range(4)]
    assert 'HF-only: LF timeout' in lines[3] and 'pool 0 steps' in lines[3]

    assert main([str(bag)]) == 0  # the config comes from the bag
    assert capsys.readouterr().out.splitlines()[-1] == 'replay_max_weight_diff: 0'
    shutil.copytree(bag, tmp_path / 'bag_20260101-000000')  # as a run resumed in its folder leaves it
    assert main([str(tmp_path)]) == 0  # a run folder: its first recording, and the others named
    out = capsys.readouterr().out
    assert 'holds more recordings (resumed parts): bag_20260101-000000' in out and out.endswith('diff: 0\n')
    other = tmp_path / 'other.yaml'
    other.write_text(yaml.safe_dump({**cfg.to_dict(), 'algo': {**cfg.to_dict()['algo'], 'lr': 1e-3}}))
    assert main([str(bag), '--config', str(other)]) == 1  # another learning rate: the replay notices
    out = capsys.readouterr().out.splitlines()
    assert out[-2].startswith('MISMATCH') and float(out[-1].split(': ')[1]) > 1e-5


def test_replay_of_a_matched_pairing_bag_is_exact(tmp_path):
    """Under pairing 'matched' the learner waits for each segment's branches, not for a pool budget: the replay
    must assemble each version the same way to land on the recorded weights."""
    bag, cfg = tmp_path / 'bag', small_config(estimator={'pairing': 'matched'})
    record_synthetic(bag, cfg, lofi_timeout_at=None)
    assert replay(load_recording(bag), cfg, log=lambda line: None) == [(v, 0.0) for v in range(4)]


def test_replay_of_a_recorded_graph_run(ros_env, spawn, probe, tmp_path, capsys):
    overrides = {k: graph.config_value(k, v) for k, v in {
        'iterations': 3, 'target_return': None, 'algo.hf_steps_per_iter': 50, 'algo.pool_envs': 2,
        'algo.pool_steps_per_env': 100}.items()}
    bag = tmp_path / 'bag'
    recorder = graph.NodeSpec('bag_recorder', 'bag_recorder', params_files=(graph.share_file('config', 'train.yaml'),),
                              overrides={**overrides, 'bag_path': str(bag)})
    specs = graph.build_graph('twin', run_dir=tmp_path / 'run', overrides=overrides,  # the learner stays up: its
                              node_params={'learner': {'exit_when_done': False}})  # latched history with it
    procs = {recorder.name: spawn(recorder.executable, recorder.ros_args(), name=recorder.name)}
    probe.wait_for_nodes(['/bag_recorder'], timeout=60)  # recording before the learner publishes anything
    procs.update({s.name: spawn(s.executable, s.ros_args(), name=s.name) for s in specs})

    def running():  # every node up, except a learner that finished cleanly
        for name, proc in procs.items():
            assert proc.poll() is None or (name == 'learner' and proc.poll() == 0), f'{name} died'

    diagnostics = DiagnosticsFeed(probe)  # done once the recorder holds weights 0..3 and 3 summaries
    recorded = {'recorded /policy/weights': 4, 'recorded /metrics/summary': 3}
    try:
        probe.wait_until(lambda: all(diagnostics.value('/bag_recorder', k) >= n for k, n in recorded.items()), 120,
                         'the recorder to hold 3 iterations', running)
    except TimeoutError as err:  # say which stream fell short
        raise TimeoutError(f'{err}; the recorder reports {diagnostics.latest.get("/bag_recorder")}') from err
    # Episodes reach the recorder independently of the learner: wait until it holds every message their writers
    # sent (once the learner is done, hifi_interface pauses and lofi_sim has nothing left to simulate). The counts
    # are read from reports sent after every message of versions 0-2 had gone out (the learner had them all).
    diagnostics.wait_fresh(['/hifi_interface', '/lofi_sim'], 30, running)

    def caught_up():
        sent = (diagnostics.value('/hifi_interface', 'segments'), diagnostics.value('/lofi_sim', 'messages_sent'))
        counts = tuple(diagnostics.value('/bag_recorder', f'recorded /{t}/episodes') for t in ('hifi', 'lofi'))
        return counts == sent and min(sent) > 0
    probe.wait_until(caught_up, 120, 'the recorder to catch up with the episodes', running)
    assert procs['bag_recorder'].stop() == 0
    assert main([str(tmp_path)]) == 0  # the run folder holding the bag
    out = capsys.readouterr().out
    print(out)
    assert 'weights versions [0, 1, 2, 3]' in out
    assert out.splitlines()[-1] == 'replay_max_weight_diff: 0'


def test_update_without_lofi_data_is_plain_hf_reinforce():
    """The learner node's LF-timeout path: an MF update without pairs equals HF-only REINFORCE (it used to raise)."""
    mf = Trainer(small_config(), nthread=1)
    hf_only = Trainer(small_config(algorithm='reinforce'), nthread=1)
    hifi, _, _ = mf.collect()
    metrics = mf.learner.update(hifi, [], [])
    hf_only.learner.update(hifi)
    assert metrics['c'] == 0.0 and metrics['skipped'] == 0.0
    for a, b in zip(mf.learner.model.parameters(), hf_only.learner.model.parameters()):
        assert torch.equal(a, b)
