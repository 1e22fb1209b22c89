"""Which low-fidelity data each algorithm needs, and where a replay or branch of an HF segment stops (docs/pairing.md).
No torch here: lofi_sim uses it."""
from __future__ import annotations

from mfpg_ros.core.config import AlgoConfig
from mfpg_ros.core.episode import Episode


def needs_paired(algorithm: str) -> bool:
    """Whether the algorithm uses paired LF replays of the HF segments."""
    return algorithm in ('mf_reinforce', 'mf_ppo')


def needs_pool(algorithm: str) -> bool:
    """Whether the algorithm uses the independent LF pool."""
    return algorithm not in ('reinforce', 'ppo')


def uses_branches(algo: AlgoConfig) -> bool:
    """Pairing 'matched' on an algorithm with paired replays: each replay runs on to its batch end and LF rollouts
    branching from each HF segment replace the independent pool (docs/pairing.md)."""
    return algo.estimator.pairing == 'matched' and needs_paired(algo.algorithm)


def branch_copies(algo: AlgoConfig) -> int:
    """Branches per HF segment under pairing 'matched': the LF pool budget per HF step of an AlgoConfig (>= 1)."""
    return max(1, algo.pool_envs * algo.pool_steps_per_env // max(1, algo.hf_steps_per_iter))


def replay_horizon(segment: Episode, batch_steps: int) -> int:
    """Steps from an HF segment's start to its batch's end (extras['batch_start']: where in its version's batch of
    batch_steps HF steps it began): how far it could have run, fixed before any of its noise was drawn, so a
    replay or branch stopped there shares the segment's truncation but not its fate."""
    if 'batch_start' not in segment.extras:
        raise ValueError(f'HF segment {segment.episode_id!r} has no extras["batch_start"]: pairing \'matched\' '
                         'needs where in its batch it began')
    start = segment.extras['batch_start']
    if not (0 <= start < 2 ** 31 and start == int(start)):  # from another process: checked before use
        raise ValueError(f'HF segment {segment.episode_id!r}: batch_start {start} is not a step count')
    return max(1, batch_steps - int(start))  # 1 for a segment past the budget (hifi_interface on_budget 'continue')
