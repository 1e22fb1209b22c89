"""TensorBoard scalars for a run folder: `tensorboard --logdir runs/` shows every numeric metric as `mfpg/<name>`.

Written by the learner node next to metrics.csv (<run>/tensorboard). Each `log` flushes, so a TensorBoard watching
a live run sees an iteration as soon as it is saved. tensorboard is imported on the first `log`, not at import time,
so nodes start without paying for it. A log resumed after a crash hides the steps from `resume_step` on (updates
that were logged but never checkpointed), so TensorBoard shows each step once.
"""
from __future__ import annotations

import numbers
from pathlib import Path

import numpy as np


class TensorBoardLog:
    def __init__(self, log_dir: str | Path, prefix: str = 'mfpg', resume_step: int | None = None):
        self.log_dir = Path(log_dir)
        self.prefix = prefix
        self.writer = None
        if resume_step is not None:
            self._open(purge_step=resume_step)

    def _open(self, purge_step: int | None = None) -> None:
        from torch.utils.tensorboard import SummaryWriter  # lazy: ~0.2 s of tensorboard + protobuf imports
        self.writer = SummaryWriter(log_dir=str(self.log_dir), purge_step=purge_step)

    def log(self, step: int, metrics: dict) -> None:
        """One scalar per numeric value at `step`; bools become 0/1, NaN is kept, anything else is skipped."""
        if self.writer is None:
            self._open()
        for name, value in metrics.items():
            if isinstance(value, (numbers.Real, np.bool_)):
                self.writer.add_scalar(f'{self.prefix}/{name}', float(value), global_step=int(step))
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
