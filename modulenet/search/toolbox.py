"""The search group's settings (SearchConfig) and the DEAP toolbox they make: Algorithm 1's
operators, read top to bottom. The paper's: NSGA-II; ours: the operators' probabilities."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from deap import base, tools

from modulenet.errors import ModuleNetError
from modulenet.search.individual import OBJECTIVES, individual_class


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
            raise ModuleNetError(f"search.objectives is empty; choose from {OBJECTIVES.names()}")
        for name in objectives:
            if name not in OBJECTIVES:
                raise ModuleNetError(f"unknown search objective {name!r}; valid objectives are {OBJECTIVES.names()}")
        if len(set(objectives)) != len(objectives):
            raise ModuleNetError(f"search.objectives={objectives} names an objective twice")
        if len(self.initial_genotypes) > self.population_size:
            raise ModuleNetError(
                f"search.initial_genotypes has {len(self.initial_genotypes)} genotypes, more than "
                f"search.population_size={self.population_size}"
            )


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
