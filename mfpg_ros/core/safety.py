"""Command safety for the robot side (ROS-free): clamp, slew-rate limit, non-finite guard, stale/e-stop commands.

This is a software layer. It never replaces the robot's hardware e-stop or its controller's own limits.
"""
from __future__ import annotations

import numpy as np

HOLD, ZERO = 'hold', 'zero'


class CommandGate:
    """Turns policy actions into commands the robot may receive.

    - non-finite actions are replaced by the previous command (and counted);
    - commands are clamped to [low, high];
    - each command differs from the previous one by at most `max_delta` per step (slew-rate limit);
    - `fallback()` is what to send when observations go stale or the e-stop engages: hold or zero.
    """

    def __init__(self, low, high, max_delta=np.inf, on_stale: str = HOLD):
        if on_stale not in (HOLD, ZERO):
            raise ValueError(f"on_stale must be '{HOLD}' or '{ZERO}', got {on_stale!r}")
        self.low, self.high = np.asarray(low, dtype=np.float64), np.asarray(high, dtype=np.float64)
        if self.low.shape != self.high.shape or (self.low > self.high).any():
            raise ValueError(f'command limits low={self.low} high={self.high} are inconsistent')
        self.max_delta = np.broadcast_to(np.asarray(max_delta, dtype=np.float64), self.low.shape)
        if (self.max_delta <= 0).any():
            raise ValueError('max_delta must be positive (use inf for no slew limit)')
        self.on_stale = on_stale
        self.last = np.clip(np.zeros_like(self.low), self.low, self.high)
        self.non_finite = 0

    def __call__(self, action) -> np.ndarray:
        action = np.asarray(action, dtype=np.float64)
        if action.shape != self.low.shape or not np.isfinite(action).all():
            self.non_finite += 1
            action = self.last
        command = np.clip(action, self.low, self.high)
        command = np.clip(command, self.last - self.max_delta, self.last + self.max_delta)
        self.last = command
        return command.copy()

    def fallback(self) -> np.ndarray:
        """Command for stale observations / e-stop: the last command (hold) or zero, clamped and slew-limited
        only for hold (zero is sent at once: stopping beats smoothness)."""
        if self.on_stale == ZERO:
            self.last = np.clip(np.zeros_like(self.low), self.low, self.high)
        return self.last.copy()
