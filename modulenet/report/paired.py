"""Paired comparisons of two networks on the same test images (ours: the paper reports means only).

McNemar's exact test: of the images exactly one of the two networks classifies correctly (the
discordant pairs), how likely is a split at least this uneven if both were equally good, by a
two-sided binomial test with p = 1/2 (`scipy.stats.binomtest`). The win rule is the one the
inheritance study fixed before its first run (docs/cpu_cifar10_inheritance/README.md).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from modulenet.errors import ModuleNetError


@dataclass(frozen=True)
class McNemar:
    """A paired test of networks A and B: `only_a` images A alone gets right, `only_b` B alone."""

    only_a: int
    only_b: int
    p_value: float

    @property
    def discordant(self) -> int:
        return self.only_a + self.only_b


def mcnemar(correct_a: Sequence[bool], correct_b: Sequence[bool]) -> McNemar:
    """McNemar's exact test on two networks' per-image correctness over the same images."""
    from scipy.stats import binomtest

    a, b = np.asarray(correct_a, dtype=bool), np.asarray(correct_b, dtype=bool)
    if a.shape != b.shape or a.ndim != 1:
        raise ModuleNetError(f"paired tests need the same images: {a.shape} and {b.shape} correctness vectors")
    only_a, only_b = int((a & ~b).sum()), int((b & ~a).sum())
    p = 1.0 if only_a + only_b == 0 else float(binomtest(only_a, only_a + only_b, 0.5).pvalue)
    return McNemar(only_a, only_b, p)


def mcnemar_of_predictions(a: dict, b: dict) -> McNemar:
    """McNemar's test between two saved predictions (finetune/network.read_predictions) of one split."""
    if not (np.array_equal(a["index"], b["index"]) and np.array_equal(a["label"], b["label"])):
        raise ModuleNetError("the two predictions are not of the same images (their indices or labels differ)")
    return mcnemar(a["predicted"] == a["label"], b["predicted"] == b["label"])


def wins(errors_a: Sequence[float], errors_b: Sequence[float], tests: Sequence[McNemar], alpha: float = 0.05) -> bool:
    """The study's win rule: A beats B when A's mean test error is lower and McNemar's p < `alpha`
    in at least two thirds of the seed pairings (2 of 3)."""
    if not tests:
        return False
    significant = sum(t.p_value < alpha for t in tests)
    return statistics.fmean(errors_a) < statistics.fmean(errors_b) and 3 * significant >= 2 * len(tests)
