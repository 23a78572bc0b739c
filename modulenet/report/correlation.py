"""Rank correlations from `scipy.stats`: Spearman's rho (average ranks for ties) and Kendall's tau-b.

Both compare orderings, not values: does a lower search score go with a lower test error
(Fig. 8), does the parameter-free connection rank architectures like the 1x1 one (Fig. 10)?
What is ours: paired, finite input checked with a one-line error, and a constant input (no
ordering) gives nan without scipy's warning.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
from scipy import stats


def _pair(x: Sequence[float], y: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=float).ravel()
    y = np.asarray(y, dtype=float).ravel()
    if x.shape != y.shape:
        raise ValueError(f"rank correlation needs paired values, got {x.size} and {y.size}")
    if x.size < 2:
        raise ValueError(f"rank correlation needs at least 2 pairs, got {x.size}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("rank correlation needs finite values (no nan or inf)")
    return x, y


def _quiet(statistic, x, y) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        return float(statistic(x, y).statistic)


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rho; nan if either input is constant."""
    return _quiet(stats.spearmanr, *_pair(x, y))


def kendall(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b; nan if either input is constant."""
    return _quiet(stats.kendalltau, *_pair(x, y))


def spearman_rows(matrix, y: Sequence[float]) -> np.ndarray:
    """Spearman's rho of every row of `matrix` with `y`, vectorised (the calibration grid of
    Fig. 8): the Pearson correlation of each row's average ranks with those of `y`; nan for a
    constant row."""
    m = np.atleast_2d(np.asarray(matrix, dtype=float))
    y = np.asarray(y, dtype=float).ravel()
    if m.shape[1] != y.size or y.size < 2:
        raise ValueError(f"spearman_rows needs rows of {y.size} >= 2 values, got shape {m.shape}")
    ranks = stats.rankdata(m, axis=1)
    ranks -= ranks.mean(axis=1, keepdims=True)
    ry = stats.rankdata(y)
    ry -= ry.mean()
    denominator = np.sqrt((ranks * ranks).sum(axis=1) * float(ry @ ry))
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = (ranks @ ry) / denominator
    rho[denominator == 0] = np.nan
    return np.clip(rho, -1.0, 1.0)
