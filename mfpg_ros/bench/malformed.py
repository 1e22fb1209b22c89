"""Malformed inputs for every topic the nodes subscribe to (ROS-free): each case is something a node must refuse.

Byte payloads (weights, episodes) start from real, validly signed payloads and break them: random bytes, truncation,
bit flips, wrong shapes, NaN/Inf, bad metadata, other formats and contracts, forged or missing signatures, huge
sizes, broken episode batches; plus valid payloads of a stale policy version (refused by version bookkeeping rather
than the codec: `Case.stale`). Float arrays (observation, action, commands) and joint states get wrong sizes and
non-finite values. Crafted payloads go through the codec's own packer, so only the intended defect differs.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import torch

from mfpg_ros.core import codec
from mfpg_ros.core.episode import HIFI, LOFI_POOL
from mfpg_ros.core.numpy_policy import NumpyPolicy
from mfpg_ros.core.policy import ActorCritic
from mfpg_ros.sim.engine import Engine
from mfpg_ros.sim.tasks import make_task

HUGE_BYTES = 4 << 20  # "huge" payloads: a few MB, far above any real control message
HUGE_PER_TOPIC = 3  # at most; each costs a wait until the subscribers counted it


def huge_count(n: int) -> int:
    return min(HUGE_PER_TOPIC, max(1, n // 25))


@dataclass
class Case:
    kind: str
    data: object  # bytes (weights, episodes), list[float] (Float64MultiArray), or (names, positions, velocities)
    stale: bool = False  # valid payload of an old policy version
    huge: bool = False


class PayloadFactory:
    """Real payloads of `task_name` (signed with `key` if given) and their broken variants."""

    def __init__(self, task_name: str, key: bytes | None, seed: int = 0, stale_version: int = 0):
        torch.manual_seed(seed)
        self.rng, self.key, self.stale_version = np.random.default_rng(seed), key, stale_version
        self.task = make_task(task_name)
        c = self.task.contract
        self.model = ActorCritic(c.obs_dim, c.act_dim)
        policy = NumpyPolicy(self.model)
        self.hifi = Engine(self.task, 1, seed=seed, nthread=1).collect(policy, 40, stale_version, HIFI)
        self.pool = Engine(self.task, 3, seed=seed + 1, nthread=1).collect(policy, 40, stale_version, LOFI_POOL)
        other = make_task('InvertedPendulum-v5' if task_name != 'InvertedPendulum-v5' else 'cartpole')
        oc = other.contract
        self.other_episode = codec.encode_episode(
            Engine(other, 1, seed=seed, nthread=1).collect(NumpyPolicy(ActorCritic(oc.obs_dim, oc.act_dim)), 20, 0,
                                                           HIFI)[0], key=key)
        self.other_weights = codec.encode_weights(ActorCritic(oc.obs_dim, oc.act_dim), version=10 ** 6,
                                                  contract=oc, key=key)

    # ---- valid payloads --------------------------------------------------------------------------------------
    def episode(self, fidelity: str = HIFI) -> bytes:
        segments = self.hifi if fidelity == HIFI else self.pool
        return codec.encode_episode(segments[self.rng.integers(len(segments))], key=self.key)

    def batch(self) -> bytes:
        """The LF pool as lofi_sim sends it: one batch payload."""
        return codec.encode_episodes(self.pool, key=self.key)

    def weights(self, version: int) -> bytes:
        return codec.encode_weights(self.model, version=version, contract=self.task.contract, key=self.key)

    # ---- generic breakage ------------------------------------------------------------------------------------
    def random_bytes(self) -> bytes:
        n = int(self.rng.choice([0, 1, 7, 8, 9, 64, 1000, 4096]))
        data = self.rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        if n >= 8 and self.rng.random() < 0.5:  # a plausible header size, so the parser gets further
            data = int(self.rng.integers(0, n)).to_bytes(8, 'little') + data[8:]
        return data

    def truncated(self, payload: bytes) -> bytes:
        return payload[:int(self.rng.integers(0, len(payload)))]

    def bit_flipped(self, payload: bytes) -> bytes:
        """1-3 flipped bits; without a key only in the tensor data (unsigned metadata is not protected)."""
        start = 0 if self.key else 8 + int.from_bytes(payload[:8], 'little')
        data = bytearray(payload)
        for _ in range(int(self.rng.integers(1, 4))):
            pos = int(self.rng.integers(start, len(data)))
            data[pos] ^= 1 << int(self.rng.integers(8))
        if bytes(data) == payload:  # two flips cancelled out
            data[-1] ^= 1
        return bytes(data)

    def huge(self, payload: bytes) -> bytes:
        """A real payload with megabytes of junk appended (so the size and the layout check both matter)."""
        return payload + self.rng.integers(0, 256, HUGE_BYTES, dtype=np.uint8).tobytes()

    def forged(self, payload: bytes, fmt: str) -> bytes:
        """Re-signed with the wrong key (only meaningful when the nodes hold a key)."""
        tensors, meta = self._parts(payload, fmt)
        return codec._pack(tensors, meta, b'not-the-key')

    def unsigned(self, payload: bytes, fmt: str) -> bytes:
        tensors, meta = self._parts(payload, fmt)
        return codec._pack(tensors, meta, None)

    def repacked(self, payload: bytes, fmt: str, tensors_edit=None, meta_edit=None) -> bytes:
        """The payload with tensors/metadata edited, then packed and signed like a real one."""
        tensors, meta = self._parts(payload, fmt)
        if tensors_edit:
            tensors_edit(tensors)
        if meta_edit:
            meta_edit(meta)
        return codec._pack(tensors, meta, self.key)

    def _parts(self, payload: bytes, fmt: str) -> tuple[dict, dict]:
        tensors, meta = codec._unpack(payload, 1 << 30, fmt, self.key)
        arrays = {name: np.array(a) for name, (_, a) in tensors.items()}
        return arrays, {k: v for k, v in meta.items() if k not in ('sha256', 'signature')}


def _set(key, value):
    def edit(d):
        d[key] = value
    return edit


def _drop(key):
    def edit(d):
        d.pop(key)
    return edit


def _apply(name, fn):
    def edit(d):
        d[name] = fn(d[name])
    return edit


def _poison(name, value):
    def edit(d):
        a = d[name].copy()
        a.reshape(-1)[0] = value
        d[name] = a
    return edit


EPISODE_EDITS = {  # kind: (tensor edit, metadata edit)
    'shape obs width': (_apply('obs', lambda a: a[:, :-1]), None),
    'shape eps rows': (_apply('eps', lambda a: a[:-1]), None),
    'shape qpos0': (_apply('qpos0', lambda a: np.append(a, 0.0)), None),
    'shape rewards 2d': (_apply('rewards', lambda a: a[:, None]), None),
    'shape empty': (lambda d: d.update({k: v[:0] for k, v in d.items() if k not in ('qpos0', 'qvel0')}), None),
    'dtype rewards f32': (_apply('rewards', lambda a: a.astype(np.float32)), None),
    'nan rewards': (_poison('rewards', np.nan), None),
    'inf obs': (_poison('obs', np.inf), None),
    'nan qpos0': (_poison('qpos0', np.nan), None),
    '-inf eps': (_poison('eps', -np.inf), None),
    'tensor missing': (_drop('eps'), None),
    'tensor unexpected': (_set('junk', np.zeros(3)), None),
    'meta negative version': (None, _set('policy_version', '-1')),
    'meta version not int': (None, _set('policy_version', '1e3')),
    'meta bad fidelity': (None, _set('fidelity', 'hifi2')),
    'meta bad bool': (None, _set('terminated', 'yes')),
    'meta missing key': (None, _drop('episode_id')),
    'meta extras nan': (None, _set('extras', '{"x": NaN}')),
    'meta format version': (None, _set('format_version', '2')),
    'meta contract junk': (None, _set('contract', '{"task": 1}')),
}


def _poison_last(name, value):
    def edit(d):
        a = d[name].copy()
        a.reshape(-1)[-1] = value
        d[name] = a
    return edit


BATCH_EDITS = {  # a pool batch: the columns must agree with each other and every member must be sound
    'batch lengths sum': (_apply('lengths', lambda a: a + (np.arange(len(a)) == 0)), None),
    'batch empty member': (_apply('lengths', lambda a: np.concatenate([[0], a])), None),
    'batch nan in last member': (_poison_last('obs', np.nan), None),
    'batch flags not 0/1': (_apply('flags', lambda a: a + 2), None),
    'batch negative start_step': (_apply('start_step', lambda a: a - 10 ** 6), None),
    'batch ids short': (None, _set('episode_ids', '[]')),
    'batch extras nan': (None, lambda m: m.update(extras=json.dumps([{'x': float('nan')}] * len(json.loads(
        m['episode_ids']))))),
    'batch negative version': (None, _set('policy_version', '-1')),
    'batch hifi on lofi topic': (None, _set('fidelity', 'hifi')),
}


def _edit_arch(meta, **fields):
    meta['arch'] = json.dumps({**json.loads(meta['arch']), **fields})


WEIGHT_EDITS = {
    'shape pi weight': (_apply('pi.0.weight', lambda a: a[:, :-1]), None),
    'shape log_std': (_apply('log_std', lambda a: np.append(a, 0.0).astype(np.float32)), None),
    'dtype f64 weight': (_apply('vf.0.bias', lambda a: a.astype(np.float64)), None),
    'nan weight': (_poison('pi.2.weight', np.nan), None),
    'inf log_std': (_poison('log_std', np.inf), None),
    'tensor missing': (_drop('vf.2.bias'), None),
    'tensor unexpected': (_set('extra.layer', np.zeros(2, np.float32)), None),
    'meta negative version': (None, _set('policy_version', '-5')),
    'meta arch mismatch': (None, lambda m: _edit_arch(m, hidden=[64])),
    'meta arch obs_dim': (None, lambda m: _edit_arch(m, obs_dim=json.loads(m['arch'])['obs_dim'] + 1)),
    'meta arch junk': (None, _set('arch', '[1, 2]')),
    'meta format tag': (None, _set('format', 'mfpg_episode')),
    'meta missing contract': (None, _drop('contract')),
}


def byte_cases(factory: PayloadFactory, topic_kind: str, n: int) -> list[Case]:
    """n cases for a weights topic ('weights'), the HF episode topic ('hifi') or the LF episode topic ('lofi')."""
    is_weights = topic_kind == 'weights'
    fmt = codec.WEIGHTS_FORMAT if is_weights else codec.EPISODE_FORMAT
    fidelity = LOFI_POOL if topic_kind == 'lofi' else HIFI
    valid = (lambda: factory.weights(10 ** 6)) if is_weights else (lambda: factory.episode(fidelity))
    edits = WEIGHT_EDITS if is_weights else EPISODE_EDITS

    makers = {
        'random bytes': lambda: factory.random_bytes(),
        'truncated': lambda: factory.truncated(valid()),
        'bit flips': lambda: factory.bit_flipped(valid()),
        'other contract': lambda: factory.other_weights if is_weights else factory.other_episode,
        'other format': lambda: factory.episode(HIFI) if is_weights else factory.weights(10 ** 6),
    }
    if factory.key:  # without a key, signatures are not checked and metadata is unprotected
        makers['forged signature'] = lambda: factory.forged(valid(), fmt)
        makers['unsigned'] = lambda: factory.unsigned(valid(), fmt)
    if topic_kind == 'lofi':  # lofi_sim sends its pool in batches: broken ones, and one poisoned member
        makers['batch bit flips'] = lambda: factory.bit_flipped(factory.batch())
        makers['batch truncated'] = lambda: factory.truncated(factory.batch())
        for kind, (tensors_edit, meta_edit) in BATCH_EDITS.items():
            makers[kind] = (lambda te=tensors_edit, me=meta_edit:
                            factory.repacked(factory.batch(), codec.EPISODE_BATCH_FORMAT, te, me))
    if not is_weights:  # a valid segment on the wrong topic
        makers['wrong topic'] = lambda: factory.episode(LOFI_POOL if topic_kind == 'hifi' else HIFI)
    for kind, (tensors_edit, meta_edit) in edits.items():
        makers[kind] = (lambda te=tensors_edit, me=meta_edit: factory.repacked(valid(), fmt, te, me))
    stale = (lambda: factory.weights(factory.stale_version)) if is_weights else valid

    kinds = list(makers)
    cases = [Case('huge', factory.huge(valid()), huge=True) for _ in range(huge_count(n))]
    cases += [Case('stale version', stale(), stale=True) for _ in range(max(1, n // 20)) if len(cases) < n]
    while len(cases) < n:
        kind = kinds[len(cases) % len(kinds)]
        cases.append(Case(kind, makers[kind]()))
    factory.rng.shuffle(cases)
    return cases


def float_cases(rng: np.random.Generator, size: int, n: int) -> list[Case]:
    """Float64MultiArray data a node expecting exactly `size` finite values must refuse."""
    lengths = sorted({0, 1, size - 1, size + 1, 2 * size + 3, 1000} - {size})
    cases = [Case('huge', [0.0] * (HUGE_BYTES // 8), huge=True) for _ in range(huge_count(n))]
    while len(cases) < n:
        if len(cases) % 2:
            cases.append(Case('wrong size', rng.normal(size=int(rng.choice(lengths))).tolist()))
        else:
            values = rng.normal(size=size)
            values[rng.integers(size)] = rng.choice([np.nan, np.inf, -np.inf])
            cases.append(Case('non-finite', values.tolist()))
    rng.shuffle(cases)
    return cases


def joint_state_cases(rng: np.random.Generator, joints: list[str], n: int) -> list[Case]:
    """(names, positions, velocities) that a node reading `joints` by name must refuse."""
    k = len(joints)
    good = lambda: (list(joints), rng.normal(size=k).tolist(), rng.normal(size=k).tolist())  # noqa: E731
    makers = {
        'missing joint': lambda: (joints[1:], rng.normal(size=k - 1).tolist(), rng.normal(size=k - 1).tolist()),
        'renamed joint': lambda: ([joints[0] + '_x', *joints[1:]], *good()[1:]),
        'positions short': lambda: (list(joints), rng.normal(size=k - 1).tolist(), rng.normal(size=k).tolist()),
        'velocities long': lambda: (list(joints), rng.normal(size=k).tolist(), rng.normal(size=k + 1).tolist()),
        'empty': lambda: ([], [], []),
        'nan position': lambda: (list(joints), [np.nan] + rng.normal(size=k - 1).tolist(), good()[2]),
        'inf velocity': lambda: (list(joints), good()[1], rng.normal(size=k - 1).tolist() + [np.inf]),
        'beyond float32': lambda: (list(joints), good()[1], [1e39] + rng.normal(size=k - 1).tolist()),
    }
    kinds = list(makers)
    huge_names = [f'j{i}' for i in range(HUGE_BYTES // 64)]
    cases = [Case('huge', (huge_names, [0.0] * len(huge_names), []), huge=True) for _ in range(huge_count(n))]
    while len(cases) < n:
        kind = kinds[len(cases) % len(kinds)]
        cases.append(Case(kind, makers[kind]()))
    rng.shuffle(cases)
    return cases
