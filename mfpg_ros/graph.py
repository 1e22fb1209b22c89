"""The node graph as data: which nodes run, with which parameters and remappings, for each hardware profile.

launch/train_real.launch.py and the embedded runner (`mfpg train`) both build their processes from `build_graph`,
so `ros2 launch` and `mfpg train` always start the same graph. ROS-free (no rclpy import).
"""
from __future__ import annotations

import json
import math
import os
import tempfile
import time
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from mfpg_ros.core.config import TrainConfig, config_fields, load_config
from mfpg_ros.core.run_folder import check_start

PACKAGE = 'mfpg_ros'
HARDWARE = ('twin', 'gazebo', 'real')
TRAINING_NODES = ('learner', 'policy_server', 'lofi_sim', 'hifi_interface')
PLANT_NODES = {'twin': ('twin_plant',), 'gazebo': (), 'real': ()}  # gazebo: see gazebo_hook in the launch file
PROFILE_NODES = ('policy_server', 'hifi_interface', 'twin_plant')  # they read config/hardware/<hardware>.yaml
# On the lock-step twin the plant, hifi_interface and policy_server pass every control step along a chain of three
# messages; sharing one process (manual composition: one executor, still DDS topics between the nodes) spares the
# process switches of each hop. On gazebo/real they stay apart: policy_server's watchdog must outlive a hifi_interface
# crash. See docs/performance.md.
COMPOSED = {'twin': {'hf_loop': ('twin_plant', 'hifi_interface', 'policy_server')}}
COMPOSE_EXECUTABLE = 'mfpg_compose'  # mfpg_ros/nodes/compose.py (`compose` alone is a Debian tool)
# Nodes that run on the profile's clock (use_sim_time of config/hardware/<hardware>.yaml, '/**'; set for them even
# when they do not read the profile). Their timers that must run while sim time stands still (a lock-step plant
# waits for a command) are on the steady clock. Not bag_recorder: its receive times must stay monotonic for replay
# although Gazebo's world reset rewinds sim time.
SIM_TIME_NODES = ('learner', 'policy_server', 'lofi_sim', 'hifi_interface', 'twin_plant')
# What a node logs for a parameter it was given but does not declare (ROS ignores those silently); `mfpg train`
# shows these lines from the node logs.
UNKNOWN_PARAMETER = 'is not a parameter of this node (ignored)'


@dataclass(frozen=True)
class NodeSpec:
    """One process of the graph, as `ros2 launch` (launch_ros Node) or the runner starts it."""

    name: str  # node name (-r __node:=)
    executable: str  # console script of this package (or an absolute path)
    namespace: str = ''  # without leading slash; '' is the root namespace
    params_files: tuple[str, ...] = ()  # ROS params files, in order
    overrides: dict = field(default_factory=dict)  # typed parameter values, applied after the files
    remappings: tuple[tuple[str, str], ...] = ()
    required: bool = True  # its exit ends the whole graph
    process: str = ''  # nodes with the same process name run in one process ('' = a process of its own)

    def write_overrides(self, params_dir: str | os.PathLike | None = None) -> str:
        """The overrides as a params file; returns its path. The values go under both node keys another file may
        use, `/robot1/learner` and `/**/learner` (rcl lets the last file win within one key, not across keys), and
        the second still matches when a launch file includes this graph under a pushed namespace."""
        values = [f'    {key}: {param_literal(value)}' for key, value in self.overrides.items()]
        text = '\n'.join(line for key in (self.fully_qualified_name, f'/**/{self.name}')
                         for line in (f'{key}:', '  ros__parameters:', *values)) + '\n'
        if params_dir is None:
            with tempfile.NamedTemporaryFile('w', prefix='mfpg_params_', suffix='.yaml', delete=False) as f:
                f.write(text)
            return f.name
        path = Path(params_dir) / f'{self.fully_qualified_name.strip("/").replace("/", "__")}.yaml'
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return str(path)

    @property
    def fully_qualified_name(self) -> str:
        return f'/{self.namespace}/{self.name}' if self.namespace else f'/{self.name}'

    def ros_args(self, params_dir: str | os.PathLike | None = None) -> list[str]:
        """The `--ros-args ...` part of the command line (what launch_ros builds for this Node). The overrides go in
        a params file keyed by the node's name, last, so they beat every section of the other files (a `-p` would
        lose to a node-specific section such as `/**/twin_plant`); it is written to `params_dir`, else to a
        temporary file, as launch_ros does with parameter dicts."""
        return ['--ros-args', '-r', f'__node:={self.name}', *_shared_args(self, self.parameter_files(params_dir))]

    def parameter_files(self, params_dir: str | os.PathLike | None = None) -> list[str]:
        """The params files in order, the overrides' file (written now) last."""
        return [*map(str, self.params_files), *([self.write_overrides(params_dir)] if self.overrides else [])]


@dataclass(frozen=True)
class ProcessSpec:
    """One process of the graph: a node's own executable, or the `mfpg_compose` executable running several nodes on one
    executor. A composed process takes no node-name remapping (each node keeps its name); its nodes share namespace,
    params files and remappings, and each node's overrides file is keyed by its name."""

    name: str
    nodes: tuple[NodeSpec, ...]

    @property
    def composed(self) -> bool:
        return len(self.nodes) > 1

    @property
    def executable(self) -> str:
        return COMPOSE_EXECUTABLE if self.composed else self.nodes[0].executable

    @property
    def arguments(self) -> list[str]:
        """Before --ros-args: the composed nodes' executables."""
        return [n.executable for n in self.nodes] if self.composed else []

    @property
    def required(self) -> bool:
        return any(n.required for n in self.nodes)

    @property
    def describe(self) -> str:
        if self.composed:
            return f"process '{self.name}' (nodes {', '.join(n.name for n in self.nodes)})"
        return f"node '{self.name}'"

    @property
    def namespace(self) -> str:
        return self.nodes[0].namespace

    @property
    def remappings(self) -> tuple[tuple[str, str], ...]:
        return self.nodes[0].remappings

    def parameter_files(self, params_dir: str | os.PathLike | None = None) -> list[str]:
        files = [*map(str, self.nodes[0].params_files)]
        return files + [n.write_overrides(params_dir) for n in self.nodes if n.overrides]

    def command(self, params_dir: str | os.PathLike | None = None) -> list[str]:
        """Arguments after the executable, as launch_ros builds them for this process."""
        if not self.composed:
            return self.nodes[0].ros_args(params_dir)
        return [*self.arguments, '--ros-args', *_shared_args(self, self.parameter_files(params_dir))]


def _shared_args(spec, files: list[str]) -> list[str]:
    args = ['-r', f'__ns:=/{spec.namespace}'] if spec.namespace else []
    for path in files:
        args += ['--params-file', path]
    for src, dst in spec.remappings:
        args += ['-r', f'{src}:={dst}']
    return args


def processes(specs: list[NodeSpec]) -> list[ProcessSpec]:
    """The graph's processes in order: nodes with the same `process` name together, every other node alone."""
    groups: dict[str, list[NodeSpec]] = {}
    for spec in specs:
        groups.setdefault(spec.process or spec.fully_qualified_name, []).append(spec)
    result = []
    for name, nodes in groups.items():
        first = nodes[0]
        odd = [n.name for n in nodes if (n.namespace, n.params_files, n.remappings)
               != (first.namespace, first.params_files, first.remappings)]
        if odd:
            raise ValueError(f'nodes {odd} of process {name!r} differ from {first.name} in namespace, params files '
                             'or remappings: a composed process shares them')
        result.append(ProcessSpec(name if first.process else first.name, tuple(nodes)))
    return result


def build_graph(hardware: str = 'twin', namespace: str = '', config: str | os.PathLike | None = None,
                run_dir: str | os.PathLike | None = None, overrides: dict | None = None,
                node_params: dict[str, dict] | None = None, remappings=(), lofi_workers: int = 1,
                lofi_nthread: int = 1, record: bool = False, compose: bool = True,
                profile: str | os.PathLike | None = None) -> list[NodeSpec]:
    """The node specs for one robot.

    hardware: twin | gazebo | real (selects config/hardware/<hardware>.yaml; twin adds the twin_plant node).
    config: the training params file (default: the package's config/train.yaml).
    overrides: training-config values by dotted name (e.g. {'algo.lr': 1e-3}), typed against TrainConfig.
    node_params: extra parameters per node name (e.g. {'learner': {'checkpoint_every': 10}}); 'lofi_sim' applies
        to every lofi worker.
    remappings: (from, to) pairs applied to every node.
    record: add bag_recorder (not required: its exit does not end training), writing <run_dir>/bag.
    compose: group the nodes of COMPOSED[hardware] into one process each (`processes` starts them so).
    profile: the hardware profile file (default: the package's config/hardware/<hardware>.yaml): your robot's topic
        names, joint names, reset, watchdog and clock settings, without editing the package.
    """
    if hardware not in HARDWARE:
        raise ValueError(f'hardware must be one of {HARDWARE}, got {hardware!r}')
    if lofi_workers < 1:
        raise ValueError('lofi_workers must be >= 1')
    namespace = namespace.strip('/')
    config = str(Path(config).resolve()) if config else share_file('config', 'train.yaml')
    run_dir = str(Path(run_dir or default_run_dir()).resolve())
    profile = str(Path(profile).resolve()) if profile else share_file('config', 'hardware', f'{hardware}.yaml')
    if not Path(profile).is_file():
        raise FileNotFoundError(f'hardware profile {profile} does not exist')
    sim_time = profile_uses_sim_time(profile)
    remappings = tuple(tuple(r) for r in remappings)
    if sim_time and namespace:  # each namespaced graph has its own plant, so its own clock
        remappings += (('/clock', f'/{namespace}/clock'),)  # after the caller's: rcl applies the first match
    training = {key: config_value(key, value) for key, value in (overrides or {}).items()}
    node_params = node_params or {}
    unknown = set(node_params) - set(TRAINING_NODES) - set(PLANT_NODES[hardware])
    if unknown:
        raise ValueError(f'node_params for unknown nodes {sorted(unknown)}')
    check_training(config, training, run_dir, node_params.get('learner', {}).get('resume'), twin=hardware == 'twin')

    per_node = {
        'learner': [('learner', {'run_dir': run_dir})],
        'policy_server': [('policy_server', {})],
        'lofi_sim': [('lofi_sim' if lofi_workers == 1 else f'lofi_sim_{i}',
                      {'worker_index': i, 'num_workers': lofi_workers, 'nthread': lofi_nthread})
                     for i in range(lofi_workers)],
        'hifi_interface': [('hifi_interface', {})],
        'twin_plant': [('twin_plant', {})],
    }
    process_of = {node: process for process, nodes in COMPOSED.get(hardware, {}).items() for node in nodes}
    specs = []
    for executable in TRAINING_NODES + PLANT_NODES[hardware]:
        files = (config, profile) if executable in PROFILE_NODES else (config,)
        clock = {'use_sim_time': sim_time} if executable in SIM_TIME_NODES else {}
        for name, own in per_node[executable]:
            specs.append(NodeSpec(name=name, executable=executable, namespace=namespace, params_files=files,
                                  overrides={**training, **clock, **own, **node_params.get(executable, {})},
                                  remappings=remappings, process=process_of.get(executable, '') if compose else ''))
    if record:
        specs.append(NodeSpec(name='bag_recorder', executable='bag_recorder', namespace=namespace,
                              params_files=(config,), overrides={**training, 'bag_path': str(Path(run_dir) / 'bag')},
                              remappings=remappings, required=False))
    return specs


def check_training(config: str, training: dict, run_dir: str, resume: str | None, twin: bool = True) -> TrainConfig:
    """What the nodes would refuse at start, refused before any of them starts or a file is written: the config's
    keys and values, the task with its fidelity variants (the HF one only where the twin plant runs it), and the run
    folder with the checkpoint to resume."""
    cfg = load_config(config, **training)
    params_file_text(cfg)  # every value must fit a ROS parameter (a knob dict from a config file does not)
    check_variants(cfg, hifi=twin)
    check_start(run_dir, cfg, resume)
    return cfg


def check_variants(cfg: TrainConfig, hifi: bool = True) -> None:
    """ValueError naming the key unless cfg's task takes its LF variant (and, if `hifi`, its HF variant)."""
    from mfpg_ros.sim.tasks import make_task  # MuJoCo: only when a graph or a trainer is built
    for key in ('hifi_variant', 'lofi_variant')[0 if hifi else 1:]:
        try:
            make_task(cfg.task, getattr(cfg, key))
        except (ValueError, KeyError) as exc:
            raise ValueError(f'task {cfg.task!r} with {key} {getattr(cfg, key)!r}: {exc} (a variant must fit the task; '
                             f"'' is the nominal model)") from None


def profile_uses_sim_time(profile: str | os.PathLike) -> bool:
    """A hardware profile's use_sim_time ('/**' section; false when absent): true where a simulator (the twin
    plant, Gazebo) publishes /clock, false on a real robot (wall time)."""
    with open(profile) as f:
        params = ((yaml.safe_load(f) or {}).get('/**') or {}).get('ros__parameters') or {}
    value = params.get('use_sim_time', False)
    if not isinstance(value, bool):
        raise ValueError(f'{profile}: use_sim_time must be true or false, got {value!r}')
    return value


# --- files ---------------------------------------------------------------------------------------------------------
def share_dir() -> Path:
    """The package's share directory: the source checkout when running from one, else the ament index."""
    checkout = Path(__file__).resolve().parents[1]
    if (checkout / 'package.xml').is_file() and (checkout / 'config' / 'train.yaml').is_file():
        return checkout
    from ament_index_python.packages import get_package_share_directory  # installed (colcon or pip)
    return Path(get_package_share_directory(PACKAGE))


def share_file(*parts: str) -> str:
    path = share_dir().joinpath(*parts)
    if not path.is_file():
        raise FileNotFoundError(f'{PACKAGE} share file {path} does not exist')
    return str(path)


def default_run_dir() -> str:
    return os.path.join('runs', time.strftime('%Y%m%d-%H%M%S'))


# --- typed parameter values ----------------------------------------------------------------------------------------
def config_value(key: str, value):
    """`value` (typed, or a command-line string) as the ROS parameter type TrainConfig's `key` declares.

    ROS rejects an int for a double parameter, and parameters cannot be None ('' and NaN stand in for it)."""
    fields = config_fields()
    if key not in fields:
        raise ValueError(f'unknown training config key {key!r}; valid: {", ".join(sorted(fields))}')
    try:
        return _typed(key, fields[key][1], value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f'{key}: {value!r} is not a valid value ({exc})') from None


def _typed(key: str, hint, value):
    if typing.get_origin(hint) is tuple:
        value = yaml.safe_load(value) if isinstance(value, str) else value
        if not isinstance(value, (list, tuple)):
            raise ValueError('expected a list of integers, e.g. [64, 64]')
        return [int(v) for v in value]
    kinds = typing.get_args(hint) or (hint,)
    if isinstance(value, str) and (str not in kinds or value.lstrip().startswith('{')):  # '{...}': a dict meant
        value = yaml.safe_load(value)
    if value is None:
        return math.nan if float in kinds else ''
    if isinstance(value, dict):
        raise ValueError(f'{key}: a knob dict cannot be a ROS parameter, so the node graph takes a variant preset '
                         'by name (mfpg train-inprocess takes dicts)')
    if bool in kinds:
        if not isinstance(value, bool):
            raise ValueError(f'{key} must be true or false, got {value!r}')
        return value
    if float in kinds:
        return float(value)
    if int in kinds:
        if isinstance(value, bool) or float(value) != int(value):
            raise ValueError(f'{key} must be an integer, got {value!r}')
        return int(value)
    return str(value)


def param_literal(value) -> str:
    """A typed value as the YAML text of `-p name:=value` (strings quoted, so '1' stays a string)."""
    if isinstance(value, bool):
        return 'true' if value else 'false'
    if isinstance(value, float):
        if math.isnan(value):
            return '.nan'
        if math.isinf(value):
            return '.inf' if value > 0 else '-.inf'
        return repr(value)
    if isinstance(value, (list, tuple)):
        return '[' + ', '.join(param_literal(v) for v in value) + ']'
    if isinstance(value, int):
        return str(value)
    return json.dumps(str(value))


def params_file_text(cfg: TrainConfig) -> str:
    """The full training config as a ROS params file (`/**: ros__parameters`) that `load_config` reads back."""
    params: dict = {}
    for key in config_fields():
        value = cfg
        for part in key.split('.'):
            value = getattr(value, part)
        node = params
        *path, leaf = key.split('.')
        for part in path:
            node = node.setdefault(part, {})
        node[leaf] = config_value(key, value)
    return yaml.safe_dump({'/**': {'ros__parameters': params}}, sort_keys=False)
