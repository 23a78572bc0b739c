"""The evaluation stage's settings (Sec. IV): the finetune group's recipe and what the search
decided. Plain Python: no torch."""

from __future__ import annotations

from dataclasses import dataclass, field

from modulenet.errors import ModuleNetError
from modulenet.runtime.settings import TrainerSettings

# The evaluation stage's candidates (finetune/candidates.py).
CANDIDATES = ("population", "top_k", "every_generation", "evaluated", "front")
# Where the weights start: the knowledge base's (the paper's) or random (ours, the control for inheritance).
INITS = ("inherited", "scratch")


@dataclass
class FinetuneRecipe:
    """The evaluation stage (Sec. IV), the `finetune` group's settings (FinetuneSettings adds the
    search's). The paper's: 50 epochs, cutout 16, every weight trainable. Ours (the paper names
    none): SGD with Nesterov momentum 0.9, lr 0.01 with cosine decay, weight decay 5e-4, batch 128,
    standard crop-and-flip augmentation."""

    top_k: int = 1
    include_originals: bool = True
    # population (the paper: the final population's distinct genotypes, at most max_candidates by score; the
    # best by validation error is selected) | top_k (its top_k by score) | every_generation (Fig. 8: every
    # generation's population) | evaluated (Fig. 8: every genotype the search evaluated) | front (the final
    # population's genotypes no other dominates in the search's objectives, e.g. [score, flops])
    candidates: str = "top_k"
    max_candidates: int = 40  # population: the best this many by score; every_generation: spread over the ranking
    epochs: int = 50
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    cutout: int = 16
    augment: bool = True
    batch_size: int = 128
    seeds: list[int] = field(default_factory=list)  # fine-tune each architecture once per seed (default: [seed])
    keep_checkpoints: bool = False  # keep each architecture's last Lightning checkpoint after it finishes
    # array-backed data batched and augmented on the training device (data/device.py): the same
    # augmentation's distribution, other draws; false: the per-image DataLoader path
    data_on_device: bool = True
    # inherited: the modules' trained weights and fitted stitches (the paper); scratch: the same
    # architecture with its own random initialisation (KnowledgeBase.reinitialized), the control
    init: str = "inherited"
    # CPU threads each fine-tune computes with, wherever it runs (this process, a worker, a Ray actor;
    # ours): CPU kernels split their sums by thread, so the weights, hence the errors, follow the thread
    # count, and one setting for every place keeps them equal. null: this process's thread count when
    # the stage starts. GPU fine-tunes ignore it.
    threads: int | None = None

    def __post_init__(self) -> None:
        """One line naming the first bad value."""
        for key in ("top_k", "epochs", "batch_size", "max_candidates"):
            if getattr(self, key) <= 0:
                raise ModuleNetError(f"finetune.{key}={getattr(self, key)} must be a positive integer")
        if self.threads is not None and (isinstance(self.threads, bool) or self.threads <= 0):
            raise ModuleNetError(f"finetune.threads={self.threads} must be a positive integer or null")
        if self.candidates not in CANDIDATES:
            raise ModuleNetError(f"finetune.candidates={self.candidates!r}; valid values are {list(CANDIDATES)}")
        if self.init not in INITS:
            raise ModuleNetError(f"finetune.init={self.init!r}; valid values are {list(INITS)}")


@dataclass
class FinetuneSettings(FinetuneRecipe, TrainerSettings):
    """The finetune group's recipe (FinetuneRecipe) and the trainer's settings (TrainerSettings),
    one definition each, plus what the search decided: its classifier's shape, connection and
    resolution rule; and the seed."""

    hidden: list[int] = field(default_factory=lambda: [4096, 4096])
    pool: str = "flatten"
    connection: str = "channel_pool"
    resolution: str = "reduce"
    seed: int = 0
    precision: str = "32-true"  # the Python API's default (the app's trainer group: auto)
    memory_format: str = "contiguous"  # the Python API's default (the app's trainer group: auto)

    def __post_init__(self) -> None:
        FinetuneRecipe.__post_init__(self)
        TrainerSettings.__post_init__(self)
