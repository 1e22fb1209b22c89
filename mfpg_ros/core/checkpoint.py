"""Learner checkpoints: one safetensors file (tensors) + JSON metadata (everything else), written atomically."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save

from mfpg_ros.core.algorithms import Learner

FORMAT = 'mfpg_checkpoint'
FORMAT_VERSION = '1'


def save_checkpoint(learner: Learner, path: str | Path, extra: dict | None = None) -> Path:
    """Policy, value net, optimiser moments, c statistics, version, RNG state, and `extra` (e.g. the config)."""
    state = learner.state_dict()
    tensors = {f'model.{k}': v.detach().contiguous() for k, v in state['model'].items()}
    optim = state['optimizer']
    for pid, slots in optim['state'].items():
        for name, value in slots.items():
            tensors[f'optim.{pid}.{name}'] = torch.as_tensor(value).detach().clone().contiguous()
    meta = {'format': FORMAT, 'format_version': FORMAT_VERSION,
            'param_groups': json.dumps(optim['param_groups']),
            'coefficient': json.dumps(state['coefficient']), 'version': str(state['version']),
            'permutation_rng': json.dumps(state['permutation_rng']), 'extra': json.dumps(extra or {})}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix='.tmp-', suffix='.safetensors')
    with os.fdopen(fd, 'wb') as f:
        f.write(save(tensors, metadata=meta))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def load_checkpoint(learner: Learner, path: str | Path) -> dict:
    """Restore `learner` in place; returns the `extra` dict saved with it."""
    with safe_open(str(path), framework='pt') as f:
        meta = f.metadata() or {}
        if meta.get('format') != FORMAT or meta.get('format_version') != FORMAT_VERSION:
            raise ValueError(f'{path}: not an {FORMAT} v{FORMAT_VERSION} file (metadata {meta.get("format")!r} '
                             f'v{meta.get("format_version")!r})')
        tensors = {k: f.get_tensor(k) for k in f.keys()}
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
