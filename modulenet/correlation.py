"""Rank correlations in plain numpy (scipy is not a dependency): Spearman's rho and Kendall's tau-b.

Both compare orderings, not values: does a lower search score go with a lower test error
(Fig. 8), does the parameter-free connection rank architectures like the 1x1 one (Fig. 10)?
Ties are handled as scipy.stats does: Spearman uses average ranks, Kendall is tau-b. A
constant input has no ordering and gives nan.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


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


def rankdata(values: Sequence[float]) -> np.ndarray:
    """Ranks 1..n; tied values share the average of the ranks they span (`[10, 20, 20]` -> `[1, 2.5, 2.5]`)."""
    a = np.asarray(values, dtype=float).ravel()
    order = np.argsort(a, kind="mergesort")
    sorted_a = a[order]
    # start of each run of equal values in sorted order
    starts = np.flatnonzero(np.r_[True, sorted_a[1:] != sorted_a[:-1]])
    ends = np.r_[starts[1:], a.size]
    average = (starts + ends + 1) / 2.0  # mean of ranks starts+1 .. ends
    ranks = np.empty(a.size, dtype=float)
    ranks[order] = np.repeat(average, ends - starts)
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rho: the Pearson correlation of the average ranks; nan if either input is constant."""
    x, y = _pair(x, y)
    rx, ry = rankdata(x), rankdata(y)
    rx -= rx.mean()
    ry -= ry.mean()
    denominator = math.sqrt(float(rx @ rx) * float(ry @ ry))
    if denominator == 0.0:
        return math.nan
    return float(np.clip(float(rx @ ry) / denominator, -1.0, 1.0))


def kendall(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b: (concordant - discordant) / sqrt((n0 - ties_x) (n0 - ties_y)), n0 = n(n-1)/2.

    A pair tied in x (or y) is neither concordant nor discordant and leaves the x (or y) term of
    the denominator; nan if either input is constant. O(n^2) memory-light pairwise count.
    """
    x, y = _pair(x, y)
    i, j = np.triu_indices(x.size, k=1)
    sx = np.sign(x[i] - x[j])
    sy = np.sign(y[i] - y[j])
    numerator = float(np.sum(sx * sy))
    denominator = math.sqrt(float(np.count_nonzero(sx)) * float(np.count_nonzero(sy)))
    if denominator == 0.0:
        return math.nan
    return float(np.clip(numerator / denominator, -1.0, 1.0))


def spearman_rows(matrix, y: Sequence[float]) -> np.ndarray:
    """Spearman's rho of every row of `matrix` with `y` (average ranks for ties), vectorised: the
    rank of a value is #smaller + (#equal + 1) / 2. nan for a constant row. O(rows * n^2) memory."""
    m = np.atleast_2d(np.asarray(matrix, dtype=float))
    y = np.asarray(y, dtype=float).ravel()
    if m.shape[1] != y.size or y.size < 2:
        raise ValueError(f"spearman_rows needs rows of {y.size} >= 2 values, got shape {m.shape}")
    less = (m[:, None, :] < m[:, :, None]).sum(axis=2)
    equal = (m[:, None, :] == m[:, :, None]).sum(axis=2)
    ranks = less + (equal + 1) / 2.0
    ranks -= ranks.mean(axis=1, keepdims=True)
    ry = rankdata(y)
    ry -= ry.mean()
    denominator = np.sqrt((ranks * ranks).sum(axis=1) * float(ry @ ry))
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = (ranks @ ry) / denominator
    rho[denominator == 0] = np.nan
    return np.clip(rho, -1.0, 1.0)
