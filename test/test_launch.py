"""launch/train_real.launch.py: its arguments, the Node actions it builds from graph.py, and (launch_pytest) a real
launch of the twin graph. launch, launch_ros and launch_pytest are not on PyPI: these tests skip in the project venv
and run in a ROS 2 workspace or the scratch venv of /work/shared/tools/ros2_launch_env.md."""
from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path

import pytest

from mfpg_ros import graph

LAUNCH_FILE = Path(__file__).resolve().parents[1] / 'launch' / 'train_real.launch.py'
ARGUMENTS = {'hardware', 'task', 'hifi_variant', 'lofi_variant', 'iterations', 'config', 'namespace', 'run_dir',
             'resume', 'record', 'compose', 'profile', 'sigterm_timeout'}


def _ros_module(name: str, attribute: str):
    """The ROS package `name`, or None. (The repo's launch/ folder imports as an empty namespace package.)"""
    try:
        module = importlib.import_module(name)
    except ImportError:
        return None
    return module if hasattr(module, attribute) else None


launch = _ros_module('launch', 'LaunchDescription')
launch_ros = _ros_module('launch_ros', 'actions')
launch_pytest = _ros_module('launch_pytest', 'fixture')
needs_launch = pytest.mark.skipif(launch is None or launch_ros is None,
                                  reason='launch/launch_ros are not installed (not on PyPI; see ros2_launch_env.md)')


def _has_package(name: str) -> bool:
    from ament_index_python.packages import PackageNotFoundError, get_package_share_directory
    try:
        return bool(get_package_share_directory(name))
    except PackageNotFoundError:
        return False


def _load_module(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem.replace('.', '_'), path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _load_launch_file():
    return _load_module(LAUNCH_FILE).generate_launch_description()


def _node_actions(arguments: dict) -> list:
    """Resolve the launch arguments as `ros2 launch` would and run the OpaqueFunction: the Node actions."""
    from launch.actions import DeclareLaunchArgument, OpaqueFunction
    from launch_ros.actions import Node
    context = launch.LaunchContext()
    context.launch_configurations.update(arguments)
    actions = []
    for entity in _load_launch_file().entities:
        if isinstance(entity, DeclareLaunchArgument):
            entity.visit(context)  # sets the default of arguments not given
        elif isinstance(entity, OpaqueFunction):
            actions += entity.execute(context) or []
    return [a for a in actions if isinstance(a, Node)]


@needs_launch
def test_launch_arguments():
    from launch.actions import DeclareLaunchArgument
    declared = {e.name: e for e in _load_launch_file().entities if isinstance(e, DeclareLaunchArgument)}
    assert set(declared) == ARGUMENTS
    assert declared['hardware'].choices == list(graph.HARDWARE)


@needs_launch
@pytest.mark.parametrize('hardware', graph.HARDWARE)
def test_launch_builds_the_graph_of_graph_py(hardware, tmp_path):
    arguments = {'hardware': hardware, 'namespace': 'robot1', 'run_dir': str(tmp_path)}
    if hardware == 'gazebo' and not _has_package('ros_gz_sim'):
        with pytest.raises(RuntimeError, match='needs ros_gz_sim, which is not installed: sudo apt install'):
            _node_actions(arguments)  # a clear error with the install line, not a half-started graph
        return
    specs = graph.build_graph(hardware, namespace='robot1', run_dir=tmp_path, record=True)  # launch records
    for compose, units in (('true', graph.processes(specs)), ('false', graph.processes(
            graph.build_graph(hardware, namespace='robot1', run_dir=tmp_path, record=True, compose=False)))):
        nodes = _node_actions({**arguments, 'compose': compose})
        assert [n.node_executable for n in nodes] == [u.executable for u in units]
        assert {n.node_package for n in nodes} == {graph.PACKAGE}
    composed = [u for u in graph.processes(specs) if u.composed]
    assert [sorted(u.arguments) for u in composed] == ([sorted(graph.COMPOSED['twin']['hf_loop'])]
                                                        if hardware == 'twin' else [])


@needs_launch
def test_launch_profile_argument_reaches_the_profile_nodes(tmp_path):
    mine = tmp_path / 'my_robot.yaml'
    mine.write_text('/**:\n  ros__parameters:\n    use_sim_time: false\n')
    nodes = _node_actions({'hardware': 'real', 'run_dir': str(tmp_path / 'run'), 'profile': str(mine)})
    files = {n.node_executable: [''.join(t.text for t in p.param_file) if not isinstance(p.param_file, (str, Path))
                                 else str(p.param_file) for p in n._Node__parameters] for n in nodes}
    assert {e for e, f in files.items() if str(mine) in f} == {'policy_server', 'hifi_interface'}


@needs_launch
def test_launch_resume_reaches_the_learner_only(tmp_path):
    from mfpg_ros.core.checkpoint import save_checkpoint
    from mfpg_ros.core.config import load_config
    from mfpg_ros.core.learners import make_learner
    from mfpg_ros.sim.tasks import make_task
    cfg = load_config(graph.share_file('config', 'train.yaml'))
    learner = make_learner(cfg.algo, make_task(cfg.task).contract, seed=0)
    save_checkpoint(learner, tmp_path / 'checkpoints' / 'learner_000000.safetensors', extra={'config': cfg.to_dict()})
    with pytest.raises(FileNotFoundError, match='does not exist'):  # refused before any node starts
        _node_actions({'hardware': 'twin', 'run_dir': str(tmp_path), 'resume': str(tmp_path / 'nope')})
    nodes = _node_actions({'hardware': 'twin', 'run_dir': str(tmp_path), 'resume': str(tmp_path)})
    assert [n.node_executable for n in nodes if 'resume' in _overrides(n)] == ['learner']


def _overrides(node) -> dict:
    """The values a Node action's last params file (the graph's overrides) gives it, by parameter name."""
    import yaml
    last = node._Node__parameters[-1].param_file  # launch_ros keeps a path as text substitutions
    path = last if isinstance(last, (str, Path)) else ''.join(t.text for t in last)
    return next(iter(yaml.safe_load(Path(path).read_text()).values()))['ros__parameters']


@needs_launch
def test_launch_arguments_beat_a_nodes_own_section_of_the_config(tmp_path):
    """As with `mfpg train`: run_dir:= and the config arguments reach every node, whatever config:= says per node
    (launch_ros writes a parameter dict under /**, which a /**/learner section would beat)."""
    import yaml
    config = yaml.safe_load(Path(graph.share_file('config', 'train.yaml')).read_text())
    config['/**/learner'] = {'ros__parameters': {'run_dir': str(tmp_path / 'elsewhere')}}
    (tmp_path / 'config.yaml').write_text(yaml.safe_dump(config))
    nodes = _node_actions({'hardware': 'twin', 'config': str(tmp_path / 'config.yaml'),
                           'run_dir': str(tmp_path / 'run'), 'task': 'InvertedPendulum-v5',
                           'hifi_variant': 'pendulum_gravity_2.0', 'iterations': '7'})
    learner = _overrides(next(n for n in nodes if n.node_executable == 'learner'))
    assert learner['run_dir'] == str(tmp_path / 'run') and learner['iterations'] == 7
    assert {_overrides(n)['hifi_variant'] for n in nodes} == {'pendulum_gravity_2.0'}


if launch_pytest is not None and launch_ros is not None:
    from launch.actions import IncludeLaunchDescription, SetEnvironmentVariable
    from launch.launch_description_sources import PythonLaunchDescriptionSource

    def _not_launchable() -> str | None:
        from ament_index_python.packages import PackageNotFoundError, get_package_prefix
        if importlib.util.find_spec('mfpg_ros.nodes.learner') is None:
            return 'the node modules are not written yet'
        try:
            prefix = Path(get_package_prefix(graph.PACKAGE))
        except (PackageNotFoundError, KeyError, ValueError) as exc:
            return f'{graph.PACKAGE} is not in the ament index ({exc})'
        if not (prefix / 'lib' / graph.PACKAGE / 'learner').exists():
            return (f'no executables in {prefix}/lib/{graph.PACKAGE} (colcon build, or ros2-pip-link-executables '
                    'after pip install)')
        return None

    @launch_pytest.fixture
    def twin_launch(ros_domain, tmp_path):
        reason = _not_launchable()
        if reason:
            pytest.skip(reason)
        return launch.LaunchDescription([
            SetEnvironmentVariable('ROS_DOMAIN_ID', str(ros_domain)),
            SetEnvironmentVariable('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST'),
            IncludeLaunchDescription(PythonLaunchDescriptionSource(str(LAUNCH_FILE)), launch_arguments={
                'hardware': 'twin', 'namespace': 'mfpg_test', 'run_dir': str(tmp_path / 'run')}.items()),
            launch_pytest.actions.ReadyToTest(),
        ])

    @pytest.mark.launch(fixture=twin_launch)
    def test_ros2_launch_starts_the_twin_graph(probe, tmp_path):
        names = [s.fully_qualified_name for s in graph.build_graph('twin', namespace='mfpg_test', run_dir=tmp_path)]
        probe.wait_for_nodes(names, timeout=60)
else:
    def test_ros2_launch_starts_the_twin_graph():
        pytest.skip('launch_pytest/launch_ros are not installed (not on PyPI; see ros2_launch_env.md)')


@needs_launch
def test_gazebo_launch_builds_the_robot_side():
    """gazebo.launch.py (Gazebo itself is not installable here): the URDF gets the Gazebo hardware plugin and the
    controllers file, and the robot side has gz, the spawner of both controllers, the bridge and the reset adapter."""
    import xml.etree.ElementTree as ET
    module = _load_module(LAUNCH_FILE.parent / 'gazebo.launch.py')
    urdf = ET.fromstring(module.gazebo_description())
    assert urdf.find('ros2_control/hardware/plugin').text == 'gz_ros2_control/GazeboSimSystem'
    assert urdf.find('gazebo/plugin/parameters').text.endswith('controllers.yaml')
    assert urdf.find('gazebo/plugin/ros') is None  # root namespace
    namespaced = ET.fromstring(module.gazebo_description('robot1'))  # the controller manager beside the graph
    assert namespaced.find('gazebo/plugin/ros/namespace').text == '/robot1'
    assert namespaced.find('gazebo/plugin/ros/remapping').text == '/clock:=/robot1/clock'
    context = launch.LaunchContext()
    context.launch_configurations.update({'namespace': 'robot1', 'headless': 'true'})
    actions = module.robot_side(context)
    executables = [getattr(a, 'node_executable', None) for a in actions]
    assert executables.count('spawner') == 2 and 'gazebo_reset' in executables and 'create' in executables
