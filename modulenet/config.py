"""Structured configs (Hydra ConfigStore): a wrong type or an unknown key fails at composition.

The YAML files in `conf/` fill these schemas; groups mirror the code: dataset (data.py),
knowledge_base (knowledge/), connection (connections.py), search (search.py), evaluator
(evaluate.py), logger (tracking.py), trainer (Lightning settings), experiment (recipes).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import II, MISSING, OmegaConf

from modulenet.errors import ModuleNetError
from modulenet.search import SearchConfig


def shared_dir() -> str:
    """`${shared_dir:}`: the project's shared data and weights, $MODULENET_SHARED or the checkout's ../shared."""
    return os.environ.get("MODULENET_SHARED") or str(Path(__file__).resolve().parents[2] / "shared")


@dataclass
class KnowledgeBaseConf:
    """The knowledge_base group: what builders.knowledge_base (the built-in `_target_`) builds; your
    own function or class (`knowledge_base._target_=mypkg.my_knowledge_base`) receives these as
    keywords with `datamodule`, `progress`, `seed` and `accelerator`, and returns a KnowledgeBase."""

    _target_: str | None = "modulenet.builders.knowledge_base"  # null: the built-in (configs saved before it)
    archs: list[str] = field(default_factory=list)
    num_cells: int | None = None
    weights: Any = None  # one spec for all, or {arch: spec}: null/random, DEFAULT, or a file path
    cifar_stem: bool | None = None
    image_size: int = 32
    path: str | None = None  # a saved knowledge base directory (modulenet-kb); wins over archs
    trust_code: bool = False  # let `path` import and call the model code it names (cut-point models)
    allow_random: bool = False  # search modules with no trained weights (tests, trying the pipeline out)
    quickstart: bool = False  # train the quickstart's small CNNs on the dataset, then cache
    quickstart_epochs: int = 3
    # > 0: train `archs` from scratch on the dataset for this many epochs first (cached), as the
    # quickstart does; the same-data study's knowledge base
    train_epochs: int = 0
    train_lr: float = 0.05
    # Sec. IV-B1: fine-tune each source network on the target dataset before decomposing (0: off)
    source_finetune_epochs: int = 0
    source_finetune_lr: float = 0.01
    cache_dir: str = "${oc.env:MODULENET_CACHE,'~/.cache/modulenet'}"


@dataclass
class ConnectionConf:
    """How neighbouring modules are joined (connections.py): the built-ins by `name` with their
    `_target_`, or your own class as `connection._target_=mypkg.MyConnection` (connections.own_connection)."""

    _target_: str | None = "modulenet.connections.parameter_free_connection"  # null: the built-in `name`'s
    # channel_pool (ChP/ChDP, Sec. III-D) | conv1x1 (ablation, Sec. V-C: a 1x1 convolution at every
    # boundary) | conv1x1_where_needed (ours: only where channel counts differ) | aligned | least_squares
    name: str = "channel_pool"
    # Sec. III-B: reduce (the paper's: the preceding module drops its last reduction, or pools more;
    # never upsampled) | resample (ours before: pool or upsample between modules) - resolution.py
    resolution: str = "reduce"
    fit_images: int = 2000  # aligned | least_squares: training images the connections are fitted on


@dataclass
class SearchConf(SearchConfig):
    """The search group's schema: SearchConfig's settings (one definition, search.py), built from
    its `_target_`; the search's generator follows the run's `seed`."""

    _target_: str = "modulenet.search.SearchConfig"
    seed: int = II("seed")


@dataclass
class ClassifierSettings:
    """The `evaluator` group's settings (conf/evaluator/): the classifier (Sec. IV: input-4096-4096-
    classes) and how it is trained, the paper's shape with our optimiser (Adam, lr 1e-3, batch 256:
    the paper names none); then options that change speed only, never results (batched_evaluation.py):
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
class EvaluatorConf(ClassifierSettings):
    """The evaluator class (`_target_`: evaluator=local, gpus or ray, or your own) and its settings:
    the classifier's (ClassifierSettings, one definition) and the dispatch arguments below, each
    given to the class only where its constructor names it (evaluators.build_evaluator)."""

    _target_: str = "modulenet.evaluate.Evaluator"
    # gpus / ray: workers (default: one per GPU, else half the CPU cores / Ray's CPUs)
    num_workers: int | None = None
    devices: list[int] | None = None  # gpus: which GPUs (default: every visible one)
    address: str | None = None  # ray: a cluster's address (default: start a local Ray)
    gpus_per_worker: float = 0.0  # ray: 1 to give each actor a GPU


@dataclass
class LoggerConf:
    """The tracker class (`_target_`: logger=wandb, csv or none (null), or your own); the settings
    below (and the job's group, job_type, name, arch_names) go to it where its constructor names them."""

    _target_: str | None = "modulenet.tracking.WandbTracker"
    project: str = "modulenet"
    entity: str | None = None
    group: str | None = None  # default: the multirun sweep, so its jobs compare side by side
    tags: list[str] = field(default_factory=list)
    mode: str = "auto"  # auto (offline without an API key) | online | offline


@dataclass
class TrainerSettings:
    """The `trainer` group (conf/trainer/): where Lightning trains and in what precision (set up by
    runtime.py and precision.py for evaluation, fine-tuning and source training); checked when built."""

    accelerator: str = "cpu"  # cpu | gpu | cuda | mps | auto
    precision: str = "auto"  # measured where a choice exists (precision.py); or a Lightning precision
    # float32 matrix products on GPUs: highest (exact fp32) | high (TF32 tensor cores) | medium
    float32_matmul_precision: str = "highest"

    def __post_init__(self) -> None:
        import torch  # here, not at the top: composing configs needs no torch

        from modulenet.precision import check_precision
        from modulenet.runtime import check_accelerator, use_float32_matmul_precision

        check_accelerator(self.accelerator)
        check_precision(self.precision)
        use_float32_matmul_precision(torch.device("cpu"), self.float32_matmul_precision)  # validates only


@dataclass
class TrainerConf(TrainerSettings):
    """The trainer group's schema: TrainerSettings (one definition) built from its `_target_`."""

    _target_: str = "modulenet.config.TrainerSettings"


# The evaluation stage's candidates (finetune.py's select_candidates).
CANDIDATES = ("population", "top_k", "every_generation", "evaluated")


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
    # generation's population) | evaluated (Fig. 8: every genotype the search evaluated)
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

    def __post_init__(self) -> None:
        """One line naming the first bad value."""
        for key in ("top_k", "epochs", "batch_size", "max_candidates"):
            if getattr(self, key) <= 0:
                raise ModuleNetError(f"finetune.{key}={getattr(self, key)} must be a positive integer")
        if self.candidates not in CANDIDATES:
            raise ModuleNetError(f"finetune.candidates={self.candidates!r}; valid values are {list(CANDIDATES)}")


@dataclass
class FinetuneConf(FinetuneRecipe):
    after_search: bool = False  # modulenet-search: run this stage at the end, into <run>/finetune/


@dataclass
class AblationConf:
    """Sec. V-C, Fig. 10: after the search, the architectures of every generation evaluated again
    with trainable 1x1 convolutions as connections (ablation_connections.json)."""

    connections: bool = False
    max_architectures: int = 40
    # the connections compared with the search's: the paper's 1x1 convolutions and the fitted ones
    compare: list[str] = field(default_factory=lambda: ["conv1x1", "aligned", "least_squares"])


@dataclass
class SearchAppConf:
    dataset: Any = MISSING
    knowledge_base: KnowledgeBaseConf = field(default_factory=KnowledgeBaseConf)
    connection: ConnectionConf = field(default_factory=ConnectionConf)
    search: SearchConf = MISSING  # a group (search=nsga2); MISSING: the schema is never constructed (its checks)
    evaluator: EvaluatorConf = field(default_factory=EvaluatorConf)
    logger: LoggerConf = field(default_factory=LoggerConf)
    trainer: TrainerConf = MISSING  # a group (trainer=cpu | gpu): the schema is never constructed (its checks)
    finetune: FinetuneConf = field(default_factory=FinetuneConf)
    ablation: AblationConf = field(default_factory=AblationConf)
    seed: int = 0
    resume: str | None = None  # a search run directory to continue
    progress: bool = True
    name: str = "search"


@dataclass
class KbAppConf:
    dataset: Any = None
    knowledge_base: KnowledgeBaseConf = field(default_factory=KnowledgeBaseConf)
    trainer: TrainerConf = MISSING  # a group (trainer=cpu | gpu): the schema is never constructed (its checks)
    output: str | None = None  # where to save; default: the run directory's knowledge_base/
    seed: int = 0
    progress: bool = True


@dataclass
class FinetuneAppConf:
    search_run: str = MISSING  # the search's run directory (it holds results.json and its config)
    trust_code: bool = False  # let the run's config and knowledge base name code to import (never read from the run)
    finetune: FinetuneConf = field(default_factory=FinetuneConf)
    logger: LoggerConf = field(default_factory=LoggerConf)
    trainer: TrainerConf = MISSING  # a group (trainer=cpu | gpu): the schema is never constructed (its checks)
    seed: int = 0
    progress: bool = True
    name: str = "finetune"


@dataclass
class ReportAppConf:
    """modulenet-report: the paper's tables and figures from finished runs (report.py)."""

    runs: Any = field(default_factory=list)  # search, finetune or multirun sweep directories (one: runs=DIR)
    output: str | None = None  # where report.md and the PNGs go; default: the report's run directory
    calibrate: bool = False  # fit alpha, beta to the fine-tuned test errors (Spearman, grid search)
    calibration_max: float = 50.0  # the grid: alpha, beta in [0, calibration_max] ...
    calibration_step: float = 1.0  # ... every calibration_step
    title: str = "ModuleNet report"
    logger: LoggerConf = field(default_factory=LoggerConf)  # mode auto: W&B only when a given run was online
    name: str = "report"


def register_configs() -> None:
    if not OmegaConf.has_resolver("shared_dir"):
        OmegaConf.register_new_resolver("shared_dir", shared_dir)
    cs = ConfigStore.instance()
    cs.store(name="search_app_schema", node=SearchAppConf)
    cs.store(name="kb_app_schema", node=KbAppConf)
    cs.store(name="finetune_app_schema", node=FinetuneAppConf)
    cs.store(name="report_app_schema", node=ReportAppConf)
