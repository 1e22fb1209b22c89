"""Benchmark harness: smoke preset end to end (+ resume + report), budget accounting, DARC/PAR corrections."""
import csv
import json
import math
import os
import shutil

import numpy as np
import pytest
import torch
import yaml

from mfpg_ros.bench import report, stats
from mfpg_ros.bench.presets import PRESETS
from mfpg_ros.bench.suite import run_specs, run_suite
from mfpg_ros.core.baselines import CorrectionModel, DomainClassifiers, LatentDynamics
from mfpg_ros.core.config import OffDynamicsConfig, PPOConfig, load_config
from mfpg_ros.core.contract import Contract
from mfpg_ros.core.episode import Episode

os.environ.setdefault('OMP_NUM_THREADS', '1')


@pytest.fixture(scope='module')
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp('suite')
    _, summaries = run_suite(PRESETS['smoke'], out, workers=2, progress=False)
    return out, summaries


def test_smoke_runs_every_cell_and_resumes(smoke):
    out, summaries = smoke
    preset = PRESETS['smoke']
    assert len(summaries) == len(preset.settings) * len(preset.methods) * len(preset.seeds)
    for s in summaries:
        assert np.isfinite(s['final_return']) and s['iteration_seconds'] > 0
        if s['method'] == 'mf_reinforce':
            assert -1 <= s['rho_mean'] <= 1 and np.isfinite(s['c_mean']) and s['lf_steps_per_s'] > 0
    with (out / 'curves.csv').open() as f:
        rows = list(csv.DictReader(f))
    assert {'setting', 'method', 'seed', 'hf_steps', 'eval_return'} <= set(rows[0])
    assert min(int(r['hf_steps']) for r in rows) == 0  # an evaluation before training
    stamp = {p: p.stat().st_mtime_ns for p in out.glob('runs/*/*/seed*/summary.json')}
    run_suite(preset, out, workers=1, progress=False)  # everything finished: nothing reruns
    assert {p: p.stat().st_mtime_ns for p in out.glob('runs/*/*/seed*/summary.json')} == stamp
    assert (out / 'runs/cartpole_twin/darc/seed0/config.yaml').exists()


def test_a_finished_run_made_with_another_config_is_not_reused(smoke, tmp_path):
    out = tmp_path / 'suite'
    shutil.copytree(smoke[0], out)
    config = out / 'runs/cartpole_twin/mf_ppo/seed0/config.yaml'
    stored = yaml.safe_load(config.read_text())
    stored['config']['algo']['ppo']['cv_epochs'] = 0  # as if made before a default changed
    config.write_text(yaml.safe_dump(stored))
    stale = r'mf_ppo/seed0 was run with another config \(algo.ppo.cv_epochs: 0 -> 1\)'
    record = (out / 'suite_smoke.json').read_text()
    for methods, seeds in ((None, None), (['reinforce'], [7])):  # other runs too: the report would aggregate it
        with pytest.raises(ValueError, match=stale):
            run_suite(PRESETS['smoke'], out, workers=1, progress=False, methods=methods, seeds=seeds)
    assert (out / 'suite_smoke.json').read_text() == record  # a refused call is not recorded
    shutil.rmtree(out / 'runs/cartpole_twin/mf_ppo/seed0')
    stray = out / 'runs/cartpole_twin/my_method/seed0'
    stray.mkdir(parents=True)
    (stray / 'summary.json').write_text('{}')
    with pytest.raises(ValueError, match='my_method/seed0 is no run of a known setting, method and seed'):
        run_suite(PRESETS['smoke'], out, workers=1, progress=False, methods=['reinforce'])


def test_k_times_hf_really_uses_k_times_the_hf_steps(smoke):
    _, summaries = smoke
    hf = {(s['setting'], s['method'], s['seed']): s for s in summaries}
    for (setting, method, seed), s in hf.items():
        if method == 'reinforce_10x':
            base = hf[(setting, 'reinforce', seed)]
            assert s['iterations'] == base['iterations']  # same number of updates ...
            assert s['hf_steps'] == 10 * base['hf_steps'] == 10 * PRESETS['smoke'].budget('*').hf_steps  # ... 10x data
    specs = {s['method']: s for s in run_specs(PRESETS['smoke'], ['cartpole_twin'], seeds=[0],
                                               methods=['reinforce', 'reinforce_15x', 'ppo', 'ppo_10x'])}
    ppo, ppo_10x = specs['ppo']['config'], specs['ppo_10x']['config']
    assert ppo_10x['iterations'] == ppo['iterations'] and ppo_10x['algo']['lr'] == ppo['algo']['lr']
    assert ppo_10x['algo']['hf_steps_per_iter'] == 10 * ppo['algo']['hf_steps_per_iter']
    assert ppo_10x['algo']['ppo']['minibatch_size'] == 10 * PPOConfig().minibatch_size  # as many gradient steps
    assert 'minibatch_size' not in ppo['algo'].get('ppo', {})
    paper = specs['reinforce_15x']['config']
    assert paper['algo']['hf_steps_per_iter'] == 3072
    assert paper['algo']['lr'] == pytest.approx(specs['reinforce']['config']['algo']['lr'] * 9 / 7)
    assert paper['iterations'] * 3072 == pytest.approx(15 * 400, rel=0.5)  # 15x the base budget, whole batches


def test_set_overrides_every_run_and_names_the_folder(tmp_path, capsys, monkeypatch):
    specs = run_specs(PRESETS['quick'], ['cartpole_twin'], ['mf_reinforce', 'reinforce'], [0],
                      overrides={'algo.clip_mode': 'separate', 'algo.estimator.c_from_previous': True})
    for spec in specs:
        assert spec['config']['algo']['clip_mode'] == 'separate' and spec['config']['algo']['lr'] == 3e-3
        assert spec['config']['algo']['estimator'] == {'c_from_previous': True}
        assert spec['overrides'] == {'algo.clip_mode': 'separate', 'algo.estimator.c_from_previous': True}
    monkeypatch.chdir(tmp_path)
    from mfpg_ros.bench import suite
    assert suite.main(['--methods', 'ppo', '--set', 'algo.clip_mode=joint', '--list']) == 0
    with pytest.raises(SystemExit):  # separate clipping is not implemented for PPO: refused before any run
        suite.main(['--methods', 'ppo', '--set', 'algo.clip_mode=separate', '--list'])
    folder = tmp_path / 'bench_out/quick__algo.clip_mode=separate'
    (folder / 'runs/cartpole_twin/reinforce/seed1').mkdir(parents=True)
    (folder / 'suite_quick.json').write_text('{"overrides": {}}')
    args = ['--settings', 'cartpole_twin', '--methods', 'reinforce', '--seeds', '0', '--set', 'algo.clip_mode=separate']
    made = []
    monkeypatch.setattr(suite, '_run', lambda todo, *a: made.extend(todo))  # no training here
    assert suite.main(args) == 0 and made  # no run finished there yet: the record alone does not refuse
    (folder / 'runs/cartpole_twin/reinforce/seed1/summary.json').write_text('{}')
    (folder / 'suite_quick.json').write_text('{"overrides": {}}')  # as if that run was made without them
    with pytest.raises(SystemExit):  # default folder name carries the overrides; no mixing with finished runs
        suite.main(args)
    assert 'holds runs made with other --set overrides' in capsys.readouterr().err


def test_one_suite_call_at_a_time_per_folder(tmp_path, capsys):
    from mfpg_ros.bench import suite
    out = tmp_path / 'out'
    args = ['--preset', 'smoke', '--out', str(out), '--settings', 'cartpole_twin', '--methods', 'reinforce',
            '--seeds', '0']
    with suite.claim(out):  # as if another call were running into it
        with pytest.raises(SystemExit):
            suite.main(args)
    assert 'another mfpg bench suite is running into' in capsys.readouterr().err
    assert not (out / 'runs').exists()


def test_suite_set_values_are_typed_as_the_trainers_type_them(monkeypatch, tmp_path):
    from mfpg_ros.bench import suite
    monkeypatch.chdir(tmp_path)
    seen = {}
    monkeypatch.setattr(suite, 'run_suite', lambda *a, overrides, **k: seen.update(overrides) or ([], []))
    assert suite.main(['--settings', 'cartpole_twin', '--methods', 'reinforce', '--seeds', '0',
                       '--set', 'algo.lr=1e-3', '--set', 'algo.ppo.target_kl=null']) == 0
    assert seen['algo.lr'] == 0.001 and isinstance(seen['algo.lr'], float)  # YAML alone reads 1e-3 as text
    assert math.isnan(seen['algo.ppo.target_kl'])
    # the same command again, once a run has finished there: null (NaN here) is stored as JSON null, and equal
    monkeypatch.undo()
    monkeypatch.setattr(suite, '_run', lambda todo, *a: None)
    args = ['--preset', 'smoke', '--out', str(tmp_path / 'out'), '--settings', 'cartpole_twin', '--methods',
            'reinforce', '--seeds', '0', '--set', 'algo.ppo.target_kl=null']
    assert suite.main(args) == 0
    assert json.loads((tmp_path / 'out/suite_smoke.json').read_text())['overrides'] == {'algo.ppo.target_kl': None}
    finished = tmp_path / 'out/runs/cartpole_twin/reinforce/seed1'
    finished.mkdir(parents=True)
    spec, = suite.run_specs(PRESETS['smoke'], ['cartpole_twin'], ['reinforce'], [1],
                            {'algo.ppo.target_kl': math.nan})
    (finished / 'config.yaml').write_text(yaml.safe_dump({'config': suite._plain(
        load_config(spec['config']).to_dict())}))  # as the run would have stored it
    (finished / 'summary.json').write_text('{"setting": "cartpole_twin"}')
    (finished / 'curve.csv').write_text('setting\ncartpole_twin\n')
    assert suite.main(args) == 0  # not refused as "other overrides", nor as another config


def test_a_smaller_rerun_keeps_every_finished_run_in_the_aggregates(smoke, tmp_path):
    out = tmp_path / 'suite'
    shutil.copytree(smoke[0], out)
    _, summaries = run_suite(PRESETS['smoke'], out, workers=1, progress=False, methods=['reinforce'], seeds=[0])
    preset = PRESETS['smoke']
    assert len(summaries) == len(preset.settings) * len(preset.methods) * len(preset.seeds)
    with (out / 'summary.csv').open() as f:
        assert len(list(csv.DictReader(f))) == len(summaries)
    assert json.loads((out / 'suite_smoke.json').read_text())['methods'] == sorted(preset.methods)


def test_report_parses_its_own_output(smoke, capsys, tmp_path):
    out, _ = smoke
    doc = tmp_path / 'results.md'
    doc.write_text(f'intro\n{report.BEGIN}\nold\n{report.END}\noutro\n')
    assert report.main(['--out', str(out), '--figures', str(tmp_path / 'fig'), '--update-doc', str(doc)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1].startswith('median_return_ratio_mf_vs_hf: ')
    float(lines[-1].split(': ')[1])
    table = [line for line in lines if line.startswith('| cartpole_twin (moderate) | mf_reinforce |')]
    assert len(table) == 1 and len(table[0].split('|')) == 10
    text = doc.read_text()
    assert text.startswith('intro') and text.endswith('outro\n') and 'old' not in text and 'curves.png' in text
    for name in ('curves.png', 'final_returns.png'):
        assert 0 < (tmp_path / 'fig' / name).stat().st_size < 300_000


def test_report_on_ppo_runs_only_reports_mf_ppo(smoke, capsys, tmp_path):
    out = tmp_path / 'ppo_only'
    for run in smoke[0].glob('runs/*/*ppo/seed*'):
        shutil.copytree(run, out / run.relative_to(smoke[0]))
    assert report.main(['--out', str(out), '--figures', str(tmp_path / 'fig')]) == 0
    text = capsys.readouterr().out
    assert 'mf_reinforce' not in text and 'mf_ppo vs ppo over 2 settings' in text
    row = next(line for line in text.splitlines() if line.startswith('| cartpole_twin | '))
    rho, c, var_ratio = (cell.strip() for cell in row.split('|')[2:5])  # the estimator statistics are MF-PPO's
    assert rho == '–' and float(c) < 0 and 0 < float(var_ratio) < 2  # pairing 'matched' (its default): no rho
    assert text.strip().splitlines()[-1].split(': ')[1] != 'nan'


def test_stats_known_answers():
    mean, half = stats.mean_ci([1.0, 2.0, 3.0])
    assert mean == 2.0 and half == pytest.approx(4.303 * 1 / np.sqrt(3), rel=1e-3)
    assert stats.welch_p([1, 2, 3, 4], [1, 2, 3, 4]) == pytest.approx(1.0)
    x = np.array([0, 100, 200, 300, 400.0])
    assert stats.steps_to_reach(x, np.array([0, 10, 20, 30, 40.0]), 20, window=1) == 200
    assert stats.steps_to_reach(x, np.array([0, 10, 20, 30, 40.0]), 20, window=3) == 300
    assert np.isnan(stats.steps_to_reach(x, np.zeros(5), 1))


# ---- DARC / PAR reward corrections -------------------------------------------------------------------------
CONTRACT = Contract(task='toy', observation_names=[f's{i}' for i in range(4)], action_names=['u0', 'u1'],
                    action_low=[-1.0, -1.0], action_high=[1.0, 1.0], control_rate_hz=50.0, nq=2, nv=2)
B = np.array([[0.5, 0.0], [0.0, 0.5], [0.2, -0.2], [0.0, 0.3]])


def _transitions(rng, n, sign=1.0):
    s = rng.standard_normal((n, 4)).astype(np.float32)
    a = rng.uniform(-1, 1, (n, 2)).astype(np.float32)
    return s, a, (0.9 * s + sign * a @ B.T).astype(np.float32)


def _trained(model_class, sign_lf, steps, **cfg):
    rng = np.random.default_rng(0)
    model = model_class(OffDynamicsConfig(warmup_hf_steps=0, hidden=64, latent_dim=16, **cfg), CONTRACT, seed=0)
    model.hf_buffer.add(*_transitions(rng, 4000))
    model.lf_buffer.add(*_transitions(rng, 4000, sign_lf))
    for _ in range(steps):
        model.train_step()
    model.updates = steps
    return model, rng


def _correction(model, rng, sign):
    with torch.no_grad():
        return model.per_step(*(torch.as_tensor(x) for x in _transitions(rng, 2000, sign))).numpy()


def test_darc_correction_vanishes_on_identical_dynamics():
    same, rng = _trained(DomainClassifiers, +1.0, 400, lr=1e-3)
    delta = _correction(same, rng, +1.0)
    assert abs(delta.mean()) < 0.05 and np.abs(delta).mean() < 0.15
    shifted, rng = _trained(DomainClassifiers, -1.0, 400, lr=1e-3)
    assert _correction(shifted, rng, -1.0).mean() < -0.5  # LF-only transitions are penalised ...
    assert _correction(shifted, rng, +1.0).mean() > 0.5  # ... HF-like ones are not


def test_par_penalty_vanishes_on_identical_dynamics():
    untrained, rng = _trained(LatentDynamics, +1.0, 0, tau=0.05)
    before = -_correction(untrained, rng, +1.0).mean()
    model, rng = _trained(LatentDynamics, +1.0, 600, lr=1e-3, tau=0.05)
    same, shifted = -_correction(model, rng, +1.0), -_correction(model, rng, -1.0)
    assert (same >= 0).all() and (shifted >= 0).all()
    assert same.mean() < 0.1 * before  # trained on HF: the matching LF dynamics is predicted
    assert shifted.mean() > 5 * same.mean()  # a different LF dynamics is not


class _Constant(CorrectionModel):
    def per_step(self, s, a, s2):
        return torch.full((len(s),), 0.25) + s[:, 0] * 0


def test_correction_keeps_segment_shape_and_fills_the_last_step():
    model = _Constant(OffDynamicsConfig(), CONTRACT, seed=0)
    model.updates = 1
    rng = np.random.default_rng(1)
    segments = [Episode(obs=rng.standard_normal((n, 4)).astype(np.float32), actions=np.zeros((n, 2), np.float32),
                        eps=np.zeros((n, 2)), rewards=np.ones(n), qpos0=np.zeros(2), qvel0=np.zeros(2),
                        contract=CONTRACT, policy_version=0) for n in (5, 1)]
    corrected, mean = model.correct(segments)
    assert mean == pytest.approx(0.25)
    np.testing.assert_allclose(corrected[0].rewards, 1.25)  # the last step (no s') gets the segment's mean
    np.testing.assert_allclose(corrected[1].rewards, 1.0)  # a one-step segment has no transition: unchanged
    np.testing.assert_allclose(segments[0].rewards, 1.0)  # inputs untouched


def test_summary_json_is_plain(smoke):
    out, _ = smoke
    summary = json.loads(next(out.glob('runs/*/par/seed0/summary.json')).read_text())
    assert summary['method'] == 'par' and summary['hf_steps'] == PRESETS['smoke'].budget('*').hf_steps


def test_scaleout_probe_reads_episode_bytes_from_raw_cdr():
    """The scale-out probe takes lofi/episodes raw; its parser must agree with rclpy's and rosbags' serializers."""
    import array

    from rclpy.serialization import serialize_message
    from std_msgs.msg import UInt8MultiArray

    from mfpg_ros.bagfile import serialize_payload
    from mfpg_ros.bench.scaleout import cdr_payload
    for payload in (b'', b'x', bytes(range(256)) * 3):
        assert cdr_payload(serialize_payload(payload)) == payload
        assert cdr_payload(serialize_message(UInt8MultiArray(data=array.array('B', payload)))) == payload


def test_scaleout_probe_counts_the_steps_of_single_episodes_and_batches():
    from mfpg_ros.bench.scaleout import segment_info
    from mfpg_ros.core.codec import encode_episode, encode_episodes
    from mfpg_ros.core.episode import LOFI_POOL
    from mfpg_ros.core.numpy_policy import NumpyPolicy
    from mfpg_ros.core.policy import ActorCritic
    from mfpg_ros.sim.engine import Engine
    from mfpg_ros.sim.tasks import make_task
    task = make_task('cartpole')
    policy = NumpyPolicy(ActorCritic(task.contract.obs_dim, task.contract.act_dim))
    pool = Engine(task, 3, seed=0, nthread=1).collect(policy, 60, 4, LOFI_POOL)
    assert len(pool) > 3  # episodes ended and were cut: a real batch of several segments
    assert segment_info(encode_episodes(pool)) == (4, LOFI_POOL, 3 * 60)
    assert segment_info(encode_episode(pool[0])) == (4, LOFI_POOL, len(pool[0]))
