"""A job's config groups resolved once (the Lightning-Hydra template's `object_dict`): each group
that is an object or a settings dataclass is built here, once, and building it is its check, so a
bad value is one line before any work. The job then takes every setting from the bundle, never
from the config again; precision and memory format are decided by the trainer settings it holds
(runtime/settings.py) and handed down."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from modulenet.app.builders import build, connection_of, group_settings
from modulenet.errors import ModuleNetError
from modulenet.evaluation.evaluator import Evaluator, resolved_settings
from modulenet.evaluation.settings import ClassifierSettings, EvaluationSettings
from modulenet.finetune.settings import FinetuneRecipe
from modulenet.runtime.dispatch import DISPATCH_ARGUMENTS, Dispatcher, make_dispatcher
from modulenet.runtime.precision import AUTO, PRECISIONS, has_bf16_units, is_bf16
from modulenet.runtime.settings import TrainerSettings
from modulenet.search import SearchConfig
from modulenet.search.state import recorded_depends_on
from modulenet.stitching.choices import CONNECTIONS
from modulenet.stitching.resolution import RESOLUTIONS
from modulenet.targets import target_class
from modulenet.tracking import check_tracker

log = logging.getLogger(__name__)


def trainer_settings(trainer_cfg) -> TrainerSettings:
    """The trainer group's `_target_` (TrainerSettings or yours), built and so checked."""
    return build(trainer_cfg, "trainer", base=TrainerSettings)


def evaluator_class(evaluator_cfg) -> type[Evaluator]:
    """The class `evaluator._target_` names: `Evaluator` or a subclass of yours."""
    return target_class("evaluator._target_", evaluator_cfg._target_, "evaluator=local|gpus|ray", base=Evaluator)


def dispatcher(evaluator_cfg, trainer: TrainerSettings) -> Dispatcher:
    """The dispatcher `evaluator.dispatcher` names, built with the group's dispatch settings (for
    the search and the evaluation stage alike); not started: no worker exists until it is used."""
    given = {k: evaluator_cfg.get(k) for k in DISPATCH_ARGUMENTS if evaluator_cfg.get(k) is not None}
    given = OmegaConf.to_container(OmegaConf.create(given), resolve=True)
    return make_dispatcher(evaluator_cfg.get("dispatcher", "local"), **{"accelerator": trainer.accelerator, **given})


@dataclass
class SearchBundle:
    """What a search is made of, each built once from its group: the trainer settings, the search
    (SearchConfig: Algorithm 1's settings), the evaluation settings (what decides a result, precision
    as set until `for_data`), the evaluator class and the dispatcher it holds, the fine-tuning recipe
    where the stage runs after the search."""

    trainer: TrainerSettings
    search: SearchConfig
    settings: EvaluationSettings
    evaluator: type[Evaluator]
    dispatcher: Dispatcher
    finetune: FinetuneRecipe | None

    @classmethod
    def resolve(cls, cfg: DictConfig) -> SearchBundle:
        """Every group of `cfg` built (and so checked), in the order a user reads them; nothing is
        trained, loaded or started."""
        trainer = trainer_settings(cfg.trainer)
        search = build(cfg.search, "search", convert="all", base=SearchConfig)
        resolution = cfg.connection.resolution
        if resolution not in RESOLUTIONS:
            raise ModuleNetError(f"connection.resolution={resolution!r}: valid values are {list(RESOLUTIONS)}")
        settings = EvaluationSettings(
            **group_settings(cfg.evaluator, ClassifierSettings),
            epochs=search.epochs,
            connection=connection_of(cfg.connection),
            resolution=resolution,
            alpha=search.alpha,
            beta=search.beta,
            seed=cfg.seed,
            **{k: getattr(trainer, k) for k in TrainerSettings.__dataclass_fields__},
        )
        finetune = None
        if cfg.finetune.after_search:  # its recipe, checked now rather than after the search
            finetune = FinetuneRecipe(**group_settings(cfg.finetune, FinetuneRecipe))
        for name in cfg.ablation.compare if cfg.ablation.connections else ():
            if name not in CONNECTIONS:
                raise ModuleNetError(f"ablation.compare has {name!r}: valid connections are {CONNECTIONS.names()}")
        check_tracker(cfg.logger)
        return cls(
            trainer, search, settings, evaluator_class(cfg.evaluator), dispatcher(cfg.evaluator, trainer), finetune
        )

    def for_data(self, num_classes: int, search_dir: Path | None = None) -> EvaluationSettings:
        """The evaluation settings with `precision=auto` decided once: a resumed search keeps its own
        choice (its checkpoint's `depends_on`: measuring again could choose the other one, and the
        resume would be refused), a new one measures the search's classifiers."""
        recorded = resumed_precision(self.settings, search_dir) if search_dir is not None else None
        if recorded is not None:
            log.info("trainer.precision=auto: resuming with the run's choice, %s", recorded)
            return replace(self.settings, precision=recorded)
        return resolved_settings(self.settings, num_classes)


def resumed_precision(settings: TrainerSettings, search_dir: Path) -> str | None:
    """The precision `auto` chose for the search at `search_dir` (its checkpoint's `depends_on`),
    where a resume keeps it: None when the settings name one, the run recorded none, or it chose
    bf16 and this machine would only emulate it (~100x slower: measured again instead, and a
    different choice is named when the resume is refused)."""
    recorded = recorded_depends_on(search_dir).get("precision")
    if settings.precision != AUTO or recorded == AUTO or recorded not in PRECISIONS:
        return None
    if is_bf16(recorded) and not has_bf16_units(settings.device):
        return None
    return recorded
