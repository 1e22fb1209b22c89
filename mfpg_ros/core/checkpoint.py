"""Checkpoints: one safetensors file (tensors) + JSON metadata (everything else), written atomically.

The learner part (policy, value net, optimiser, coefficient statistics, version, RNG) is always there; callers add
their own numeric arrays (`arrays`, e.g. simulator states) and JSON (`extra`, e.g. the config and RNG streams)."""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save

from mfpg_ros.core.algorithms import Learner
from mfpg_ros.core.run_folder import FORMAT, FORMAT_VERSION, checkpoint_metadata

ARRAY_PREFIX = 'array.'


def save_checkpoint(learner: Learner, path: str | Path, extra: dict | None = None,
                    arrays: dict[str, np.ndarray] | None = None) -> Path:
    """Policy, value net, optimiser moments, c statistics, version, RNG state, `extra` (JSON, e.g. the config) and
    `arrays` (read back with load_arrays)."""
    state = learner.state_dict()
    tensors = {f'model.{k}': v.detach().contiguous() for k, v in state['model'].items()}
    optim = state['optimizer']
    for pid, slots in optim['state'].items():
        for name, value in slots.items():
            tensors[f'optim.{pid}.{name}'] = torch.as_tensor(value).detach().clone().contiguous()
    for name, value in (arrays or {}).items():
        tensors[ARRAY_PREFIX + name] = torch.from_numpy(np.ascontiguousarray(value))
    meta = {'format': FORMAT, 'format_version': FORMAT_VERSION,
            'param_groups': json.dumps(optim['param_groups']),
            'coefficient': json.dumps(state['coefficient']), 'version': str(state['version']),
            'permutation_rng': json.dumps(state['permutation_rng']), 'extra': json.dumps(extra or {})}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix='.tmp-', suffix='.safetensors')
    try:
        with os.fdopen(fd, 'wb') as f:
            f.write(save(tensors, metadata=meta))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # readers see the old file or the new one, never a partial one
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def _read(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    meta = checkpoint_metadata(path)
    with safe_open(str(path), framework='pt') as f:
        return {k: f.get_tensor(k) for k in f.keys()}, meta


def read_extra(path: str | Path) -> dict:
    """The `extra` dict of a checkpoint, without touching a learner."""
    return json.loads(checkpoint_metadata(path)['extra'])


def load_arrays(path: str | Path) -> dict[str, np.ndarray]:
    """The `arrays` saved with a checkpoint."""
    tensors, _ = _read(path)
    return {k[len(ARRAY_PREFIX):]: v.numpy() for k, v in tensors.items() if k.startswith(ARRAY_PREFIX)}


def load_checkpoint(learner: Learner, path: str | Path) -> dict:
    """Restore `learner` in place; returns the `extra` dict saved with it."""
    tensors, meta = _read(path)
    model = {k[len('model.'):]: v for k, v in tensors.items() if k.startswith('model.')}
    optim_state: dict = {}
    for key, value in tensors.items():
        if key.startswith('optim.'):
            _, pid, name = key.split('.', 2)
            optim_state.setdefault(int(pid), {})[name] = value
    learner.load_state_dict({
        'model': model, 'optimizer': {'state': optim_state, 'param_groups': json.loads(meta['param_groups'])},
        'coefficient': json.loads(meta['coefficient']), 'version': int(meta['version']),
        'permutation_rng': json.loads(meta['permutation_rng'])})
    return json.loads(meta['extra'])
