"""Paired tests between two networks on the same test images (report/paired.py)."""

from __future__ import annotations

import numpy as np
import pytest

from modulenet.errors import ModuleNetError
from modulenet.report.paired import McNemar, mcnemar, mcnemar_of_predictions, wins


def table(both: int, only_a: int, only_b: int, neither: int) -> tuple[np.ndarray, np.ndarray]:
    """Correctness vectors with the given 2x2 table."""
    a = [True] * both + [True] * only_a + [False] * only_b + [False] * neither
    b = [True] * both + [False] * only_a + [True] * only_b + [False] * neither
    return np.array(a), np.array(b)


def test_mcnemar_exact_p_values_of_known_tables():
    # 10 discordant images all one way: p = 2 * 0.5**10
    test = mcnemar(*table(50, 10, 0, 40))
    assert (test.only_a, test.only_b) == (10, 0)
    assert test.p_value == pytest.approx(2 * 0.5**10)
    # 6 against 4 of 10: two-sided binomial, p = 2 * P(X <= 4 | n = 10) = 0.75390625
    assert mcnemar(*table(5, 6, 4, 5)).p_value == pytest.approx(0.75390625)
    # the concordant images play no part
    assert mcnemar(*table(900, 6, 4, 90)).p_value == pytest.approx(0.75390625)
    # no discordant image: no evidence of a difference
    assert mcnemar(*table(7, 0, 0, 3)) == McNemar(0, 0, 1.0)
    # symmetric in A and B
    assert mcnemar(*table(0, 3, 12, 0)).p_value == pytest.approx(mcnemar(*table(0, 12, 3, 0)).p_value)


def test_mcnemar_refuses_vectors_of_other_images():
    with pytest.raises(ModuleNetError, match="same images"):
        mcnemar([True, False], [True])
    a = {"index": np.arange(3), "label": np.array([0, 1, 2]), "predicted": np.array([0, 1, 1])}
    b = {**a, "label": np.array([0, 1, 1])}
    with pytest.raises(ModuleNetError, match="not of the same images"):
        mcnemar_of_predictions(a, b)
    assert mcnemar_of_predictions(a, {**a, "predicted": np.array([0, 0, 2])}) == McNemar(1, 1, 1.0)


def test_the_win_rule_needs_a_lower_mean_and_two_of_three_significant_pairings():
    strong, weak = McNemar(30, 5, 0.0001), McNemar(12, 10, 0.83)
    assert wins([0.30, 0.31, 0.32], [0.35, 0.36, 0.37], [strong, strong, weak])
    assert not wins([0.30, 0.31, 0.32], [0.35, 0.36, 0.37], [strong, weak, weak])  # 1 of 3
    assert not wins([0.40, 0.41, 0.42], [0.35, 0.36, 0.37], [strong, strong, strong])  # higher mean
    assert not wins([0.3], [0.4], [])
