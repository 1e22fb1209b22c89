"""tensorboard_log: the scalars TensorBoard reads back are the metrics logged (tags, steps, values, NaN kept,
bools as 0/1, non-numbers skipped), and each log is on disk before close (a live `tensorboard --logdir`)."""
from __future__ import annotations

import math

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from mfpg_ros.tensorboard_log import TensorBoardLog


def read_scalars(log_dir) -> dict[str, list[tuple[int, float]]]:
    acc = EventAccumulator(str(log_dir), size_guidance={'scalars': 0})  # 0: keep every point
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()['scalars']}


def test_scalars_read_back(tmp_path):
    log = TensorBoardLog(tmp_path / 'tb')
    assert not (tmp_path / 'tb').exists()  # nothing (not even the import) until the first log
    steps = [1, 2, 3]
    for step in steps:
        log.log(step, {'hf_return': 10.5 * step, 'c': -0.25, 'rho': math.nan if step == 2 else 0.5,
                       'done': step == 3, 'np_value': np.float32(step), 'dropped': 0, 'note': 'text'})
    log.close()
    scalars = read_scalars(tmp_path / 'tb')
    assert set(scalars) == {f'mfpg/{n}' for n in ('hf_return', 'c', 'rho', 'done', 'np_value', 'dropped')}
    assert scalars['mfpg/hf_return'] == [(1, 10.5), (2, 21.0), (3, 31.5)]
    assert scalars['mfpg/done'] == [(1, 0.0), (2, 0.0), (3, 1.0)]
    assert scalars['mfpg/np_value'] == [(1, 1.0), (2, 2.0), (3, 3.0)]
    rho = scalars['mfpg/rho']
    assert [s for s, _ in rho] == steps and rho[0][1] == 0.5 and math.isnan(rho[1][1])


def test_each_log_is_flushed_before_close(tmp_path):
    log = TensorBoardLog(tmp_path)
    try:
        log.log(7, {'grad_norm': 0.125})
        assert read_scalars(tmp_path) == {'mfpg/grad_norm': [(7, 0.125)]}
        log.log(8, {'grad_norm': 0.5})
        assert read_scalars(tmp_path)['mfpg/grad_norm'] == [(7, 0.125), (8, 0.5)]
    finally:
        log.close()
    log.close()  # closing twice is harmless


def test_values_are_float32_like_tensorboard_stores_them(tmp_path):
    log = TensorBoardLog(tmp_path)
    log.log(1, {'x': 0.1})
    log.close()
    assert read_scalars(tmp_path)['mfpg/x'][0][1] == pytest.approx(0.1, rel=1e-6)


def test_a_resumed_log_hides_the_steps_logged_after_the_checkpoint(tmp_path):
    log = TensorBoardLog(tmp_path)
    for step in (1, 2, 3, 4):  # steps 3 and 4 were logged, then the process died before checkpointing them
        log.log(step, {'hf_return': float(step)})
    log.close()
    resumed = TensorBoardLog(tmp_path, resume_step=3)
    resumed.log(3, {'hf_return': 30.0})
    resumed.close()
    assert read_scalars(tmp_path)['mfpg/hf_return'] == [(1, 1.0), (2, 2.0), (3, 30.0)]
