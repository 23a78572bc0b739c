"""Reliability: the search's randomness is its own, one search per run directory, no torn or
shared files, no resume on other evaluations, corrupt checkpoints are one line."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import torch
from conftest import HOLDER, C, HiddenTarget, N

from modulenet.errors import ModuleNetError
from modulenet.evaluation.evaluator import EvaluationMemo
from modulenet.rundir import hold, write_atomic
from modulenet.search import SearchConfig, SearchSpace, run_search
from modulenet.search.records import Evaluation

CONFIG = dict(generations=4, population_size=10, seed=3, mutation_prob=0.5)


def summary(result):
    return [e.genotype for e in result.population], result.history, [e.genotype for e in result.evaluations]


class Reseeding(HiddenTarget):
    """An evaluator that does what `pl.seed_everything` did inside evaluation: reseeds and draws
    from the process-wide generators."""

    def __call__(self, genotypes):
        random.seed(0)
        np.random.seed(0)
        random.random(), np.random.rand()
        return super().__call__(genotypes)


def test_the_search_draws_from_its_own_generator_only(tmp_path):
    reference = run_search(SearchSpace(N, C), HiddenTarget(), SearchConfig(**CONFIG), tmp_path / "a")
    # Evaluation that reseeds or draws from the global generators does not move the search.
    assert summary(run_search(SearchSpace(N, C), Reseeding(), SearchConfig(**CONFIG), tmp_path / "b")) == summary(
        reference
    )
    # And the search leaves the global generators as it found them.
    random.seed(11)
    before = random.getstate()
    run_search(SearchSpace(N, C), HiddenTarget(), SearchConfig(**CONFIG), tmp_path / "c")
    assert random.getstate() == before
    # Another seed is another search.
    other = run_search(SearchSpace(N, C), HiddenTarget(), SearchConfig(**{**CONFIG, "seed": 4}), tmp_path / "d")
    assert summary(other) != summary(reference)


def test_resume_refuses_evaluations_made_on_something_else(tmp_path, caplog):
    depends_on = {"archs": ["a", "b", "c", "d"], "weights": {"a": "11", "b": "22"}, "connection": "channel_pool"}
    run_search(
        SearchSpace(N, C), HiddenTarget(), SearchConfig(**{**CONFIG, "generations": 1}), tmp_path, depends_on=depends_on
    )
    changed = {**depends_on, "weights": {"a": "11", "b": "33"}}
    with pytest.raises(
        ModuleNetError,
        match=r"cannot resume .*: its evaluations were made with another weights "
        r"\(weights.b: \"33\" now, \"22\" in the run\)",
    ) as info:
        run_search(
            SearchSpace(N, C),
            HiddenTarget(),
            SearchConfig(**{**CONFIG, "generations": 2}),
            tmp_path,
            resume=True,
            depends_on=changed,
        )
    assert "\n" not in str(info.value)
    resumed = run_search(
        SearchSpace(N, C),
        HiddenTarget(),
        SearchConfig(**{**CONFIG, "generations": 2}),
        tmp_path,
        resume=True,
        depends_on=dict(depends_on),
    )
    assert len(resumed.history) == 2


@pytest.mark.parametrize(
    "edit, expected",
    [
        (lambda s: s.pop("population"), "lacks 'population'"),
        (lambda s: s.update(generation="two"), "has a bad value"),
        (lambda s: s.update(rng={}), "lacks 'search'"),
    ],
)
def test_a_corrupt_checkpoint_is_one_line(tmp_path, edit, expected):
    run_search(SearchSpace(N, C), HiddenTarget(), SearchConfig(**{**CONFIG, "generations": 1}), tmp_path)
    path = tmp_path / "search_state.json"
    state = json.loads(path.read_text())
    edit(state)
    path.write_text(json.dumps(state))
    with pytest.raises(ModuleNetError, match=expected) as info:
        run_search(SearchSpace(N, C), HiddenTarget(), SearchConfig(**CONFIG), tmp_path, resume=True)
    assert "\n" not in str(info.value) and str(info.value).startswith(f"cannot resume {tmp_path}")


def test_one_search_per_run_directory_and_a_dead_holder_is_taken_over(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        evaluate = HiddenTarget()
        with pytest.raises(
            ModuleNetError,
            match=rf"{tmp_path} is in use by pid {holder.pid} on .*: one search per "
            r"run directory",
        ) as info:
            run_search(SearchSpace(N, C), evaluate, SearchConfig(**CONFIG), tmp_path)
        assert "\n" not in str(info.value) and evaluate.calls == []  # refused before any work
        assert not (tmp_path / "search_state.json").exists()
    finally:
        holder.send_signal(signal.SIGKILL)  # a killed holder leaves its lock file behind
        holder.wait()
    assert (tmp_path / "run.lock").is_file()
    result = run_search(SearchSpace(N, C), HiddenTarget(), SearchConfig(**CONFIG), tmp_path)
    assert len(result.history) == CONFIG["generations"]
    with hold(tmp_path), hold(tmp_path):  # re-entrant within one process
        pass


def test_concurrent_atomic_writes_never_share_a_temporary_file(tmp_path):
    path, errors = tmp_path / "search_state.json", []
    texts = [json.dumps({"writer": i, "pad": "x" * 5000}) for i in range(6)]

    def writer(text):
        try:
            for _ in range(150):
                write_atomic(path, text)
        except Exception as err:  # the old shared ".tmp" name failed here with FileNotFoundError
            errors.append(err)

    threads = [threading.Thread(target=writer, args=(t,)) for t in texts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert path.read_text() in texts
    assert [p.name for p in tmp_path.iterdir()] == ["search_state.json"]  # no temporary file left


WRITER = """
import json, sys
from modulenet.rundir import write_atomic
i = 0
while True:
    i += 1
    write_atomic(sys.argv[1], json.dumps({"i": i, "rows": [list(range(50))] * 400}))
"""


def test_a_writer_killed_at_any_moment_leaves_a_whole_file(tmp_path):
    path = tmp_path / "finetune.json"
    for delay in (0.35, 0.5, 0.65, 0.8):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)])
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if path.exists():  # the interpreter may not have written yet
            assert json.loads(path.read_text())["rows"]


def evaluation(code) -> Evaluation:
    return Evaluation(genotype=code, score=0.5, err_val=0.4, l_rate=0.1, sim=0.2)


def test_a_torn_memo_line_is_set_aside_before_the_next_append(tmp_path):
    path = tmp_path / "evaluations.jsonl"
    memo = EvaluationMemo(path, "fp")
    memo.put(evaluation((0, 1, 2)))
    with path.open("a") as f:  # a kill in the middle of the next write
        f.write('{"fingerprint": "fp", "evaluation": {"genotype": [2, 2')
    memo = EvaluationMemo(path, "fp")
    assert len(memo) == 1
    memo.put(evaluation((1, 1, 1)))
    lines = path.read_text().splitlines()
    assert [json.loads(line)["evaluation"]["genotype"] for line in lines] == [[0, 1, 2], [1, 1, 1]]
    assert (tmp_path / "evaluations.jsonl.torn").read_text().startswith('{"fingerprint": "fp", "evaluation": {"gen')
    assert len(EvaluationMemo(path, "fp")) == 2


def test_evaluation_leaves_the_global_generators_alone(tmp_path):
    from conftest import evaluator_settings as settings

    from modulenet.evaluation.evaluator import Evaluator
    from modulenet.knowledge import build_knowledge_base

    kb = build_knowledge_base(["resnet_cifar8", "vgg_cifar"], progress=False)
    g = torch.Generator().manual_seed(5)
    x, y = torch.randn(96, 3, 32, 32, generator=g), torch.randint(0, 3, (96,), generator=g)
    data = (x[:64], y[:64], x[64:], y[64:])
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    states = random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state()
    results = []
    for options in (dict(stack_individuals=2), dict(cache_features=False)):  # stacked and plain ways
        evaluator = Evaluator(kb, data, 3, settings(epochs=1, dropout=0.2, **options), progress=False)
        results.append(evaluator([(0, 1, 0), (1, 1, 1)]))
    assert random.getstate() == states[0]
    assert np.array_equal(np.random.get_state()[1], states[1])
    assert torch.equal(torch.get_rng_state(), states[2])
    torch.manual_seed(99)  # another global state: the same results, each individual seeds its own
    again = Evaluator(kb, data, 3, settings(epochs=1, dropout=0.2, stack_individuals=2), progress=False)
    assert [r.epoch_losses for r in again([(0, 1, 0), (1, 1, 1)])] == [r.epoch_losses for r in results[0]]


# --------------------------------------------------------------------------- same seed, same search (real evaluators)

SEARCH = dict(generations=3, population_size=4, seed=5, mutation_prob=0.6)


@pytest.fixture(scope="module")
def real_search():
    """A real knowledge base and data, and a search with the local evaluator: the reference."""
    from modulenet.knowledge import build_knowledge_base

    torch.manual_seed(0)
    kb = build_knowledge_base(["resnet_cifar8", "vgg_cifar", "allconv_cifar"], progress=False)
    g = torch.Generator().manual_seed(2)
    y = torch.randint(0, 3, (160,), generator=g)
    x = torch.randn(160, 3, 32, 32, generator=g) * 0.5
    x[torch.arange(160), y] += 1.0
    data = (x[:112], y[:112], x[112:], y[112:])
    return kb, data


def search_with(real_search, run_dir, name="local", resume=False, generations=SEARCH["generations"], **options):
    """The search with a real evaluator; returns it and how many genotypes were trained (memo lines added)."""
    from conftest import evaluator_settings as settings

    from modulenet.evaluation.evaluator import make_evaluator

    kb, data = real_search
    memo = run_dir / "evaluations.jsonl"
    before = len(memo.read_text().splitlines()) if memo.is_file() else 0
    evaluator = make_evaluator(
        name, kb, data, 3, settings(epochs=2, hidden=[32, 32]), progress=False, memo_path=memo, **options
    )
    try:
        result = run_search(
            kb, evaluator, SearchConfig(**{**SEARCH, "generations": generations}), run_dir, resume=resume
        )
    finally:
        evaluator.close()
    return result, len(memo.read_text().splitlines()) - before


@pytest.fixture(scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a worker: the same float sums, so the same scores and ranking
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def reference(real_search, tmp_path_factory, one_thread):
    run_dir = tmp_path_factory.mktemp("fresh")
    result, trained = search_with(real_search, run_dir)
    assert trained == len(result.evaluations) > SEARCH["population_size"]
    return result, run_dir


def test_same_search_fresh_memoised_and_resumed(real_search, reference, tmp_path):
    import shutil

    reference, reference_dir = reference
    # Memoised: every genotype answered from a memo, nothing trained (before, only training reseeded).
    (tmp_path / "memo").mkdir()
    shutil.copy(reference_dir / "evaluations.jsonl", tmp_path / "memo" / "evaluations.jsonl")
    memoised, trained = search_with(real_search, tmp_path / "memo")
    assert trained == 0 and summary(memoised) == summary(reference)
    # Resumed after a kill between generation 3's evaluations and its checkpoint: the memo answers
    # what was evaluated, the search's generator comes from the generation-2 checkpoint.
    run = tmp_path / "resumed"
    search_with(real_search, run, generations=2)
    saved = (run / "search_state.json").read_text()
    search_with(real_search, run, resume=True)
    (run / "search_state.json").write_text(saved)
    resumed, trained = search_with(real_search, run, resume=True)
    assert trained == 0 and summary(resumed) == summary(reference)


@pytest.mark.slow  # make test-all; make test has tests/evaluation/test_dispatch.py's workers-equal-local test
def test_same_search_with_worker_processes(real_search, reference, tmp_path):
    result, trained = search_with(real_search, tmp_path, name="gpus", num_workers=2)
    assert trained == len(result.evaluations) and summary(result) == summary(reference[0])


@pytest.mark.slow  # make test-all: a local Ray cluster's start-up (about 12 s); keeps make test under 5 minutes
def test_same_search_with_ray(real_search, reference, tmp_path):
    ray = pytest.importorskip("ray")
    try:
        result, trained = search_with(real_search, tmp_path, name="ray", num_workers=2)
    finally:
        ray.shutdown()
    assert trained == len(result.evaluations) and summary(result) == summary(reference[0])


def test_a_search_killed_before_its_first_checkpoint_resumes_from_its_memo(tmp_path):
    """Issue 25: `resume=` a run that has its config and memo but no search_state.json yet starts at
    generation 1 in that directory, gets every finished evaluation back from the memo, and ends
    with the populations of an uninterrupted run of the same seed."""
    from conftest import TINY_DATA, TINY_SEARCH, compose_search

    from modulenet import rundir
    from modulenet.app.jobs import search_job
    from modulenet.rundir import read_results

    overrides = [*TINY_DATA, *TINY_SEARCH]
    search_job(compose_search(overrides), tmp_path / "whole")
    killed = tmp_path / "killed"
    search_job(compose_search(overrides), killed)
    (killed / rundir.STATE).unlink()  # as if killed after its evaluations, before the checkpoint
    (killed / rundir.RESULTS).unlink()
    (killed / rundir.CONFIG).write_text("seed: 0\n")
    memo_lines = len((killed / rundir.MEMO).read_text().splitlines())
    search_job(compose_search([*overrides, f"resume={killed}"]), tmp_path / "again")
    whole, resumed = read_results(tmp_path / "whole"), read_results(killed)
    assert resumed["populations"] == whole["populations"] and resumed["best"]["genotype"] == whole["best"]["genotype"]
    assert len((killed / rundir.MEMO).read_text().splitlines()) == memo_lines  # nothing trained twice
