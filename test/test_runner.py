"""graph.py (the node graph as data) and the embedded runner (`mfpg train`): argv building, typed parameters as
rclpy parses them, supervision with fake node processes, and (once the nodes exist) a short end-to-end run."""
from __future__ import annotations

import importlib.util
import json
import math
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import psutil
import pytest
import yaml
import rclpy
from rclpy.signals import SignalHandlerOptions
from std_msgs.msg import String

from mfpg_ros import graph, runner
from mfpg_ros.node_process import NodeProcess
from mfpg_ros.core.config import TrainConfig, load_config

NODE_MODULES = [f'mfpg_ros.nodes.{n}' for n in (*graph.TRAINING_NODES, 'twin_plant')]


def _args(spec: graph.NodeSpec, flag: str) -> list[str]:
    argv = spec.ros_args()
    return [argv[i + 1] for i, a in enumerate(argv) if a == flag]


# --- graph.py ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('hardware, plant', [('twin', ['twin_plant']), ('gazebo', []), ('real', [])])
def test_hardware_selects_the_node_set(hardware, plant, tmp_path):
    specs = graph.build_graph(hardware, run_dir=tmp_path)
    assert [s.name for s in specs] == ['learner', 'policy_server', 'lofi_sim', 'hifi_interface', *plant]
    assert all(s.required for s in specs)
    profile = graph.share_file('config', 'hardware', f'{hardware}.yaml')
    for spec in specs:
        expected = [graph.share_file('config', 'train.yaml')]
        expected += [profile] if spec.executable in graph.PROFILE_NODES else []
        assert list(spec.params_files) == expected


def test_a_robots_own_hardware_profile_replaces_the_packages(tmp_path):
    mine = tmp_path / 'my_robot.yaml'
    mine.write_text('/**:\n  ros__parameters:\n    use_sim_time: false\n    command_topic: arm/commands\n')
    specs = graph.build_graph('real', run_dir=tmp_path / 'run', profile=mine)
    for spec in specs:
        assert (str(mine) in spec.params_files) == (spec.executable in graph.PROFILE_NODES)
        assert spec.overrides.get('use_sim_time', False) is False  # the clock setting read from this file
    twin = graph.build_graph('twin', run_dir=tmp_path / 'run', profile=mine)  # a twin on wall time, as it says
    assert not any(s.overrides.get('use_sim_time') for s in twin)
    with pytest.raises(FileNotFoundError, match='hardware profile .*nope.yaml does not exist'):
        graph.build_graph('real', run_dir=tmp_path / 'run', profile=tmp_path / 'nope.yaml')


def test_recording_adds_an_optional_bag_recorder(tmp_path):
    specs = graph.build_graph('twin', run_dir=tmp_path, record=True)
    recorder = specs[-1]
    assert recorder.executable == 'bag_recorder' and not recorder.required
    assert recorder.overrides['bag_path'] == str(tmp_path.resolve() / 'bag')


def test_unknown_hardware_and_config_keys_are_rejected(tmp_path):
    with pytest.raises(ValueError, match='hardware'):
        graph.build_graph('mars', run_dir=tmp_path)
    with pytest.raises(ValueError, match='algo.lrr'):
        graph.build_graph(run_dir=tmp_path, overrides={'algo.lrr': 1.0})
    with pytest.raises(ValueError, match='unknown nodes'):
        graph.build_graph('real', run_dir=tmp_path, node_params={'twin_plant': {'mode': 'realtime'}})


def test_argv_carries_name_namespace_params_and_remaps(tmp_path):
    config = tmp_path / 'my.yaml'
    config.write_text('/**:\n  ros__parameters: {}\n')
    specs = graph.build_graph('real', namespace='/robot1/', config=config, run_dir=tmp_path / 'run',
                              overrides={'iterations': 3, 'algo.lr': '1e-3', 'target_return': 475},
                              node_params={'learner': {'checkpoint_every': 5}},
                              remappings=[('/diagnostics', '/robot1/diagnostics')])
    learner = next(s for s in specs if s.name == 'learner')
    argv = learner.ros_args(tmp_path / 'params')
    assert argv[0] == '--ros-args'
    assert _args(learner, '-r')[:2] == ['__node:=learner', '__ns:=/robot1']
    assert '/diagnostics:=/robot1/diagnostics' in _args(learner, '-r')
    files = [argv[i + 1] for i, a in enumerate(argv) if a == '--params-file']
    assert files[0] == str(config) and files[-1] == str(tmp_path / 'params' / 'robot1__learner.yaml')  # last wins
    lines = Path(files[-1]).read_text().splitlines()
    assert lines[:2] == ['/robot1/learner:', '  ros__parameters:']
    assert '/**/learner:' in lines  # the same values: this key matches under a namespace a launch file pushes
    assert {'iterations: 3', 'algo.lr: 0.001', 'target_return: 475.0', 'checkpoint_every: 5'} <= {
        line.strip() for line in lines}
    assert f'    run_dir: "{(tmp_path / "run").resolve()}"' in lines
    assert learner.fully_qualified_name == '/robot1/learner'
    assert all(s.namespace == 'robot1' for s in specs)


def test_the_twins_control_loop_is_one_process_of_three_nodes(tmp_path):
    specs = graph.build_graph('twin', namespace='robot1', run_dir=tmp_path, record=True,
                              remappings=[('/diagnostics', '/robot1/diagnostics')])
    units = graph.processes(specs)
    assert [u.name for u in units] == ['learner', 'hf_loop', 'lofi_sim', 'bag_recorder']
    loop = units[1]
    assert loop.composed and loop.executable == 'mfpg_compose' and loop.required
    assert sorted(loop.arguments) == sorted(graph.COMPOSED['twin']['hf_loop'])
    argv = loop.command(tmp_path / 'params')
    head, ros = argv[:argv.index('--ros-args')], argv[argv.index('--ros-args') + 1:]
    assert head == loop.arguments
    assert not any(a.startswith('__node:=') for a in ros)  # each node keeps its name
    assert ros[:2] == ['-r', '__ns:=/robot1'] and '/diagnostics:=/robot1/diagnostics' in ros
    files = [ros[i + 1] for i, a in enumerate(ros) if a == '--params-file']
    assert files[:2] == [str(f) for f in loop.nodes[0].params_files]
    assert files[2:] == [str(tmp_path / 'params' / f'robot1__{n}.yaml') for n in loop.arguments]  # one per node
    for unit in units:  # the others as before: a process per node, its own argv
        assert unit.composed or unit.command(tmp_path) == unit.nodes[0].ros_args(tmp_path)
    separate = graph.processes(graph.build_graph('twin', run_dir=tmp_path, compose=False))
    assert not any(u.composed for u in separate) and len(separate) == 5
    assert not any(u.composed for u in graph.processes(graph.build_graph('real', run_dir=tmp_path)))


def test_composed_nodes_must_share_their_process_arguments(tmp_path):
    a = graph.NodeSpec('a', 'twin_plant', params_files=('x.yaml',), process='p')
    with pytest.raises(ValueError, match=r"nodes \['b'\] of process 'p' differ from a"):
        graph.processes([a, graph.NodeSpec('b', 'hifi_interface', params_files=('y.yaml',), process='p')])


def test_compose_names_the_nodes_it_can_run():
    from mfpg_ros.nodes import compose
    assert {n: c.__name__ for n, c in compose.node_classes(['twin_plant', 'policy_server']).items()} == {
        'twin_plant': 'TwinPlant', 'policy_server': 'PolicyServer'}
    for bad in ([], ['twin_plant', 'nope'], ['twin_plant', 'twin_plant'], ['learner']):
        with pytest.raises(SystemExit, match='usage: mfpg_compose NODE'):
            compose.node_classes(bad)
    with pytest.raises(SystemExit, match='__node:=x would give every node of the process that name'):
        compose.check_ros_args(['--ros-args', '-r', '__node:=x'])
    compose.check_ros_args(['--ros-args', '-r', '__ns:=/robot1', '-r', 'policy_server:a:=b'])


def test_several_lofi_workers(tmp_path):
    specs = graph.build_graph('twin', run_dir=tmp_path, lofi_workers=2, node_params={'lofi_sim': {'nthread': 2}})
    lofi = [s for s in specs if s.executable == 'lofi_sim']
    assert [s.name for s in lofi] == ['lofi_sim_0', 'lofi_sim_1']
    assert [(s.overrides['worker_index'], s.overrides['num_workers'], s.overrides['nthread']) for s in lofi] == \
        [(0, 2, 2), (1, 2, 2)]


def test_config_values_get_the_declared_ros_type():
    assert graph.config_value('algo.lr', 1) == 1.0 and isinstance(graph.config_value('algo.lr', 1), float)
    assert graph.config_value('algo.lr', '7e-4') == 7e-4
    assert graph.config_value('iterations', '12') == 12
    assert graph.config_value('algo.estimator.trim_pairs', 'false') is False
    assert math.isnan(graph.config_value('target_return', None))
    assert graph.config_value('algo.estimator.fixed_c', '0.5') == 0.5
    assert graph.config_value('lofi_variant', None) == ''
    assert graph.config_value('algo.hidden', '[32, 32]') == [32, 32]
    assert graph.config_value('task', 'cartpole') == 'cartpole'
    with pytest.raises(ValueError):
        graph.config_value('iterations', 2.5)
    with pytest.raises(ValueError):
        graph.config_value('algo.estimator.trim_pairs', 1)


def test_param_literals():
    assert graph.param_literal('1') == '"1"'
    assert graph.param_literal(math.nan) == '.nan'
    assert graph.param_literal(['a', 'b']) == '["a", "b"]'
    assert graph.param_literal(True) == 'true'
    assert graph.param_literal(1e-5) == '1e-05'


def test_resolved_config_file_reads_back(tmp_path):
    cfg = load_config(graph.share_file('config', 'train.yaml'), **{'algo.lr': 1e-3, 'target_return': 475.0})
    path = tmp_path / 'config.yaml'
    path.write_text(graph.params_file_text(cfg))
    assert load_config(path) == cfg
    assert load_config(path).to_dict() == cfg.to_dict() and isinstance(cfg, TrainConfig)


def _parsed_by_rcl(spec: graph.NodeSpec) -> tuple[str, dict]:
    """The node name and parameters rclpy gives a node started with this spec's --ros-args (no DDS traffic)."""
    ctx = rclpy.Context()
    rclpy.init(args=['node', *spec.ros_args()], context=ctx, signal_handler_options=SignalHandlerOptions.NO)
    try:
        node = rclpy.create_node('unnamed', context=ctx, automatically_declare_parameters_from_overrides=True,
                                 start_parameter_services=False)
        try:
            return node.get_fully_qualified_name(), {n: p.value for n, p in node._parameters.items()}
        finally:
            node.destroy_node()
    finally:
        ctx.try_shutdown()


def test_rcl_parses_the_argv_into_typed_parameters(tmp_path):
    specs = graph.build_graph('twin', namespace='robot1', run_dir=tmp_path,
                              overrides={'algo.lr': 1, 'task': 'cartpole', 'seed': 4, 'target_return': None})
    by_name = {s.name: s for s in specs}
    name, params = _parsed_by_rcl(by_name['hifi_interface'])
    assert name == '/robot1/hifi_interface'
    assert params['algo.lr'] == 1.0 and isinstance(params['algo.lr'], float)
    assert params['seed'] == 4 and params['task'] == 'cartpole'
    assert math.isnan(params['target_return']) and params['lofi_variant'] == ''
    assert 'joint_names' not in params  # the twin publishes the task's own joint names
    assert params['command_topic'] == 'effort_controller/commands' and params['reset_service'] == 'reset'
    assert params['on_budget'] == 'pause' and 'mode' not in params  # /**/twin_plant does not leak
    name, params = _parsed_by_rcl(by_name['twin_plant'])
    assert name == '/robot1/twin_plant' and params['mode'] == 'lockstep' and 'on_budget' not in params
    _, params = _parsed_by_rcl(by_name['learner'])
    assert params['run_dir'] == str(tmp_path.resolve()) and 'joint_names' not in params
    _, real = _parsed_by_rcl(graph.build_graph('real', run_dir=tmp_path)[3])
    assert real['on_budget'] == 'continue' and list(real['joint_names']) == ['cart_slider', 'pole_hinge']


def test_node_parameters_beat_the_profiles_node_sections(tmp_path):
    """`--set twin_plant.mode=realtime` must win over the twin profile's `/**/twin_plant: mode: lockstep` (a `-p`
    override would not), in a namespace too."""
    for namespace in ('', 'robot1'):
        specs = graph.build_graph('twin', namespace=namespace, run_dir=tmp_path, node_params={
            'twin_plant': {'mode': 'realtime'}, 'policy_server': {'watchdog_timeout_s': 0.3}})
        by_name = {s.name: s for s in specs}
        assert _parsed_by_rcl(by_name['twin_plant'])[1]['mode'] == 'realtime'
        assert _parsed_by_rcl(by_name['policy_server'])[1]['watchdog_timeout_s'] == 0.3
    # and the graph's values beat a config's own sections for a node, by wildcard or by full name
    config = yaml.safe_load(Path(graph.share_file('config', 'train.yaml')).read_text())
    config['/**/learner'] = {'ros__parameters': {'run_dir': str(tmp_path / 'elsewhere')}}
    config['/robot1/learner'] = {'ros__parameters': {'seed': 99}}
    (tmp_path / 'config.yaml').write_text(yaml.safe_dump(config))
    specs = graph.build_graph('twin', namespace='robot1', config=tmp_path / 'config.yaml', run_dir=tmp_path / 'run',
                              overrides={'seed': 4})
    params = _parsed_by_rcl(next(s for s in specs if s.name == 'learner'))[1]
    assert params['run_dir'] == str((tmp_path / 'run').resolve()) and params['seed'] == 4


# --- runner CLI ----------------------------------------------------------------------------------------------------
def test_set_splits_config_values_from_node_parameters():
    overrides, node_params = runner.split_assignments(
        ['algo.lr=1e-3', 'learner.checkpoint_every=10', 'twin_plant.mode=realtime', 'learner.resume=20240501'],
        {'learner', 'twin_plant'})
    assert overrides == {'algo.lr': 1e-3}
    assert node_params == {'learner': {'checkpoint_every': 10, 'resume': '20240501'},  # a path stays text
                           'twin_plant': {'mode': 'realtime'}}
    # a training key for one node would split the graph's config (the learner waiting for LF data that never comes)
    with pytest.raises(ValueError, match=r'algo.algorithm is a training key.*--set algo.algorithm=mf_ppo'):
        runner.split_assignments(['learner.algo.algorithm=mf_ppo'], {'learner'})


def test_cli_rejects_a_bad_key_before_starting_anything(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:  # several values after one --set, as train-inprocess takes them
        runner.main(['--run-dir', str(tmp_path / 'run'), '--set', 'algo.lr=1e-3', 'algo.nope=1'])
    assert exit_info.value.code == 2
    assert 'algo.nope' in capsys.readouterr().err
    assert not (tmp_path / 'run').exists()
    # a knob dict cannot be a ROS parameter: refused up front, from the command line or from a config file
    with pytest.raises(SystemExit):
        runner.main(['--run-dir', str(tmp_path / 'run'), '--set', 'hifi_variant={gravity: 2.0}'])
    assert 'a knob dict cannot be a ROS parameter' in capsys.readouterr().err
    config = tmp_path / 'dict.yaml'
    config.write_text(yaml.safe_dump({'/**': {'ros__parameters': {'hifi_variant': {'gravity': 2.0}}}}))
    with pytest.raises(SystemExit):
        runner.main(['--run-dir', str(tmp_path / 'run'), '--config', str(config)])
    assert 'a knob dict cannot be a ROS parameter' in capsys.readouterr().err
    assert not (tmp_path / 'run').exists()


# --- supervision with fake nodes -----------------------------------------------------------------------------------
FAKE_NODE = '''
import json, os, sys, time
import rclpy
from std_msgs.msg import String

rclpy.init(args=sys.argv)
node = rclpy.create_node('fake')
name = node.get_name()
if name == 'crasher':
    print('boom: the fake node failed on purpose', flush=True)
    sys.exit(3)
if name == 'learner':  # three summaries once the runner listens, the last one done
    pub = node.create_publisher(String, 'metrics/summary', 10)
    while rclpy.ok() and pub.get_subscription_count() == 0:
        rclpy.spin_once(node, timeout_sec=0.05)
    for i in range(3):
        pub.publish(String(data=json.dumps({'iteration': i, 'hf_total_steps': 100 * (i + 1),
            'hf_return': 10.0 * (i + 1), 'c': -0.5, 'rho': 0.9, 'var_ratio': 0.2, 'iteration_seconds': 0.1,
            'done': i == 2})))
    if os.environ.get('FAKE_LEARNER_FINISHED'):  # like the learner node: last files, then exit on its own
        time.sleep(0.5)  # its final work (acks, TensorBoard, closing files)
        open(os.environ['FAKE_LEARNER_FINISHED'], 'w').close()
        sys.exit(0)
if name == 'echo':  # republishes 'in' on 'out'
    out = node.create_publisher(String, 'out', 10)
    node.create_subscription(String, 'in', out.publish, 10)
try:
    rclpy.spin(node)
except KeyboardInterrupt:
    pass
'''


@pytest.fixture
def fake_node(tmp_path) -> str:
    path = tmp_path / 'fake_node'
    path.write_text(f'#!{sys.executable}\n' + textwrap.dedent(FAKE_NODE))
    path.chmod(0o755)
    return str(path)


def _fake_specs(executable: str, names, namespace: str = 'fake') -> list[graph.NodeSpec]:
    return [graph.NodeSpec(name=n, executable=executable, namespace=namespace) for n in names]


def _assert_no_children():
    """No node process outlives the runner (pytest's own helpers, e.g. multiprocessing's resource tracker left by
    an earlier test, do not count)."""
    def is_helper(p):
        return any('multiprocessing' in part for part in p.cmdline())
    assert [p for p in psutil.Process().children(recursive=True)
            if p.status() != psutil.STATUS_ZOMBIE and not is_helper(p)] == []


def test_a_restarted_node_appends_to_its_log_and_reads_back_its_own_part(tmp_path):
    log = tmp_path / 'logs' / 'node.log'
    for word in ('first', 'second'):
        code = f'print("{word}", "ran" + "!"); print("[WARN] [1.5] [robot1.twin_plant]: {word} said" + "!")'
        proc = NodeProcess('node', [sys.executable, '-c', code], {}, log).start()
        assert proc.wait_or_kill(time.monotonic() + 30) == 0
        assert proc.log_lines('ran!') == [f'{word} ran!'] and ('first' in proc.log_tail()) == (word == 'first')
        assert proc.log_lines('said!') == [f'robot1.twin_plant: {word} said!']  # the node, in a shared process too
    text = log.read_text()
    assert text.count('$ ') == 2 and text.index('first ran!') < text.index('second ran!')  # nothing lost


def test_spawn_and_probe_fixtures(fake_node, spawn, probe):
    echo = spawn(fake_node, ['--ros-args', '-r', '__node:=echo', '-r', '__ns:=/fake'], name='echo')
    probe.wait_for_nodes(['/fake/echo'], timeout=30, check=lambda: echo.poll() is None or pytest.fail('echo died'))
    probe.subscribe('/fake/out', String)
    probe.publish('/fake/in', String(data='hello'))
    assert [m.data for m in probe.wait_for_messages('/fake/out', String, 1, timeout=30)] == ['hello']


def test_runner_reports_a_dying_node(fake_node, ros_env, tmp_path, capsys):
    specs = _fake_specs(fake_node, ['idler', 'crasher'])
    code, summaries = runner.run_graph(specs, tmp_path, ros_env, timeout=30)
    out = capsys.readouterr()
    assert code == runner.EXIT_FAILED and summaries == []
    report = out.out + out.err
    assert "node 'crasher' exited with code 3" in report
    assert 'boom: the fake node failed on purpose' in report  # the tail of its log
    assert str(tmp_path / 'logs' / 'crasher.log') in report
    _assert_no_children()


def test_runner_follows_the_summaries_until_done(fake_node, ros_env, tmp_path):
    specs = _fake_specs(fake_node, ['learner', 'idler'])
    code, summaries = runner.run_graph(specs, tmp_path, ros_env, total_iterations=3, timeout=30)
    assert code == runner.EXIT_DONE
    assert [s['iteration'] for s in summaries] == [0, 1, 2] and summaries[-1]['done']
    rows = runner.write_outputs(tmp_path, summaries)
    assert (tmp_path / 'metrics.csv').read_text().splitlines()[0].startswith('iteration,hf_total_steps,hf_return')
    assert (tmp_path / 'learning_curve.png').stat().st_size > 1000
    assert runner.final_return(rows) == 30.0
    assert (tmp_path / 'logs' / 'learner.log').read_text().startswith(f'$ {fake_node} --ros-args')
    _assert_no_children()


def test_runner_lets_a_done_learner_finish_before_stopping_the_graph(fake_node, ros_env, tmp_path):
    """A 'done' summary (or metrics.csv row) arrives before the learner has closed its files: stopping the graph
    right then once cut its last TensorBoard point. The runner waits for it to exit by itself."""
    finished = tmp_path / 'learner_finished'
    env = {**ros_env, 'FAKE_LEARNER_FINISHED': str(finished)}
    code, summaries = runner.run_graph(_fake_specs(fake_node, ['learner', 'idler']), tmp_path, env, timeout=30)
    assert code == runner.EXIT_DONE and summaries[-1]['done']
    assert finished.is_file()
    _assert_no_children()


def test_runner_stops_at_the_timeout(fake_node, ros_env, tmp_path):
    code, _ = runner.run_graph(_fake_specs(fake_node, ['idler']), tmp_path, ros_env, timeout=4)
    assert code == runner.EXIT_TIMEOUT
    _assert_no_children()


INTERRUPTED_RUNNER = '''
import signal, sys
from pathlib import Path
from mfpg_ros import graph, runner
from mfpg_ros.node_process import NodeProcess
signal.signal(signal.SIGINT, signal.default_int_handler)  # as `mfpg train` does
specs = [graph.NodeSpec(name=n, executable=sys.argv[1], namespace='fake') for n in ('idler', 'other_idler')]
sys.exit(runner.run_graph(specs, Path(sys.argv[2]), runner.child_env(), timeout=60)[0])
'''


def test_ctrl_c_stops_every_node(fake_node, ros_env, tmp_path):
    driver = subprocess.Popen([sys.executable, '-c', INTERRUPTED_RUNNER, fake_node, str(tmp_path)], env=ros_env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    watchdog = threading.Timer(60, driver.kill)  # a hung driver ends the read loop below (EOF)
    watchdog.start()
    try:
        lines = []
        for line in driver.stdout:
            lines.append(line)
            if line.startswith('graph up'):
                break
        nodes = psutil.Process(driver.pid).children()
        assert len(nodes) == 2, ''.join(lines)
        driver.send_signal(signal.SIGINT)
        assert driver.wait(30) == runner.EXIT_INTERRUPTED
        assert 'interrupted' in driver.stdout.read()
        assert not [p for p in nodes if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    finally:
        watchdog.cancel()
        if driver.poll() is None:
            driver.kill()
        driver.wait()


# --- end to end (needs the real nodes) -----------------------------------------------------------------------------
@pytest.mark.skipif(any(importlib.util.find_spec(m) is None for m in NODE_MODULES),
                    reason='the node modules (mfpg_ros.nodes.learner, ...) are not written yet')
def test_mfpg_train_end_to_end_on_the_twin(ros_env, tmp_path):
    run_dir = tmp_path / 'run'
    cmd = [str(Path(sys.executable).parent / 'mfpg'), 'train', '--run-dir', str(run_dir), '--iterations', '3',
           '--set', 'algo.hf_steps_per_iter=50', '--set', 'algo.pool_envs=2', '--set', 'algo.pool_steps_per_env=100',
           'twin_plant.clock_perod_s=0.5', '--timeout', '120']
    result = subprocess.run(cmd, env=ros_env, capture_output=True, text=True, timeout=180)
    logs = '\n'.join(f'--- {p}\n{p.read_text()[-3000:]}' for p in sorted((run_dir / 'logs').glob('*.log')))
    assert result.returncode == 0, f'{result.stdout}\n{result.stderr}\n{logs}'
    assert 'final HF return' in result.stdout
    # a misspelt node parameter is named with its node, though three nodes share the twin's process
    assert "warning: twin_plant: 'clock_perod_s' is not a parameter of this node" in result.stdout
    for name in ('config.yaml', 'metrics.csv', 'learning_curve.png'):
        assert (run_dir / name).is_file(), name
    assert {p.stem for p in (run_dir / 'logs').glob('*.log')} == {'learner', 'lofi_sim', 'hf_loop', 'bag_recorder'}
    assert (run_dir / 'bag' / 'metadata.yaml').is_file()  # the run was recorded
    # TensorBoard scalars: one point per metrics.csv row, step = the policy version after the update
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    rows = runner.read_metrics_csv(run_dir / 'metrics.csv')
    events = EventAccumulator(str(run_dir / 'tensorboard'), size_guidance={'scalars': 0})
    events.Reload()
    scalars = events.Scalars('mfpg/hf_return')
    assert [e.step for e in scalars] == [int(r['iteration']) + 1 for r in rows] == [1, 2, 3]
    for event, row in zip(scalars, rows):
        assert event.value == pytest.approx(row['hf_return'], rel=1e-6, nan_ok=True)  # stored as float32
    assert 'iteration 2:' in result.stdout  # the last iteration is shown too, not only written to metrics.csv

    # The folder holds a run now: a new run is refused before anything in it is touched ...
    config_before = (run_dir / 'config.yaml').read_text()
    again = subprocess.run([*cmd, '--set', 'algo.lr=0.01'], env=ros_env, capture_output=True, text=True, timeout=60)
    assert again.returncode == 2 and 'holds a run already' in again.stderr and 'learner.resume' in again.stderr
    assert (run_dir / 'config.yaml').read_text() == config_before
    # ... and resuming it there goes on to the new total, although metrics.csv ends in the first run's 'done' row
    resumed = subprocess.run([*cmd, '--iterations', '5', '--set', f'learner.resume={run_dir}'],  # the last wins
                             env=ros_env, capture_output=True, text=True, timeout=180)
    assert resumed.returncode == 0, f'{resumed.stdout}\n{resumed.stderr}'
    assert 'iteration 4:' in resumed.stdout and 'iteration 2:' not in resumed.stdout
    assert [int(r['iteration']) for r in runner.read_metrics_csv(run_dir / 'metrics.csv')] == [0, 1, 2, 3, 4]
    learner_log = (run_dir / 'logs' / 'learner.log').read_text()  # both parts, one progress line per iteration
    assert [f'iteration {i}: HF steps {50 * (i + 1)},' in learner_log for i in range(5)] == [True] * 5
    assert learner_log.count('$ ') == 2


def test_the_graph_refuses_up_front_what_its_nodes_would_refuse(tmp_path):
    run = tmp_path / 'run'
    with pytest.raises(ValueError, match="unknown task 'Nope'"):
        graph.build_graph('twin', run_dir=run, overrides={'task': 'Nope'})
    with pytest.raises(ValueError, match="hifi_variant 'cartpole_twin'.*unknown name 'cart_slider'"):
        graph.build_graph('twin', run_dir=run, overrides={'task': 'InvertedPendulum-v5'})  # cart-pole twin default
    with pytest.raises(FileNotFoundError, match='does not exist'):
        graph.build_graph('twin', run_dir=run, node_params={'learner': {'resume': str(tmp_path / 'nope')}})
    assert graph.build_graph('real', run_dir=run, overrides={'task': 'InvertedPendulum-v5'})  # no twin: no HF variant
    with pytest.raises(ValueError, match=r'algo.hidden.*a list of integers'):
        graph.config_value('algo.hidden', '64')
    with pytest.raises(ValueError, match="algo.lr: 'abc'"):
        graph.config_value('algo.lr', 'abc')


def test_train_inprocess_takes_every_set_and_refuses_bad_ones(tmp_path, capsys):
    from mfpg_ros import train_inprocess
    from mfpg_ros.core.checkpoint import read_extra
    ckpt = tmp_path / 'c.safetensors'
    assert train_inprocess.main(['--set', 'algo.pool_steps_per_env=20', '--set', 'seed=7', 'algo.lr=0.01',
                                 '--set', 'lofi_variant={gravity: 1.2}', '--iterations', '1', '--save', str(ckpt)]) == 0
    saved = read_extra(ckpt)['config']
    assert (saved['seed'], saved['algo']['lr'], saved['algo']['pool_steps_per_env']) == (7, 0.01, 20)
    assert saved['lofi_variant'] == {'gravity': 1.2}  # knobs, in-process only
    assert train_inprocess.main(['--resume', str(ckpt), '--set', 'eval_every=1', '--iterations', '2']) == 0
    assert 'eval' in capsys.readouterr().out  # run control changes on resume
    with pytest.raises(SystemExit):  # a new run does not overwrite another's checkpoint
        train_inprocess.main(['--iterations', '1', '--save', str(ckpt)])
    assert 'exists: another run would be overwritten' in capsys.readouterr().err
    assert train_inprocess.main(['--resume', str(ckpt), '--iterations', '2', '--save', str(ckpt)]) == 0  # its own
    from mfpg_ros.core.run_folder import checkpoint_version
    assert checkpoint_version(ckpt) == 2
    assert train_inprocess.main(['--set', 'algo.pool_steps_per_env=20', 'algo.ppo.n_epochs=3', '--iterations', '1',
                                 '--json']) == 0
    captured = capsys.readouterr()
    assert 'warning: algo.ppo.n_epochs is set but mf_reinforce does not use it' in captured.err

    def refuse(constant):
        raise AssertionError(f'{constant} is not standard JSON')
    row = json.loads(captured.out.splitlines()[-1], parse_constant=refuse)
    assert row['iteration'] == 0 and 'hf_return' in row
    assert json.loads(train_inprocess.json_line({'hf_return': math.nan, 'x': 1.5}), parse_constant=refuse) == {
        'hf_return': None, 'x': 1.5}  # no finished HF episode yet: null, not NaN
    node_ckpt = tmp_path / 'run' / 'checkpoints' / 'learner_000000.safetensors'
    from mfpg_ros.core.checkpoint import save_checkpoint
    from mfpg_ros.core.learners import make_learner
    from mfpg_ros.sim.tasks import make_task
    cfg = load_config(graph.share_file('config', 'train.yaml'))
    save_checkpoint(make_learner(cfg.algo, make_task(cfg.task).contract, seed=0), node_ckpt,
                    extra={'config': cfg.to_dict()})
    for bad, said in ((['--set', 'algo.lr=abc'], "algo.lr: 'abc'"), (['--set', 'algo.nope=1'], 'algo.nope'),
                      (['--resume', str(tmp_path / 'none.safetensors')], 'none.safetensors'),
                      (['--resume', str(ckpt), '--set', 'seed=5'], 'can change on resume'),
                      (['--resume', str(ckpt), '--iterations', '1'], 'nothing to train'),
                      (['--resume', str(node_ckpt)], 'learner node checkpoint'),
                      (['--save-every', '0'], 'save-every'),
                      (['--set', 'task=InvertedPendulum-v5'], "hifi_variant 'cartpole_twin'")):
        with pytest.raises(SystemExit) as exit_info:
            train_inprocess.main(bad)
        assert exit_info.value.code == 2 and said in capsys.readouterr().err


def test_cli_help_lists_the_benchmarks(capsys):
    from mfpg_ros import cli
    assert cli.main(['bench', '--help']) == 0
    assert 'graph' in capsys.readouterr().out


def test_a_node_names_the_parameters_it_ignores(ros_domain):
    from rclpy.parameter import Parameter
    from mfpg_ros.nodes.common import warn_unknown_parameters
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=ros_domain)
    try:
        given = [Parameter('watchdog_timeout_s', value=0.2), Parameter('watchdog_timout_s', value=0.2),
                 Parameter('algo.lr', value=0.1), Parameter('algo.lrr', value=0.1),
                 Parameter('joint_names', value=['a'])]
        node = rclpy.create_node('policy_server', context=context, parameter_overrides=given)
        node.declare_parameter('watchdog_timeout_s', 0.1)
        # training keys and the profile's shared keys reach every node; only names nobody declares are misspelt
        assert warn_unknown_parameters(node) == ['algo.lrr', 'watchdog_timout_s']
        node.destroy_node()
    finally:
        rclpy.shutdown(context=context)


def test_a_stalled_graph_is_explained_from_its_diagnostics():
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

    class Probe:
        inbox: list = []

        def subscribe(self, topic, msg_type):
            return self.inbox

    def status(node, ns, message, **values):
        return DiagnosticStatus(name=f'mfpg_ros: {ns}/{node}', hardware_id=ns or '/', message=message,
                                values=[KeyValue(key=k.replace('_', ' ', 1) if k.startswith('rejected') else k,
                                                 value=str(v)) for k, v in values.items()])
    report = runner.StallReport(Probe(), 'robot1', every=3600.0)
    Probe.inbox.append(DiagnosticArray(status=[
        status('hifi_interface', '/robot1', 'ok', waiting_for='joint_states', rejected_joint_states=12, rejected=12),
        status('learner', '/robot1', 'ok', hf_total_steps=0),
        status('hifi_interface', '/robot2', 'ok', waiting_for='action')]))  # another robot's graph
    assert report.lines() == []  # not stalled for long yet
    report.every = 0.0
    assert report.lines() == ['no iteration finished for 0 s; the nodes say:',
                              '  hifi_interface: waiting for joint_states; rejected joint_states 12']


def test_a_run_folder_holds_one_run(tmp_path):
    from mfpg_ros.core.checkpoint import save_checkpoint
    from mfpg_ros.core.learners import make_learner
    from mfpg_ros.core.run_folder import check_start
    from mfpg_ros.sim.tasks import make_task
    cfg = load_config(graph.share_file('config', 'train.yaml'))
    learner = make_learner(cfg.algo, make_task(cfg.task).contract, seed=0)
    for run, version in (('a', 4), ('b', 2)):
        learner.version = version
        save_checkpoint(learner, tmp_path / run / 'checkpoints' / f'learner_{version:06d}.safetensors',
                        extra={'config': cfg.to_dict()})
    assert check_start(tmp_path / 'a', cfg, tmp_path / 'a').name == 'learner_000004.safetensors'  # its own run
    assert check_start(tmp_path / 'c', cfg, tmp_path / 'a') is not None  # on into a new folder
    with pytest.raises(ValueError, match='holds another run'):  # a's history would go on in b's folder
        check_start(tmp_path / 'b', cfg, tmp_path / 'a')
    with pytest.raises(ValueError, match='holds a run already'):
        check_start(tmp_path / 'b', cfg, None)
    other = load_config(graph.share_file('config', 'train.yaml'), **{'algo.lr': 0.5})
    with pytest.raises(ValueError, match=r'differs in algo.lr\); resume with the config it was saved under$'):
        check_start(tmp_path / 'c', other, tmp_path / 'a')
    (tmp_path / 'a' / 'config.yaml').write_text(graph.params_file_text(cfg))  # as mfpg train leaves a run folder
    with pytest.raises(ValueError, match=r'resume with the config it was saved under \(--config .*a/config.yaml\)'):
        check_start(tmp_path / 'c', other, tmp_path / 'a')
