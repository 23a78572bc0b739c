"""Faster and distributed evaluation give the results of the plain way (issue: speed and scale).

Real knowledge base, real Lightning trainers, real worker processes and a real local Ray.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
import pytorch_lightning as pl
import torch
from conftest import GENERATION, evaluator_settings

from modulenet.evaluation.candidate import trunk_features
from modulenet.evaluation.evaluator import Evaluator, make_evaluator
from modulenet.evaluation.lit_module import pool_features
from modulenet.evaluation.stacked import batch_loader, epoch_order, prefix_shared_features, trunk_stages
from modulenet.runtime.trainer import make_trainer, quiet_lightning


@pytest.fixture(scope="module")
def plain(kb, data):
    """The plain way: one trainer per individual, the frozen trunk in every training step."""
    return Evaluator(kb, data, 4, evaluator_settings(cache_features=False), progress=False)(GENERATION)


def assert_same(results, reference, tol_loss=1e-5):
    assert [r.genotype for r in results] == [r.genotype for r in reference]
    for a, b in zip(results, reference):
        assert a.status == b.status == "ok"
        assert a.err_val == pytest.approx(b.err_val, abs=1e-6)
        assert a.epoch_losses == pytest.approx(b.epoch_losses, rel=tol_loss)
        assert a.score == pytest.approx(b.score, abs=1e-4)


def test_prefix_sharing_computes_each_prefix_once_and_changes_nothing(kb, data):
    codes = [(0, 0, 0), (0, 0, 1), (0, 1, 0), (1, 2, 2)]
    trunks = {c: kb.assemble(c) for c in codes}
    assert all(len(trunk_stages(t)) == 3 for t in trunks.values())
    shared, nodes = prefix_shared_features(trunks, data[0], 64, torch.device("cpu"), pool="avg")
    assert nodes == 9  # 0, 00, 000, 001, 01, 010, 1, 12, 122 instead of 4 * 3 = 12
    for code in codes:
        alone = pool_features(trunk_features(trunks[code], data[0], 64, torch.device("cpu")), "avg")
        assert torch.equal(shared[code], alone)


class _RecordsBatches(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer, self.seen = torch.nn.Linear(1, 1), []

    def training_step(self, batch, batch_idx):
        self.seen.append(batch.clone())
        return self.layer(batch.float().view(-1, 1)).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


@pytest.mark.parametrize("n", [10, 12])  # a last, shorter batch, and none
def test_pre_drawn_batches_are_the_ones_a_lightning_trainer_draws(n):
    module = _RecordsBatches()
    with quiet_lightning():
        make_trainer(3).fit(module, batch_loader(n, 4, torch.Generator().manual_seed(0)))
    generator = torch.Generator().manual_seed(0)
    assert torch.equal(torch.cat(module.seen), torch.cat([epoch_order(n, 4, generator) for _ in range(3)]))


def test_stacked_classifiers_with_shared_prefixes_equal_the_plain_way(kb, data, plain):
    batched = Evaluator(kb, data, 4, evaluator_settings(stack_individuals=4, share_prefixes=True), progress=False)
    assert batched.settings.stacked
    assert_same(batched(GENERATION), plain)


def test_bf16_evaluation_stays_close_to_float32(kb, data, plain):
    fast = Evaluator(kb, data, 4, evaluator_settings(stack_individuals=6, precision="bf16-mixed"), progress=False)(
        GENERATION
    )
    for a, b in zip(fast, plain):
        assert a.status == "ok" and abs(a.err_val - b.err_val) <= 0.05
        assert a.epoch_losses[-1] < a.epoch_losses[0]  # it still trains


def test_tasks_are_stackable_groups_halved_until_every_worker_has_one(kb, data):
    evaluator = Evaluator(kb, data, 4, evaluator_settings(stack_individuals=6), progress=False)
    codes = sorted(GENERATION)
    alone = evaluator.planner.tasks(codes)
    for workers in (1, 2, 4, 6, 8):
        tasks = evaluator.planner.tasks(codes, workers)
        assert sorted(c for task in tasks for c in task) == codes  # each genotype once
        assert len(tasks) == max(len(alone), min(workers, len(codes)))
        # a task is a contiguous run of one stackable group (so its prefixes are shared)
        runs = [group[i:j] for group in alone for i in range(len(group)) for j in range(i + 1, len(group) + 1)]
        assert all(task in runs for task in tasks)
    unbatched = Evaluator(kb, data, 4, evaluator_settings(cache_features=False), progress=False)
    assert unbatched.planner.tasks(codes, 2) == [[code] for code in codes]


@pytest.mark.slow  # make test-all: two worker processes and a kill (about 20 s); keeps make test under 5 minutes
def test_gpus_evaluator_with_cpu_workers_equals_local_and_survives_a_killed_worker(kb, data, plain, tmp_path):
    memo = tmp_path / "evaluations.jsonl"
    # Stacks of up to 6: workers receive whole groups (tasks), a dead worker's group is re-queued.
    evaluator = make_evaluator(
        "gpus", kb, data, 4, evaluator_settings(stack_individuals=6), num_workers=2, memo_path=memo, progress=False
    )
    try:
        assert evaluator.dispatcher.slots == [None, None]  # CPU workers here
        assert_same(evaluator(GENERATION[:4]), plain[:4])
        assert len(memo.read_text().splitlines()) == 4  # written by this process

        results = {}
        thread = threading.Thread(target=lambda: results.setdefault("r", evaluator(GENERATION)))
        thread.start()
        deadline = time.monotonic() + 60
        while not any(w.task is not None for w in evaluator.dispatcher.pool.workers) and time.monotonic() < deadline:
            time.sleep(0.005)
        victim = next(w for w in evaluator.dispatcher.pool.workers if w.task is not None)
        os.kill(victim.process.pid, signal.SIGKILL)
        thread.join(timeout=300)
        assert evaluator.dispatcher.pool.requeued == 1
        assert_same(results["r"], plain)  # memo for the first four, workers for the rest
        assert all(w.process.is_alive() for w in evaluator.dispatcher.pool.workers)
    finally:
        evaluator.close()


# `evaluator=ray` against `local`: tests/test_reliability.py runs the same search with both.


def _stacked(seed: int = 0):
    from modulenet.evaluation.lit_module import Classifier
    from modulenet.evaluation.stacked import StackedIndividuals

    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(2, 64, 16, generator=g), torch.randint(0, 4, (64,), generator=g)
    torch.manual_seed(seed)
    model = StackedIndividuals(x, y, x[:, :16], y[:16], Classifier(16, 4, [32]), lambda p, c=False: torch.optim.Adam(p))
    optimizer = model.optimizer_factory(model.classifier.parameters())
    loss_sum = torch.zeros(2)

    def eager(index):
        optimizer.zero_grad(set_to_none=True)
        model._loss(index, loss_sum).backward()
        optimizer.step()

    return model, optimizer, loss_sum, eager


def test_the_graphed_step_checks_itself_against_the_eager_step(caplog):
    """Issue 23: at first use the replayed step is compared with an eager step on the same batch from
    the same state; the check is the same on any device, so a mismatch is forced here on the CPU (a
    'replay' that perturbs a weight). Either way the state after the check is one eager step's."""
    index = torch.arange(16)
    reference, ref_optimizer, ref_loss, ref_eager = _stacked()
    ref_eager(index)
    expected = [p.detach().clone() for p in reference.classifier.parameters()]

    model, optimizer, loss_sum, eager = _stacked()
    assert model.replay_agrees(eager, eager, index, optimizer, loss_sum)  # a faithful replay
    assert all(torch.equal(a, b) for a, b in zip(model.classifier.parameters(), expected))

    def wrong_replay(index):
        eager(index)
        with torch.no_grad():
            next(model.classifier.parameters()).add_(0.1)

    model, optimizer, loss_sum, eager = _stacked()
    with caplog.at_level("WARNING", logger="modulenet"):
        assert not model.replay_agrees(wrong_replay, eager, index, optimizer, loss_sum)
    assert "differs from the eager step" in caplog.text and "continuing eagerly" in caplog.text
    assert all(torch.equal(a, b) for a, b in zip(model.classifier.parameters(), expected))
    assert torch.equal(loss_sum, ref_loss)  # the batch's loss counted once
