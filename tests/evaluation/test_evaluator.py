"""Evaluating individuals: real knowledge base, real Lightning trainers (Sec. III-E)."""

from __future__ import annotations

import json

import pytest
from conftest import colour_cast
from torch import nn

from modulenet.errors import ModuleNetError
from modulenet.evaluation.evaluator import EvaluationMemo, Evaluator
from modulenet.evaluation.settings import EvaluationSettings
from modulenet.knowledge import CutPointArchitecture, build_knowledge_base
from modulenet.search.records import WORST_SCORE, Evaluation
from modulenet.search.score import loss_rate, search_score, similarity


def small_settings(**overrides) -> EvaluationSettings:
    base = dict(
        epochs=3,
        stack_individuals=1,
        batch_size=64,
        feature_batch_size=64,
        hidden=[64, 64],
        pool="avg",
        alpha=25,
        beta=25,
    )
    return EvaluationSettings(**{**base, **overrides})


@pytest.fixture(scope="module")
def data():
    """Images whose class is a colour cast, so a classifier on frozen random features can learn it."""
    return colour_cast(384, 256, seed=0)


def test_cached_features_equal_the_trunk_in_the_loop(kb, data):
    genotypes = [(0, 1, 2), (1, 1, 1), (2, 0, 1)]
    cached = Evaluator(kb, data, 4, small_settings(cache_features=True), progress=False)(genotypes)
    plain = Evaluator(kb, data, 4, small_settings(cache_features=False), progress=False)(genotypes)
    for a, b in zip(cached, plain):
        assert a.genotype == b.genotype
        assert a.err_val == pytest.approx(b.err_val, abs=1e-6)
        assert a.epoch_losses == pytest.approx(b.epoch_losses, rel=1e-5)
        assert a.score == pytest.approx(b.score, abs=1e-4)


def test_evaluation_follows_eq4_to_eq8_and_learns(kb, data):
    e = Evaluator(kb, data, 4, small_settings(epochs=4, lr=1e-2, pool="flatten"), progress=False).evaluate("012")
    assert e.status == "ok" and len(e.epoch_losses) == 4
    assert e.epoch_losses[-1] < e.epoch_losses[0]  # the classifier really trains
    assert e.err_val < 0.4  # four classes: chance is 0.75
    assert e.l_rate == pytest.approx(loss_rate(e.epoch_losses))
    assert e.sim == similarity((0, 1, 2)) == pytest.approx(1 / 3)
    assert e.score == pytest.approx(search_score(e.err_val, e.l_rate, e.sim, 25, 25))
    assert e.params > 0 and e.flops > 0


def test_memo_trains_each_genotype_once_and_survives_a_torn_line(kb, data, tmp_path):
    memo_path = tmp_path / "evaluations.jsonl"
    first = Evaluator(kb, data, 4, small_settings(), memo_path=memo_path, progress=False)
    a = first.evaluate((1, 0, 0))
    assert len(memo_path.read_text().splitlines()) == 1
    with memo_path.open("a") as f:
        f.write('{"fingerprint": "abc", "evaluation": {"genot')  # a kill mid-write
    second = Evaluator(kb, data, 4, small_settings(), memo_path=memo_path, progress=False)
    b = second.evaluate([1, 0, 0])
    assert b == a and b.seconds == a.seconds  # came from the file, not from a new training
    assert len(memo_path.read_text().splitlines()) == 2  # nothing appended
    other = Evaluator(kb, data, 4, small_settings(epochs=2), memo_path=memo_path, progress=False)
    assert other.memo.get((1, 0, 0)) is None  # another setting is another result


def test_tf32_setting_keys_the_memo_and_a_bad_value_is_named(kb, data):
    highest, tf32 = small_settings(), small_settings(float32_matmul_precision="high")
    assert highest.fingerprint() != tf32.fingerprint()  # TF32 changes results on GPUs
    with pytest.raises(ModuleNetError, match="float32_matmul_precision='tf32'.*highest, high, medium"):
        Evaluator(kb, data, 4, small_settings(float32_matmul_precision="tf32"), progress=False)


def test_memo_round_trips_evaluations(tmp_path):
    memo = EvaluationMemo(tmp_path / "m.jsonl", "f1")
    e = Evaluation((0, 2, 1), 1.5, 0.3, 0.2, 0.33, [2.0, 1.6], params=10, flops=20)
    memo.put(e)
    row = json.loads((tmp_path / "m.jsonl").read_text())
    assert row["evaluation"]["genotype"] == [0, 2, 1]
    assert EvaluationMemo(tmp_path / "m.jsonl", "f1").get([0, 2, 1]) == e


class BatchLimit(nn.Module):
    """A module that runs out of memory above `limit` images per batch, as a large one can on a GPU."""

    def __init__(self, limit: int):
        super().__init__()
        self.limit = limit
        self.conv = nn.Conv2d(3, 8, 3, padding=1)

    def forward(self, x):
        if x.shape[0] > self.limit:
            raise RuntimeError(f"out of memory: batch of {x.shape[0]} exceeds {self.limit}")
        return self.conv(x)


def test_failing_individual_is_retried_at_half_batch_then_recorded_as_failed(data, tmp_path):
    kb = build_knowledge_base(
        [
            CutPointArchitecture("fits_half", nn.Sequential(BatchLimit(40)), ["0"]),
            CutPointArchitecture("never_fits", nn.Sequential(BatchLimit(10)), ["0"]),
        ],
        progress=False,
    )
    evaluator = Evaluator(kb, data, 4, small_settings(), memo_path=tmp_path / "m.jsonl", progress=False)
    retried, failed = evaluator([(0,), (1,)])
    assert retried.status == "ok" and retried.score < WORST_SCORE
    assert failed.status == "failed" and failed.score == WORST_SCORE and "out of memory" in failed.error
    assert len((tmp_path / "m.jsonl").read_text().splitlines()) == 2  # the failure is recorded too


# --------------------------------------------------------------------------- its parts (issue 32)


@pytest.fixture
def counted_parsing(monkeypatch):
    """How often a genotype is parsed (genotype.parse_genotype, as the knowledge base calls it) and
    assembled into a candidate, by genotype."""
    from collections import Counter

    from modulenet.evaluation import candidate
    from modulenet.knowledge import base

    parsed, assembled = Counter(), Counter()
    parse = base.parse_genotype
    monkeypatch.setattr(base, "parse_genotype", lambda value, *a: parsed.update([str(value)]) or parse(value, *a))
    assemble = candidate.Candidate.assemble.__func__

    def counting(cls, kb, code, *args):
        assembled[code] += 1
        return assemble(cls, kb, code, *args)

    monkeypatch.setattr(candidate.Candidate, "assemble", classmethod(counting))
    return parsed, assembled


@pytest.mark.parametrize("options", [dict(stack_individuals=4), dict(cache_features=False)])  # stacked, plain
def test_a_genotype_is_parsed_once_and_assembled_once_per_evaluation(kb, data, counted_parsing, options):
    parsed, assembled = counted_parsing
    genotypes = ["012", "111", [2, 0, 1], "012"]  # as a user writes them; one twice
    results = Evaluator(kb, data, 4, small_settings(epochs=1, **options), progress=False)(genotypes)
    assert [r.genotype for r in results] == [(0, 1, 2), (1, 1, 1), (2, 0, 1), (0, 1, 2)]
    assert parsed == {"012": 2, "111": 1, "[2, 0, 1]": 1}  # each given value once, never again downstream
    assert assembled == {(0, 1, 2): 1, (1, 1, 1): 1, (2, 0, 1): 1}


def test_the_evaluator_holds_a_planner_a_memo_and_a_dispatcher(kb, data, tmp_path):
    """Its parts, each one job: the planner cuts tasks, the memo answers what finished, the
    dispatcher (held, not inherited) runs the tasks; the memo is written here only."""
    from modulenet.runtime.dispatch import Dispatcher, LocalDispatcher

    class Recording(LocalDispatcher):
        def __init__(self):
            super().__init__()
            self.tasks = []

        def map(self, tasks, describe=str):
            tasks = list(tasks)
            self.tasks.append(tasks)
            return super().map(tasks, describe)

    recording = Recording()
    memo = tmp_path / "m.jsonl"
    evaluator = Evaluator(
        kb, data, 4, small_settings(epochs=1, stack_individuals=2), memo_path=memo, dispatcher=recording
    )
    assert isinstance(evaluator.dispatcher, Dispatcher) and not isinstance(evaluator, Dispatcher)
    evaluator(["012", "011", "111"])
    assert recording.tasks == [evaluator.planner.tasks([(0, 1, 1), (0, 1, 2), (1, 1, 1)])]
    again = Evaluator(kb, data, 4, small_settings(epochs=1, stack_individuals=2), memo_path=memo, dispatcher=recording)
    again(["111", "210"])
    assert recording.tasks[-1] == [[(2, 1, 0)]]  # the memo answered 111
    assert len(memo.read_text().splitlines()) == 4
