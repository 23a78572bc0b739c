"""The individual of the search (Sec. III-C): a genotype as a DEAP list of genes with a
minimising fitness of one to three objectives (the paper's score; ours: params and FLOPs beside it)."""

from __future__ import annotations

from deap import base, creator

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
