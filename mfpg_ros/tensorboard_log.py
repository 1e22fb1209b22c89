"""TensorBoard scalars for a run folder: `tensorboard --logdir runs/` shows every numeric metric as `mfpg/<name>`.

Written by the learner node next to metrics.csv (<run>/tensorboard). Each `log` flushes, so a TensorBoard watching
a live run sees an iteration as soon as it is saved. tensorboard is imported on the first `log`, not at import time,
so nodes start without paying for it.
"""
from __future__ import annotations

import numbers
from pathlib import Path

import numpy as np


class TensorBoardLog:
    def __init__(self, log_dir: str | Path, prefix: str = 'mfpg'):
        self.log_dir = Path(log_dir)
        self.prefix = prefix
        self.writer = None

    def log(self, step: int, metrics: dict) -> None:
        """One scalar per numeric value at `step`; bools become 0/1, NaN is kept, anything else is skipped."""
        if self.writer is None:
            from torch.utils.tensorboard import SummaryWriter  # lazy: ~0.2 s of tensorboard + protobuf imports
            self.writer = SummaryWriter(log_dir=str(self.log_dir))
        for name, value in metrics.items():
            if isinstance(value, (numbers.Real, np.bool_)):
                self.writer.add_scalar(f'{self.prefix}/{name}', float(value), global_step=int(step))
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
