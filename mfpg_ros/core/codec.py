"""Wire codec for the two payloads that cross process boundaries: episode segments and policy weights.

Both are standard safetensors bytes (u64 little-endian header size, JSON header with `__metadata__`, raw
little-endian tensor data; no pickle), written and parsed here so that every field is checked before use.
Metadata `sha256` hashes the tensors (names, dtypes, shapes, data; independent of their order in the file);
`signature` is HMAC-SHA256 over that hash plus the canonical metadata, present when a key is configured
(without a key, metadata is protected only by the transport).
A message may also carry a batch of episodes (a simulator's pool in a few messages instead of hundreds): one
safetensors payload of format `mfpg_episode_batch` for episodes of one contract, fidelity and policy version with
numeric scalar extras. Per-step tensors are concatenated over the episodes in order; `lengths`, `start_step`,
`seed` and `flags` (terminated, truncated, aborted) are columns, ids and extras JSON lists. It is checked as a
whole (vectorised: encoding and decoding cost a few array operations, not a file per episode) and accepted or
rejected as a whole.
Decoding any bytes raises nothing but CodecError subclasses. Encoding runs the same checks, so a bad
episode or weight set fails where it is made, not in the receiving process.
"""
from __future__ import annotations

import functools
import hashlib
import hmac
import json
import math
import re
import struct
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING

import numpy as np

from mfpg_ros.core.contract import Contract
from mfpg_ros.core.episode import FIDELITIES, HIFI, Episode

if TYPE_CHECKING:  # no torch at run time: the nodes that only act or simulate import this module
    from mfpg_ros.core.policy import ActorCritic

EPISODE_FORMAT, EPISODE_BATCH_FORMAT, WEIGHTS_FORMAT = 'mfpg_episode', 'mfpg_episode_batch', 'mfpg_weights'
FORMAT_VERSION = '1'
SUPPORTED_FORMAT_VERSIONS = ('1',)
DEFAULT_MAX_EPISODE_BYTES = 64 << 20
DEFAULT_MAX_WEIGHTS_BYTES = 64 << 20
MAX_HEADER_BYTES = 1 << 20
MAX_BATCH_EPISODES = 1 << 16
# Batches are cut at about this size: Fast DDS moves a message through shared memory only if it fits a segment
# (512 KiB by default); a larger one goes over fragmented UDP (measured: one 725 kB message 10 ms, 3 x 250 kB 3 ms).
BATCH_TARGET_BYTES = 256 << 10

_DTYPES = {'F64': np.dtype('<f8'), 'F32': np.dtype('<f4'), 'I64': np.dtype('<i8'), 'I32': np.dtype('<i4')}
_TAGS = {(dt.kind, dt.itemsize): tag for tag, dt in _DTYPES.items()}
_MAX_NDIM = 8
_INT_TEXT = re.compile(r'-?[0-9]{1,64}')
_HEX64 = re.compile(r'[0-9a-f]{64}')


class CodecError(ValueError):
    """A payload was refused; the message names the problem."""


class TooLargeError(CodecError):
    """Payload exceeds the size limit (checked before parsing)."""


class MalformedError(CodecError):
    """Not safetensors, bad header, missing/unexpected tensor or metadata key, wrong format tag or dtype."""


class VersionError(CodecError):
    """Unsupported format_version, or a negative policy version."""


class ShapeError(CodecError):
    """Tensor shapes disagree with each other, with the contract, or with the architecture."""


class NonFiniteError(CodecError):
    """NaN or Inf in a tensor or numeric field."""


class IntegrityError(CodecError):
    """Tensors do not match the sha256 in the metadata."""


class SignatureError(CodecError):
    """Signature missing while a key is configured, or not matching."""


class ContractError(CodecError):
    """The payload was made under another task contract than the receiver's."""


# ---------------------------------------------------------------- safetensors layer

def _key_bytes(key) -> bytes | None:
    """HMAC key as bytes (str is UTF-8 encoded); None disables signing and verification."""
    if key is None:
        return None
    key = key.encode() if isinstance(key, str) else bytes(key)
    if not key:
        raise ValueError('empty signing key: pass None to disable signing')
    return key


def _tensor_digest(layout: list, chunks: list) -> str:
    """sha256 over (name, dtype, shape) of every tensor sorted by name, then their data in the same order."""
    h = hashlib.sha256(json.dumps(layout, separators=(',', ':')).encode())
    for chunk in chunks:
        h.update(chunk)
    return h.hexdigest()


def _signature(key: bytes, tensor_sha: str, meta: dict) -> str:
    unsigned = {k: v for k, v in meta.items() if k != 'signature'}
    message = tensor_sha + '\n' + json.dumps(unsigned, sort_keys=True, separators=(',', ':'))
    return hmac.new(key, message.encode(), hashlib.sha256).hexdigest()


def _raw(a: np.ndarray) -> memoryview:
    return memoryview(a.reshape(-1).view(np.uint8))


def _pack(tensors: dict[str, np.ndarray], meta: dict[str, str], key: bytes | None) -> bytes:
    """Safetensors bytes with `sha256` (and `signature` when keyed) added to the metadata."""
    arrays = {}
    for name, a in tensors.items():
        tag = _TAGS.get((a.dtype.kind, a.dtype.itemsize))
        if tag is None:
            raise MalformedError(f'tensor {name!r}: dtype {a.dtype} cannot be encoded')
        arrays[name] = (tag, np.ascontiguousarray(a, dtype=_DTYPES[tag]))
    names = sorted(arrays)
    sha = _tensor_digest([[n, arrays[n][0], list(arrays[n][1].shape)] for n in names],
                         [_raw(arrays[n][1]) for n in names])
    meta = {**meta, 'sha256': sha}
    if key is not None:
        meta['signature'] = _signature(key, sha, meta)
    header: dict = {'__metadata__': meta}
    chunks, offset = [], 0
    for name in sorted(names, key=lambda n: (-arrays[n][1].itemsize, n)):  # widest first keeps data aligned
        tag, a = arrays[name]
        header[name] = {'dtype': tag, 'shape': list(a.shape), 'data_offsets': [offset, offset + a.nbytes]}
        chunks.append(_raw(a))
        offset += a.nbytes
    text = json.dumps(header, separators=(',', ':')).encode()
    text += b' ' * (-len(text) % 8)
    return b''.join([struct.pack('<Q', len(text)), text, *chunks])


def _as_buffer(data, max_bytes: int) -> memoryview:
    if isinstance(data, (list, tuple)):  # a plain sequence of ints, e.g. a hand-filled message
        if len(data) > max_bytes:
            raise TooLargeError(f'payload is {len(data)} bytes, limit is {max_bytes}')
        try:
            data = bytes(data)
        except (TypeError, ValueError) as e:
            raise MalformedError(f'payload is not a byte sequence: {e}') from None
    try:
        view = memoryview(data)
    except TypeError:
        raise MalformedError(f'payload must be bytes-like, got {type(data).__name__}') from None
    if view.nbytes > max_bytes:
        raise TooLargeError(f'payload is {view.nbytes} bytes, limit is {max_bytes}')
    if view.format == 'B' and view.ndim == 1 and view.c_contiguous:
        return view
    return memoryview(view.tobytes())


def _no_duplicate_keys(pairs):
    out = {}
    for k, v in pairs:
        if k in out:
            raise MalformedError(f'duplicate key {k!r} in safetensors header')
        out[k] = v
    return out


def _is_int(x) -> bool:
    return type(x) is int  # excludes bool


def _unpack(data, max_bytes: int, fmt: str | tuple[str, ...], key
            ) -> tuple[dict[str, tuple[str, np.ndarray]], dict[str, str]]:
    """Parse and authenticate a payload of format fmt (or one of several): returns {name: (dtype tag, read-only
    array)} and the metadata."""
    key = _key_bytes(key)
    buf = _as_buffer(data, max_bytes)
    if len(buf) < 8:
        raise MalformedError(f'not safetensors: {len(buf)} bytes is shorter than the 8-byte header size')
    (header_len,) = struct.unpack_from('<Q', buf, 0)
    if header_len > min(MAX_HEADER_BYTES, len(buf) - 8):
        raise MalformedError(f'not safetensors: declared header size {header_len} exceeds the payload '
                             f'({len(buf) - 8} bytes after the size field) or the {MAX_HEADER_BYTES}-byte limit')
    try:
        header = json.loads(bytes(buf[8:8 + header_len]).decode('utf-8'), object_pairs_hook=_no_duplicate_keys)
    except MalformedError:
        raise
    except (ValueError, RecursionError) as e:
        raise MalformedError(f'not safetensors: header is not JSON ({type(e).__name__}: {str(e)[:80]})') from None
    if not isinstance(header, dict):
        raise MalformedError('not safetensors: header is not a JSON object')
    meta = header.pop('__metadata__', None)
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise MalformedError('missing or invalid __metadata__ (must map str to str)')

    data_start, data_len = 8 + header_len, len(buf) - 8 - header_len
    spans = []
    for name, spec in header.items():
        if not isinstance(spec, dict) or set(spec) != {'dtype', 'shape', 'data_offsets'}:
            raise MalformedError(f'tensor {name!r}: header entry needs exactly dtype, shape, data_offsets')
        tag, shape, offsets = spec['dtype'], spec['shape'], spec['data_offsets']
        if not isinstance(tag, str) or tag not in _DTYPES:
            raise MalformedError(f'tensor {name!r}: unsupported dtype {tag!r}')
        if not (isinstance(shape, list) and len(shape) <= _MAX_NDIM and all(_is_int(d) and d >= 0 for d in shape)):
            raise MalformedError(f'tensor {name!r}: invalid shape {shape!r}')
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_int(o) for o in offsets)
                and 0 <= offsets[0] <= offsets[1]):
            raise MalformedError(f'tensor {name!r}: invalid data_offsets {offsets!r}')
        if offsets[1] - offsets[0] != math.prod(shape) * _DTYPES[tag].itemsize:
            raise MalformedError(f'tensor {name!r}: data_offsets span {offsets[1] - offsets[0]} bytes, '
                                 f'shape {shape} {tag} needs {math.prod(shape) * _DTYPES[tag].itemsize}')
        spans.append((offsets[0], offsets[1], name))
    end = 0
    for begin, stop, name in sorted(spans):
        if begin != end:
            raise MalformedError(f'tensor {name!r}: data overlaps another tensor or leaves a gap')
        end = stop
    if end != data_len:
        raise MalformedError(f'tensor data covers {end} bytes but the payload carries {data_len} '
                             '(truncated or padded)')

    if _field(meta, 'format') not in ((fmt,) if isinstance(fmt, str) else fmt):
        raise MalformedError(f'wrong format tag {meta["format"][:40]!r}, expected {fmt!r}')
    if _field(meta, 'format_version') not in SUPPORTED_FORMAT_VERSIONS:
        raise VersionError(f'unsupported format_version {meta["format_version"][:40]!r}, '
                           f'this build reads {SUPPORTED_FORMAT_VERSIONS}')
    claimed_sha = _field(meta, 'sha256')

    names = sorted(header)
    sha = _tensor_digest([[n, header[n]['dtype'], header[n]['shape']] for n in names],
                         [buf[data_start + header[n]['data_offsets'][0]:data_start + header[n]['data_offsets'][1]]
                          for n in names])
    if key is not None:
        signature = meta.get('signature')
        if signature is None:
            raise SignatureError('payload is unsigned but a signing key is configured')
        if not _HEX64.fullmatch(signature) or not hmac.compare_digest(signature, _signature(key, sha, meta)):
            raise SignatureError('signature does not match: forged or tampered payload, or a different key')
    if claimed_sha != sha:
        raise IntegrityError(f'sha256 mismatch: metadata says {claimed_sha[:64]!r}, tensors hash to {sha!r}')

    tensors = {}
    for name in names:
        tag, shape, (begin, _) = header[name]['dtype'], header[name]['shape'], header[name]['data_offsets']
        count = math.prod(shape)
        a = (np.frombuffer(buf, _DTYPES[tag], count, data_start + begin) if count
             else np.empty(0, _DTYPES[tag]))
        tensors[name] = (tag, a.reshape(shape))
    return tensors, meta


# ---------------------------------------------------------------- field helpers

def _field(meta: dict, key: str) -> str:
    if key not in meta:
        raise MalformedError(f'missing metadata key {key!r}')
    return meta[key]


def _int_field(meta: dict, key: str) -> int:
    text = _field(meta, key)
    if not _INT_TEXT.fullmatch(text):
        raise MalformedError(f'metadata {key!r} is not an integer: {text[:40]!r}')
    return int(text)


def _bool_field(meta: dict, key: str) -> bool:
    text = _field(meta, key)
    if text not in ('true', 'false'):
        raise MalformedError(f"metadata {key!r} must be 'true' or 'false', got {text[:40]!r}")
    return text == 'true'


def _json_field(meta: dict, key: str):
    try:
        return json.loads(_field(meta, key))
    except (ValueError, RecursionError):
        raise MalformedError(f'metadata {key!r} is not valid JSON') from None


def _is_finite_number(x) -> bool:
    return _is_int(x) or (isinstance(x, float) and math.isfinite(x))


_CONTRACT_CHECKS = {
    'task': lambda v: isinstance(v, str),
    'observation_names': lambda v: isinstance(v, list) and all(isinstance(s, str) for s in v),
    'action_names': lambda v: isinstance(v, list) and all(isinstance(s, str) for s in v),
    'action_low': lambda v: isinstance(v, list) and all(_is_finite_number(x) for x in v),
    'action_high': lambda v: isinstance(v, list) and all(_is_finite_number(x) for x in v),
    'control_rate_hz': lambda v: _is_finite_number(v) and v > 0,
    'nq': lambda v: _is_int(v) and v >= 0,
    'nv': lambda v: _is_int(v) and v >= 0,
}


def _contract_field(meta: dict) -> Contract:
    return _parse_contract(_field(meta, 'contract'))


@functools.lru_cache(maxsize=64)  # every message of a run carries the same contract text: validate it once
def _parse_contract(text: str) -> Contract:
    try:
        raw = json.loads(text)
    except (ValueError, RecursionError):
        raise MalformedError("metadata 'contract' is not valid JSON") from None
    if not isinstance(raw, dict) or set(raw) != set(_CONTRACT_CHECKS):
        raise MalformedError(f'metadata contract must have exactly the fields {sorted(_CONTRACT_CHECKS)}')
    for name, ok in _CONTRACT_CHECKS.items():
        if not ok(raw[name]):
            raise MalformedError(f'metadata contract field {name!r} has an invalid value')
    try:
        return Contract(**raw)
    except (TypeError, ValueError) as e:
        raise MalformedError(f'metadata contract is invalid: {e}') from None


def _check_contract(got: Contract, expected: Contract | None) -> None:
    if expected is None or got == expected:
        return
    diffs = [f.name for f in fields(Contract) if getattr(got, f.name) != getattr(expected, f.name)]
    first = diffs[0]
    raise ContractError(f'payload contract differs in {", ".join(diffs)}: {first} is '
                        f'{str(getattr(got, first))[:120]} in the payload, {str(getattr(expected, first))[:120]} here')


def _check_version(version: int, what: str) -> None:
    if version < 0:
        raise VersionError(f'negative {what} {version}')


def _native(a: np.ndarray) -> np.ndarray:
    """Writable native-endian copy (decoded views point into the read-only message buffer)."""
    return a.astype(a.dtype.newbyteorder('='))


def _check_finite(name: str, a: np.ndarray) -> None:
    if a.dtype.kind == 'f' and not np.isfinite(a).all():
        raise NonFiniteError(f'{name} contains NaN or Inf')


# ---------------------------------------------------------------- episodes

_EPISODE_DTYPES = {'obs': 'F32', 'actions': 'F32', 'eps': 'F64', 'rewards': 'F64', 'qpos0': 'F64', 'qvel0': 'F64'}
_EXTRA_PREFIX = 'extras.'
_STEP_TENSORS = ('obs', 'actions', 'eps', 'rewards')
_BATCH_DTYPES = {**_EPISODE_DTYPES, 'lengths': 'I64', 'start_step': 'I64', 'seed': 'I64', 'flags': 'I32'}


def _split_extras(extras: dict) -> tuple[dict, dict[str, np.ndarray]]:
    """Numeric scalars go to metadata JSON, numeric arrays to tensors `extras.<name>`."""
    scalars, arrays = {}, {}
    for name, value in extras.items():
        if not isinstance(name, str):
            raise MalformedError(f'extras key {name!r} is not a string')
        if isinstance(value, (bool, np.bool_)):
            scalars[name] = bool(value)
        elif isinstance(value, (int, np.integer)):
            scalars[name] = int(value)
        elif isinstance(value, (float, np.floating)):
            if not math.isfinite(value):
                raise NonFiniteError(f'extras[{name!r}] is NaN or Inf')
            scalars[name] = float(value)
        elif isinstance(value, (np.ndarray, list, tuple)):
            a = np.asarray(value)
            if a.dtype.kind == 'f':
                a = a.astype(np.float64 if a.dtype.itemsize > 4 else np.float32, copy=False)
            elif a.dtype.kind in 'iu':
                a = a.astype(np.int64, copy=False)
            else:
                raise MalformedError(f'extras[{name!r}] is not a numeric array (dtype {a.dtype})')
            arrays[name] = a
        else:
            raise MalformedError(f'extras[{name!r}] is not numeric ({type(value).__name__})')
    return scalars, arrays


def _check_episode(ep: Episode, finite: bool = True) -> None:
    if ep.fidelity not in FIDELITIES:
        raise MalformedError(f'unknown fidelity tag {str(ep.fidelity)[:40]!r}, expected one of {FIDELITIES}')
    _check_version(ep.policy_version, 'policy_version')
    if ep.start_step < 0:
        raise MalformedError(f'negative start_step {ep.start_step}')
    c = ep.contract
    if ep.rewards.ndim != 1:
        raise ShapeError(f'rewards has shape {ep.rewards.shape}, expected (T,)')
    steps = ep.rewards.shape[0]
    if steps == 0:
        raise ShapeError('empty episode (0 steps)')
    expected = {'obs': (steps, c.obs_dim), 'actions': (steps, c.act_dim), 'eps': (steps, c.act_dim),
                'qpos0': (c.nq,), 'qvel0': (c.nv,)}
    for name, shape in expected.items():
        got = getattr(ep, name).shape
        if got != shape:
            raise ShapeError(f'{name} has shape {got}, expected {shape} (T={steps} from rewards, '
                             f'obs_dim={c.obs_dim} act_dim={c.act_dim} nq={c.nq} nv={c.nv} from the contract)')
    if finite:
        for name in _EPISODE_DTYPES:
            _check_finite(name, getattr(ep, name))


def _bool_text(flag) -> str:
    return 'true' if flag else 'false'


def encode_episode(ep: Episode, key: bytes | None = None) -> bytes:
    """Episode -> safetensors bytes (signed when `key` is given). Raises CodecError if `ep` is invalid."""
    core = {name: np.asarray(getattr(ep, name), dtype=_DTYPES[tag]) for name, tag in _EPISODE_DTYPES.items()}
    _check_episode(Episode(**core, contract=ep.contract, policy_version=int(ep.policy_version),
                           fidelity=ep.fidelity, start_step=int(ep.start_step)))
    scalars, arrays = _split_extras(ep.extras)
    tensors = dict(core)
    for name, a in arrays.items():
        _check_finite(f'extras[{name!r}]', a)
        tensors[_EXTRA_PREFIX + name] = a
    meta = {
        'format': EPISODE_FORMAT, 'format_version': FORMAT_VERSION,
        'policy_version': str(int(ep.policy_version)), 'fidelity': ep.fidelity, 'start_step': str(int(ep.start_step)),
        'terminated': _bool_text(ep.terminated), 'truncated': _bool_text(ep.truncated),
        'aborted': _bool_text(ep.aborted), 'seed': str(int(ep.seed)),
        'episode_id': str(ep.episode_id), 'pair_of': str(ep.pair_of),
        'contract': ep.contract.to_json(), 'extras': json.dumps(scalars, sort_keys=True),
    }
    return _pack(tensors, meta, _key_bytes(key))


def decode_episode(data, *, contract: Contract | None = None, key: bytes | None = None,
                   max_bytes: int = DEFAULT_MAX_EPISODE_BYTES, hifi_stream: bool | None = None) -> Episode:
    """Bytes -> Episode, fully validated; raises a CodecError subclass naming the problem. hifi_stream: read from
    the high-fidelity stream (True: the episode must be HF) or a low-fidelity one (False: it must not be)."""
    tensors, meta = _unpack(data, max_bytes, EPISODE_FORMAT, key)
    return _single_episode(tensors, meta, contract, hifi_stream)


def decode_episodes(data, *, contract: Contract | None = None, key: bytes | None = None,
                    max_bytes: int = DEFAULT_MAX_EPISODE_BYTES, hifi_stream: bool | None = None) -> list[Episode]:
    """Bytes of one episode or of a batch -> its episodes, validated as by decode_episode; any error rejects the
    whole message."""
    tensors, meta = _unpack(data, max_bytes, (EPISODE_FORMAT, EPISODE_BATCH_FORMAT), key)
    if meta['format'] == EPISODE_FORMAT:
        return [_single_episode(tensors, meta, contract, hifi_stream)]
    return _batch_episodes(tensors, meta, contract, hifi_stream)


def _check_tensor_set(tensors: dict, dtypes: dict[str, str], allow_extras: bool) -> None:
    for name, tag in dtypes.items():
        if name not in tensors:
            raise MalformedError(f'missing tensor {name!r}')
        if tensors[name][0] != tag:
            raise MalformedError(f'tensor {name!r} has dtype {tensors[name][0]}, expected {tag}')
    unexpected = [n for n in tensors if n not in dtypes and not (allow_extras and n.startswith(_EXTRA_PREFIX))]
    if unexpected:
        raise MalformedError(f'unexpected tensor {unexpected[0]!r}')


def _scalar_extras(scalars) -> dict:
    if not isinstance(scalars, dict) or not all(isinstance(v, (int, float)) for v in scalars.values()):  # bool is int
        raise MalformedError('metadata extras must map names to numbers or booleans')
    for name, value in scalars.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise NonFiniteError(f'extras[{name!r}] is NaN or Inf')
    return dict(scalars)


def _check_stream(fidelity: str, hifi_stream: bool | None) -> None:
    if hifi_stream is not None and (fidelity == HIFI) != hifi_stream:
        raise MalformedError(f'{fidelity} segment on the {"high" if hifi_stream else "low"}-fidelity stream')


def _single_episode(tensors: dict, meta: dict, contract: Contract | None, hifi_stream: bool | None) -> Episode:
    _check_tensor_set(tensors, _EPISODE_DTYPES, allow_extras=True)
    extras = _scalar_extras(_json_field(meta, 'extras'))
    for name, (_, a) in tensors.items():
        if name.startswith(_EXTRA_PREFIX):
            short = name[len(_EXTRA_PREFIX):]
            if short in extras:
                raise MalformedError(f'extras[{short!r}] appears both as a scalar and as a tensor')
            _check_finite(f'extras[{short!r}]', a)
            extras[short] = _native(a)
    ep = Episode(
        **{name: _native(tensors[name][1]) for name in _EPISODE_DTYPES},
        contract=_contract_field(meta), policy_version=_int_field(meta, 'policy_version'),
        fidelity=_field(meta, 'fidelity'), start_step=_int_field(meta, 'start_step'),
        terminated=_bool_field(meta, 'terminated'), truncated=_bool_field(meta, 'truncated'),
        aborted=_bool_field(meta, 'aborted'), seed=_int_field(meta, 'seed'), episode_id=_field(meta, 'episode_id'),
        pair_of=_field(meta, 'pair_of'), extras=extras)
    _check_contract(ep.contract, contract)
    _check_episode(ep)
    _check_stream(ep.fidelity, hifi_stream)
    return ep


def encode_episodes(episodes: list[Episode], key: bytes | None = None) -> bytes:
    """Episodes of one contract, fidelity and policy version, with scalar extras only, as one batch payload; checked
    as by encode_episode."""
    if not 0 < len(episodes) <= MAX_BATCH_EPISODES:
        raise MalformedError(f'a batch holds 1 to {MAX_BATCH_EPISODES} episodes, got {len(episodes)}')
    first, extras = episodes[0], []
    for i, ep in enumerate(episodes):
        if (ep.contract, ep.fidelity, int(ep.policy_version)) != (first.contract, first.fidelity,
                                                                   int(first.policy_version)):
            raise MalformedError(f'episode {i} of a batch differs from episode 0 in contract, fidelity or version')
        scalars, arrays = _split_extras(ep.extras)
        if arrays:
            raise MalformedError(f'episode {i} has array extras {sorted(arrays)}: send it alone (encode_episode)')
        extras.append(scalars)
        _check_episode(ep, finite=False)
    tensors = {name: np.concatenate([np.asarray(getattr(ep, name), dtype=_DTYPES[_EPISODE_DTYPES[name]])
                                     for ep in episodes]) for name in _STEP_TENSORS}
    tensors.update({name: np.stack([np.asarray(getattr(ep, name), dtype=np.float64) for ep in episodes])
                    for name in ('qpos0', 'qvel0')})
    tensors['lengths'] = np.array([len(ep) for ep in episodes], dtype=np.int64)
    tensors['start_step'] = np.array([int(ep.start_step) for ep in episodes], dtype=np.int64)
    try:
        tensors['seed'] = np.array([int(ep.seed) for ep in episodes], dtype=np.uint64).view(np.int64)  # u64 bits
    except OverflowError:
        raise MalformedError('a batch carries seeds in [0, 2**64); send other episodes alone') from None
    tensors['flags'] = np.array([[ep.terminated, ep.truncated, ep.aborted] for ep in episodes], dtype=np.int32)
    for name in _EPISODE_DTYPES:
        _check_finite(name, tensors[name])
    meta = {
        'format': EPISODE_BATCH_FORMAT, 'format_version': FORMAT_VERSION,
        'policy_version': str(int(first.policy_version)), 'fidelity': first.fidelity,
        'contract': first.contract.to_json(),
        'episode_ids': json.dumps([str(ep.episode_id) for ep in episodes]),
        'pair_of': json.dumps([str(ep.pair_of) for ep in episodes]), 'extras': json.dumps(extras, sort_keys=True),
    }
    return _pack(tensors, meta, _key_bytes(key))


def _batch_episodes(tensors: dict, meta: dict, contract: Contract | None, hifi_stream: bool | None) -> list[Episode]:
    _check_tensor_set(tensors, _BATCH_DTYPES, allow_extras=False)
    c = _contract_field(meta)
    _check_contract(c, contract)
    fidelity, version = _field(meta, 'fidelity'), _int_field(meta, 'policy_version')
    if fidelity not in FIDELITIES:
        raise MalformedError(f'unknown fidelity tag {fidelity[:40]!r}, expected one of {FIDELITIES}')
    _check_version(version, 'policy_version')
    _check_stream(fidelity, hifi_stream)
    lengths = tensors['lengths'][1]
    n = lengths.shape[0] if lengths.ndim == 1 else 0
    if not 0 < n <= MAX_BATCH_EPISODES:
        raise ShapeError(f'lengths has shape {lengths.shape}, expected (N,) with N in 1..{MAX_BATCH_EPISODES}')
    if lengths.min() < 1:
        raise ShapeError(f'episode {int(np.argmin(lengths))} of a batch of {n} is empty or of negative length')
    if lengths.max() > len(tensors['rewards'][1]):  # also keeps the sum below from overflowing
        raise ShapeError(f'episode {int(np.argmax(lengths))} of a batch of {n} is longer than the batch')
    steps = int(lengths.sum())
    expected = {'obs': (steps, c.obs_dim), 'actions': (steps, c.act_dim), 'eps': (steps, c.act_dim),
                'rewards': (steps,), 'qpos0': (n, c.nq), 'qvel0': (n, c.nv), 'start_step': (n,), 'seed': (n,),
                'flags': (n, 3)}
    for name, shape in expected.items():
        if tensors[name][1].shape != shape:
            raise ShapeError(f'{name} has shape {tensors[name][1].shape}, expected {shape} (N={n} episodes of '
                             f'{steps} steps from lengths, obs_dim={c.obs_dim} act_dim={c.act_dim} nq={c.nq} '
                             f'nv={c.nv} from the contract)')
    ends = np.cumsum(lengths)
    for name in _EPISODE_DTYPES:
        a = tensors[name][1]
        bad = ~np.isfinite(a.reshape(a.shape[0], -1)).all(axis=1)
        if bad.any():
            row = int(np.argmax(bad))
            where = row if name in ('qpos0', 'qvel0') else int(np.searchsorted(ends, row, side='right'))
            raise NonFiniteError(f'episode {where} of a batch of {n}: {name} contains NaN or Inf')
    start_step, flags = tensors['start_step'][1], tensors['flags'][1]
    if start_step.min() < 0:
        raise MalformedError(f'episode {int(np.argmin(start_step))} of a batch of {n}: negative start_step')
    if not np.isin(flags, (0, 1)).all():
        raise MalformedError('flags must be 0 or 1')
    ids, pairs, extras = (_json_list(meta, name, n) for name in ('episode_ids', 'pair_of', 'extras'))
    if not all(isinstance(x, str) for x in ids + pairs):
        raise MalformedError('metadata episode_ids and pair_of must be lists of strings')
    extras = [_scalar_extras(x) for x in extras]
    arrays = {name: _native(tensors[name][1]) for name in _EPISODE_DTYPES}
    seeds = tensors['seed'][1].astype('<i8').view('<u8')
    begins = ends - lengths
    return [Episode(**{name: arrays[name][b:e] for name in _STEP_TENSORS}, qpos0=arrays['qpos0'][i],
                    qvel0=arrays['qvel0'][i], contract=c, policy_version=version, fidelity=fidelity,
                    start_step=int(start_step[i]), terminated=bool(flags[i, 0]), truncated=bool(flags[i, 1]),
                    aborted=bool(flags[i, 2]), seed=int(seeds[i]), episode_id=ids[i], pair_of=pairs[i],
                    extras=extras[i])
            for i, (b, e) in enumerate(zip(begins.tolist(), ends.tolist()))]


def _json_list(meta: dict, key: str, n: int) -> list:
    value = _json_field(meta, key)
    if not isinstance(value, list) or len(value) != n:
        raise MalformedError(f'metadata {key!r} must be a list of {n} entries, one per episode')
    return value


def encode_batches(episodes: list[Episode], key: bytes | None = None,
                   target_bytes: int = BATCH_TARGET_BYTES) -> list[bytes]:
    """Episodes in order as few payloads of about target_bytes at most: batches of one contract, fidelity and
    version (an episode larger than the target, or with array extras, goes alone)."""
    payloads, group, size = [], [], 0

    def flush():
        if group:
            payloads.append(encode_episodes(group, key=key))
            group.clear()

    for ep in episodes:
        nbytes = sum(np.asarray(getattr(ep, name)).nbytes for name in _EPISODE_DTYPES)
        if _split_extras(ep.extras)[1] or nbytes > target_bytes:
            flush()
            payloads.append(encode_episode(ep, key=key))
            size = 0
            continue
        if group and (size + nbytes > target_bytes or len(group) == MAX_BATCH_EPISODES
                      or (ep.contract, ep.fidelity, ep.policy_version) != (group[0].contract, group[0].fidelity,
                                                                           group[0].policy_version)):
            flush()
            size = 0
        group.append(ep)
        size += nbytes
    flush()
    return payloads


# ---------------------------------------------------------------- weights

@dataclass
class Weights:
    """Decoded policy weights: an ActorCritic state_dict of float32 numpy arrays plus what it was made for."""

    state: dict[str, np.ndarray]
    version: int
    contract: Contract
    arch: dict
    sha256: str
    extra: dict[str, str] = field(default_factory=dict)


_EXTRA_META = 'extra.'


def _weight_shapes(arch: dict) -> dict[str, tuple[int, ...]]:
    """State-dict shapes of ActorCritic(obs_dim, act_dim, hidden): tanh MLPs pi and vf, Linear at even indices."""
    obs_dim, act_dim, hidden = arch['obs_dim'], arch['act_dim'], list(arch['hidden'])
    shapes: dict[str, tuple[int, ...]] = {}
    for head, out in (('pi', act_dim), ('vf', 1)):
        sizes = [obs_dim, *hidden, out]
        for i in range(len(sizes) - 1):
            shapes[f'{head}.{2 * i}.weight'] = (sizes[i + 1], sizes[i])
            shapes[f'{head}.{2 * i}.bias'] = (sizes[i + 1],)
    shapes['log_std'] = (act_dim,)
    return shapes


def _check_arch(arch: dict, contract: Contract) -> None:
    if (arch['obs_dim'], arch['act_dim']) != (contract.obs_dim, contract.act_dim):
        raise ShapeError(f'policy arch obs_dim={arch["obs_dim"]} act_dim={arch["act_dim"]} does not fit the '
                         f'contract (obs_dim={contract.obs_dim}, act_dim={contract.act_dim})')


def _check_state(state: dict[str, np.ndarray], arch: dict) -> None:
    for name, shape in _weight_shapes(arch).items():
        if tuple(state[name].shape) != shape:
            raise ShapeError(f'weight {name!r} has shape {tuple(state[name].shape)}, arch {arch} needs {shape}')
    for name, a in state.items():
        _check_finite(f'weight {name!r}', a)


def encode_weights(model: ActorCritic, *, version: int, contract: Contract, key: bytes | None = None,
                   extra: dict[str, str] | None = None) -> bytes:
    """ActorCritic -> safetensors bytes (float32). Raises CodecError if the model does not fit the contract."""
    version = int(version)
    _check_version(version, 'policy version')
    arch = model.arch()
    _check_arch(arch, contract)
    state = {k: v.detach().cpu().float().contiguous().numpy() for k, v in model.state_dict().items()}
    if set(state) != set(_weight_shapes(arch)):
        raise ShapeError(f'model state_dict keys {sorted(state)} do not match arch {arch}')
    _check_state(state, arch)
    meta = {'format': WEIGHTS_FORMAT, 'format_version': FORMAT_VERSION, 'policy_version': str(version),
            'arch': json.dumps(arch, sort_keys=True), 'contract': contract.to_json()}
    for k, v in (extra or {}).items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise MalformedError(f'extra must map str to str, got {k!r}: {type(v).__name__}')
        meta[_EXTRA_META + k] = v
    return _pack(state, meta, _key_bytes(key))


def _arch_field(meta: dict) -> dict:
    arch = _json_field(meta, 'arch')
    if not (isinstance(arch, dict) and set(arch) == {'obs_dim', 'act_dim', 'hidden'}
            and _is_int(arch['obs_dim']) and arch['obs_dim'] >= 1 and _is_int(arch['act_dim']) and arch['act_dim'] >= 1
            and isinstance(arch['hidden'], list) and len(arch['hidden']) <= 64
            and all(_is_int(h) and h >= 1 for h in arch['hidden'])):
        raise MalformedError('metadata arch must be {"obs_dim": int>=1, "act_dim": int>=1, "hidden": [int>=1, ...]}')
    return arch


def decode_weights(data, *, contract: Contract | None = None, key: bytes | None = None,
                   max_bytes: int = DEFAULT_MAX_WEIGHTS_BYTES) -> Weights:
    """Bytes -> Weights, fully validated; raises a CodecError subclass naming the problem."""
    tensors, meta = _unpack(data, max_bytes, WEIGHTS_FORMAT, key)
    arch, payload_contract = _arch_field(meta), _contract_field(meta)
    version = _int_field(meta, 'policy_version')
    expected = _weight_shapes(arch)
    missing = [n for n in expected if n not in tensors]
    if missing:
        raise MalformedError(f'missing tensor {missing[0]!r} for arch {arch}')
    unexpected = [n for n in tensors if n not in expected]
    if unexpected:
        raise MalformedError(f'unexpected tensor {unexpected[0]!r} for arch {arch}')
    for name, (tag, _) in tensors.items():
        if tag != 'F32':
            raise MalformedError(f'weight {name!r} has dtype {tag}, expected F32')
    _check_contract(payload_contract, contract)
    _check_version(version, 'policy_version')
    _check_arch(arch, payload_contract)
    arrays = {name: a for name, (_, a) in tensors.items()}
    _check_state(arrays, arch)
    return Weights(state={n: _native(a) for n, a in arrays.items()},
                   version=version, contract=payload_contract, arch=arch, sha256=meta['sha256'],
                   extra={k[len(_EXTRA_META):]: v for k, v in meta.items() if k.startswith(_EXTRA_META)})
