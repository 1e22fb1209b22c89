"""A run folder's checkpoints, read without torch, and the checks a learner passes before it starts in one: the
learner node makes them, and `mfpg train` makes the same ones before it writes anything into the folder."""
from __future__ import annotations

import contextlib
import csv
import json
from pathlib import Path

from safetensors import safe_open

from mfpg_ros.core.config import TrainConfig, check_resumable

FORMAT = 'mfpg_checkpoint'
FORMAT_VERSION = '1'
RESUME_HINT = ('resume it with the learner parameter resume (`mfpg train --set learner.resume=DIR`, '
               '`ros2 launch mfpg_ros train_real.launch.py resume:=DIR`)')


def checkpoint_versions(run_dir: str | Path) -> list[int]:
    """Policy versions of the learner checkpoints in <run_dir>/checkpoints, oldest first."""
    return sorted(int(f.stem.split('_')[1]) for f in (Path(run_dir) / 'checkpoints').glob('learner_*.safetensors'))


def latest_checkpoint(path: str | Path) -> Path:
    """`path` itself if it is a file, else the newest learner checkpoint in <path>/checkpoints."""
    path = Path(path)
    if path.is_file():
        return path
    if not path.exists():
        raise FileNotFoundError(f'resume: {path} does not exist')
    versions = checkpoint_versions(path)
    if not versions:
        raise FileNotFoundError(f'resume: no learner checkpoint in {path / "checkpoints"}')
    return path / 'checkpoints' / f'learner_{versions[-1]:06d}.safetensors'


def checkpoint_metadata(path: str | Path) -> dict[str, str]:
    """The metadata of a checkpoint file; ValueError if it is not one this build reads."""
    try:
        with safe_open(str(path), framework='np') as f:
            meta = f.metadata() or {}
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types for unreadable files
        raise ValueError(f'{path}: not a readable safetensors file ({exc})') from exc
    if meta.get('format') != FORMAT or meta.get('format_version') != FORMAT_VERSION:
        raise ValueError(f'{path}: not an {FORMAT} v{FORMAT_VERSION} file (metadata {meta.get("format")!r} '
                         f'v{meta.get("format_version")!r})')
    return meta


def checkpoint_version(path: str | Path) -> int:
    """The policy version a checkpoint holds (the iteration a run resumed from it starts at)."""
    return int(checkpoint_metadata(path)['version'])


def check_start(run_dir: str | Path | None, cfg: TrainConfig, resume: str | Path | None) -> Path | None:
    """ValueError/FileNotFoundError unless a learner may start with cfg in run_dir, resumed from `resume` (a
    checkpoint or a run folder; None/'' for a new run). Returns the checkpoint to resume from, if any.

    A run folder holds one run: a new run refuses one with checkpoints; a resumed run refuses checkpoints there newer
    than its own (two histories would mix), a checkpoint saved under another config, and one that has reached
    cfg.iterations already."""
    path = latest_checkpoint(resume) if resume else None
    version = 0
    if path is not None:
        meta = checkpoint_metadata(path)
        extra = json.loads(meta.get('extra', '{}'))
        if 'config' in extra:
            try:
                check_resumable(extra['config'], cfg, path)
            except ValueError as exc:
                saved = Path(path).parent.parent / 'config.yaml'  # a learner's checkpoints sit in <run>/checkpoints
                raise ValueError(f'{exc}; resume with the config it was saved under'
                                 + (f' (--config {saved})' if saved.is_file() else '')) from None
        version = int(meta['version'])
    if run_dir:
        versions = checkpoint_versions(run_dir)
        own = path is not None and path.resolve().parent == (Path(run_dir) / 'checkpoints').resolve()
        if versions and path is not None and not own:
            raise ValueError(f'{run_dir} holds another run: resume {path} into a new run folder, or resume this '
                             'folder\'s own run')
        if path is None and versions:
            raise ValueError(f'{run_dir} holds a run already: {RESUME_HINT.replace("DIR", str(run_dir))}, or start '
                             'a new run in a new run folder')
        newer = [v for v in versions if path is not None and v > version]
        if newer:
            raise ValueError(f'{Path(run_dir) / "checkpoints"} has checkpoints newer than version {version} (versions '
                             f'{newer}): resume the newest, or resume into a new run folder')
    if version >= cfg.iterations:
        raise ValueError(f'policy version {version} has reached iterations={cfg.iterations}: nothing to train '
                         '(resume with more iterations to go on)')
    return path


def drop_rows_from(path: Path, iteration: int) -> None:
    """Keep only metrics.csv's rows of iterations before `iteration` (those a resumed learner will not redo)."""
    if not path.is_file():
        return

    def kept(row: dict) -> bool:  # a row a crash cut short has no whole iteration number: it goes too
        with contextlib.suppress(TypeError, ValueError):
            return int(row['iteration']) < iteration
        return False
    with path.open(newline='') as f:
        reader = csv.DictReader(f)
        rows = [r for r in reader if kept(r)]
        fields = reader.fieldnames
    if fields:
        tmp = path.with_suffix('.csv.tmp')
        with tmp.open('w', newline='') as f:
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)
        tmp.replace(path)
