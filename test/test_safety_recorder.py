"""Robot-side logic without ROS: the command gate and the HF segment recorder."""
import numpy as np
import pytest

from mfpg_ros.core.safety import CommandGate
from mfpg_ros.sim.recorder import SAFE_COMMAND_SEQ, JointStateError, SegmentRecorder, joint_vector, parse_report
from mfpg_ros.sim.tasks import make_task


def test_gate_clamps_slew_limits_and_survives_adversarial_actions():
    gate = CommandGate([-10.0], [10.0], max_delta=2.0, on_stale='zero')
    assert gate([1e9])[0] == 2.0  # clamped to 10, then slew-limited from 0
    assert gate([1e9])[0] == 4.0
    assert gate([np.nan])[0] == 4.0 and gate.non_finite == 1  # NaN: previous command, counted
    assert gate([-np.inf])[0] == 4.0 and gate.non_finite == 2
    assert gate([-1e9])[0] == 2.0
    for _ in range(20):
        out = gate(np.random.default_rng(0).normal(0, 1e6, 1))
        assert -10.0 <= out[0] <= 10.0
    assert gate.fallback()[0] == 0.0 and gate.last[0] == 0.0
    hold = CommandGate([-1.0, -1.0], [1.0, 1.0], on_stale='hold')
    hold([0.5, -0.25])
    np.testing.assert_array_equal(hold.fallback(), [0.5, -0.25])
    assert hold([1.0])[0] == 0.5  # wrong shape counts as non-finite input: previous command
    with pytest.raises(ValueError):
        CommandGate([1.0], [0.0])
    with pytest.raises(ValueError):
        CommandGate([0.0], [1.0], on_stale='brake')


def test_joint_vector_by_name_any_order_extras_ignored_missing_is_clear():
    names = ['camera_tilt', 'pole_hinge', 'cart_slider']
    qpos, qvel = joint_vector(names, [9.0, 0.1, 0.2], [9.0, 1.0, 2.0], ['cart_slider', 'pole_hinge'])
    np.testing.assert_array_equal(qpos, [0.2, 0.1])
    np.testing.assert_array_equal(qvel, [2.0, 1.0])
    with pytest.raises(JointStateError, match='lacks joints'):
        joint_vector(['cart_slider'], [0.0], [0.0], ['cart_slider', 'pole_hinge'])
    with pytest.raises(JointStateError, match='non-finite'):
        joint_vector(['a'], [np.nan], [0.0], ['a'])
    with pytest.raises(JointStateError, match='positions'):
        joint_vector(['a', 'b'], [0.0], [0.0, 0.0], ['a'])
    with pytest.raises(JointStateError, match='float32'):  # finite, but an episode could not store it
        joint_vector(['a'], [0.0], [-1e39], ['a'])


def test_policy_server_reports_are_parsed_or_refused_with_the_reason():
    seq, version, action, eps, command = parse_report([7.0, 3.0, 0.5, -1.0, 0.25], act_dim=1)
    assert (seq, version) == (7, 3) and (action, eps, command) == ([0.5], [-1.0], [0.25])
    assert parse_report([SAFE_COMMAND_SEQ, -1.0, 0.0, 0.0, 0.0], 1)[:2] == (SAFE_COMMAND_SEQ, -1)  # before weights
    for bad, reason in [([7.0, 3.0, 0.5, -1.0], 'expected'), ([7.0, 3.0, np.nan, 0.0, 0.0], 'finite'),
                        ([7.5, 3.0, 0.0, 0.0, 0.0], 'integers'), ([7.0, 3.5, 0.0, 0.0, 0.0], 'integers'),
                        ([7.0, -2.0, 0.0, 0.0, 0.0], 'integers'), ([7.0, 2.0 ** 40, 0.0, 0.0, 0.0], 'integers'),
                        ([7.0, -1.0, 0.0, 0.0, 0.0], 'policy version -1'), ([7.0, 3.0, 1e39, 0.0, 0.0], 'float32')]:
        with pytest.raises(ValueError, match=reason):
            parse_report(bad, 1)


def test_recorder_cuts_at_budget_version_change_and_termination():
    task = make_task('cartpole')
    rec = SegmentRecorder(task, steps_per_version=5, seed=3, prefix='t')
    rec.start_episode(np.zeros(2), np.zeros(2))
    closed = []
    for step in range(7):
        version = 0 if step < 3 else 1
        closed += rec.act(np.array([0.1]), np.array([0.5]), np.array([0.1]), version)
        segs, over = rec.transition(np.array([0.0, 0.01 * step]), np.zeros(2))
        closed += segs
        assert not over
    assert [len(s) for s in closed] == [3]  # version change closed the first segment
    assert closed[0].extras['batch_start'] == 0  # where in its version's batch it began (pairing 'matched')
    assert closed[0].policy_version == 0 and closed[0].truncated and closed[0].start_step == 0
    np.testing.assert_array_equal(closed[0].eps, [[0.5]] * 3)
    # falling over ends the episode: terminated, and the next act starts a new segment at the right step
    rec.act(np.array([0.1]), np.array([0.5]), np.array([0.1]), 1)
    segs, over = rec.transition(np.array([0.0, 0.5]), np.zeros(2))
    assert over and segs[0].terminated and segs[0].start_step == 3 and len(segs[0]) == 5
    assert segs[0].extras['batch_start'] == 0  # the first segment of version 1
    assert rec.budget_reached(1) and not rec.budget_reached(2)


def test_recorder_abort_drops_steps_from_the_budget():
    task = make_task('cartpole')
    rec = SegmentRecorder(task, steps_per_version=10)
    rec.start_episode(np.zeros(2), np.zeros(2))
    for _ in range(4):
        rec.act(np.zeros(1), np.zeros(1), np.zeros(1), 0)
        rec.transition(np.zeros(2), np.zeros(2))
    assert rec.version_steps[0] == 4
    assert rec.abort() == 4 and rec.version_steps[0] == 0
