"""The published DARTS-family cell genotypes used in the paper's NAS knowledge base (Sec. IV-B2).

A cell genotype lists, for each of the cell's intermediate nodes, two (operation, input) pairs:
input 0 and 1 are the cell's two inputs (the outputs of cells k-2 and k-1), input 2 + m is
intermediate node m. The cell's output concatenates the nodes in `*_concat`. These are the
genotypes of the four searched cells the paper adds to its knowledge base: DARTS (second
order, "DARTS_V2", Liu et al. 2019), P-DARTS (Chen et al. 2019, searched on CIFAR-10) and
PC-DARTS searched on CIFAR-10 and on ImageNet (Xu et al. 2020), written as data.

Not to be confused with `modulenet.genotype`: there a genotype is ModuleNet's string of
architecture indices (Sec. III-C); here it is the inside of one DARTS cell.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

from modulenet.errors import KnowledgeBaseError

# The DARTS operation set (the search space all four genotypes come from).
PRIMITIVES = (
    "none",
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
)

Edge = tuple[str, int]


class DartsGenotype(NamedTuple):
    """A normal and a reduction cell: (op, input) pairs, two per intermediate node, and the concatenated nodes."""

    normal: tuple[Edge, ...]
    normal_concat: tuple[int, ...]
    reduce: tuple[Edge, ...]
    reduce_concat: tuple[int, ...]

    @classmethod
    def from_config(cls, config: Mapping | Sequence) -> DartsGenotype:
        """From `to_config()` output (lists, as JSON/YAML give them back), validated."""
        if isinstance(config, Mapping):
            config = [config[field] for field in cls._fields]
        normal, normal_concat, reduce, reduce_concat = config
        genotype = cls(
            tuple((str(op), int(i)) for op, i in normal),
            tuple(int(i) for i in normal_concat),
            tuple((str(op), int(i)) for op, i in reduce),
            tuple(int(i) for i in reduce_concat),
        )
        validate_genotype(genotype)
        return genotype

    def to_config(self) -> dict:
        return {field: [list(e) if isinstance(e, tuple) else e for e in getattr(self, field)] for field in self._fields}


def validate_genotype(genotype: DartsGenotype, name: str = "genotype") -> None:
    """Known operations, two edges per node, inputs only from earlier nodes, concat of existing nodes."""
    for kind in ("normal", "reduce"):
        edges, concat = getattr(genotype, kind), getattr(genotype, f"{kind}_concat")
        if not edges or len(edges) % 2:
            raise KnowledgeBaseError(f"{name}.{kind}: needs two (op, input) edges per node, got {len(edges)} edges")
        for k, (op, index) in enumerate(edges):
            if op not in PRIMITIVES:
                raise KnowledgeBaseError(f"{name}.{kind}[{k}]: unknown operation {op!r}; valid are {list(PRIMITIVES)}")
            if not 0 <= index < 2 + k // 2:
                raise KnowledgeBaseError(f"{name}.{kind}[{k}]: node {2 + k // 2} cannot read input {index}")
        nodes = 2 + len(edges) // 2
        if not concat or any(not 0 <= i < nodes for i in concat):
            raise KnowledgeBaseError(f"{name}.{kind}_concat {list(concat)} must name nodes in [0, {nodes})")


_NODES = (2, 3, 4, 5)

# DARTS, second-order search on CIFAR-10 (quark0/darts, genotypes.DARTS_V2).
DARTS_V2 = DartsGenotype(
    normal=(
        ("sep_conv_3x3", 0),
        ("sep_conv_3x3", 1),
        ("sep_conv_3x3", 0),
        ("sep_conv_3x3", 1),
        ("sep_conv_3x3", 1),
        ("skip_connect", 0),
        ("skip_connect", 0),
        ("dil_conv_3x3", 2),
    ),
    normal_concat=_NODES,
    reduce=(
        ("max_pool_3x3", 0),
        ("max_pool_3x3", 1),
        ("skip_connect", 2),
        ("max_pool_3x3", 1),
        ("max_pool_3x3", 0),
        ("skip_connect", 2),
        ("skip_connect", 2),
        ("max_pool_3x3", 1),
    ),
    reduce_concat=_NODES,
)

# P-DARTS, searched on CIFAR-10 (chenxin061/pdarts, genotypes.PDARTS).
PDARTS = DartsGenotype(
    normal=(
        ("skip_connect", 0),
        ("dil_conv_3x3", 1),
        ("skip_connect", 0),
        ("sep_conv_3x3", 1),
        ("sep_conv_3x3", 1),
        ("sep_conv_3x3", 3),
        ("sep_conv_3x3", 0),
        ("dil_conv_5x5", 4),
    ),
    normal_concat=_NODES,
    reduce=(
        ("avg_pool_3x3", 0),
        ("sep_conv_5x5", 1),
        ("sep_conv_3x3", 0),
        ("dil_conv_5x5", 2),
        ("max_pool_3x3", 0),
        ("dil_conv_3x3", 1),
        ("dil_conv_3x3", 1),
        ("dil_conv_5x5", 3),
    ),
    reduce_concat=_NODES,
)

# PC-DARTS, searched on CIFAR-10 (yuhuixu1993/PC-DARTS, genotypes.PC_DARTS_cifar, alias PCDARTS).
PC_DARTS_CIFAR = DartsGenotype(
    normal=(
        ("sep_conv_3x3", 1),
        ("skip_connect", 0),
        ("sep_conv_3x3", 0),
        ("dil_conv_3x3", 1),
        ("sep_conv_5x5", 0),
        ("sep_conv_3x3", 1),
        ("avg_pool_3x3", 0),
        ("dil_conv_3x3", 1),
    ),
    normal_concat=_NODES,
    reduce=(
        ("sep_conv_5x5", 1),
        ("max_pool_3x3", 0),
        ("sep_conv_5x5", 1),
        ("sep_conv_5x5", 2),
        ("sep_conv_3x3", 0),
        ("sep_conv_3x3", 3),
        ("sep_conv_3x3", 1),
        ("sep_conv_3x3", 2),
    ),
    reduce_concat=_NODES,
)

# PC-DARTS, searched on ImageNet (yuhuixu1993/PC-DARTS, genotypes.PC_DARTS_image); the paper
# stacks it as a CIFAR network like the other three.
PC_DARTS_IMAGE = DartsGenotype(
    normal=(
        ("skip_connect", 1),
        ("sep_conv_3x3", 0),
        ("sep_conv_3x3", 0),
        ("skip_connect", 1),
        ("sep_conv_3x3", 1),
        ("sep_conv_3x3", 3),
        ("sep_conv_3x3", 1),
        ("dil_conv_5x5", 4),
    ),
    normal_concat=_NODES,
    reduce=(
        ("sep_conv_3x3", 0),
        ("skip_connect", 1),
        ("dil_conv_5x5", 2),
        ("max_pool_3x3", 1),
        ("sep_conv_3x3", 2),
        ("sep_conv_3x3", 1),
        ("sep_conv_5x5", 0),
        ("sep_conv_3x3", 3),
    ),
    reduce_concat=_NODES,
)

# Knowledge-base names of the four networks (Table III: DARTSv2, PDARTS, PC-DARTS-cifar, PC-DARTS-image).
GENOTYPES: dict[str, DartsGenotype] = {
    "darts_v2": DARTS_V2,
    "pdarts": PDARTS,
    "pc_darts_cifar": PC_DARTS_CIFAR,
    "pc_darts_image": PC_DARTS_IMAGE,
}
