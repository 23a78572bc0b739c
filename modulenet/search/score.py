"""The search score of Sec. III-E: score = err_val - alpha * l_rate + beta * sim (Eq. 4).

Lower is better; and new survival (Sec. V-B). Plain Python on purpose: the search loop and the
report import it without torch.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def similarity(code: Sequence[int]) -> float:
    """Eq. (7)-(8): length of the leading run of modules from `code[0]`'s architecture, over c.

    An original architecture (all positions equal) has sim = 1; breaking the run early,
    in shallow cells, lowers sim more than breaking it deep in the network.
    """
    if len(code) == 0:
        raise ValueError("similarity of an empty genotype is undefined: a genotype has c >= 1 positions")
    run = 1
    while run < len(code) and code[run] == code[0]:
        run += 1
    return run / len(code)


def loss_rate(epoch_losses: Sequence[float]) -> float:
    """Eq. (6): (loss_epoch=1 - loss_epoch=n) / loss_epoch=1, clipped to [0, 1] as the paper asks.

    A single epoch (or a first loss of zero) has no measurable change and gives 0.
    """
    if len(epoch_losses) == 0:
        raise ValueError("loss_rate needs the mean training loss of at least one epoch, got none")
    first, last = float(epoch_losses[0]), float(epoch_losses[-1])
    if len(epoch_losses) == 1 or first <= 0.0:
        return 0.0
    return min(1.0, max(0.0, (first - last) / first))


def search_score(err_val, l_rate, sim, alpha, beta):
    """Eq. (4): score = err_val - alpha * l_rate + beta * sim, with err_val = 1 - acc_val (Eq. 5).

    A float for numbers; elementwise for numpy arrays (the alpha/beta calibration grid)."""
    score = err_val - alpha * l_rate + beta * sim
    return score if getattr(score, "ndim", 0) else float(score)


def new_survival(prev_pop: Iterable[Sequence[int]], pop: Iterable[Sequence[int]]) -> int:
    """Sec. V-B, Fig. 9: distinct genotypes of pop_i that are not in pop_{i-1}.

    Genotypes are compared as sets, so duplicates count once. For generation 1 there is no
    pop_0: pass an empty previous population and every distinct genotype counts as new.
    """
    return len({tuple(g) for g in pop} - {tuple(g) for g in prev_pop})
