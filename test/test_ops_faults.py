"""Fault tolerance over real DDS (issue 8): a node of the running graph dies and is started again.

lofi_sim dies -> the learner carries on HF-only (c = 0, lofi_timeouts counts it) and a restarted lofi_sim rejoins;
the learner crashes -> nothing the HF side produced meanwhile is lost, a learner resumed from the run folder trains
on it; hifi_interface dies -> policy_server's watchdog sends the safe command, training pauses, and continues once
hifi_interface is back. Every wait is for a condition (bounded), never a sleep."""
import csv
import json
import os
import signal
import time

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from ros_helpers import node_args
from std_msgs.msg import Float64MultiArray, String, UInt8MultiArray

from mfpg_ros.core.codec import decode_episode, decode_weights
from mfpg_ros.nodes.common import EPISODES_IN, HISTORY, LATCHED

NODES = ('policy_server', 'lofi_sim', 'hifi_interface', 'twin_plant', 'learner')
BUDGET = 100  # algo.hf_steps_per_iter in config/train.yaml
FAST = {'algo.pool_steps_per_env': 50, 'target_return': '.nan', 'iterations': 1000}  # stopped by the fixture


class Graph:
    """The five nodes as processes, plus what the probe sees of them: summaries (the learner's latched history),
    weights versions and /diagnostics."""

    def __init__(self, spawn, probe, **params):
        self.spawn, self.probe, self.params = spawn, probe, {**FAST, **params}
        self.procs, self.stopped, self.starts = {}, set(), 0
        self.summary = probe.subscribe('metrics/summary', String, HISTORY)
        self.weights = probe.subscribe('policy/weights', UInt8MultiArray, LATCHED)
        self.diag = probe.subscribe('/diagnostics', DiagnosticArray)
        self.versions = []  # every weights version the probe saw, in arrival order
        self.decoded = 0

    def start(self, name, **params):
        self.starts += 1
        self.procs[name] = self.spawn(name, node_args(**self.params, **params), name=f'{name}_{self.starts}')
        self.stopped.discard(name)
        return self.procs[name]

    def start_all(self, **per_node):
        """The learner last, once the others are up (its LF timeout must not count a slow lofi_sim start)."""
        for name in NODES:
            if name == 'learner':
                self.probe.wait_for_nodes(NODES[:-1], 60, self.check)
            self.start(name, **per_node.get(name, {}))

    def interrupt(self, name, timeout=20.0):
        """Ctrl-C one node and wait for it to exit."""
        self.stopped.add(name)
        proc = self.procs[name]
        proc.interrupt()
        self.probe.wait_until(lambda: proc.poll() is not None, timeout, f'{name} exits on SIGINT')

    def check(self):
        dead = [n for n, p in self.procs.items() if n not in self.stopped and p.poll() is not None]
        assert not dead, f'nodes died: {dead}'

    def rows(self):
        return [json.loads(m.data) for m in self.summary]

    def wait(self, condition, timeout, what):
        self.probe.wait_until(condition, timeout, what, self.check)

    def wait_rows(self, condition, timeout, what):
        self.wait(lambda: condition(self.rows()), timeout, what)
        return self.rows()

    def version(self):
        """The newest weights version seen so far (-1 before any)."""
        for msg in self.weights[self.decoded:]:
            self.versions.append(decode_weights(msg.data).version)
        self.decoded = len(self.weights)
        return max(self.versions, default=-1)

    def status(self, node):
        """The newest /diagnostics status of `node` (None before any) and how many of its reports arrived."""
        found = [s for m in self.diag for s in m.status if s.name == f'mfpg_ros: /{node}']
        return (found[-1] if found else None), len(found)

    def values(self, node):
        status, _ = self.status(node)
        return {kv.key: kv.value for kv in status.values} if status else {}


def mf(row):
    """A multi-fidelity iteration: every HF segment paired, LF data used, c reported."""
    return row['lf_steps'] > 0 and row['n_pairs'] == row['hf_segments'] > 0


def hf_only(row):
    return row['lf_steps'] == 0 and row['n_pairs'] == 0 and row['c'] == 0.0


def test_lofi_sim_dies_learner_goes_hf_only_and_a_restarted_lofi_sim_rejoins(spawn, probe):
    t0 = time.monotonic()
    g = Graph(spawn, probe, lofi_timeout_s=5.0)  # a loaded machine's pauses stay below it once lofi_sim is back
    g.start_all()
    before = g.wait_rows(lambda r: len(r) >= 3, 120, 'three iterations')
    g.interrupt('lofi_sim')
    killed_at = len(g.rows())
    g.wait_rows(lambda r: sum(map(hf_only, r[killed_at:])) >= 2, 60, 'two HF-only iterations')
    g.start('lofi_sim')
    restarted_at = len(g.rows())

    def mf_again(rows):  # three MF iterations in a row after the restart
        tail = rows[restarted_at:]
        return len(tail) >= 3 and all(map(mf, tail[-3:]))
    rows = g.wait_rows(mf_again, 90, 'MF iterations after lofi_sim restarted')
    print(f'lofi_sim killed after {killed_at} rows, restarted after {restarted_at}; {len(rows)} rows in '
          f'{time.monotonic() - t0:.1f} s; (iteration, lf_steps, n_pairs, c, lofi_timeouts): '
          f'{[(r["iteration"], r["lf_steps"], r["n_pairs"], round(r["c"], 3), r["lofi_timeouts"]) for r in rows]}')

    assert [r['iteration'] for r in rows] == list(range(len(rows)))  # no version skipped or repeated
    assert all(mf(r) and r['lofi_timeouts'] == 0 for r in before)
    # While lofi_sim is gone: HF-only updates (c = 0, no LF steps), each one counted. The iterations in flight at
    # the kill (at most two: the summary comes after the next weights) may still complete with LF data sent before.
    down = rows[killed_at:restarted_at]
    first_down = next(i for i, r in enumerate(down) if hf_only(r))
    assert first_down <= 2 and all(map(hf_only, down[first_down:])) and len(down) - first_down >= 2
    timeouts = [r['lofi_timeouts'] for r in rows]
    assert all(b - a == hf_only(r) for a, b, r in zip(timeouts, timeouts[1:], rows[1:]))  # +1 per HF-only update
    # After the restart: lofi_sim picked up the latched weights of a version it never saw before, MF resumed and
    # stayed (no more timeouts once it is back).
    first_mf = next(i for i in range(restarted_at, len(rows)) if mf(rows[i]))
    assert rows[first_mf]['iteration'] > rows[killed_at]['iteration']
    assert all(map(mf, rows[first_mf:])) and len({r['lofi_timeouts'] for r in rows[first_mf:]}) == 1
    assert rows[-1]['lofi_timeouts'] >= 2


def test_learner_crash_loses_no_hf_episodes_and_the_resumed_learner_trains_on_them(spawn, probe, tmp_path):
    t0 = time.monotonic()
    run_dir = tmp_path / 'run'
    g = Graph(spawn, probe, run_dir=str(run_dir), lofi_timeout_s=600.0)  # a slow LF side must not go HF-only
    hifi = []  # (HF segment, learner down when the probe received it)
    learner_down = False
    probe.node.create_subscription(UInt8MultiArray, 'hifi/episodes',
                                   lambda m: hifi.append((decode_episode(bytes(m.data)), learner_down)), EPISODES_IN)
    g.start_all()

    def hf_steps(version, only_down=False):
        return sum(len(e) for e, down in hifi if e.policy_version == version and (down or not only_down))

    def newest_checkpoint():
        files = sorted((run_dir / 'checkpoints').glob('learner_*.safetensors'))
        return int(files[-1].stem.split('_')[1]) if files else -1

    # Crash the learner while it waits for a version's HF data: freeze it (SIGSTOP) as soon as the HF side steps
    # with its weights for version W (so the robot side has them: a crash right after publishing may leave some
    # reader without them, and a resumed learner publishes them again), and keep it frozen only if it had not
    # checkpointed W + 1 yet (the checkpoint is written before the weights are published) and the HF side had not
    # produced half of W's budget; otherwise let it go on and try the next version.
    learner = g.procs['learner']
    actions = probe.subscribe('hifi/action', Float64MultiArray)

    def stepping_with(version):
        return version >= 0 and any(int(a.data[1]) == version for a in actions[-5:])
    target = 2
    for _ in range(10):
        g.wait(lambda: g.version() >= target and stepping_with(g.version()), 120, f'HF steps of version {target}')
        os.killpg(learner.pid, signal.SIGSTOP)
        version = g.version()
        if newest_checkpoint() == version and hf_steps(version) < BUDGET // 2:
            break
        os.killpg(learner.pid, signal.SIGCONT)
        target = version + 1
    else:
        raise AssertionError('the learner never froze while waiting for HF data')
    g.stopped.add('learner')
    os.killpg(learner.pid, signal.SIGKILL)  # a crash: no clean shutdown
    learner.proc.wait()
    learner.killed = True  # the fixture then removes the Fast DDS shared memory it leaked
    learner_down, killed_after = True, time.monotonic() - t0

    # The HF side goes on with the last weights it has: exactly one version's budget, then it waits.
    g.wait(lambda: hf_steps(version) >= BUDGET, 60, f'HF budget of version {version} produced while down')
    produced_down = hf_steps(version, only_down=True)
    segments = [e.episode_id for e, _ in hifi if e.policy_version == version]
    rows_before = len(g.rows())  # the dead learner's summaries still in flight at the crash have arrived by now
    g.start('learner', resume=str(run_dir))
    learner_down = False
    rows = g.wait_rows(lambda r: len(r) >= rows_before + 3, 120, 'three iterations of the resumed learner')
    resumed = rows[rows_before:]
    g.wait(lambda: g.version() >= version + 3, 60, f'weights version {version + 3}')
    print(f'learner frozen and killed at version {version} after {killed_after:.1f} s; HF steps of that version '
          f'produced while it was down: {produced_down} of {hf_steps(version)}; resumed rows: '
          f'{[(r["iteration"], r["hf_segments"], r["hf_steps"], r["n_pairs"], r["dropped"]) for r in resumed]}; '
          f'{time.monotonic() - t0:.1f} s')

    assert produced_down > 0  # the crash happened before the HF side had finished the version
    assert resumed[0]['iteration'] == version  # resumed at the newest checkpoint: the version the robot runs
    # Its first iteration trains on exactly the segments of that version the HF side produced, those sent while
    # the learner was down included: the HF side made no others (it pauses once the version's budget is used).
    assert [e.episode_id for e, _ in hifi if e.policy_version == version] == segments
    assert resumed[0]['hf_segments'] == len(segments) and resumed[0]['hf_steps'] == hf_steps(version)
    assert all(mf(r) for r in resumed)  # the LF replays and pool sent meanwhile are not lost either
    assert [r['iteration'] for r in resumed] == list(range(version, version + len(resumed)))
    assert newest_checkpoint() >= version + 3
    # The run folder's metrics.csv goes on where the crashed learner left it (nothing before the crash erased).
    with (run_dir / 'metrics.csv').open(newline='') as f:
        logged = [int(r['iteration']) for r in csv.DictReader(f)]
    assert logged == list(range(len(logged))) and len(logged) >= version + 3


def test_hifi_interface_dies_watchdog_holds_training_pauses_and_resumes(spawn, probe):
    t0 = time.monotonic()
    g = Graph(spawn, probe, lofi_timeout_s=5.0)
    commands = probe.subscribe('effort_controller/commands', Float64MultiArray)
    actions = probe.subscribe('hifi/action', Float64MultiArray)
    episodes, actions_before = [], []  # HF segments, and how many actions the probe had seen when each arrived

    def on_episode(msg):
        episodes.append(decode_episode(bytes(msg.data)))
        actions_before.append(len(actions))
    probe.node.create_subscription(UInt8MultiArray, 'hifi/episodes', on_episode, EPISODES_IN)
    g.start_all(policy_server={'safe_command': 'zero'})  # a visible safe command (the twin's own profile holds)

    # Stop it in the middle of an iteration, while it is stepping: it has sent a segment of the newest version, is a
    # few steps into the next episode, and policy_server has answered fewer observations of that version than the
    # budget. It is frozen (SIGSTOP) first: a stepping hifi_interface that goes silent trips the watchdog, while one
    # that stops between episodes (reset, paused) has told policy_server it is idle and disarmed it on purpose;
    # episodes are short, so the freeze is retried until it caught hifi_interface stepping. Then it is killed.
    # (Should the freeze land inside the publication of a segment that ends an episode, some readers have it and
    # lofi_sim may not: the learner then waits lofi_timeout_s and takes that version HF-only.)
    hifi = g.procs['hifi_interface']

    def stepping():
        version = g.version()
        return any(e.policy_version == version for e in episodes[-3:]) and len(actions) >= actions_before[-1] + 2 \
            and sum(1 for a in actions if int(a.data[1]) == version) < BUDGET - 20

    def trips():
        return int(g.values('policy_server').get('watchdog_trips', 0))

    def tripped():  # in a report sent after the freeze (an older one may still count a trip from start-up)
        status, n = g.status('policy_server')
        return n > reports and trips() > before and status.level == DiagnosticStatus.ERROR
    missed, seen = [], 0
    for attempt in range(10):  # freeze right after a new action: hifi_interface has work to do for it
        g.wait(lambda: len(actions) > seen and stepping(), 120, 'hifi_interface stepping')
        before, reports = trips(), g.status('policy_server')[1]
        os.killpg(hifi.pid, signal.SIGSTOP)
        version = g.version()
        try:
            g.wait(tripped, 5, 'policy_server reports the watchdog tripped')
            break
        except TimeoutError:
            os.killpg(hifi.pid, signal.SIGCONT)
            seen = len(actions)
            missed.append((version, g.values('hifi_interface').get('phase'), g.values('policy_server')))
    else:
        raise AssertionError(f'hifi_interface never froze while stepping: {missed}')
    g.stopped.add('hifi_interface')
    os.killpg(hifi.pid, signal.SIGKILL)  # dies frozen: no callback queued meanwhile runs (it might step once more)
    hifi.proc.wait()
    hifi.killed = True  # the fixture then removes the Fast DDS shared memory it leaked
    sent = list(episodes)

    status, _ = g.status('policy_server')
    assert status.level == DiagnosticStatus.ERROR and 'stale' in status.message
    g.wait(lambda: list(commands[-1].data) == [0.0], 10, 'the safe command is the last word')
    # Training pauses: the learner's next two reports still wait for the same version's HF data, no summary came.
    n_rows, n_commands = len(g.rows()), len(commands)
    _, reports = g.status('learner')
    g.wait(lambda: g.status('learner')[1] >= reports + 2, 20, 'two more learner diagnostics')
    waiting = g.values('learner')
    assert len(g.rows()) == n_rows and g.version() == version
    assert int(waiting['policy_version']) == version and int(waiting['hf_steps_waiting']) < BUDGET
    assert len(commands) == n_commands  # nothing commanded the plant meanwhile

    g.start('hifi_interface')
    rows = g.wait_rows(lambda r: len(r) >= n_rows + 2, 120, 'training continues')
    g.wait(lambda: g.version() >= version + 2, 60, f'weights version {version + 2}')
    g.wait(lambda: g.status('policy_server')[0].level == DiagnosticStatus.OK, 20, 'policy_server commanding again')
    g.wait(lambda: int(g.values('learner')['policy_version']) >= version + 2, 20, 'learner diagnostics caught up')
    ids = [e.episode_id for e in episodes]
    print(f'hifi_interface frozen at attempt {attempt + 1}, killed at version {version} after {len(sent)} segments '
          f'({sum(len(e) for e in sent if e.policy_version == version)} steps of that version); '
          f'learner waited with {waiting["hf_steps_waiting"]} HF steps; after the restart: '
          f'{[(r["iteration"], r["hf_segments"], r["hf_steps"], r["n_pairs"], r["dropped"]) for r in rows]}; '
          f'learner diagnostics {g.values("learner")}; {time.monotonic() - t0:.1f} s')
    assert [r['iteration'] for r in rows] == list(range(len(rows)))
    assert rows[n_rows]['iteration'] == version and all(map(mf, rows[n_rows + 1:]))
    assert mf(rows[n_rows]) or (hf_only(rows[n_rows]) and rows[n_rows]['lofi_timeouts'] == 1)
    # The iteration goes on with segments from the restarted node, which must not reuse the dead one's episode ids
    # (the learner and lofi_sim tell segments of a version apart by id: a reused id is dropped as a duplicate).
    assert len(set(ids)) == len(ids)
    assert not any(key.startswith('dropped duplicate') for key in g.values('learner'))
