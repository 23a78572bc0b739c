"""Objects from config groups, each checked before any long work: the dataset (`_target_`), the
knowledge base (saved, quickstart, trained from scratch, or built from architectures and weights),
fitted connections (cached), and the checks of trainer, connection and saved-config targets."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import fields
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf
from pytorch_lightning import LightningDataModule

from modulenet.app.config import KnowledgeBaseConf
from modulenet.data.contract import check_dataset
from modulenet.errors import ModuleNetError, first_line
from modulenet.knowledge import KnowledgeBase, build_knowledge_base, load_knowledge_base
from modulenet.knowledge.base import RANDOM_SOURCE, load_cached_knowledge_base
from modulenet.knowledge.build import untrained_architectures
from modulenet.knowledge.quickstart import SourceRecipe, datamodule_signature, quickstart_knowledge_base
from modulenet.knowledge.training import SOURCE_TRAINER
from modulenet.runtime.settings import TrainerSettings
from modulenet.stitching.choices import connection_id, get_connection
from modulenet.targets import group_choices, target_class

log = logging.getLogger(__name__)


def build(node, key: str, convert: str = "none", base: type | None = None, **kwargs):
    """Instantiate a config group's `_target_` (given as `key`, e.g. "dataset"; `convert`: Hydra's
    `_convert_`; `kwargs`: arguments beside the group's), checked first: a subclass of `base` where
    the group has one, else callable with the group's settings and `kwargs`. A class that cannot be
    imported, is not what the group needs, or fails on a bad argument or value: one line."""
    arguments = {k: None for k in node if not str(k).startswith("_")} | kwargs
    called_with = None if base is not None else ((), arguments)
    target_class(f"{key}._target_", node.get("_target_"), group_choices(key), base=base, called_with=called_with)
    try:
        return instantiate(node, _convert_=convert, **kwargs)
    except Exception as err:  # hydra wraps the constructor's TypeError/ModuleNetError
        cause = err.__cause__ or err
        if isinstance(cause, ModuleNetError):
            raise cause from None
        raise ModuleNetError(f"cannot build {key} {node.get('_target_')}: {first_line(cause)}") from None


def make_datamodule(dataset_cfg):
    """The dataset group's `_target_`, prepared, set up and checked against the dataset contract
    (data/contract.py: what the search and the evaluation stage read of it)."""
    datamodule = build(dataset_cfg, "dataset", base=LightningDataModule)
    datamodule.prepare_data()
    datamodule.setup("fit")
    check_dataset(datamodule, dataset_cfg.get("_target_"))
    return datamodule


BUILT_IN_KNOWLEDGE_BASE = "modulenet.app.builders.knowledge_base"


def is_built_in_knowledge_base(kb_cfg) -> bool:
    """Whether the knowledge_base group builds the built-in (`builders.knowledge_base`)."""
    return kb_cfg._target_ == BUILT_IN_KNOWLEDGE_BASE


def make_knowledge_base(
    kb_cfg, datamodule=None, progress: bool = True, seed: int = 0, trainer: TrainerSettings | None = None
) -> KnowledgeBase:
    """The knowledge_base group's `_target_`, given the group's settings and `datamodule`,
    `progress`, `seed`, `trainer` (the trainer group's settings: where and in what precision
    source networks train)."""
    if is_built_in_knowledge_base(kb_cfg):
        return built_in_knowledge_base(kb_cfg, datamodule, progress, seed, trainer)
    target = kb_cfg._target_
    kb = build(kb_cfg, "knowledge_base", "all", datamodule=datamodule, progress=progress, seed=seed, trainer=trainer)
    if not isinstance(kb, KnowledgeBase):
        raise ModuleNetError(f"knowledge_base._target_={target!r} returned a {type(kb).__name__}, not a KnowledgeBase")
    return kb


def knowledge_base(datamodule=None, progress: bool = True, seed: int = 0, trainer=None, **settings):
    """The knowledge_base group's built-in `_target_`, for `hydra.utils.instantiate(cfg.knowledge_base,
    datamodule=...)`: `settings` are KnowledgeBaseConf's fields."""
    kb_cfg = OmegaConf.structured(KnowledgeBaseConf(**settings))
    return built_in_knowledge_base(kb_cfg, datamodule, progress, seed, trainer)


def built_in_knowledge_base(
    kb_cfg, datamodule=None, progress: bool = True, seed: int = 0, trainer: TrainerSettings | None = None
) -> KnowledgeBase:
    """A saved knowledge base (`path`), the quickstart one (`quickstart: true`), or one built from
    `archs`: with their weights, trained from scratch (`train_epochs`) or fine-tuned on the target
    first (`source_finetune_epochs`, Sec. IV-B1)."""
    if kb_cfg.path:
        return load_knowledge_base(kb_cfg.path, trust_code=kb_cfg.trust_code)
    if kb_cfg.quickstart:
        check_quickstart_overrides(kb_cfg)
        if datamodule is None:
            raise ModuleNetError("knowledge_base.quickstart=true trains on a dataset: give dataset=quickstart")
        recipe = SourceRecipe(epochs=kb_cfg.quickstart_epochs, seed=seed)
        return quickstart_knowledge_base(datamodule, kb_cfg.cache_dir, recipe, progress, trainer)
    if not kb_cfg.archs:
        raise ModuleNetError(
            "knowledge_base.archs is empty: name the architectures (e.g. [resnet34,vgg16_bn]) "
            "or set knowledge_base.path to a saved knowledge base"
        )
    if kb_cfg.train_epochs > 0:
        return _trained_from_scratch(kb_cfg, datamodule, progress, seed, trainer)
    if kb_cfg.source_finetune_epochs > 0:
        return _fine_tuned_on_target(kb_cfg, datamodule, progress, seed, trainer)
    return _built(kb_cfg, progress)


def _built(kb_cfg, progress: bool) -> KnowledgeBase:
    weights = kb_cfg.weights
    if isinstance(weights, DictConfig):
        weights = OmegaConf.to_container(weights, resolve=True)
    return build_knowledge_base(
        list(kb_cfg.archs), kb_cfg.num_cells, weights, kb_cfg.cifar_stem, kb_cfg.image_size, progress=progress
    )


def _trained_from_scratch(kb_cfg, datamodule, progress: bool, seed: int, trainer) -> KnowledgeBase:
    """`train_epochs` > 0: the architectures trained from scratch on the dataset, as the quickstart's are."""
    if kb_cfg.weights is not None or kb_cfg.source_finetune_epochs > 0:
        raise ModuleNetError(
            "knowledge_base.train_epochs > 0 trains the architectures from scratch: "
            "knowledge_base.weights and source_finetune_epochs cannot take effect with it"
        )
    if datamodule is None:
        raise ModuleNetError("knowledge_base.train_epochs > 0 trains on a dataset: give one")
    recipe = SourceRecipe(tuple(kb_cfg.archs), kb_cfg.train_epochs, kb_cfg.train_lr, seed)
    return quickstart_knowledge_base(datamodule, kb_cfg.cache_dir, recipe, progress, trainer)


def _fine_tuned_on_target(kb_cfg, datamodule, progress: bool, seed: int, trainer) -> KnowledgeBase:
    """`source_finetune_epochs` > 0 (Sec. IV-B1): each source network fine-tuned on the target
    dataset first, once, cached for sweeps and the evaluation stage."""
    if datamodule is None:
        raise ModuleNetError(
            "knowledge_base.source_finetune_epochs > 0 fine-tunes the source networks on a "
            "dataset: give one (e.g. dataset=cifar10)"
        )
    cached = finetuned_cache_dir(kb_cfg, datamodule, seed, trainer)
    kb = load_cached_knowledge_base(cached, trust_code=kb_cfg.trust_code)
    if kb is not None:
        log.info("knowledge base fine-tuned on the target: loaded %s", cached)
        return kb
    from modulenet.knowledge.training import finetune_sources

    kb = _built(kb_cfg, progress)
    epochs = kb_cfg.source_finetune_epochs
    log.info("fine-tuning the %d source networks on the target dataset for %d epochs", kb.num_archs, epochs)
    accuracies = finetune_sources(kb, datamodule, epochs, kb_cfg.source_finetune_lr, trainer, progress)
    log.info(
        "source networks' validation accuracy after fine-tuning: %s",
        ", ".join(f"{k} {v:.3f}" for k, v in accuracies.items()),
    )
    kb.save(cached)
    return kb


def make_search_knowledge_base(
    cfg: DictConfig, datamodule, trainer: TrainerSettings | None = None, connection: str | None = None
) -> KnowledgeBase:
    """The search's knowledge base: built, refused if untrained (unless allowed), summarised, and
    its connections fitted where the connection group needs them. `trainer`, `connection`: the
    trainer group's settings and the connection as the job resolved them (None: from `cfg`)."""
    trainer = trainer if trainer is not None else build(cfg.trainer, "trainer", base=TrainerSettings)
    kb = make_knowledge_base(cfg.knowledge_base, datamodule, cfg.progress, cfg.seed, trainer)
    refuse_untrained([n for n, source in zip(kb.arch_names, kb.sources) if source == RANDOM_SOURCE], cfg.knowledge_base)
    log.info("\n%s", kb.summary())
    fit_connections(kb, cfg.connection, datamodule, cfg.knowledge_base.cache_dir, cfg.progress, connection)
    return kb


def check_quickstart_overrides(kb_cfg) -> None:
    """The quickstart base trains its own three networks: an override naming others cannot take effect."""
    ignored = {key: kb_cfg[key] for key in ("archs", "weights", "num_cells") if kb_cfg[key] not in (None, [], "")}
    if kb_cfg.source_finetune_epochs > 0:
        ignored["source_finetune_epochs"] = kb_cfg.source_finetune_epochs
    if ignored:
        key, value = next(iter(ignored.items()))
        value = OmegaConf.to_container(value) if isinstance(value, (DictConfig, ListConfig)) else value
        raise ModuleNetError(
            f"knowledge_base.{key}={value} cannot take effect: the knowledge base is the quickstart's "
            "(knowledge_base.quickstart=true); choose a knowledge_base group (e.g. knowledge_base=craft)"
            " or add knowledge_base.quickstart=false"
        )


def fit_connections(
    kb: KnowledgeBase, connection_cfg, datamodule, cache_dir: str, progress: bool, name: str | None = None
) -> None:
    """A connection fitted from data (`connection=aligned | least_squares`): fitted on the first
    `connection.fit_images` images of the search's training split, once, then cached beside the
    knowledge bases (keyed by their weights, the data and the resolution rule). `name`: the
    connection as the job resolved it (None: from `connection_cfg`)."""
    name, resolution = name or connection_of(connection_cfg), connection_cfg.resolution
    if not get_connection(name).fitted or resolution in kb.fitted:
        return
    count = connection_cfg.fit_images
    if count < 1:
        raise ModuleNetError(f"connection.fit_images={count} must be a positive integer")
    images = datamodule.search_tensors()[0][:count]
    recipe = {
        "weights": kb.weight_hashes(),
        "data": datamodule_signature(datamodule),
        "dataset": type(datamodule).__name__,
        "images": len(images),
        "resolution": resolution,
    }
    key = hashlib.sha256(json.dumps(recipe, sort_keys=True, default=str).encode()).hexdigest()[:12]
    cached = Path(cache_dir).expanduser() / f"fitted-connections-{key}.pt"
    if cached.is_file():
        try:
            kb.load_fitted(cached, len(images))
            log.info("fitted connections: loaded %s", cached)
            return
        except ModuleNetError as err:  # a damaged cache is fitted again, never a failed run
            log.warning("cached fitted connections %s are damaged (%s): fitting them again", cached, err)
            cached.unlink(missing_ok=True)
    log.info("fitting the %s connections on %d training images (cached at %s)", name, len(images), cached)
    kb.fit_connections(images, resolution=resolution, progress=progress)
    cached.parent.mkdir(parents=True, exist_ok=True)
    kb.save_fitted(cached)


def refuse_untrained(untrained: list[str], kb_cfg) -> None:
    """A search over modules with no trained weights finds nothing of the knowledge the method is
    about: refused unless asked for (`knowledge_base.allow_random=true`, as tests do)."""
    if untrained and not kb_cfg.allow_random:
        raise ModuleNetError(
            f"knowledge base architectures {untrained} have no trained weights (random init): give each a checkpoint "
            f"(knowledge_base.weights={{{untrained[0]}: FILE}}) or pretrained weights (e.g. IMAGENET1K_V1), or set "
            "knowledge_base.allow_random=true to search random modules on purpose"
        )


def check_knowledge_base(kb_cfg) -> None:
    """What the knowledge_base group can check before any work: your class importable and callable;
    the built-in's architectures trained (or random on purpose)."""
    if not is_built_in_knowledge_base(kb_cfg):
        target_class("knowledge_base._target_", kb_cfg._target_, group_choices("knowledge_base"))
    elif kb_cfg.quickstart and not kb_cfg.path:
        check_quickstart_overrides(kb_cfg)
    elif not kb_cfg.path and kb_cfg.archs and not kb_cfg.train_epochs:
        weights = OmegaConf.to_container(kb_cfg.weights) if isinstance(kb_cfg.weights, DictConfig) else kb_cfg.weights
        refuse_untrained(untrained_architectures(list(kb_cfg.archs), weights), kb_cfg)


def connection_of(connection_cfg) -> str:
    """The connection group's choice (stitching/choices.py): a built-in's name or your own class."""
    return connection_id(connection_cfg.name, connection_cfg.get("_target_"))


def group_settings(node, settings_class) -> dict:
    """The config group `node`'s values of `settings_class`'s fields (those it has), resolved, as
    keywords: for the dataclass itself or for the settings that extend it."""
    values = OmegaConf.to_container(node, resolve=True)
    return {f.name: values[f.name] for f in fields(settings_class) if f.name in values}


def finetuned_cache_dir(kb_cfg, datamodule, seed: int, trainer: TrainerSettings | None = None) -> Path:
    """Where a knowledge base fine-tuned on the target is cached: keyed by everything that decides
    what its source networks saw (the knowledge base's recipe, the dataset and its search split)
    and how they trained (the precision as resolved)."""
    trainer = trainer or SOURCE_TRAINER
    recipe = {
        "kb": OmegaConf.to_container(kb_cfg, resolve=True),
        "data": datamodule_signature(datamodule),
        "dataset": type(datamodule).__name__,
        "seed": seed,
        "precision": trainer.resolved_precision(),
    }
    # how it is built (the built-in), where it lives and what loading may do
    for key in ("_target_", "cache_dir", "trust_code", "allow_random"):
        recipe["kb"].pop(key, None)
    key = hashlib.sha256(json.dumps(recipe, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return Path(kb_cfg.cache_dir).expanduser() / f"finetuned-kb-{key}"


def evaluation_context(cfg: DictConfig, kb: KnowledgeBase, connection: str) -> dict:
    """What else an evaluation depends on (the memo's key): the data and the knowledge base's sources."""
    context = {
        "dataset": OmegaConf.to_container(cfg.dataset, resolve=True),
        "archs": kb.arch_names,
        "sources": kb.sources,
    }
    if get_connection(connection).fitted:  # fitted on this many training images
        context["fit_images"] = kb.fitted_images
    return context


def inherited_finetune(finetune_cfg: DictConfig, search_cfg: DictConfig, given: set[str]) -> DictConfig:
    """`modulenet-finetune search_run=X`: X's own `finetune` group (its recipe's budget), with what
    this command line set (`given`, e.g. "finetune.epochs") on top. Keys a run saved before they
    existed come from this command's defaults."""
    if "finetune" in given or "finetune" not in search_cfg:
        return finetune_cfg
    saved = {k: v for k, v in OmegaConf.to_container(search_cfg.finetune, resolve=True).items() if k in finetune_cfg}
    here = {k: finetune_cfg[k] for k in finetune_cfg if f"finetune.{k}" in given}
    return OmegaConf.merge(finetune_cfg, saved, here)
