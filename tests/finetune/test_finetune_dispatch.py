"""The evaluation stage over workers (issue 23): two CPU worker processes give the sequential run's
rows and networks, a killed worker's candidate is fine-tuned again, and finetune.json has one
writer that keeps the candidates' order whatever order they finish in."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from dataclasses import replace

import pytest
import torch
from conftest import finetune_inputs

from modulenet import rundir
from modulenet.errors import ModuleNetError
from modulenet.evaluation.evaluator import Evaluator
from modulenet.finetune.settings import FinetuneSettings
from modulenet.finetune.stage import FinetuneStage
from modulenet.runtime.dispatch import LocalDispatcher, RayDispatcher, WorkerPoolDispatcher
from modulenet.runtime.settings import TrainerSettings

RESULTS = {"population": [{"genotype": [0, 1, 1], "score": 1.0}, {"genotype": [1, 0, 0], "score": 2.0}]}


@pytest.fixture(scope="module")
def stage_inputs():
    kb, dm = finetune_inputs(num_train=96)
    # two searched candidates, each for two seeds: four fine-tunes
    settings = FinetuneSettings(
        epochs=2, hidden=[16], pool="avg", batch_size=32, top_k=2, seeds=[0, 1], include_originals=False
    )
    return kb, dm, settings


@pytest.fixture(scope="module")
def sequential(stage_inputs, tmp_path_factory):
    """In this process, at its own thread count: the stage fixes that count (finetune.threads) for
    every fine-tune, here or in a worker, so the workers' rows and weights are these to the bit."""
    out = tmp_path_factory.mktemp("sequential")
    return out, FinetuneStage(*stage_inputs, progress=False).run(RESULTS, out)


def _fine_tuned_weights(threads_here: int, threads: int | None) -> dict:
    from modulenet.finetune.training import finetune_architecture

    kb, dm, settings = _small_inputs()
    before = torch.get_num_threads()
    torch.set_num_threads(threads_here)
    try:
        network, _ = finetune_architecture(kb, (0, 1, 1), dm, replace(settings, threads=threads), progress=False)
        assert torch.get_num_threads() == threads_here  # the process's own count again after the fine-tune
    finally:
        torch.set_num_threads(before)
    return {k: v.clone() for k, v in network.state_dict().items()}


def _small_inputs():
    kb, dm = finetune_inputs(num_train=96)
    return kb, dm, FinetuneSettings(epochs=1, hidden=[16], pool="avg", batch_size=32, precision="32-true")


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs two CPU cores to run at two thread counts")
def test_a_fine_tune_computes_with_its_own_thread_count_wherever_it_runs():
    """Issue 32: modulenet-finetune with evaluator=gpus gave other errors than the sequential run on
    the same search, because a CPU worker computes with fewer threads (cores / workers) and CPU
    kernels split their sums by thread. finetune.threads fixes the count for each fine-tune, so a
    process at 2 threads and one at 1 (a worker's) give the same weights; the stage sets it to the
    launching process's count before it dispatches anything."""
    at_two, at_one = _fine_tuned_weights(2, threads=1), _fine_tuned_weights(1, threads=1)
    assert all(torch.equal(at_two[k], at_one[k]) for k in at_two)
    # what the setting prevents: left to the process, 2 threads give other weights than 1 thread
    unset_two = _fine_tuned_weights(2, threads=None)
    assert any(not torch.equal(unset_two[k], at_one[k]) for k in at_one)

    kb, dm, settings = _small_inputs()
    assert FinetuneStage(kb, dm, settings, progress=False).settings.threads == torch.get_num_threads()
    assert FinetuneStage(kb, dm, replace(settings, threads=3), progress=False).settings.threads == 3
    with pytest.raises(ModuleNetError, match=r"finetune.threads=0 must be a positive integer or null"):
        replace(settings, threads=0)


def _weights(out, row) -> dict:
    return torch.load(out / row.network / rundir.NETWORK_WEIGHTS, weights_only=True)


def _same_rows(a, b) -> None:
    key = lambda r: (r.label, r.seed, r.genotype, r.val_error, r.test_error, r.selected, r.network)  # noqa: E731
    assert [key(r) for r in a] == [key(r) for r in b]


@pytest.mark.slow  # make test-all: two worker processes (tests/evaluation/test_dispatch.py covers the dispatcher)
def test_two_cpu_workers_give_the_sequential_rows_and_networks(stage_inputs, sequential, tmp_path):
    seq_out, seq_rows = sequential
    assert len(seq_rows) == 4
    stage = FinetuneStage(*stage_inputs, dispatcher=WorkerPoolDispatcher(num_workers=2), progress=False)
    rows = stage.run(RESULTS, tmp_path)
    _same_rows(rows, seq_rows)
    for row, seq_row in zip(rows, seq_rows):
        mine, theirs = _weights(tmp_path, row), _weights(seq_out, seq_row)
        assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)
    document = json.loads((tmp_path / rundir.FINETUNE).read_text())
    assert [(r["label"], r["seed"]) for r in document["results"]] == [(r.label, r.seed) for r in seq_rows]
    assert stage.dispatcher.pool is None  # the workers are gone


@pytest.mark.slow
def test_a_killed_worker_s_candidate_is_fine_tuned_again(stage_inputs, sequential, tmp_path):
    _, seq_rows = sequential
    stage = FinetuneStage(*stage_inputs, dispatcher=WorkerPoolDispatcher(num_workers=2), progress=False)
    answer = {}
    thread = threading.Thread(target=lambda: answer.setdefault("rows", stage.run(RESULTS, tmp_path)))
    thread.start()
    deadline, pool = time.monotonic() + 120, None
    while time.monotonic() < deadline:
        pool = stage.dispatcher.pool
        if pool is not None and any(w.task is not None for w in pool.workers):
            break
        time.sleep(0.01)
    victim = next(w for w in pool.workers if w.task is not None)
    os.kill(victim.process.pid, signal.SIGKILL)
    thread.join(timeout=600)
    assert pool.requeued == 1
    _same_rows(answer["rows"], seq_rows)


class MyEvaluator(Evaluator):
    """A user's evaluator: it neither knows nor chooses where work runs."""


def test_the_stage_dispatches_as_the_evaluator_group_names():
    """The search and the evaluation stage hold the same dispatcher, whatever evaluator class runs
    the search: a subclass of Evaluator of your own fine-tunes over evaluator.dispatcher too."""
    from conftest import compose_search

    from modulenet.app.bundle import SearchBundle, dispatcher

    trainer = TrainerSettings(precision="32-true")
    assert isinstance(dispatcher(compose_search([]).evaluator, trainer), LocalDispatcher)
    gpus = dispatcher(compose_search(["evaluator=gpus", "evaluator.num_workers=3"]).evaluator, trainer)
    assert isinstance(gpus, WorkerPoolDispatcher) and gpus.slots == [None, None, None]
    own = compose_search(["evaluator=gpus", f"evaluator._target_={__name__}.MyEvaluator", "evaluator.num_workers=2"])
    bundle = SearchBundle.resolve(own)
    assert bundle.evaluator is MyEvaluator and isinstance(bundle.dispatcher, WorkerPoolDispatcher)
    with pytest.raises(ModuleNetError, match="evaluator.num_workers=0 must be a positive integer"):
        dispatcher(compose_search(["evaluator=gpus", "evaluator.num_workers=0"]).evaluator, trainer)


@pytest.mark.slow
def test_ray_actors_give_the_sequential_rows(stage_inputs, sequential, tmp_path):
    ray = pytest.importorskip("ray")
    _, seq_rows = sequential
    try:
        rows = FinetuneStage(*stage_inputs, dispatcher=RayDispatcher(num_workers=2), progress=False).run(
            RESULTS, tmp_path
        )
    finally:
        ray.shutdown()
    _same_rows(rows, seq_rows)
