"""Structured configs (Hydra ConfigStore): a wrong type or an unknown key fails at composition.

The YAML files in `conf/` fill these schemas; groups mirror the code: dataset (data/),
knowledge_base (knowledge/), connection (stitching/), search (search/toolbox.py), evaluator
(evaluation/), logger (tracking.py), trainer (runtime/settings.py), finetune (finetune/settings.py),
experiment (recipes). Each schema adds only `_target_` to the settings its stage defines.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import II, MISSING, OmegaConf

from modulenet.evaluation.settings import ClassifierSettings
from modulenet.finetune.settings import FinetuneRecipe
from modulenet.runtime.settings import TrainerSettings
from modulenet.search import SearchConfig


def shared_dir() -> str:
    """`${shared_dir:}`: the project's shared data and weights, $MODULENET_SHARED or the checkout's ../shared."""
    return os.environ.get("MODULENET_SHARED") or str(Path(__file__).resolve().parents[3] / "shared")


@dataclass
class KnowledgeBaseConf:
    """The knowledge_base group: what builders.knowledge_base (the built-in `_target_`) builds; your
    own function or class (`knowledge_base._target_=mypkg.my_knowledge_base`) receives these as
    keywords with `datamodule`, `progress`, `seed` and `accelerator`, and returns a KnowledgeBase."""

    _target_: str = "modulenet.app.builders.knowledge_base"
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
    """How neighbouring modules are joined (stitching/connections.py): the built-ins by `name` with their
    `_target_`, or your own class as `connection._target_=mypkg.MyConnection` (stitching/choices.py)."""

    _target_: str = "modulenet.stitching.connections.parameter_free_connection"
    # channel_pool (ChP/ChDP, Sec. III-D) | conv1x1 (ablation, Sec. V-C: a 1x1 convolution at every
    # boundary) | conv1x1_where_needed (ours: only where channel counts differ) | aligned | least_squares
    name: str = "channel_pool"
    # Sec. III-B: reduce (the paper's: the preceding module drops its last reduction, or pools more;
    # never upsampled) | resample (ours: pool or upsample between modules) - stitching/resolution.py
    resolution: str = "reduce"
    fit_images: int = 2000  # aligned | least_squares: training images the connections are fitted on


@dataclass
class SearchConf(SearchConfig):
    """The search group's schema: SearchConfig's settings (one definition, search/), built from
    its `_target_`; the search's generator follows the run's `seed`."""

    _target_: str = "modulenet.search.SearchConfig"
    seed: int = II("seed")


@dataclass
class EvaluatorConf(ClassifierSettings):
    """The evaluator class (`_target_`: `Evaluator` or your subclass), the classifier's settings
    (ClassifierSettings, one definition) and the dispatcher it holds (`dispatcher`: local, gpus,
    ray or your own class's dotted path; evaluator=gpus and evaluator=ray choose one) with the
    dispatch settings below, each given to the dispatcher only where its constructor names it
    (runtime/dispatch.py). The evaluation stage fine-tunes over the same dispatcher."""

    _target_: str = "modulenet.evaluation.evaluator.Evaluator"
    dispatcher: str = "local"
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
class TrainerConf(TrainerSettings):
    """The trainer group's schema: TrainerSettings (one definition) built from its `_target_`."""

    _target_: str = "modulenet.runtime.settings.TrainerSettings"


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
    # where the candidates are fine-tuned: evaluator=local | gpus | ray, the search's dispatchers (only
    # `_target_` and the dispatch arguments apply; the classifier is the search run's)
    evaluator: EvaluatorConf = field(default_factory=EvaluatorConf)
    logger: LoggerConf = field(default_factory=LoggerConf)
    trainer: TrainerConf = MISSING  # a group (trainer=cpu | gpu): the schema is never constructed (its checks)
    seed: int = 0
    progress: bool = True
    name: str = "finetune"


@dataclass
class EvaluateAppConf:
    """modulenet-evaluate network=DIR: a saved network's error on a dataset's split."""

    network: str = MISSING  # a saved network's folder (<fine-tune dir>/networks/<label>-seed<k>)
    dataset: Any = None  # a dataset group (dataset=npz_shared, ...); default: the one it was fine-tuned on
    split: str = "test"  # test | val
    accelerator: str = "cpu"
    precision: str | None = None  # default: the precision it was measured in after fine-tuning
    trust_code: bool = False  # let the network (a cut-point model, your own connection) name code to import
    name: str = "evaluate"


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
    cs.store(name="evaluate_app_schema", node=EvaluateAppConf)
