"""The search score of Sec. III-E: score = err_val - alpha * l_rate + beta * sim (Eq. 4).

Lower is better. Plain Python on purpose: the search loop imports it without torch.
"""

from __future__ import annotations

from collections.abc import Sequence


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


def search_score(err_val: float, l_rate: float, sim: float, alpha: float, beta: float) -> float:
    """Eq. (4): score = err_val - alpha * l_rate + beta * sim, with err_val = 1 - acc_val (Eq. 5)."""
    return float(err_val) - float(alpha) * float(l_rate) + float(beta) * float(sim)
