"""`mfpg train`: start the node graph of graph.py as the processes `ros2 launch` starts (one per node, or several
nodes in one: graph.processes), supervise them, show progress from `metrics/summary`, stop them cleanly, and leave a
run folder with config, logs (one per process), metrics and a plot.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import shutil
import signal
import sys
import time
from pathlib import Path

import yaml

from mfpg_ros import graph
from mfpg_ros.core.config import config_fields, ignored_settings_warning, load_config
from mfpg_ros.core.run_folder import checkpoint_version, drop_rows_from, latest_checkpoint
from mfpg_ros.node_process import NodeProcess, stop_all

DISCOVERY_TIMEOUT = 60.0  # node start-up (torch, MuJoCo) on a busy 2-core machine included
STALL_REPORT_EVERY = 30.0  # s without a finished iteration before the nodes' own account of it is shown
LEARNER_EXIT_GRACE = 10.0  # a done learner's last acks (<= 2 s each) and file closing, before the graph is stopped
EXIT_DONE, EXIT_FAILED, EXIT_TIMEOUT, EXIT_INTERRUPTED = 0, 1, 124, 130
PATH_PARAMETERS = ('resume', 'run_dir', 'bag_path', 'signing_key_file')  # text as given (a folder named 20240501)


class Deadline(Exception):
    """The --timeout budget ran out."""


class NodeDied(RuntimeError):
    def __init__(self, process: NodeProcess, code: int, what: str | None = None):
        how = f'was killed by {signal.Signals(-code).name}' if code < 0 else f'exited with code {code}'
        super().__init__(f"{what or f'node {process.name!r}'} {how}; last lines of {process.log_path}:\n"
                         f"{process.log_tail()}")


def parse_args(argv):
    p = argparse.ArgumentParser(prog='mfpg train', description=__doc__)
    p.add_argument('--config', help='training params file (default: the package config/train.yaml)')
    p.add_argument('--hardware', choices=graph.HARDWARE, default='twin',
                   help='twin: MuJoCo twin plant (default); gazebo/real: the robot side must already be running')
    p.add_argument('--profile', help='hardware profile file (default: the package config/hardware/<hardware>.yaml)')
    p.add_argument('--namespace', default='', help='ROS namespace of the whole graph (one robot)')
    p.add_argument('--run-dir', help='run folder (default runs/<timestamp>)')
    p.add_argument('--iterations', type=int, help='override the config iterations')
    p.add_argument('--target-return', type=float,
                   help='stop once the recent HF return reaches this (default: the config; nan: never early)')
    p.add_argument('--set', nargs='+', action='extend', default=[], metavar='KEY=VALUE',
                   help='training config values (algo.lr=1e-3) or node parameters (learner.checkpoint_every=10), '
                        'several after one --set or repeated; '
                        'learner.resume=RUN_DIR goes on from that run folder\'s newest checkpoint (give the same '
                        '--run-dir to continue it there)')
    p.add_argument('--lofi-workers', type=int, default=1, help='number of lofi_sim processes')
    p.add_argument('--no-record', action='store_true', help='do not record the run into <run-dir>/bag (MCAP)')
    p.add_argument('--no-compose', action='store_true',
                   help='one process per node (default on the twin: plant, hifi_interface and policy_server share one, '
                        'see graph.COMPOSED)')
    p.add_argument('--timeout', type=float, help='stop after this many seconds (exit code 124)')
    return p, p.parse_args(argv)


def split_assignments(assignments: list[str], node_names) -> tuple[dict, dict]:
    """KEY=VALUE strings -> (typed training overrides, {node: {param: value}})."""
    overrides, node_params = {}, {}
    for item in assignments:
        key, sep, value = item.partition('=')
        if not sep:
            raise ValueError(f'--set expects KEY=VALUE, got {item!r}')
        node, _, param = key.partition('.')
        if node in node_names and param in config_fields():
            raise ValueError(f'{key}: {param} is a training key, which every node shares: give it as '
                             f'--set {param}={value}')
        if node in node_names and param:
            node_params.setdefault(node, {})[param] = value if param in PATH_PARAMETERS else yaml.safe_load(value)
        else:
            overrides[key] = graph.config_value(key, value)
    return overrides, node_params


def child_env(base=None) -> dict:
    env = dict(os.environ if base is None else base)
    env['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'  # never multicast off this machine
    env['PYTHONUNBUFFERED'] = '1'
    env['RCUTILS_COLORIZED_OUTPUT'] = '0'
    env.setdefault('OMP_NUM_THREADS', '1')
    env.setdefault('AMENT_PREFIX_PATH', sys.prefix)  # a venv with the ROS wheels is an ament prefix
    return env


def find_executable(executable: str, env: dict) -> str:
    """<ament prefix>/lib/mfpg_ros/ (as `ros2 run`), else this Python's scripts dir (pip/venv), else PATH."""
    if os.path.isabs(executable):
        return executable
    prefixes = [p for p in env.get('AMENT_PREFIX_PATH', '').split(os.pathsep) if p]
    candidates = [Path(p) / 'lib' / graph.PACKAGE / executable for p in prefixes]
    candidates.append(Path(sys.executable).parent / executable)
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    found = shutil.which(executable, path=env.get('PATH'))
    if found is None:
        raise FileNotFoundError(f'executable {executable!r} not found (looked in {[str(c) for c in candidates]} and '
                                f'PATH); is {graph.PACKAGE} installed (pip install -e . / colcon build)?')
    return found


class Progress:
    """tqdm bar on a terminal, one line per iteration otherwise."""

    def __init__(self, total: int | None, first: int = 0):
        from tqdm import tqdm
        self.tty, self.first = sys.stderr.isatty(), first
        self.bar = tqdm(total=total, initial=first, desc='mfpg', unit='iter', dynamic_ncols=True,
                        disable=not self.tty)
        self.iterations: set = set()

    def update(self, summary: dict) -> None:
        self.iterations.add(summary.get('iteration'))
        hf_return = summary.get('hf_return_recent', summary.get('hf_return'))  # recent: what 'solved' is judged on
        fields = {'HF steps': summary.get('hf_total_steps'), 'HF return': _fmt(hf_return, '.1f'),
                  'c': _fmt(summary.get('c'), '.3f')}
        if 'rho' in summary:  # pairing 'matched' estimates c without a per-step rho
            fields['rho'] = _fmt(summary['rho'], '.2f')
        if self.tty:
            self.bar.update(self.first + len(self.iterations) - self.bar.n)
            self.bar.set_postfix(fields, refresh=True)
        else:
            print(f"iteration {summary.get('iteration')}: " + ', '.join(f'{k} {v}' for k, v in fields.items()),
                  flush=True)

    def write(self, text: str) -> None:
        self.bar.write(text) if self.tty else print(text, flush=True)

    def close(self) -> None:
        self.bar.close()


def _fmt(value, spec: str) -> str:
    return format(value, spec) if isinstance(value, (int, float)) else str(value)


class SummaryFeed:
    """The learner's `metrics/summary` JSON as dicts. Subscribed once its publisher is visible, with the publisher's
    durability (a latched history then arrives whole); a volatile topic can lose messages sent before discovery
    completes, so the 'done' column of the learner's metrics.csv backs up the last one."""

    TOPIC = 'metrics/summary'

    def __init__(self, probe, csv_path: Path, on_summary, first_iteration: int = 0):
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
        self.qos = QoSProfile(depth=1000, reliability=ReliabilityPolicy.BEST_AVAILABLE,
                              durability=DurabilityPolicy.BEST_AVAILABLE)
        self.probe, self.csv_path, self.on_summary = probe, csv_path, on_summary
        self.first_iteration = first_iteration  # a resumed run's metrics.csv holds the earlier rows, done ones too
        self.inbox: list | None = None
        self.csv_mtime = None

    def poll(self) -> bool:
        """Hand new summaries to on_summary; True once training is done."""
        from std_msgs.msg import String
        if self.inbox is None and self.probe.node.count_publishers(self.probe.resolve(self.TOPIC)):
            self.inbox = self.probe.subscribe(self.TOPIC, String, self.qos)
        done = False
        while self.inbox:
            text = self.inbox.pop(0).data
            try:
                summary = json.loads(text)
            except ValueError:
                self.on_summary({'unparsable': text[:200]})
                continue
            self.on_summary(summary)
            done = done or bool(summary.get('done'))
        return done or self.csv_done()

    def csv_done(self) -> bool:
        try:
            mtime = self.csv_path.stat().st_mtime_ns
        except OSError:
            return False
        if mtime == self.csv_mtime:
            return False
        self.csv_mtime = mtime
        rows = read_metrics_csv(self.csv_path)
        return (bool(rows) and str(rows[-1].get('done')).lower() in ('true', '1', '1.0')
                and _finite(rows[-1].get('iteration')) and rows[-1]['iteration'] >= self.first_iteration)


class StallReport:
    """What the graph's nodes say on /diagnostics, shown when no iteration has finished for `every` seconds (a robot
    waiting for its operator, a mis-wired topic): each node's status message, what it waits for, what it rejects."""

    def __init__(self, probe, namespace: str, every: float = STALL_REPORT_EVERY):
        from diagnostic_msgs.msg import DiagnosticArray
        self.inbox = probe.subscribe('/diagnostics', DiagnosticArray)
        self.namespace = f'/{namespace}' if namespace else '/'  # the nodes' hardware_id
        self.every, self.since, self.latest = every, time.monotonic(), {}

    def progress(self) -> None:
        self.since = time.monotonic()

    def lines(self) -> list[str]:
        """The report, once every `every` seconds without progress; else nothing."""
        while self.inbox:
            for status in self.inbox.pop(0).status:
                if status.hardware_id == self.namespace:
                    self.latest[status.name.rsplit('/', 1)[-1]] = status
        if time.monotonic() - self.since < self.every:
            return []
        self.progress()
        lines = []
        for node, status in sorted(self.latest.items()):
            values = {kv.key: kv.value for kv in status.values}
            said = [status.message] if status.message not in ('', 'ok') else []
            said += [f"waiting for {values['waiting_for']}"] if values.get('waiting_for') else []
            said += [f'{key} {n}' for key, n in values.items() if key.startswith('rejected ') and n != '0']
            lines += [f'  {node}: ' + '; '.join(said)] if said else []
        return [f'no iteration finished for {self.every:.0f} s; the nodes say:', *lines] if lines else []


def run_graph(specs: list[graph.NodeSpec], run_dir: Path, env: dict, total_iterations: int | None = None,
              timeout: float | None = None, stop_timeout: float = 10.0,
              first_iteration: int = 0) -> tuple[int, list[dict]]:
    """Start, supervise and stop the graph (first_iteration: the iteration a resumed learner starts at). Returns
    (exit code, the metrics/summary dicts received)."""
    from mfpg_ros.graph_probe import GraphProbe

    start = time.monotonic()
    deadline = math.inf if timeout is None else start + timeout
    units = graph.processes(specs)
    procs = [NodeProcess(u.name, [find_executable(u.executable, env), *u.command(run_dir / 'params')], env,
                         run_dir / 'logs' / f'{u.name}.log') for u in units]
    required = {u.name for u in units if u.required}
    what = {u.name: u.describe for u in units}
    warned: set = set()
    summaries: list[dict] = []
    progress = Progress(total_iterations, first_iteration)

    def on_summary(summary: dict) -> None:
        if 'unparsable' in summary:
            progress.write(f"warning: unparsable metrics/summary: {summary['unparsable']!r}")
            return
        if not summaries:  # every node has started by now
            show_ignored()
        summaries.append(summary)
        progress.update(summary)
        stall.progress()

    shown: set = set()

    def show_ignored() -> None:
        """The parameters the nodes said they were given but do not know (misspelt names), each line once."""
        for p in procs:
            for line in p.log_lines(graph.UNKNOWN_PARAMETER):  # 'node: ...', the node's logger
                if line not in shown:
                    shown.add(line)
                    progress.write(f'warning: {line}')

    def check() -> None:
        for p in procs:
            code = p.poll()
            if code is None or p.name in warned:
                continue
            if p.name in required:
                show_ignored()
                raise NodeDied(p, code, what[p.name])
            warned.add(p.name)
            progress.write(f"warning: optional {what[p.name]} exited with code {code}; continuing")
        if time.monotonic() > deadline:
            raise Deadline

    namespace = specs[0].namespace if specs else ''
    probe = GraphProbe('mfpg_runner', namespace, domain_id=int(env.get('ROS_DOMAIN_ID', '0') or 0))
    feed = SummaryFeed(probe, run_dir / 'metrics.csv', on_summary, first_iteration)
    stall = StallReport(probe, namespace)
    code = EXIT_FAILED
    try:
        for p in procs:
            p.start()
        try:
            probe.wait_for_nodes([s.fully_qualified_name for s in specs], min(DISCOVERY_TIMEOUT, deadline - start),
                                 check)
            progress.write(f'graph up after {time.monotonic() - start:.1f} s: {", ".join(s.name for s in specs)}')
            stall.progress()
            while not feed.poll():
                check()
                probe.spin_once(0.1)
                report = stall.lines()
                if report:
                    show_ignored()
                for line in report:
                    progress.write(line)
        except NodeDied:
            # A node that exits right after its last message: give that message a moment to arrive. (A short
            # training can even end, and the learner exit, before discovery has seen every node.)
            grace = time.monotonic() + 1.0
            while not feed.poll():
                if time.monotonic() > grace:
                    raise
                probe.spin_once(0.05)
        code = EXIT_DONE
        # The learner finishes its last iteration's files and deliveries and exits by itself (exit_when_done): a
        # 'done' row can be read in metrics.csv before its TensorBoard point is written, so let it end first.
        learner = next((p for p, u in zip(procs, units) if not u.composed and u.name == 'learner'
                        and u.nodes[0].overrides.get('exit_when_done', True)), None)
        grace = time.monotonic() + LEARNER_EXIT_GRACE
        while learner is not None and learner.poll() is None and time.monotonic() < grace:
            probe.spin_once(0.05)
            feed.poll()  # the last summaries, if metrics.csv said 'done' first
        feed.poll()
    except (NodeDied, TimeoutError) as exc:  # TimeoutError: discovery failed
        progress.write(f'error: {exc}')
    except Deadline:
        code = EXIT_TIMEOUT
        progress.write(f'stopping: the timeout of {timeout:g} s is over')
    except KeyboardInterrupt:
        code = EXIT_INTERRUPTED
        progress.write('interrupted: stopping the graph')
    finally:
        progress.close()
        try:
            stop_all(procs, stop_timeout)
        except KeyboardInterrupt:  # a second Ctrl-C: no more patience
            stop_all(procs, 0.0)
        probe.close()
    return code, summaries


# --- run folder outputs --------------------------------------------------------------------------------------------
def write_metrics_csv(path: Path, rows: list[dict]) -> None:
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    with open(path, 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def read_metrics_csv(path: Path) -> list[dict]:
    def number(text):
        try:
            return float(text)
        except (TypeError, ValueError):
            return text
    with open(path, newline='') as f:
        return [{k: number(v) for k, v in row.items()} for row in csv.DictReader(f)]


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def plot_learning_curve(path: Path, rows: list[dict]) -> bool:
    """HF return against HF steps (the costly axis), and the control-variate c and rho per iteration."""
    points = [(r['hf_total_steps'], r['hf_return']) for r in rows
              if _finite(r.get('hf_total_steps')) and _finite(r.get('hf_return'))]
    if not points:
        return False
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 6), sharex=False, constrained_layout=True)
    top.plot(*zip(*points), marker='.', label='episodes finished in the iteration')
    recent = [(r['hf_total_steps'], r['hf_return_recent']) for r in rows
              if _finite(r.get('hf_total_steps')) and _finite(r.get('hf_return_recent'))]
    if recent:
        top.plot(*zip(*recent), label='mean of the recent episodes')
        top.legend()
    top.set(xlabel='high-fidelity steps', ylabel='HF return', title='learning curve')
    for key in ('c', 'rho'):
        series = [(r['iteration'], r[key]) for r in rows if _finite(r.get('iteration')) and _finite(r.get(key))]
        if series:
            bottom.plot(*zip(*series), label=key)
    bottom.set(xlabel='iteration', ylabel='control variate')
    if bottom.lines:
        bottom.legend()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def final_return(rows: list[dict], key: str = 'hf_return') -> float | None:
    returns = [r[key] for r in rows if _finite(r.get(key))]
    return returns[-1] if returns else None


def write_outputs(run_dir: Path, summaries: list[dict]) -> list[dict]:
    """metrics.csv (unless the learner wrote one) and learning_curve.png; returns the rows plotted (the learner's
    CSV, or the summaries received live when those are more complete)."""
    csv_path = run_dir / 'metrics.csv'
    if not csv_path.exists() and summaries:
        write_metrics_csv(csv_path, summaries)
    rows = read_metrics_csv(csv_path) if csv_path.exists() else []
    if len(summaries) > len(rows):
        rows = summaries
    plot_learning_curve(run_dir / 'learning_curve.png', rows)
    return rows


# --- entry point ---------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser, args = parse_args(sys.argv[1:] if argv is None else argv)
    os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'  # for the in-process probe as well
    env = child_env()
    config_path = args.config or graph.share_file('config', 'train.yaml')
    executables = set(graph.TRAINING_NODES) | set(graph.PLANT_NODES[args.hardware])
    run_dir = Path(args.run_dir or graph.default_run_dir()).resolve()
    try:
        overrides, node_params = split_assignments(args.set, executables)
        if args.iterations is not None:
            overrides['iterations'] = args.iterations
        if args.target_return is not None:
            overrides['target_return'] = args.target_return
        cfg = load_config(config_path, **overrides)
        specs = graph.build_graph(args.hardware, args.namespace, config_path, run_dir, overrides, node_params,
                                  lofi_workers=args.lofi_workers, record=not args.no_record,
                                  compose=not args.no_compose, profile=args.profile)  # checks run_dir
        resume = node_params.get('learner', {}).get('resume')
        first_iteration = checkpoint_version(latest_checkpoint(resume)) if resume else 0
    except (ValueError, TypeError, OSError) as exc:
        parser.error(str(exc))

    run_dir.mkdir(parents=True, exist_ok=True)
    if resume:  # as the resumed learner will, before the done row of the run's end can be read as this one's
        drop_rows_from(run_dir / 'metrics.csv', first_iteration)
    (run_dir / 'config.yaml').write_text(graph.params_file_text(cfg))
    env['ROS_LOG_DIR'] = str(run_dir / 'logs' / 'ros')  # rcl's own log files stay in the run folder too
    target = 'none' if cfg.target_return is None else cfg.target_return
    print(f'run folder: {run_dir}\ntraining {cfg.task} on {args.hardware} hardware: up to {cfg.iterations} '
          f'iterations, target HF return {target}', flush=True)
    unused = ignored_settings_warning(cfg.algo)
    if unused:
        print(f'warning: {unused}', flush=True)
    if args.hardware != 'twin':
        print(f'{args.hardware}: the robot side must be running already; its topics and reset service are in '
              f'{args.profile or graph.share_file("config", "hardware", args.hardware + ".yaml")}', flush=True)

    for sig in (signal.SIGINT, signal.SIGTERM):  # Ctrl-C and SIGTERM stop the graph cleanly (even if started
        signal.signal(sig, signal.default_int_handler)  # in the background, where a shell ignores SIGINT)
    code, summaries = run_graph(specs, run_dir, env, cfg.iterations, args.timeout, first_iteration=first_iteration)
    rows = write_outputs(run_dir, summaries)
    result, recent = final_return(rows), final_return(rows, 'hf_return_recent')
    print(f'run folder: {run_dir}')
    print('final HF return: ' + ('n/a (no finished HF episode reported)' if result is None else f'{result:.1f}')
          + ('' if recent is None else f' (mean of the recent episodes: {recent:.1f})'))
    return code


if __name__ == '__main__':
    sys.exit(main())
