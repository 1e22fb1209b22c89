"""`mfpg replay <bag>`: re-run the learner offline on a recorded run and check it lands on the recorded weights.

For each policy version v, the recorded HF and LF episodes of v go through the learner node's own bookkeeping
(core.learners.iteration_assembler: HF budget, verified pairs, the pool budget or, under pairing 'matched', each
segment's branches; HF-only when the run's summary reports a low-fidelity timeout), one learner update is taken,
and the resulting weights are compared with the recorded weights v+1.
The learner starts from the config's seed (the config stored in the bag, or --config), exactly as the node does.
Pool messages are summed as they come, as the node does (Learner.prefetch_pool), so the replay lands bit for bit on
the recorded weights; with several lofi_sim nodes their messages may reach the learner and the recorder in other
orders, and the float32 sums may then differ in the last bits.
"""
from __future__ import annotations

import argparse
import json
import math
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import torch

from mfpg_ros.bagfile import BYTES_TYPE, read_config, read_messages
from mfpg_ros.core.bookkeeping import IterationAssembler
from mfpg_ros.core.codec import CodecError, Weights, decode_episodes, decode_weights
from mfpg_ros.core.config import TrainConfig, load_config
from mfpg_ros.core.episode import LOFI_POOL, Episode
from mfpg_ros.core.learners import iteration_assembler, make_learner
from mfpg_ros.core.policy import load_into
from mfpg_ros.sim.tasks import make_task

WEIGHTS, HIFI_EPISODES, LOFI_EPISODES, SUMMARY = 'policy/weights', 'hifi/episodes', 'lofi/episodes', 'metrics/summary'
REPRODUCED = 1e-6  # largest weight difference that counts as the recorded update (a replay is exact: 0 here)


@dataclass
class Recording:
    """A bag's training traffic, decoded. Per policy version, the episodes in the bag's (arrival) order, grouped by
    the message that carried them (the learner takes a message's episodes together)."""

    weights: dict[int, Weights] = field(default_factory=dict)
    messages: dict[int, list[list[Episode]]] = field(default_factory=lambda: defaultdict(list))
    summaries: dict[int, dict] = field(default_factory=dict)
    undecodable: int = 0  # payloads the codec refused (the learner would have rejected them too)


def _suffix(topic: str, name: str) -> bool:
    return topic == name or topic.endswith('/' + name)  # any namespace


def load_recording(bag: str | Path, contract=None, key: bytes | None = None) -> Recording:
    rec = Recording()
    for msg in read_messages(bag):
        if _suffix(msg.topic, SUMMARY):
            summary = json.loads(msg.text())
            rec.summaries.setdefault(int(summary['iteration']), summary)
            continue
        if msg.msgtype != BYTES_TYPE:
            continue
        try:
            if _suffix(msg.topic, WEIGHTS):
                weights = decode_weights(msg.payload(), contract=contract, key=key)
                rec.weights.setdefault(weights.version, weights)
            elif _suffix(msg.topic, HIFI_EPISODES) or _suffix(msg.topic, LOFI_EPISODES):
                episodes = decode_episodes(msg.payload(), contract=contract, key=key,  # as the learner does
                                           hifi_stream=_suffix(msg.topic, HIFI_EPISODES))
                for version in dict.fromkeys(e.policy_version for e in episodes):
                    rec.messages[version].append([e for e in episodes if e.policy_version == version])
        except CodecError:
            rec.undecodable += 1
    return rec


def max_abs_diff(model: torch.nn.Module, weights: Weights) -> float:
    state = model.state_dict()
    return max(float((state[name].float() - torch.from_numpy(v)).abs().max()) for name, v in weights.state.items())


def lofi_timed_out(rec: Recording, version: int, assembler: IterationAssembler) -> bool:
    """Did the learner give up waiting for LF data of this version? Its summary says so; without a summary, infer
    it from incomplete LF data."""
    now, before = rec.summaries.get(version), rec.summaries.get(version - 1, {'lofi_timeouts': 0})
    if now is None or 'lofi_timeouts' not in now:
        return not assembler.lofi_complete()
    return now['lofi_timeouts'] > before.get('lofi_timeouts', 0)


def replay(rec: Recording, cfg: TrainConfig, log=print) -> list[tuple[int, float]]:
    """Per replayed version v: (v, max |weights after the update - recorded weights v+1|)."""
    algo, contract = cfg.algo, make_task(cfg.task, cfg.lofi_variant).contract
    learner = make_learner(algo, contract, cfg.seed)
    if not rec.weights:
        raise ValueError('the bag holds no policy weights')
    first = min(rec.weights)
    initial = max_abs_diff(learner.model, rec.weights[first]) if first == 0 else math.inf
    log(f'initial weights (version {first}): max_abs_diff {initial:.3g} against the seed-{cfg.seed} learner')
    if initial != 0.0:
        load_into(learner.model, rec.weights[first])
        learner.version = first
        log('  replay starts from the recorded weights with a fresh optimiser: later differences are expected')
    results = []
    for version in range(first, max(rec.weights)):
        if version + 1 not in rec.weights:
            log(f'version {version}: no recorded weights {version + 1}; stopping')
            break
        assembler = iteration_assembler(algo)
        assembler.version = version
        for episodes in rec.messages.get(version, []):  # as the learner node takes them, message by message
            for episode in episodes:
                assembler.add(episode)
            if any(e.fidelity == LOFI_POOL for e in episodes):
                learner.prefetch_pool(assembler.data.pool)  # the same float32 sums in the same order
            if assembler.ready():
                break  # the learner updates here; later segments of this version reached it stale
        timed_out = lofi_timed_out(rec, version, assembler)
        data = assembler.take()
        if timed_out:
            data.paired, data.pool = [], []
        metrics = learner.update(data.hifi, data.paired, data.pool)
        diff = max_abs_diff(learner.model, rec.weights[version + 1])
        recorded_c = rec.summaries.get(version, {}).get('c')
        c_note = '' if recorded_c is None else f', c {metrics.get("c", 0.0):+.4f} (recorded {recorded_c:+.4f})'
        log(f'version {version} -> {version + 1}: max_abs_diff {diff:.3g} (HF {data.steps("hifi")} steps, paired '
            f'{len(data.paired)}, pool {data.steps("pool")} steps{", HF-only: LF timeout" if timed_out else ""}'
            f'{c_note})')
        results.append((version, diff))
    return results


def signing_key(path: str | None) -> bytes | None:
    """As the nodes: a key file, else $MFPG_SIGNING_KEY, else none (signatures are then not checked)."""
    if path:
        return Path(path).read_bytes().strip()
    env = os.environ.get('MFPG_SIGNING_KEY', '')
    return env.encode() if env else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='mfpg replay', description=__doc__)
    parser.add_argument('bag', help='a rosbag2 folder written by bag_recorder')
    parser.add_argument('--config', help='training params file (default: the config stored in the bag)')
    parser.add_argument('--signing-key-file', help='verify signatures with this key (default: $MFPG_SIGNING_KEY)')
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if os.path.isfile(os.path.join(args.bag, 'bag', 'metadata.yaml')):  # a run folder: its (first) recording
        later = sorted(p.parent.name for p in Path(args.bag).glob('bag_*/metadata.yaml'))
        if later:  # a run resumed in its own folder records each part on its own
            print(f'{args.bag} holds more recordings (resumed parts): {", ".join(later)}; replaying the first, '
                  f'bag (mfpg replay {os.path.join(args.bag, later[0])} for the next)')
        args.bag = os.path.join(args.bag, 'bag')
    if not os.path.isdir(args.bag):
        parser.error(f'{args.bag} is not a folder (a rosbag2 folder: <run_dir>/bag)')
    try:
        stored = read_config(args.bag)
        if args.config is None and stored is None:
            parser.error('the bag stores no config: pass --config')
        cfg = load_config(args.config if args.config else stored)
        rec = load_recording(args.bag, make_task(cfg.task, cfg.lofi_variant).contract,
                             signing_key(args.signing_key_file))
    except (OSError, ValueError, KeyError) as exc:
        parser.error(f'{args.bag}: cannot read this recording ({type(exc).__name__}: {exc})')
    episodes = sum(len(m) for ms in rec.messages.values() for m in ms)
    print(f'{args.bag}: weights versions {sorted(rec.weights)}, {episodes} episodes, '
          f'{len(rec.summaries)} summaries, {rec.undecodable} undecodable payloads')
    results = replay(rec, cfg)
    worst = max((d for _, d in results), default=math.nan)
    mismatch = bool(results) and min(rec.weights) == 0 and worst > REPRODUCED  # from version 0 it must land exactly
    if mismatch:
        print('MISMATCH: the replayed updates do not reproduce the recorded weights (another config, code or data '
              'than the run had)')
    print(f'replay_max_weight_diff: {worst:.6g}')
    return 0 if results and not mismatch else 1
