"""Statistics for the suite report: confidence intervals, Welch tests, learning-curve summaries."""
from __future__ import annotations

import math
import warnings

import numpy as np
from scipy import stats


def mean_ci(values) -> tuple[float, float]:
    """(mean, half-width of the 95% Student-t confidence interval); half-width NaN for fewer than 2 values."""
    x = np.asarray([v for v in values if math.isfinite(v)], dtype=float)
    if len(x) == 0:
        return float('nan'), float('nan')
    if len(x) < 2:
        return float(x.mean()), float('nan')
    return float(x.mean()), float(stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))


def welch_p(a, b) -> float:
    """Two-sided Welch t-test p-value of mean(a) != mean(b); NaN when undefined."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 2 or len(b) < 2 or (a.std() == 0 and b.std() == 0):
        return float('nan')
    with warnings.catch_warnings():  # one sample may be constant (e.g. every seed at the return cap)
        warnings.simplefilter('ignore', RuntimeWarning)
        return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def curve_band(curves: dict[int, list[tuple[float, float]]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeds' curves {seed: [(x, y), ...]} -> (x, mean, 95% CI half-width) on the x values all seeds share."""
    common = sorted(set.intersection(*(set(x for x, _ in c) for c in curves.values()))) if curves else []
    by_seed = [dict(c) for c in curves.values()]
    mean, half = zip(*(mean_ci([c[x] for c in by_seed]) for x in common)) if common else ((), ())
    return np.asarray(common, float), np.asarray(mean, float), np.asarray(half, float)


def trailing_mean(y: np.ndarray, window: int) -> np.ndarray:
    """Mean of the last `window` points up to each point (fewer at the start)."""
    c = np.cumsum(np.insert(np.asarray(y, float), 0, 0.0))
    idx = np.arange(1, len(y) + 1)
    lo = np.maximum(0, idx - window)
    return (c[idx] - c[lo]) / (idx - lo)


def steps_to_reach(x: np.ndarray, mean: np.ndarray, target: float, window: int = 3) -> float:
    """First x where the seed-mean curve, smoothed over `window` evaluations, reaches target; NaN if never."""
    if len(x) == 0 or not math.isfinite(target):
        return float('nan')
    hit = np.flatnonzero(trailing_mean(mean, window) >= target)
    return float(x[hit[0]]) if len(hit) else float('nan')
