"""The evolutionary search of Algorithm 1, lines 7-18: NSGA-II (DEAP) over genotypes.

This room knows genotypes and their `Evaluation`s only; building and training architectures
is the `evaluate` callable's job, so the module imports no torch. The search draws from its own
generator (`random.Random(seed)`, see rng.py), never from state that evaluation touches, so the
same seed gives the same search whether genotypes are trained, answered from the memo, resumed
or evaluated elsewhere. Every generation leaves a JSON checkpoint (`search_state.json`, the
generator's state included) from which `resume=True` continues exactly as if the run had never
stopped, plus `results.json` and `evaluations.csv`.
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
from deap import base, tools
from tqdm.auto import tqdm

from modulenet import rundir
from modulenet.errors import ModuleNetError
from modulenet.genotype import Genotype, format_genotype
from modulenet.rng import drawing_from
from modulenet.rundir import hold
from modulenet.search.individual import OBJECTIVES
from modulenet.search.outputs import plot_front, plot_search_curves, write_evaluations_csv, write_results
from modulenet.search.records import WORST_SCORE, Evaluation
from modulenet.search.score import new_survival
from modulenet.search.state import SearchState, load_state, save_state
from modulenet.search.toolbox import SearchConfig

log = logging.getLogger(__name__)


class Space(Protocol):
    """The n^c genotypes a search explores (Sec. III-B): a `KnowledgeBase` is one, a
    `SearchSpace` is one without weights."""

    num_archs: int
    num_cells: int
    arch_names: list[str] | None


@dataclass(frozen=True)
class SearchSpace:
    """n architectures cut into c cells, optionally named (for results.json and the CSV)."""

    num_archs: int
    num_cells: int
    arch_names: list[str] | None = None


class SearchCallback:
    """Hooks for trackers (W&B, CSV) and the progress bar; every method is a no-op by default."""

    def on_search_start(self, generation: int, generations: int) -> None:
        """Before the first generation of this call; `generation` > 0 when a run is resumed."""

    def on_exception(self, error: BaseException) -> None:
        """The search stopped with `error` (it is raised again after the callbacks)."""

    def on_generation_end(self, generation: int, record: dict, population: list[tuple], evaluations: dict) -> None:
        """After generation `generation` is selected and checkpointed. `record` is its history row,
        `population` its genotypes, `evaluations` genotype -> Evaluation so far (a copy)."""

    def on_search_end(self, result: SearchResult) -> None:
        """After the outputs are written."""


@dataclass
class SearchResult:
    best: Evaluation  # lowest score evaluated in the run
    history: list[dict]  # one row per generation (see `run_search`)
    population: list[Evaluation]  # the final population, pop_final of Algorithm 1
    evaluations: list[Evaluation]  # everything evaluated in the run, in evaluation order
    objectives: tuple[str, ...] = ("score",)  # what NSGA-II minimised


def objective_values(evaluation: Evaluation, objectives: Sequence[str]) -> tuple[float, ...]:
    """The fitness of an individual, in the order of `objectives`. A failed individual is worst
    in every objective: with a params or flops objective its zero size would otherwise make it
    Pareto-optimal."""
    if evaluation.status != "ok":
        return (WORST_SCORE,) * len(objectives)
    return tuple(float(OBJECTIVES.get(name)(evaluation)) for name in objectives)


# --------------------------------------------------------------------------- variation


def vary(parents: list, toolbox: base.Toolbox, config: SearchConfig) -> list:
    """Line 14: clones of the parents, crossed pairwise and mutated; changed ones lose their fitness."""
    offspring = [toolbox.clone(ind) for ind in parents]
    if hasattr(toolbox, "mate"):
        for child1, child2 in zip(offspring[::2], offspring[1::2]):
            if random.random() < config.crossover_prob:
                toolbox.mate(child1, child2)
                del child1.fitness.values, child2.fitness.values
    for child in offspring:
        if random.random() < config.mutation_prob:
            toolbox.mutate(child)
            del child.fitness.values
    return offspring


# --------------------------------------------------------------------------- the loop


class SearchProgress(SearchCallback):
    """A tqdm bar over the generations, with the best score and new survival so far."""

    bar: tqdm | None = None

    def on_search_start(self, generation: int, generations: int) -> None:
        self.bar = tqdm(total=generations, initial=generation, desc="search", unit="gen")

    def on_generation_end(self, generation: int, record: dict, population: list[tuple], evaluations: dict) -> None:
        self.bar.set_postfix(best=f"{record['best_score']:.4f}", new=record["new_survival"], refresh=False)
        self.bar.update(1)

    def on_search_end(self, result: SearchResult) -> None:
        self.bar.close()

    def on_exception(self, error: BaseException) -> None:
        if self.bar is not None:  # the error's one line goes below the bar, not onto it
            self.bar.close()


def run_search(
    space: Space,
    evaluate: Callable[[list[Genotype]], list[Evaluation]],
    config: SearchConfig,
    run_dir: str | os.PathLike,
    callbacks: Sequence[SearchCallback] = (),
    resume: bool = False,
    depends_on: dict | None = None,
) -> SearchResult:
    """Algorithm 1, lines 7-18: NSGA-II for `config.generations` generations over the n^c
    genotypes of `space` (the knowledge base, or a `SearchSpace`).

    `evaluate` gets each generation's not-yet-evaluated genotypes (distinct) and returns one
    `Evaluation` per genotype, in order. History rows hold `generation`, `evaluated` (new
    evaluations), `new_survival` (Sec. V-B), `min`/`mean`/`max` score over the population's
    successful individuals (failures are counted in `failed`), `best_score` and `best_genotype`
    (lowest score evaluated so far). `resume=True` continues `run_dir`'s checkpoint up to
    `config.generations`. Outputs: results.json, evaluations.csv, search_curves.png. A progress
    bar is a callback (`SearchProgress`), as in Lightning.

    `depends_on`: what the evaluations depend on (knowledge base, weights, connection, dataset,
    evaluation settings), stored in the checkpoint; a resume with anything different is refused,
    naming it. The run directory is held by this search while it runs (`rundir.hold`).
    """
    config.validate()
    n, c = space.num_archs, space.num_cells
    if n < 1 or c < 1:
        raise ModuleNetError(f"a search needs n >= 1 architectures and c >= 1 cells, got n={n}, c={c}")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    with hold(run_dir):
        run = load_state(run_dir, config, n, c, depends_on) if resume else SearchState(config, n, c, depends_on)
        outputs = _Outputs(run_dir, space.arch_names, callbacks)
        try:
            _evolve(run, evaluate, outputs)
            return _finish(run, outputs)
        except BaseException as error:
            for callback in callbacks:
                callback.on_exception(error)
            raise


@dataclass
class _Outputs:
    """Where each generation goes: the run directory's files and the callbacks."""

    run_dir: Path
    arch_names: list[str] | None
    callbacks: Sequence[SearchCallback]

    def write(self, run: SearchState) -> None:
        write_results(self.run_dir, run, self.arch_names)
        write_evaluations_csv(self.run_dir, run, self.arch_names)


def _evolve(run: SearchState, evaluate: Callable, outputs: _Outputs) -> None:
    """Generations until `config.generations`, each checkpointed and written as it ends."""
    config = run.config
    toolbox = config.toolbox(run.num_archs, run.num_cells)
    stats = tools.Statistics(key=lambda ind: run.evaluations[tuple(ind)].score)
    stats.register("min", _ok_stat(np.min))
    stats.register("mean", _ok_stat(np.mean))
    stats.register("max", _ok_stat(np.max))
    for callback in outputs.callbacks:
        callback.on_search_start(min(run.generation, config.generations), config.generations)
    while run.generation < config.generations:
        previous = [tuple(ind) for ind in run.population]
        evaluated = _generation(run, toolbox, evaluate)
        run.generation += 1
        run.populations.append([tuple(ind) for ind in run.population])
        record = _record(run, stats, previous, evaluated)
        save_state(outputs.run_dir, run)
        outputs.write(run)
        _log_generation(run, record)
        for callback in outputs.callbacks:
            callback.on_generation_end(
                run.generation, dict(record), [tuple(ind) for ind in run.population], dict(run.evaluations)
            )


def _generation(run: SearchState, toolbox: base.Toolbox, evaluate: Callable) -> int:
    """One generation of Algorithm 1; returns how many genotypes it evaluated."""
    config = run.config
    if run.generation == 0:
        # Lines 8-11: the initial population, evaluated.
        with drawing_from(run.rng):
            run.population = toolbox.population(n=config.population_size)
        for ind, code in zip(run.population, config.initial_genotypes):
            ind[:] = list(code)
        evaluated = _evaluate(run.population, run, evaluate, generation=1)
        # selNSGA2 assigns the crowding distances that the first tournament needs.
        with drawing_from(run.rng):
            run.population = toolbox.select(run.population, len(run.population))
        return evaluated
    # Lines 14-18: mate, evaluate the new individuals, select from pop + new.
    with drawing_from(run.rng):
        parents = toolbox.parents(run.population, config.population_size)
        offspring = vary(parents, toolbox, config)
    evaluated = _evaluate(offspring, run, evaluate, generation=run.generation + 1)
    with drawing_from(run.rng):
        run.population = toolbox.select(run.population + offspring, config.population_size)
    return evaluated


def _log_generation(run: SearchState, record: dict) -> None:
    log.info(
        "generation %d/%d: evaluated %d, new survival %d, score min %.4f mean %.4f max %.4f, best %.4f (%s)",
        run.generation,
        run.config.generations,
        record["evaluated"],
        record["new_survival"],
        record["min"],
        record["mean"],
        record["max"],
        record["best_score"],
        format_genotype(record["best_genotype"]),
    )


def _finish(run: SearchState, outputs: _Outputs) -> SearchResult:
    """The final outputs (results, evaluations, curves, the front) and the result."""
    outputs.write(run)
    plot_search_curves(run.history, outputs.run_dir / rundir.CURVES)
    result = SearchResult(
        best=run.best(),
        history=run.history,
        population=[run.evaluations[tuple(ind)] for ind in run.population],
        evaluations=list(run.evaluations.values()),
        objectives=tuple(run.config.objectives),
    )
    if len(result.objectives) > 1:
        plot_front(result.population, list(result.objectives), outputs.run_dir / rundir.FRONT)
    for callback in outputs.callbacks:
        callback.on_search_end(result)
    return result


def _evaluate(individuals: list, run: SearchState, evaluate: Callable, generation: int) -> int:
    """Lines 11 and 16: fitness for the individuals that lack one. Genotypes evaluated earlier in
    the run are looked up, not requested again; returns how many were requested."""
    wanted = []
    for ind in individuals:
        code = tuple(ind)
        if not ind.fitness.valid and code not in run.evaluations and code not in wanted:
            wanted.append(code)
    if wanted:
        results = list(evaluate(list(wanted)))
        if len(results) != len(wanted):
            raise ModuleNetError(f"evaluate returned {len(results)} evaluations for {len(wanted)} genotypes")
        for code, evaluation in zip(wanted, results):
            if tuple(evaluation.genotype) != code:
                raise ModuleNetError(
                    f"evaluate returned genotype {format_genotype(evaluation.genotype)} "
                    f"where {format_genotype(code)} was asked for (answers must keep the order)"
                )
            run.evaluations[code] = evaluation
            run.first_generation[code] = generation
    for ind in individuals:
        if not ind.fitness.valid:
            ind.fitness.values = objective_values(run.evaluations[tuple(ind)], run.config.objectives)
    return len(wanted)


def _ok_stat(function: Callable) -> Callable:
    """A statistic over the successful individuals only: a failure's WORST_SCORE would swamp the
    mean and flatten the curves. WORST_SCORE when every individual failed."""

    def stat(values):
        ok = [v for v in values if v < WORST_SCORE]
        return float(function(ok)) if ok else WORST_SCORE

    return stat


def _record(run: SearchState, stats: tools.Statistics, previous: list[tuple], evaluated: int) -> dict:
    best = run.best()
    population = [tuple(ind) for ind in run.population]
    run.logbook.record(
        generation=run.generation,
        evaluated=evaluated,
        new_survival=new_survival(previous, population),
        failed=sum(run.evaluations[g].status != "ok" for g in population),
        **stats.compile(run.population),
        best_score=float(best.score),
        best_genotype=list(best.genotype),
    )
    return dict(run.logbook[-1])
