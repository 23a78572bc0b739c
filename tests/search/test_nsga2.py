"""The NSGA-II search loop (Algorithm 1, lines 7-18) with real DEAP and a cheap real objective."""

from __future__ import annotations

import csv
import json
import random
import subprocess
import sys

import numpy as np
import pytest
from conftest import BETA, NAMES, TARGET, C, HiddenTarget, N
from deap import creator

from modulenet.errors import ModuleNetError
from modulenet.genotype import format_genotype
from modulenet.search import SearchCallback, SearchConfig, SearchProgress, SearchSpace, new_survival, run_search
from modulenet.search.records import Evaluation
from modulenet.search.score import similarity


class Recorder(SearchCallback):
    def __init__(self):
        self.generations, self.ended = [], None

    def on_generation_end(self, generation, record, population, evaluations):
        self.generations.append((generation, record, population, len(evaluations)))

    def on_search_end(self, result):
        self.ended = result


@pytest.fixture(scope="module")
def optimum_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("search")
    evaluate, recorder = HiddenTarget(), Recorder()
    config = SearchConfig(generations=15, population_size=20, seed=3)
    result = run_search(SearchSpace(N, C, NAMES), evaluate, config, run_dir, callbacks=[recorder])
    return result, evaluate, recorder, run_dir


def test_creator_classes_exist_at_import():
    for k in (1, 2, 3):
        assert getattr(creator, f"FitnessMin{k}").weights == (-1.0,) * k
        individual = getattr(creator, f"Individual{k}")
        assert issubclass(individual, list) and individual().fitness.weights == (-1.0,) * k


def test_import_does_not_import_torch():
    code = "import modulenet.search, sys; assert 'torch' not in sys.modules, 'torch was imported'"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_new_survival_counts_distinct_genotypes_not_in_previous_population():
    prev = [(0, 0, 1), (0, 1, 1), (2, 2, 2)]
    pop = [(0, 0, 1), (2, 2, 2), (1, 1, 1), (1, 1, 1), [3, 0, 0]]
    assert new_survival(prev, pop) == 2  # (1,1,1) counted once, lists compare like tuples
    assert new_survival(prev, prev) == 0
    assert new_survival([], pop) == 4  # generation 1: every distinct genotype is new


def test_search_finds_the_optimum_and_improves(optimum_run):
    result, _, _, _ = optimum_run
    assert result.best.genotype == TARGET
    assert result.best.score == pytest.approx(BETA * similarity(TARGET))
    first, last = result.history[0], result.history[-1]
    assert last["min"] <= first["min"] and last["mean"] < first["mean"]
    best_so_far = [row["best_score"] for row in result.history]
    assert best_so_far == sorted(best_so_far, reverse=True)
    assert [row["generation"] for row in result.history] == list(range(1, 16))
    assert result.history[-1]["best_genotype"] == list(TARGET)
    assert result.population[0].genotype == TARGET  # elitism keeps it, selNSGA2 ranks it first


def test_population_size_bounds_and_no_genotype_requested_twice(optimum_run):
    result, evaluate, recorder, _ = optimum_run
    assert len(result.population) == 20
    requested = evaluate.requested
    assert len(requested) == len(set(requested)) == len(result.evaluations)
    assert all(len(g) == C and all(0 <= i < N for i in g) for g in requested)
    assert [e.genotype for e in result.evaluations] == requested
    assert len(evaluate.calls[0]) == len(set(evaluate.calls[0])) <= 20  # the initial population
    assert sum(row["evaluated"] for row in result.history) == len(requested)
    assert result.history[0]["new_survival"] == len(evaluate.calls[0])
    # The callbacks saw every generation and the end.
    assert [g for g, *_ in recorder.generations] == list(range(1, 16))
    assert recorder.generations[-1][2] == [e.genotype for e in result.population]
    assert recorder.ended is not None and recorder.ended.best.genotype == TARGET


def test_outputs(optimum_run):
    result, _, _, run_dir = optimum_run
    results = json.loads((run_dir / "results.json").read_text())
    assert set(results) >= {"best", "history", "population", "config", "search_space_size"}
    assert results["search_space_size"] == N**C
    assert results["config"]["population_size"] == 20
    best = results["best"]
    assert best["genotype"] == list(TARGET) and best["genotype_str"] == format_genotype(TARGET)
    assert best["arch_names"] == [NAMES[i] for i in TARGET]
    assert {"score", "err_val", "l_rate", "sim"} <= set(best)
    assert len(results["population"]) == 20 and results["history"] == result.history
    with open(run_dir / "evaluations.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(result.evaluations)
    assert rows[0]["generation"] == "1" and rows[-1]["architecture"].count("+") == C - 1
    assert {row["genotype"] for row in rows} == {format_genotype(e.genotype) for e in result.evaluations}
    png = (run_dir / "search_curves.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 1000
    state = json.loads((run_dir / "search_state.json").read_text())
    assert state["generation"] == 15 and len(state["population"]) == 20
    assert set(state["rng"]) == {"search"}  # the search's own generator, nothing process-wide


def test_one_generation_evaluates_the_initial_population_only(tmp_path):
    evaluate = HiddenTarget()
    result = run_search(SearchSpace(N, C), evaluate, SearchConfig(generations=1, population_size=12), tmp_path)
    assert len(evaluate.calls) == 1 and len(result.history) == 1
    assert len(result.population) == 12
    assert result.history[0]["new_survival"] == len(set(evaluate.calls[0]))


def _summary(result):
    return ([e.genotype for e in result.population], result.history, [e.genotype for e in result.evaluations])


def test_resume_gives_the_same_run_as_an_uninterrupted_one(tmp_path, capsys):
    # p_size 10 is not a multiple of 4: the tournament draws in several calls.
    config = dict(population_size=10, seed=7, mutation_prob=0.5)
    straight = run_search(
        SearchSpace(N, C), HiddenTarget(), SearchConfig(generations=4, **config), tmp_path / "straight"
    )

    run_search(SearchSpace(N, C), HiddenTarget(), SearchConfig(generations=2, **config), tmp_path / "split")
    random.seed(999)  # whatever ran in between must not matter: the checkpoint restores the RNGs
    np.random.seed(999)
    evaluate, recorder = HiddenTarget(), Recorder()
    resumed = run_search(
        SearchSpace(N, C),
        evaluate,
        SearchConfig(generations=4, **config),
        tmp_path / "split",
        callbacks=[recorder, SearchProgress()],
        resume=True,
    )
    assert _summary(resumed) == _summary(straight)
    assert [g for g, *_ in recorder.generations] == [3, 4]
    bar = capsys.readouterr().err  # the bar starts where the checkpoint stopped
    assert (
        "search:  50%|" in bar
        and " 2/4 " in bar
        and bar.rstrip().endswith(f"best={resumed.best.score:.4f}, new={resumed.history[-1]['new_survival']}]")
    )
    assert not set(evaluate.requested) & {e.genotype for e in resumed.evaluations[: _evaluated(resumed, 2)]}

    # Already at generation 4: nothing is evaluated, the outputs are rewritten.
    (tmp_path / "split" / "search_curves.png").unlink()
    again = run_search(
        SearchSpace(N, C),
        HiddenTarget(fail_first_gene=-1),
        SearchConfig(generations=4, **config),
        tmp_path / "split",
        resume=True,
    )
    assert _summary(again) == _summary(straight)
    assert (tmp_path / "split" / "search_curves.png").is_file()


def test_a_search_that_stops_with_an_error_closes_its_progress_bar(tmp_path, capsys):
    """The bar ends its line before the error is reported, as the callbacks hear of the error."""

    class Breaks(HiddenTarget):
        def __call__(self, genotypes):
            if self.calls:
                raise ModuleNetError("the evaluator broke")
            return super().__call__(genotypes)

    class Heard(SearchCallback):
        error = None

        def on_exception(self, error):
            self.error = error

    progress, heard = SearchProgress(), Heard()
    with pytest.raises(ModuleNetError, match="the evaluator broke"):
        run_search(SearchSpace(N, C), Breaks(), SearchConfig(generations=3), tmp_path, [progress, heard])
    assert str(heard.error) == "the evaluator broke"
    assert progress.bar.disable and capsys.readouterr().err.endswith("\n")


def _evaluated(result, generations: int) -> int:
    return sum(row["evaluated"] for row in result.history[:generations])


def test_resume_from_a_directory_that_is_not_a_search_run(tmp_path):
    with pytest.raises(ModuleNetError, match="is not a search run: it has no search_state.json"):
        run_search(SearchSpace(N, C), HiddenTarget(), SearchConfig(), tmp_path, resume=True)
    (tmp_path / "search_state.json").write_text("{not json")
    with pytest.raises(ModuleNetError, match="is not a search run: its search_state.json is unreadable"):
        run_search(SearchSpace(N, C), HiddenTarget(), SearchConfig(), tmp_path, resume=True)


def test_resume_with_a_different_population_size_is_refused(tmp_path):
    run_search(SearchSpace(N, C), HiddenTarget(), SearchConfig(generations=1, population_size=4), tmp_path)
    with pytest.raises(ModuleNetError, match="population_size=6 but the stored run has population_size=4"):
        run_search(
            SearchSpace(N, C), HiddenTarget(), SearchConfig(generations=2, population_size=6), tmp_path, resume=True
        )


@pytest.mark.parametrize("objectives", [["score", "params"], ["score", "params", "flops"]])
def test_multi_objective_search(tmp_path, objectives):
    evaluate = HiddenTarget()
    config = SearchConfig(generations=4, population_size=12, objectives=objectives)
    result = run_search(SearchSpace(N, C), evaluate, config, tmp_path)
    assert len(result.population) == 12
    assert len(evaluate.requested) == len(set(evaluate.requested))
    state = json.loads((tmp_path / "search_state.json").read_text())
    by_genotype = {e.genotype: e for e in result.evaluations}
    for row in state["population"]:
        e = by_genotype[tuple(row["genotype"])]
        assert row["fitness"] == [float(getattr(e, name)) for name in objectives]
    # A trade-off survives: the smallest individual is not the best-scoring one.
    best, smallest = min(result.population, key=lambda e: e.score), min(result.population, key=lambda e: e.params)
    assert smallest.params < best.params and smallest.score > best.score


@pytest.mark.parametrize("population_size, num_cells", [(2, 1), (3, 2), (6, 3)])
def test_small_populations_and_short_genotypes(tmp_path, population_size, num_cells):
    def evaluate(genotypes):
        return [
            Evaluation(genotype=g, score=float(sum(g)), err_val=0.0, l_rate=0.0, sim=similarity(g)) for g in genotypes
        ]

    config = SearchConfig(generations=3, population_size=population_size, mutation_prob=1.0)
    result = run_search(SearchSpace(3, num_cells), evaluate, config, tmp_path)
    assert len(result.population) == population_size
    assert all(len(e.genotype) == num_cells for e in result.population)


def test_failed_individuals_are_kept_out_of_the_statistics(tmp_path):
    evaluate = HiddenTarget(fail_first_gene=0)
    result = run_search(SearchSpace(N, C), evaluate, SearchConfig(generations=5, population_size=12, seed=1), tmp_path)
    assert any(e.status == "failed" for e in result.evaluations)
    assert all(e.status == "ok" for e in result.population)  # WORST_SCORE loses every comparison
    assert all(row["max"] <= 1.0 + BETA for row in result.history)  # the worst ok score, not WORST_SCORE
    assert result.history[0]["failed"] > 0


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(generations=0), r"search.generations=0 must be >= 1"),
        (dict(population_size=1), r"search.population_size=1 must be >= 2"),
        (dict(crossover_prob=1.5), r"search.crossover_prob=1.5 must be a probability"),
        (dict(mutation_prob=-0.1), r"search.mutation_prob=-0.1 must be a probability"),
        (dict(mutation_indpb=2), r"search.mutation_indpb=2 must be a probability"),
        (
            dict(objectives=["score", "latency"]),
            r"unknown search objective 'latency'; valid objectives are "
            r"\['score', 'params', 'flops'\]",
        ),
        (dict(objectives=[]), r"search.objectives is empty"),
        (dict(objectives=["score", "score"]), r"names an objective twice"),
    ],
)
def test_bad_config_values_are_named(tmp_path, change, message):
    evaluate = HiddenTarget()
    with pytest.raises(ModuleNetError, match=message) as info:
        run_search(SearchSpace(N, C), evaluate, SearchConfig(**change), tmp_path)
    assert "\n" not in str(info.value) and evaluate.calls == []


MY_SEARCH = """
from deap import tools

from modulenet.search import SearchConfig


def all_zero(individual):
    individual[:] = [0] * len(individual)
    return (individual,)


class ZeroMutation(SearchConfig):  # your own operators: the toolbox, overridden
    def toolbox(self, num_archs, num_cells):
        toolbox = super().toolbox(num_archs, num_cells)
        toolbox.register("mutate", all_zero)
        return toolbox
"""


def test_search_target_builds_your_own_search_class_from_the_command_line(tmp_path, monkeypatch):
    from conftest import compose_search

    from modulenet.app.bundle import SearchBundle

    def search_config(cfg):
        return SearchBundle.resolve(cfg).search

    (tmp_path / "my_search.py").write_text(MY_SEARCH)
    monkeypatch.syspath_prepend(str(tmp_path))
    overrides = ["search.generations=3", "search.population_size=8", "search.crossover_prob=0", "seed=7"]
    assert search_config(compose_search(overrides)).seed == 7  # the search's generator follows the run's seed
    config = search_config(
        compose_search([*overrides, "search._target_=my_search.ZeroMutation", "search.mutation_prob=1"])
    )
    assert type(config).__name__ == "ZeroMutation" and config.seed == 7
    evaluate = HiddenTarget()
    run_search(SearchSpace(N, C), evaluate, config, tmp_path / "run")
    first, *later = evaluate.calls
    assert len(set(first)) > 1 and later  # a random initial population, then only mutants of all zeros
    assert all(call == [] or set(call) == {(0,) * C} for call in later)


def test_a_new_objective_is_one_registration(monkeypatch, tmp_path):
    """Issue 32 (docs/layout.md): an objective is a name and how an Evaluation gives it."""
    from operator import attrgetter

    from modulenet.search.individual import OBJECTIVES

    monkeypatch.setitem(OBJECTIVES._entries, "seconds", attrgetter("seconds"))
    evaluate = HiddenTarget()
    result = run_search(
        SearchSpace(N, C),
        evaluate,
        SearchConfig(generations=2, population_size=8, objectives=["score", "seconds"]),
        tmp_path,
    )
    assert result.objectives == ("score", "seconds")
    with pytest.raises(
        ModuleNetError,
        match=r"unknown search objective 'latency'; valid objectives are \['score', 'params', 'flops', 'seconds'\]",
    ):
        SearchConfig(objectives=["score", "latency"]).toolbox(N, C)
