"""What the search knows of an evaluated individual (plain Python: the search needs no torch)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from modulenet.search.score import similarity

# A failed individual gets this score: finite, so JSON files and plots stay valid.
WORST_SCORE = 1e9


@dataclass
class Evaluation:
    genotype: tuple[int, ...]
    score: float  # Eq. 4, lower is better
    err_val: float  # Eq. 5
    l_rate: float  # Eq. 6
    sim: float  # Eq. 7-8
    epoch_losses: list[float] = field(default_factory=list)
    params: int = 0
    flops: int = 0
    status: str = "ok"  # ok | failed
    error: str = ""
    seconds: float = 0.0

    def __post_init__(self):
        self.genotype = tuple(int(i) for i in self.genotype)

    def summary(self) -> str:
        """The score and its terms (Eq. 4), as logs show them."""
        return f"score {self.score:.4f}, err_val {self.err_val:.4f}, l_rate {self.l_rate:.4f}, sim {self.sim:.2f}"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["genotype"] = list(self.genotype)
        return d

    @classmethod
    def failed(cls, genotype, error: str) -> Evaluation:
        """An individual that could not be evaluated (out of memory twice, its worker dead twice):
        the worst score, so the search goes on without it."""
        return cls(
            genotype, WORST_SCORE, err_val=1.0, l_rate=0.0, sim=similarity(genotype), status="failed", error=error
        )

    @classmethod
    def from_dict(cls, d: dict) -> Evaluation:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


# A table of evaluations (evaluations.csv, the W&B table): where and what, then the record's own
# fields in the order `Evaluation` declares them (the per-epoch losses, a list, left out).
RECORD_COLUMNS = tuple(f.name for f in fields(Evaluation) if f.name not in ("genotype", "epoch_losses"))
TABLE_COLUMNS = ("generation", "genotype", "architecture", *RECORD_COLUMNS)


def table_row(evaluation: Evaluation, generation: int | None, genotype: str, architecture: str) -> list:
    """`evaluation` as a row of TABLE_COLUMNS."""
    return [generation, genotype, architecture, *(getattr(evaluation, name) for name in RECORD_COLUMNS)]
