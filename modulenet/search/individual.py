"""The individual of the search (Sec. III-C): a genotype as a DEAP list of genes with a
minimising fitness of one to three objectives (the paper's score; ours: params and FLOPs beside it)."""

from __future__ import annotations

from operator import attrgetter

from deap import base, creator

from modulenet.registry import Registry

# What NSGA-II may minimise: a name and how an Evaluation gives it (all minimised). The paper's
# score (Eq. 4); ours beside it, for an accuracy/cost front: parameters and FLOPs of the trunk.
OBJECTIVES: Registry = Registry("search.objectives", dotted=False)
OBJECTIVES.register("score", attrgetter("score"))
OBJECTIVES.register("params", attrgetter("params"))
OBJECTIVES.register("flops", attrgetter("flops"))

# Created at import time, not inside run_search: pickled individuals sent to worker processes
# are rebuilt there by name, which fails ("Can't get attribute 'Individual1' on deap.creator")
# unless importing this module has already created the classes. One pair per objective count.
for _k in range(1, len(OBJECTIVES) + 1):
    if not hasattr(creator, f"FitnessMin{_k}"):
        creator.create(f"FitnessMin{_k}", base.Fitness, weights=(-1.0,) * _k)
    if not hasattr(creator, f"Individual{_k}"):
        creator.create(f"Individual{_k}", list, fitness=getattr(creator, f"FitnessMin{_k}"))


def individual_class(num_objectives: int) -> type:
    """`creator.Individual<k>`: a list of genes with a k-objective minimising fitness (made here
    when an objective registered later makes k larger than at import)."""
    if not hasattr(creator, f"Individual{num_objectives}"):
        creator.create(f"FitnessMin{num_objectives}", base.Fitness, weights=(-1.0,) * num_objectives)
        creator.create(f"Individual{num_objectives}", list, fitness=getattr(creator, f"FitnessMin{num_objectives}"))
    return getattr(creator, f"Individual{num_objectives}")
