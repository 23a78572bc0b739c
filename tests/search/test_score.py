import pytest

from modulenet.search.score import loss_rate, search_score, similarity


@pytest.mark.parametrize(
    "code, expected",
    [
        ([1, 1, 1, 1, 1], 1.0),  # an original architecture
        ([2, 1, 1, 1, 1], 0.2),  # broken at the first cell: only code[0] itself counts
        ([0, 0, 0, 3, 0], 0.6),  # the run stops at the first change, later repeats do not count
        ([4, 4, 1, 4, 4], 0.4),
        ([3], 1.0),
    ],
)
def test_similarity_is_leading_run_over_c(code, expected):
    assert similarity(code) == pytest.approx(expected)


def test_similarity_penalises_shallow_breaks_more_than_deep_ones():
    assert similarity([0, 1, 0, 0, 0]) < similarity([0, 0, 0, 0, 1])


def test_similarity_of_empty_genotype_is_an_error():
    with pytest.raises(ValueError, match="empty genotype"):
        similarity([])


def test_loss_rate_eq6_and_clipping():
    assert loss_rate([2.0, 1.5, 1.0]) == pytest.approx(0.5)
    assert loss_rate([1.0, 1.2]) == 0.0  # a diverging loss clips to 0
    assert loss_rate([1.0, -0.5]) == 1.0  # clipped to 1 at the top
    assert loss_rate([3.0]) == 0.0
    assert loss_rate([0.0, 0.0]) == 0.0
    with pytest.raises(ValueError, match="at least one epoch"):
        loss_rate([])


def test_search_score_eq4():
    # score = err_val - alpha * l_rate + beta * sim
    assert search_score(0.3, 0.5, 0.2, alpha=25, beta=25) == pytest.approx(0.3 - 12.5 + 5.0)
    assert search_score(0.3, 0.5, 0.2, alpha=0, beta=0) == pytest.approx(0.3)
