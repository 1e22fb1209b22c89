"""Wire codec: round trips, one exception type per kind of bad input, signing, and a fuzz loop."""
import array
import dataclasses
import re
import struct

import numpy as np
import pytest
import safetensors.numpy
import torch

from mfpg_ros.core import codec
from mfpg_ros.core.codec import (
    CodecError, ContractError, IntegrityError, MalformedError, NonFiniteError, ShapeError, SignatureError,
    TooLargeError, VersionError, decode_episode, decode_weights, encode_episode, encode_weights)
from mfpg_ros.core.contract import Contract
from mfpg_ros.core.episode import HIFI, LOFI_PAIRED, Episode
from mfpg_ros.core.numpy_policy import NumpyPolicy
from mfpg_ros.core.policy import ActorCritic, build_model, load_into

torch.set_num_threads(1)
KEY, OTHER_KEY = b'lab-secret', b'someone-else'
CONTRACT = Contract(task='reach', observation_names=('q0', 'q1', 'dq0', 'dq1', 'target'),
                    action_names=('tau0', 'tau1'), action_low=(-1.0, -2.0), action_high=(1.0, 2.0),
                    control_rate_hz=50.0, nq=4, nv=3)


def make_episode(steps=20, seed=0, **overrides) -> Episode:
    rng = np.random.default_rng(seed)
    fields = dict(
        obs=rng.standard_normal((steps, 5)).astype(np.float32),
        actions=rng.standard_normal((steps, 2)).astype(np.float32),
        eps=rng.standard_normal((steps, 2)), rewards=rng.standard_normal(steps), qpos0=rng.standard_normal(4),
        qvel0=rng.standard_normal(3), contract=CONTRACT, policy_version=7, fidelity=LOFI_PAIRED, start_step=13,
        terminated=True, truncated=False, aborted=True, seed=2**63 + 5, episode_id='hf-0042/seg1', pair_of='hf-0042',
        extras={'unstable_steps': 3, 'warp': 0.25, 'clipped': True, 'contact_forces': rng.standard_normal((steps, 2)),
                'counts': np.arange(4, dtype=np.int32)})
    fields.update(overrides)
    return Episode(**fields)


def make_model(hidden=(64, 64), seed=0) -> ActorCritic:
    torch.manual_seed(seed)
    model = ActorCritic(CONTRACT.obs_dim, CONTRACT.act_dim, hidden)
    with torch.no_grad():
        model.log_std.fill_(-0.7)
    return model


def reseal(payload, fmt, key=None, tensors=None, drop_tensors=(), meta=None, drop_meta=()) -> bytes:
    """Edit a valid payload and re-hash it (re-sign with `key`; else any signature is kept as is)."""
    raw, old_meta = codec._unpack(payload, 1 << 30, fmt, None)
    arrays = {name: a.copy() for name, (_, a) in raw.items()}
    arrays.update(tensors or {})
    for name in drop_tensors:
        del arrays[name]
    new_meta = {**old_meta, **(meta or {})}
    for name in drop_meta:
        del new_meta[name]
    return codec._pack(arrays, new_meta, key)


def assert_episodes_equal(a: Episode, b: Episode):
    for name in ('obs', 'actions', 'eps', 'rewards', 'qpos0', 'qvel0'):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and x.shape == y.shape and np.array_equal(x, y), name
    for name in ('contract', 'policy_version', 'fidelity', 'start_step', 'terminated', 'truncated', 'aborted', 'seed',
                 'episode_id', 'pair_of'):
        assert getattr(a, name) == getattr(b, name), name
    assert a.extras.keys() == b.extras.keys()
    for name, value in a.extras.items():
        assert np.array_equal(value, b.extras[name]) and type(value) is type(b.extras[name]), name


EPISODE = make_episode()
EPISODE_BYTES = encode_episode(EPISODE)
SIGNED_EPISODE = encode_episode(EPISODE, key=KEY)
MODEL = make_model()
WEIGHTS_BYTES = encode_weights(MODEL, version=7, contract=CONTRACT, extra={'run': 'r1'})
SIGNED_WEIGHTS = encode_weights(MODEL, version=7, contract=CONTRACT, key=KEY)


# ---------------------------------------------------------------- round trips

def test_episode_round_trip_keeps_every_field():
    decoded = decode_episode(EPISODE_BYTES, contract=CONTRACT)
    assert_episodes_equal(EPISODE, decoded)
    assert decoded.obs.dtype == np.float32 and decoded.eps.dtype == np.float64
    assert decoded.obs.flags.writeable and decoded.extras['counts'].dtype == np.int64  # ints widen to int64
    assert_episodes_equal(decoded, decode_episode(SIGNED_EPISODE, contract=CONTRACT, key=KEY))


def test_episode_defaults_and_one_step():
    ep = Episode(obs=np.zeros((1, 5), np.float32), actions=np.zeros((1, 2), np.float32), eps=np.zeros((1, 2)),
                 rewards=np.zeros(1), qpos0=np.zeros(4), qvel0=np.zeros(3), contract=CONTRACT, policy_version=0)
    assert_episodes_equal(ep, decode_episode(encode_episode(ep)))


def test_decode_accepts_message_buffers():
    """UInt8MultiArray.data arrives as array.array('B') in rclpy; accept every bytes-like form."""
    for data in (bytearray(EPISODE_BYTES), memoryview(EPISODE_BYTES), array.array('B', EPISODE_BYTES),
                 np.frombuffer(EPISODE_BYTES, np.uint8), list(EPISODE_BYTES)):
        assert_episodes_equal(EPISODE, decode_episode(data))


def test_payload_is_standard_safetensors_both_ways():
    loaded = safetensors.numpy.load(EPISODE_BYTES)
    assert np.array_equal(loaded['obs'], EPISODE.obs) and np.array_equal(loaded['extras.counts'], np.arange(4))
    # bytes written by the reference library (its own tensor order and header) decode, signature included
    _, meta = codec._unpack(SIGNED_EPISODE, 1 << 30, codec.EPISODE_FORMAT, KEY)
    rewritten = safetensors.numpy.save(loaded, metadata=meta)
    assert rewritten != SIGNED_EPISODE
    assert_episodes_equal(EPISODE, decode_episode(rewritten, contract=CONTRACT, key=KEY))


@pytest.mark.parametrize('hidden', [(64, 64), (), (7,)])
def test_weights_round_trip_gives_identical_model(hidden):
    model = make_model(hidden, seed=3)
    weights = decode_weights(encode_weights(model, version=4, contract=CONTRACT, key=KEY, extra={'step': '12'}),
                             contract=CONTRACT, key=KEY)
    assert weights.version == 4 and weights.contract == CONTRACT and weights.extra == {'step': '12'}
    assert weights.arch == model.arch() and len(weights.sha256) == 64
    state = model.state_dict()
    assert weights.state.keys() == state.keys()
    assert all(weights.state[k].dtype == np.float32 and np.array_equal(weights.state[k], state[k].numpy())
               for k in state)
    obs, act = torch.randn(9, 5), torch.randn(9, 2)
    for copy in (build_model(weights), load_into(make_model(hidden, seed=99), weights)):
        assert torch.equal(copy.mean(obs), model.mean(obs)) and torch.equal(copy.value(obs), model.value(obs))
        assert torch.equal(copy.log_prob(obs, act), model.log_prob(obs, act))
    direct, via_model = NumpyPolicy.from_state(weights.state), NumpyPolicy(model)  # the nodes' hot-path policy
    assert len(direct.layers) == len(hidden) + 1 and np.array_equal(direct.std, via_model.std)
    assert all(np.array_equal(a, b) for pair in zip(direct.layers, via_model.layers) for a, b in zip(*pair))
    assert np.array_equal(direct.mean(obs.double().numpy()), via_model.mean(obs.double().numpy()))


def test_load_into_refuses_other_architecture():
    with pytest.raises(ShapeError, match='arch'):
        load_into(make_model((32,)), decode_weights(WEIGHTS_BYTES))


# ---------------------------------------------------------------- one exception type per defect

EP, WT = codec.EPISODE_FORMAT, codec.WEIGHTS_FORMAT
_bad_header_size = bytearray(EPISODE_BYTES)
_bad_header_size[:8] = struct.pack('<Q', 2**63 + 1)
_flipped_data = bytearray(EPISODE_BYTES)
_flipped_data[-3] ^= 0x10
_flipped_signed = bytearray(SIGNED_EPISODE)
_flipped_signed[-3] ^= 0x10

EPISODE_CASES = {
    'too large': (lambda: decode_episode(EPISODE_BYTES, max_bytes=len(EPISODE_BYTES) - 1), TooLargeError, 'limit'),
    'too short': (lambda: decode_episode(b'\x01\x02'), MalformedError, 'shorter than'),
    'huge header size': (lambda: decode_episode(_bad_header_size), MalformedError, 'declared header size'),
    'header not json': (lambda: decode_episode(struct.pack('<Q', 4) + b'{{{{'), MalformedError, 'not JSON'),
    'header not object': (lambda: decode_episode(struct.pack('<Q', 2) + b'[]'), MalformedError, 'not a JSON object'),
    'not bytes': (lambda: decode_episode('a string'), MalformedError, 'bytes-like'),
    'truncated': (lambda: decode_episode(EPISODE_BYTES[:-8]), MalformedError, 'truncated'),
    'wrong format tag': (lambda: decode_episode(WEIGHTS_BYTES), MalformedError, 'wrong format tag'),
    'missing tensor': (lambda: decode_episode(reseal(EPISODE_BYTES, EP, drop_tensors=['eps'])),
                       MalformedError, "missing tensor 'eps'"),
    'unexpected tensor': (lambda: decode_episode(reseal(EPISODE_BYTES, EP, tensors={'x': np.zeros(1)})),
                          MalformedError, "unexpected tensor 'x'"),
    'missing metadata': (lambda: decode_episode(reseal(EPISODE_BYTES, EP, drop_meta=['seed'])),
                         MalformedError, "missing metadata key 'seed'"),
    'wrong dtype': (lambda: decode_episode(reseal(EPISODE_BYTES, EP, tensors={'obs': EPISODE.obs.astype(np.float64)})),
                    MalformedError, "'obs' has dtype F64, expected F32"),
    'missing format_version': (lambda: decode_episode(reseal(EPISODE_BYTES, EP, drop_meta=['format_version'])),
                               MalformedError, "missing metadata key 'format_version'"),
    'unknown fidelity': (lambda: decode_episode(reseal(EPISODE_BYTES, EP, meta={'fidelity': 'gazebo'})),
                         MalformedError, 'unknown fidelity'),
    'non-integer version': (lambda: decode_episode(reseal(EPISODE_BYTES, EP, meta={'policy_version': '1e3'})),
                            MalformedError, "'policy_version' is not an integer"),
    'bad contract json': (lambda: decode_episode(reseal(EPISODE_BYTES, EP, meta={'contract': '{"task": 1}'})),
                          MalformedError, 'contract'),
    'format version': (lambda: decode_episode(reseal(EPISODE_BYTES, EP, meta={'format_version': '2'})),
                       VersionError, 'unsupported format_version'),
    'negative version': (lambda: decode_episode(reseal(EPISODE_BYTES, EP, meta={'policy_version': '-1'})),
                         VersionError, 'negative policy_version'),
    'T mismatch': (lambda: decode_episode(reseal(EPISODE_BYTES, EP, tensors={'actions': EPISODE.actions[:-1]})),
                   ShapeError, 'actions has shape'),
    'obs_dim vs contract': (lambda: decode_episode(reseal(EPISODE_BYTES, EP, tensors={'obs': EPISODE.obs[:, :4]})),
                            ShapeError, 'obs has shape'),
    'nq vs contract': (lambda: decode_episode(reseal(EPISODE_BYTES, EP, tensors={'qpos0': np.zeros(5)})),
                       ShapeError, 'qpos0 has shape'),
    'empty episode': (lambda: decode_episode(reseal(EPISODE_BYTES, EP, tensors={
        name: getattr(EPISODE, name)[:0] for name in ('obs', 'actions', 'eps', 'rewards')})), ShapeError, 'empty'),
    'nan obs': (lambda: decode_episode(reseal(EPISODE_BYTES, EP, tensors={'obs': np.where(
        np.arange(20)[:, None] == 3, np.nan, EPISODE.obs).astype(np.float32)})), NonFiniteError, 'obs contains NaN'),
    'inf reward': (lambda: decode_episode(reseal(EPISODE_BYTES, EP, tensors={'rewards': np.full(20, np.inf)})),
                   NonFiniteError, 'rewards contains NaN or Inf'),
    'nan extra': (lambda: decode_episode(reseal(EPISODE_BYTES, EP, meta={'extras': '{"warp": NaN}'})),
                  NonFiniteError, "extras['warp']"),
    'corrupted data': (lambda: decode_episode(bytes(_flipped_data)), IntegrityError, 'sha256 mismatch'),
    'unsigned with key': (lambda: decode_episode(EPISODE_BYTES, key=KEY), SignatureError, 'unsigned'),
    'wrong key': (lambda: decode_episode(SIGNED_EPISODE, key=OTHER_KEY), SignatureError, 'does not match'),
    'tampered metadata': (lambda: decode_episode(SIGNED_EPISODE.replace(b'"policy_version":"7"',
                                                                        b'"policy_version":"8"'), key=KEY),
                          SignatureError, 'does not match'),
    'tampered data': (lambda: decode_episode(bytes(_flipped_signed), key=KEY), SignatureError, 'does not match'),
    'forged signature': (lambda: decode_episode(reseal(SIGNED_EPISODE, EP, meta={'signature': 'ab' * 32}), key=KEY),
                         SignatureError, 'does not match'),
    'resigned by another key': (lambda: decode_episode(reseal(SIGNED_EPISODE, EP, key=OTHER_KEY, meta={
        'policy_version': '8'}), key=KEY), SignatureError, 'does not match'),
    'garbage signature': (lambda: decode_episode(reseal(SIGNED_EPISODE, EP, meta={'signature': '\u00e9' * 64}),
                                                 key=KEY), SignatureError, 'does not match'),
    'other contract': (lambda: decode_episode(EPISODE_BYTES, contract=Contract(**{
        **CONTRACT.__dict__, 'nq': 5})), ContractError, 'differs in nq'),
    'other task': (lambda: decode_episode(EPISODE_BYTES, contract=Contract(**{
        **CONTRACT.__dict__, 'task': 'push', 'control_rate_hz': 100.0})), ContractError, 'task, control_rate_hz'),
}

WEIGHT_CASES = {
    'too large': (lambda: decode_weights(WEIGHTS_BYTES, max_bytes=100), TooLargeError, 'limit'),
    'wrong format tag': (lambda: decode_weights(EPISODE_BYTES), MalformedError, "expected 'mfpg_weights'"),
    'missing tensor': (lambda: decode_weights(reseal(WEIGHTS_BYTES, WT, drop_tensors=['log_std'])),
                       MalformedError, "missing tensor 'log_std'"),
    'unexpected tensor': (lambda: decode_weights(reseal(WEIGHTS_BYTES, WT, tensors={'pi.6.weight': np.zeros(
        (1, 1), np.float32)})), MalformedError, "unexpected tensor 'pi.6.weight'"),
    'wrong dtype': (lambda: decode_weights(reseal(WEIGHTS_BYTES, WT, tensors={'log_std': np.zeros(2)})),
                    MalformedError, "'log_std' has dtype F64, expected F32"),
    'bad arch': (lambda: decode_weights(reseal(WEIGHTS_BYTES, WT, meta={'arch': '{"obs_dim": 5}'})),
                 MalformedError, 'metadata arch'),
    'format version': (lambda: decode_weights(reseal(WEIGHTS_BYTES, WT, meta={'format_version': '0'})),
                       VersionError, 'unsupported format_version'),
    'negative version': (lambda: decode_weights(reseal(WEIGHTS_BYTES, WT, meta={'policy_version': '-3'})),
                         VersionError, 'negative policy_version'),
    'shape vs arch': (lambda: decode_weights(reseal(WEIGHTS_BYTES, WT, tensors={'pi.2.bias': np.zeros(
        63, np.float32)})), ShapeError, "'pi.2.bias' has shape"),
    'arch vs contract': (lambda: decode_weights(reseal(WEIGHTS_BYTES, WT, meta={
        'arch': '{"obs_dim": 6, "act_dim": 2, "hidden": [64, 64]}'})), ShapeError, 'does not fit the contract'),
    'nan weight': (lambda: decode_weights(reseal(WEIGHTS_BYTES, WT, tensors={'log_std': np.array(
        [0, np.nan], np.float32)})), NonFiniteError, "'log_std' contains NaN"),
    'corrupted data': (lambda: decode_weights(WEIGHTS_BYTES[:-1] + bytes([WEIGHTS_BYTES[-1] ^ 1])),
                       IntegrityError, 'sha256 mismatch'),
    'unsigned with key': (lambda: decode_weights(WEIGHTS_BYTES, key=KEY), SignatureError, 'unsigned'),
    'wrong key': (lambda: decode_weights(SIGNED_WEIGHTS, key=OTHER_KEY), SignatureError, 'does not match'),
    'tampered version': (lambda: decode_weights(SIGNED_WEIGHTS.replace(b'"policy_version":"7"',
                                                                       b'"policy_version":"9"'), key=KEY),
                         SignatureError, 'does not match'),
    'tampered data': (lambda: decode_weights(SIGNED_WEIGHTS[:-1] + bytes([SIGNED_WEIGHTS[-1] ^ 1]), key=KEY),
                      SignatureError, 'does not match'),
    'other contract': (lambda: decode_weights(WEIGHTS_BYTES, contract=Contract(**{
        **CONTRACT.__dict__, 'action_high': (1.0, 3.0)})), ContractError, 'differs in action_high'),
}


@pytest.mark.parametrize('case', EPISODE_CASES)
def test_episode_rejections(case):
    decode, error, message = EPISODE_CASES[case]
    with pytest.raises(error, match=re.escape(message)) as info:
        decode()
    assert isinstance(info.value, CodecError) and isinstance(info.value, ValueError)
    for other in {e for _, e, _ in EPISODE_CASES.values()} - {error}:
        assert not isinstance(info.value, other)


@pytest.mark.parametrize('case', WEIGHT_CASES)
def test_weight_rejections(case):
    decode, error, message = WEIGHT_CASES[case]
    with pytest.raises(error, match=re.escape(message)) as info:
        decode()
    assert isinstance(info.value, CodecError)


def test_encode_refuses_what_decode_would_refuse():
    nan_rewards = EPISODE.rewards.copy()
    nan_rewards[0] = np.nan
    with pytest.raises(NonFiniteError):
        encode_episode(make_episode(rewards=nan_rewards))
    with pytest.raises(ShapeError):
        encode_episode(make_episode(qvel0=np.zeros(2)))
    with pytest.raises(MalformedError, match='fidelity'):
        encode_episode(make_episode(fidelity='real'))
    with pytest.raises(VersionError):
        encode_episode(make_episode(policy_version=-1))
    with pytest.raises(MalformedError, match='extras'):
        encode_episode(make_episode(extras={'note': 'text'}))
    with pytest.raises(NonFiniteError, match='extras'):
        encode_episode(make_episode(extras={'x': float('inf')}))
    with pytest.raises(VersionError):
        encode_weights(MODEL, version=-1, contract=CONTRACT)
    with pytest.raises(ShapeError, match='contract'):
        encode_weights(ActorCritic(3, 2), version=0, contract=CONTRACT)
    broken = make_model()
    with torch.no_grad():
        broken.pi[0].weight[0, 0] = float('nan')
    with pytest.raises(NonFiniteError):
        encode_weights(broken, version=0, contract=CONTRACT)


def test_unsigned_payload_accepted_without_key_and_signed_without_key_too():
    assert decode_episode(SIGNED_EPISODE).policy_version == 7  # no key configured: signature not checked
    assert decode_weights(WEIGHTS_BYTES).version == 7


# ---------------------------------------------------------------- fuzz

def _mutations(rng, valid: bytes):
    header_len = struct.unpack('<Q', valid[:8])[0]
    kind = rng.integers(8)
    data = bytearray(valid)
    if kind == 0:  # random bytes
        return rng.bytes(int(rng.integers(0, 400)))
    if kind == 1:  # truncation
        return valid[:int(rng.integers(0, len(valid)))]
    if kind == 2:  # bit flips anywhere
        for _ in range(int(rng.integers(1, 4))):
            i = int(rng.integers(len(data)))
            data[i] ^= 1 << int(rng.integers(8))
        return bytes(data)
    if kind == 3:  # byte flips inside the JSON header
        for _ in range(int(rng.integers(1, 4))):
            data[8 + int(rng.integers(header_len))] = int(rng.choice(list(b'{}[]":,0123456789-eE.nNa \\')))
        return bytes(data)
    if kind == 4:  # declared header size: huge, off by a little, or pointing into the data
        size = int(rng.choice([2**64 - 1, 2**63, 2**32, header_len + int(rng.integers(-16, 17)),
                               int(rng.integers(0, len(valid)))]))
        data[:8] = struct.pack('<Q', max(0, size) % 2**64)
        return bytes(data)
    if kind == 5:  # random bytes after a plausible size field
        body = rng.bytes(int(rng.integers(0, 200)))
        return struct.pack('<Q', int(rng.integers(0, len(body) + 2))) + body
    if kind == 6:  # splice: duplicate or drop a chunk
        i, j = sorted(int(x) for x in rng.integers(0, len(valid), 2))
        return valid[:i] + valid[i:j] * int(rng.integers(0, 3)) + valid[j:]
    # hostile but well-formed JSON headers
    header = rng.choice([b'[' * 50000, b'{"a":' * 30000, b'{"__metadata__":{"format":"mfpg_episode"}}',
                         b'{"x":{"dtype":"F64","shape":[1e300],"data_offsets":[0,8]}}',
                         b'{"x":{"dtype":"F64","shape":[99999999999999999999999],"data_offsets":[0,8]}}',
                         b'{"x":{"dtype":"F64","shape":[1],"data_offsets":[-8,0]}}',
                         b'{"x":{"dtype":["F64"],"shape":[1],"data_offsets":[0,8]}}',
                         b'{"x":{"dtype":"BF16","shape":[4],"data_offsets":[0,8]}}',
                         b'{"x":1,"x":2}', b'"\\ud800"', b'\xff\xfe{}'])
    return struct.pack('<Q', len(header)) + header + rng.bytes(8)


def test_fuzz_never_raises_anything_but_codec_error():
    rng = np.random.default_rng(1234)
    valid = [EPISODE_BYTES, SIGNED_EPISODE, WEIGHTS_BYTES, SIGNED_WEIGHTS]
    decoders = [lambda b: decode_episode(b), lambda b: decode_episode(b, key=KEY, contract=CONTRACT),
                lambda b: decode_weights(b), lambda b: decode_weights(b, key=KEY, contract=CONTRACT)]
    outcomes = {}
    for _ in range(4000):
        payload = _mutations(rng, valid[int(rng.integers(len(valid)))])
        for decode in decoders:
            try:
                decode(payload)
                outcome = 'accepted'
            except CodecError as e:
                assert str(e)
                outcome = type(e).__name__
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
    assert {'MalformedError', 'IntegrityError', 'SignatureError'} <= outcomes.keys(), outcomes


# ---------------------------------------------------------------- episode batches (one message, many episodes)
def make_pool_episode(steps, seed, **overrides) -> Episode:
    """What a simulator's pool holds: scalar extras only."""
    return make_episode(steps=steps, seed=seed, extras={'env': float(seed), 'unstable': seed % 2 == 1}, **overrides)


BATCH = [make_pool_episode(3 + i, i, terminated=i % 2 == 0, truncated=i % 2 == 1, aborted=i == 3, start_step=i)
         for i in range(4)]  # seeds 2**63 + 5: beyond int64, as a u64 column
BATCH_BYTES = codec.encode_episodes(BATCH, key=KEY)


def edited_batch(tensors_edit=None, meta_edit=None, key=KEY) -> bytes:
    """BATCH_BYTES with its tensors or metadata edited, then packed and signed like a real batch."""
    tensors, meta = codec._unpack(BATCH_BYTES, 1 << 30, codec.EPISODE_BATCH_FORMAT, KEY)
    arrays = {name: np.array(a) for name, (_, a) in tensors.items()}
    meta = {k: v for k, v in meta.items() if k not in ('sha256', 'signature')}
    if tensors_edit:
        tensors_edit(arrays)
    if meta_edit:
        meta_edit(meta)
    return codec._pack(arrays, meta, key)


def _poison_row(name, row):
    def edit(arrays):
        arrays[name][row] = np.nan
    return edit


def test_batch_round_trip_and_single_episodes_still_decode():
    decoded = codec.decode_episodes(BATCH_BYTES, contract=CONTRACT, key=KEY)
    assert len(decoded) == len(BATCH)
    for sent, got in zip(BATCH, decoded):
        assert_episodes_equal(sent, got)
    assert [e.episode_id for e in codec.decode_episodes(SIGNED_EPISODE, key=KEY)] == [EPISODE.episode_id]
    with pytest.raises(MalformedError, match="wrong format tag 'mfpg_episode_batch'"):
        decode_episode(BATCH_BYTES, key=KEY)  # a single-episode reader refuses a batch


def test_batch_is_far_smaller_than_framing_its_episodes():
    episodes = [make_pool_episode(20, i) for i in range(200)]
    assert len(codec.encode_episodes(episodes)) < 0.6 * sum(len(encode_episode(e)) for e in episodes)


STEPS = sum(len(e) for e in BATCH)  # rows 0..2 are episode 0, 3..6 episode 1, 7..11 episode 2, 12..17 episode 3
BATCH_CASES = {
    'empty batch to encode': (lambda: codec.encode_episodes([]), MalformedError, '1 to'),
    'array extras to encode': (lambda: codec.encode_episodes([EPISODE]), MalformedError, 'send it alone'),
    'mixed versions to encode': (lambda: codec.encode_episodes([BATCH[0], make_pool_episode(3, 9, policy_version=8)]),
                                 MalformedError, 'episode 1 of a batch differs'),
    'nan to encode names the tensor': (lambda: codec.encode_episodes([make_pool_episode(
        3, 0, rewards=np.array([0.0, np.nan, 1.0]))]), NonFiniteError, 'rewards'),
    'negative seed to encode': (lambda: codec.encode_episodes([dataclasses.replace(BATCH[0], seed=-1)]),
                                MalformedError, '2**64'),
    'lengths vs steps': (lambda: codec.decode_episodes(edited_batch(lambda a: a['lengths'].__setitem__(0, 4)),
                                                       key=KEY), ShapeError, f'expected ({STEPS + 1}, 5)'),
    'empty member': (lambda: codec.decode_episodes(edited_batch(lambda a: a['lengths'].__setitem__(
        slice(0, 2), [0, 7])), key=KEY), ShapeError, 'episode 0 of a batch of 4 is empty'),
    'overflowing lengths': (lambda: codec.decode_episodes(edited_batch(lambda a: a['lengths'].__setitem__(
        slice(0, 2), [2**62, 2**62])), key=KEY), ShapeError, 'longer than the batch'),
    'no members': (lambda: codec.decode_episodes(edited_batch(lambda a: a.update(
        {k: v[:0] for k, v in a.items()})), key=KEY), ShapeError, 'expected (N,) with N in 1..'),
    'nan names its episode': (lambda: codec.decode_episodes(edited_batch(_poison_row('obs', 7)), key=KEY),
                              NonFiniteError, 'episode 2 of a batch of 4: obs'),
    'nan s0 names its episode': (lambda: codec.decode_episodes(edited_batch(_poison_row('qvel0', 3)), key=KEY),
                                 NonFiniteError, 'episode 3 of a batch of 4: qvel0'),
    'flags not 0/1': (lambda: codec.decode_episodes(edited_batch(lambda a: a['flags'].__setitem__((1, 2), 5)),
                                                    key=KEY), MalformedError, 'flags must be 0 or 1'),
    'negative start_step': (lambda: codec.decode_episodes(edited_batch(lambda a: a['start_step'].__setitem__(
        2, -1)), key=KEY), MalformedError, 'episode 2 of a batch of 4: negative start_step'),
    'ids of another length': (lambda: codec.decode_episodes(edited_batch(meta_edit=lambda m: m.update(
        episode_ids='["a"]')), key=KEY), MalformedError, "'episode_ids' must be a list of 4 entries"),
    'extras not numbers': (lambda: codec.decode_episodes(edited_batch(meta_edit=lambda m: m.update(
        extras='[{"a": "x"}, {}, {}, {}]')), key=KEY), MalformedError, 'numbers or booleans'),
    'unexpected tensor': (lambda: codec.decode_episodes(edited_batch(lambda a: a.update(junk=np.zeros(2))),
                                                        key=KEY), MalformedError, "unexpected tensor 'junk'"),
    'unsigned while keyed': (lambda: codec.decode_episodes(edited_batch(key=None), key=KEY), SignatureError,
                             'unsigned'),
    'another contract': (lambda: codec.decode_episodes(BATCH_BYTES, key=KEY, contract=Contract(**{
        **CONTRACT.__dict__, 'nq': 5})), ContractError, 'nq'),
    'too large': (lambda: codec.decode_episodes(BATCH_BYTES, max_bytes=len(BATCH_BYTES) - 1), TooLargeError,
                  'limit'),
}


def test_stream_check_rejects_an_episode_of_the_other_fidelity():
    assert len(codec.decode_episodes(BATCH_BYTES, key=KEY, hifi_stream=False)) == len(BATCH)  # LF on the LF stream
    with pytest.raises(MalformedError, match='lofi_paired segment on the high-fidelity'):
        codec.decode_episodes(BATCH_BYTES, key=KEY, hifi_stream=True)
    hifi = codec.encode_episode(make_episode(fidelity=HIFI, pair_of=''))
    assert decode_episode(hifi, hifi_stream=True).fidelity == HIFI
    with pytest.raises(MalformedError, match='hifi segment on the low-fidelity stream'):
        decode_episode(hifi, hifi_stream=False)


@pytest.mark.parametrize('case', BATCH_CASES)
def test_batch_rejections(case):
    decode, error, message = BATCH_CASES[case]
    with pytest.raises(error, match=re.escape(message)):
        decode()


def test_batch_fuzz_never_raises_anything_but_codec_error():
    rng = np.random.default_rng(99)
    outcomes = {}
    for _ in range(1500):
        payload = bytearray(BATCH_BYTES)
        for _ in range(int(rng.integers(1, 4))):
            where = int(rng.integers(len(payload) if rng.random() < 0.5 else 600))  # often inside the header
            payload[where] = int(rng.integers(256))
        if rng.random() < 0.3:
            payload = payload[:int(rng.integers(len(payload)))]
        try:
            codec.decode_episodes(bytes(payload), key=KEY, contract=CONTRACT)
            outcome = 'accepted'
        except CodecError as e:
            assert str(e)
            outcome = type(e).__name__
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    assert {'MalformedError', 'SignatureError'} <= outcomes.keys(), outcomes


def test_encode_batches_cuts_near_the_target_size_and_keeps_the_order():
    episodes = [make_pool_episode(5 + i % 7, i) for i in range(40)]
    episodes[25] = make_pool_episode(6, 25, policy_version=8)  # another version: a batch of its own
    one = sum(getattr(episodes[0], name).nbytes for name in ('obs', 'actions', 'eps', 'rewards', 'qpos0', 'qvel0'))
    payloads = codec.encode_batches(episodes, target_bytes=6 * one)
    assert 6 <= len(payloads) < 40
    decoded = [codec.decode_episodes(p, contract=CONTRACT) for p in payloads]
    assert [len(d) for d in decoded if d[0].policy_version == 8] == [1]
    assert [e.episode_id for d in decoded for e in d] == [e.episode_id for e in episodes]
    for sent, got in zip(episodes, [e for d in decoded for e in d]):
        assert_episodes_equal(sent, got)
    big, with_arrays = make_pool_episode(400, 98), make_episode(steps=4, seed=99)
    alone = codec.encode_batches([episodes[0], big, episodes[1], with_arrays, episodes[2]], target_bytes=2 * one)
    assert [len(codec.decode_episodes(p)) for p in alone] == [1, 1, 1, 1, 1]  # too big / array extras: alone
    assert decode_episode(alone[3]).extras.keys() == with_arrays.extras.keys()
    assert codec.encode_batches([]) == []
