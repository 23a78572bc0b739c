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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from deap import base, creator, tools
from tqdm.auto import tqdm

from modulenet import rundir
from modulenet.errors import ModuleNetError
from modulenet.genotype import Genotype, format_genotype
from modulenet.records import WORST_SCORE, Evaluation
from modulenet.rng import drawing_from
from modulenet.rundir import hold
from modulenet.score import new_survival
from modulenet.search_outputs import plot_search_curves, write_evaluations_csv, write_results
from modulenet.search_state import SearchState, load_state, save_state

log = logging.getLogger(__name__)

OBJECTIVES = ("score", "params", "flops")  # all minimised

# Created at import time, not inside run_search: pickled individuals sent to worker processes
# are rebuilt there by name, which fails ("Can't get attribute 'Individual1' on deap.creator")
# unless importing this module has already created the classes. One pair per objective count.
for _k in range(1, len(OBJECTIVES) + 1):
    if not hasattr(creator, f"FitnessMin{_k}"):
        creator.create(f"FitnessMin{_k}", base.Fitness, weights=(-1.0,) * _k)
    if not hasattr(creator, f"Individual{_k}"):
        creator.create(f"Individual{_k}", list, fitness=getattr(creator, f"FitnessMin{_k}"))


def individual_class(num_objectives: int) -> type:
    """`creator.Individual<k>`: a list of genes with a k-objective minimising fitness."""
    return getattr(creator, f"Individual{num_objectives}")


@dataclass
class SearchConfig:
    """The `search` group (conf/search/nsga2.yaml, `_target_`): NSGA-II (Algorithm 1) and what the
    paper sets beside it (Sec. IV: gen = 30, p_size = 40, 20 classifier epochs, alpha = beta = 25).
    Yours: `search._target_=mypkg.MySearch`, a subclass; `toolbox` is where operators change."""

    generations: int = 30  # gen, counting the initial population as generation 1
    population_size: int = 40  # p_size
    crossover_prob: float = 0.9
    mutation_prob: float = 0.3  # probability that an offspring is mutated
    mutation_indpb: float = 0.2  # per-gene probability inside mutUniformInt
    objectives: list[str] = field(default_factory=lambda: ["score"])  # subset of OBJECTIVES, minimised
    # Genotypes placed in the initial population before the random ones (e.g. the originals [i] * c),
    # as tuples; the app parses what the config gives ("012" or [0, 1, 2]) with the knowledge base.
    initial_genotypes: list[Any] = field(default_factory=list)
    # The score's weights (Eq. 4) and the classifier's epochs: the evaluation's, set with the search's.
    alpha: float = 25.0
    beta: float = 25.0
    epochs: int = 20
    seed: int = 0  # the search's own generator (the app's: the run's `seed`)

    def __post_init__(self) -> None:
        self.validate()

    def toolbox(self, num_archs: int, num_cells: int) -> base.Toolbox:
        """The operators of Algorithm 1 (`make_toolbox`); a subclass may register others."""
        return make_toolbox(num_archs, num_cells, self)

    def validate(self) -> None:
        """One-line ModuleNetError naming the first bad value."""
        for name in ("generations", "population_size", "epochs", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise ModuleNetError(f"search.{name}={value!r} must be an integer")
        if self.generations < 1:
            raise ModuleNetError(
                f"search.generations={self.generations} must be >= 1 (1 evaluates the initial population only)"
            )
        if self.epochs < 1:
            raise ModuleNetError(f"search.epochs={self.epochs} must be a positive integer")
        if self.population_size < 2:
            raise ModuleNetError(f"search.population_size={self.population_size} must be >= 2")
        for name in ("crossover_prob", "mutation_prob", "mutation_indpb"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise ModuleNetError(f"search.{name}={value!r} must be a probability in [0, 1]")
        objectives = list(self.objectives)
        if not objectives:
            raise ModuleNetError(f"search.objectives is empty; choose from {list(OBJECTIVES)}")
        for name in objectives:
            if name not in OBJECTIVES:
                raise ModuleNetError(f"unknown search objective {name!r}; valid objectives are {list(OBJECTIVES)}")
        if len(set(objectives)) != len(objectives):
            raise ModuleNetError(f"search.objectives={objectives} names an objective twice")
        if len(self.initial_genotypes) > self.population_size:
            raise ModuleNetError(
                f"search.initial_genotypes has {len(self.initial_genotypes)} genotypes, more than "
                f"search.population_size={self.population_size}"
            )


class SearchCallback:
    """Hooks for trackers (W&B, CSV); every method is a no-op by default."""

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


def objective_values(evaluation: Evaluation, objectives: Sequence[str]) -> tuple[float, ...]:
    """The fitness of an individual, in the order of `objectives`. A failed individual is worst
    in every objective: with a params or flops objective its zero size would otherwise make it
    Pareto-optimal."""
    if evaluation.status != "ok":
        return (WORST_SCORE,) * len(objectives)
    return tuple(float(getattr(evaluation, name)) for name in objectives)


# --------------------------------------------------------------------------- the toolbox


def make_toolbox(num_archs: int, num_cells: int, config: SearchConfig) -> base.Toolbox:
    """The NSGA-II operators of Algorithm 1, read top to bottom. Like DEAP's own, they draw from
    the module-level `random`: the search calls them inside `drawing_from(its generator)`."""
    n, c = num_archs, num_cells
    toolbox = base.Toolbox()
    # Lines 8-10: each gene (cell j) is sampled uniformly from knowledge_base[j][:].
    toolbox.register("gene", random.randint, 0, n - 1)
    toolbox.register("individual", tools.initRepeat, individual_class(len(config.objectives)), toolbox.gene, n=c)
    toolbox.register("population", tools.initRepeat, list, toolbox.individual)
    # Line 14: mate and mutate. Two-point crossover needs c >= 3; one gene cannot be crossed.
    if c >= 3:
        toolbox.register("mate", tools.cxTwoPoint)
    elif c == 2:
        toolbox.register("mate", tools.cxOnePoint)
    toolbox.register("mutate", tools.mutUniformInt, low=0, up=n - 1, indpb=config.mutation_indpb)
    # Binary tournament on dominance, then crowding distance, picks the parents.
    toolbox.register("parents", select_parents)
    # Lines 17-18: non-dominated sort with crowding distance over pop + new individuals.
    toolbox.register("select", tools.selNSGA2)
    return toolbox


def select_parents(population: list, k: int) -> list:
    """`k` parents by DEAP's `selTournamentDCD` (needs crowding distances on the population).

    selTournamentDCD draws in groups of four and wants `k` a multiple of 4 no larger than the
    pool, so for any population size the pool is the population (repeated while shorter than 4)
    and whole multiple-of-4 draws are repeated until there are `k`; with p_size divisible by 4
    this is exactly one call, as in DEAP's NSGA-II example.
    """
    pool = list(population)
    while len(pool) < 4:
        pool += population
    draw = len(pool) - len(pool) % 4
    chosen: list = []
    while len(chosen) < k:
        chosen += tools.selTournamentDCD(pool, draw)
    return chosen[:k]


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


def run_search(
    num_archs: int,
    num_cells: int,
    evaluate: Callable[[list[Genotype]], list[Evaluation]],
    config: SearchConfig,
    run_dir: str | os.PathLike,
    arch_names: list[str] | None = None,
    callbacks: Sequence[SearchCallback] = (),
    resume: bool = False,
    progress: bool = True,
    depends_on: dict | None = None,
) -> SearchResult:
    """Algorithm 1, lines 7-18: NSGA-II for `config.generations` generations over n^c genotypes.

    `evaluate` gets each generation's not-yet-evaluated genotypes (distinct) and returns one
    `Evaluation` per genotype, in order. History rows hold `generation`, `evaluated` (new
    evaluations), `new_survival` (Sec. V-B), `min`/`mean`/`max` score over the population's
    successful individuals (failures are counted in `failed`), `best_score` and `best_genotype`
    (lowest score evaluated so far). `resume=True` continues `run_dir`'s checkpoint up to
    `config.generations`. Outputs: results.json, evaluations.csv, search_curves.png.

    `depends_on`: what the evaluations depend on (knowledge base, weights, connection, dataset,
    evaluation settings), stored in the checkpoint; a resume with anything different is refused,
    naming it. The run directory is held by this search while it runs (`rundir.hold`).
    """
    config.validate()
    if num_archs < 1 or num_cells < 1:
        raise ModuleNetError(f"a search needs n >= 1 architectures and c >= 1 cells, got n={num_archs}, c={num_cells}")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    with hold(run_dir):
        return _run_search(
            num_archs, num_cells, evaluate, config, run_dir, arch_names, callbacks, resume, progress, depends_on
        )


def _run_search(
    num_archs, num_cells, evaluate, config, run_dir, arch_names, callbacks, resume, progress, depends_on
) -> SearchResult:
    if resume:
        run = load_state(run_dir, config, num_archs, num_cells, depends_on)
    else:
        run = SearchState(config, num_archs, num_cells, depends_on)
    toolbox = config.toolbox(num_archs, num_cells)

    stats = tools.Statistics(key=lambda ind: run.evaluations[tuple(ind)].score)
    stats.register("min", _ok_stat(np.min))
    stats.register("mean", _ok_stat(np.mean))
    stats.register("max", _ok_stat(np.max))

    bar = tqdm(
        total=config.generations,
        initial=min(run.generation, config.generations),
        desc="search",
        unit="gen",
        disable=not progress,
    )
    try:
        while run.generation < config.generations:
            previous = [tuple(ind) for ind in run.population]
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
            else:
                # Lines 14-18: mate, evaluate the new individuals, select from pop + new.
                with drawing_from(run.rng):
                    parents = toolbox.parents(run.population, config.population_size)
                    offspring = vary(parents, toolbox, config)
                evaluated = _evaluate(offspring, run, evaluate, generation=run.generation + 1)
                with drawing_from(run.rng):
                    run.population = toolbox.select(run.population + offspring, config.population_size)
            run.generation += 1
            run.populations.append([tuple(ind) for ind in run.population])
            record = _record(run, stats, previous, evaluated)
            save_state(run_dir, run)
            write_results(run_dir, run, arch_names)
            write_evaluations_csv(run_dir, run, arch_names)
            log.info(
                "generation %d/%d: evaluated %d, new survival %d, score min %.4f mean %.4f max %.4f, best %.4f (%s)",
                run.generation,
                config.generations,
                record["evaluated"],
                record["new_survival"],
                record["min"],
                record["mean"],
                record["max"],
                record["best_score"],
                format_genotype(record["best_genotype"]),
            )
            bar.set_postfix(best=f"{record['best_score']:.4f}", new=record["new_survival"])
            bar.update(1)
            for callback in callbacks:
                callback.on_generation_end(
                    run.generation, dict(record), [tuple(ind) for ind in run.population], dict(run.evaluations)
                )
    finally:
        bar.close()

    write_results(run_dir, run, arch_names)
    write_evaluations_csv(run_dir, run, arch_names)
    plot_search_curves(run.history, run_dir / rundir.CURVES)
    result = SearchResult(
        best=run.best(),
        history=run.history,
        population=[run.evaluations[tuple(ind)] for ind in run.population],
        evaluations=list(run.evaluations.values()),
    )
    for callback in callbacks:
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


# --------------------------------------------------------------------------- checkpoint (JSON only)
