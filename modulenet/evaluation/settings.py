"""What decides an individual's result (Sec. III-E, IV): the classifier and how it is trained
(the evaluator group), the trainer's settings, the search's epochs and score weights, the
connection and the seed. Their fingerprint keys the memo. Plain Python: no torch."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

from modulenet.errors import ModuleNetError
from modulenet.runtime.settings import TrainerSettings


@dataclass
class ClassifierSettings:
    """The `evaluator` group's settings (conf/evaluator/): the classifier (Sec. IV: input-4096-4096-
    classes) and how it is trained, the paper's shape with our optimiser (Adam, lr 1e-3, batch 256:
    the paper names none); then options that change speed only, never results (evaluation/stacked.py):
    cached trunk features, module prefixes shared within a generation, classifiers of up to
    `stack_individuals` individuals trained as one batched model on resident features of at most
    `feature_memory_gb`, their step replayed as a CUDA graph on GPUs (`graph_step`)."""

    batch_size: int = 256
    hidden: list[int] = field(default_factory=lambda: [4096, 4096])
    pool: str = "flatten"  # flatten (input size set by the last conv layer) | avg
    dropout: float = 0.0
    lr: float = 1e-3
    weight_decay: float = 0.0
    cache_features: bool = True
    feature_batch_size: int = 512
    share_prefixes: bool = True
    stack_individuals: int = 8
    feature_memory_gb: float = 4.0
    graph_step: bool = True  # on GPUs: the stacked classifiers' step captured once as a CUDA graph

    def __post_init__(self) -> None:
        """One line naming the first bad value."""
        sizes = {
            "batch_size": self.batch_size,
            "feature_batch_size": self.feature_batch_size,
            "stack_individuals": self.stack_individuals,
            **{f"hidden[{i}]": h for i, h in enumerate(self.hidden)},
        }
        for key, value in sizes.items():
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ModuleNetError(f"evaluator.{key}={value} must be a positive integer")
        if self.feature_memory_gb <= 0:
            raise ModuleNetError(f"evaluator.feature_memory_gb={self.feature_memory_gb} must be positive")
        if self.pool not in ("flatten", "avg"):
            raise ModuleNetError(f"evaluator.pool={self.pool!r}; valid values are 'flatten' and 'avg'")


@dataclass
class EvaluationSettings(ClassifierSettings, TrainerSettings):
    """What decides an individual's result (and therefore keys the memo): the evaluator group's
    settings (ClassifierSettings) and the trainer's (TrainerSettings), plus the search's epochs and
    score weights, the connection and the seed."""

    epochs: int = 20
    connection: str = "channel_pool"
    resolution: str = "reduce"  # the resolution rule between modules (stitching/resolution.py)
    alpha: float = 25.0
    beta: float = 25.0
    seed: int = 0
    # The Python API's default: float32, reproducible without a measurement; the app's trainer
    # group defaults to "auto" (TrainerSettings), which TrainerSettings.choose_precision decides once.
    precision: str = "32-true"

    def __post_init__(self) -> None:
        ClassifierSettings.__post_init__(self)
        TrainerSettings.__post_init__(self)

    SPEED_ONLY = (
        "cache_features",
        "feature_batch_size",
        "stack_individuals",
        "share_prefixes",
        "feature_memory_gb",
        "graph_step",
    )

    @property
    def features_cached(self) -> bool:
        """Whether the trunk's features are computed once (`cache_features`), which only a frozen,
        parameter-free trunk allows: a conv1x1 link trains, so its trunk runs in every step."""
        from modulenet.stitching.choices import get_connection  # here: settings are composed without torch

        return self.cache_features and not get_connection(self.connection).trains

    @property
    def stacked(self) -> bool:
        """Whether a generation is trained in stacked groups on cached features (evaluation/stacked.py)
        rather than one individual at a time."""
        return self.features_cached and (self.stack_individuals > 1 or self.share_prefixes)

    def relevant(self, context: dict | None = None) -> dict:
        """Every setting that changes results (speed-only ones excluded), with `context` (data, knowledge base)."""
        relevant = {k: v for k, v in asdict(self).items() if k not in self.SPEED_ONLY}
        return {**relevant, **(context or {})}

    def fingerprint(self, context: dict | None = None) -> str:
        """A short hash of `relevant(context)`: the memo's key."""
        text = json.dumps(self.relevant(context), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]
