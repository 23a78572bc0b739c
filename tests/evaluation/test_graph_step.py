"""The stacked classifiers' CUDA-graph step falls back to the eager step when its capture raises
(issue 32). No CUDA here: the graph path is forced on the CPU by letting `_can_capture` say yes,
running the side-stream work in place and making the capture itself raise; everything else (the
loop, the optimizer, the state put back, the warning) is the real code."""

from __future__ import annotations

import logging

import pytest
import torch

from modulenet.evaluation.lit_module import Classifier
from modulenet.evaluation.stacked import StackedIndividuals


def _model() -> StackedIndividuals:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(2, 64, 16, generator=g), torch.randint(0, 4, (64,), generator=g)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        template = Classifier(16, 4, [32])
    return StackedIndividuals(
        x, y, x[:, :16], y[:16], template, lambda params, capturable=False: torch.optim.Adam(params)
    )


def _fit(model: StackedIndividuals, graph: bool) -> StackedIndividuals:
    model.fit(epochs=2, batch_size=16, generator=torch.Generator().manual_seed(3), graph=graph)
    return model


@pytest.mark.parametrize("steps_before_raising", [0, 1], ids=["raises-at-once", "raises-after-a-step"])
def test_a_capture_that_raises_falls_back_to_the_eager_step_with_one_warning(monkeypatch, caplog, steps_before_raising):
    eager = _fit(_model(), graph=False)

    def capture(self, optimizer, first, loss_sum):
        for _ in range(steps_before_raising):  # work done before the failure must not count
            optimizer.zero_grad(set_to_none=True)
            self._loss(first, loss_sum).backward()
            optimizer.step()
        raise RuntimeError("CUDA error: operation not permitted when stream is capturing\nmore detail")

    captures = []
    monkeypatch.setattr(StackedIndividuals, "_can_capture", lambda self: True)
    monkeypatch.setattr(StackedIndividuals, "_beside", lambda self, eager_step: eager_step)
    monkeypatch.setattr(StackedIndividuals, "_capture", lambda self, *a: captures.append(1) or capture(self, *a))
    with caplog.at_level(logging.WARNING, logger="modulenet"):
        graphed = _fit(_model(), graph=True)

    assert len(captures) == 1  # tried once (8 full batches, the fourth after the warm-up), never again
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "capturing the CUDA-graph step" in warnings[0].getMessage()
    assert "operation not permitted" in warnings[0].getMessage() and "more detail" not in warnings[0].getMessage()
    assert "continuing eagerly" in warnings[0].getMessage()
    # the eager run to the bit: same weights, same per-epoch losses
    assert all(torch.equal(a, b) for a, b in zip(graphed.classifier.parameters(), eager.classifier.parameters()))
    assert graphed.epoch_losses == eager.epoch_losses


def test_a_capture_that_works_is_replayed(monkeypatch, caplog):
    """The same forced path with a 'capture' that returns an eager step as its replay: no warning,
    the replay used for the remaining full batches, the eager run's numbers."""
    eager = _fit(_model(), graph=False)
    replays = []

    def capture(self, optimizer, first, loss_sum):
        def replay(index):
            replays.append(1)
            optimizer.zero_grad(set_to_none=True)
            self._loss(index, loss_sum).backward()
            optimizer.step()

        return replay

    monkeypatch.setattr(StackedIndividuals, "_can_capture", lambda self: True)
    monkeypatch.setattr(StackedIndividuals, "_beside", lambda self, eager_step: eager_step)
    monkeypatch.setattr(StackedIndividuals, "_capture", capture)
    with caplog.at_level(logging.WARNING, logger="modulenet"):
        graphed = _fit(_model(), graph=True)
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(replays) == 1 + 4  # the check's replay, then the 4 full batches after it
    assert all(torch.equal(a, b) for a, b in zip(graphed.classifier.parameters(), eager.classifier.parameters()))
    assert graphed.epoch_losses == eager.epoch_losses
