"""The jobs behind the console scripts, free of Hydra so tests and notebooks can call them."""

from __future__ import annotations

import hashlib
import json
import logging
import statistics
from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf

from modulenet import rundir
from modulenet.connections import CONNECTIONS
from modulenet.errors import ModuleNetError
from modulenet.evaluate import EvaluationSettings
from modulenet.evaluators import EVALUATORS, make_evaluator
from modulenet.fitted_connections import FITTED
from modulenet.genotype import format_genotype
from modulenet.knowledge import KnowledgeBase, build_knowledge_base, load_knowledge_base
from modulenet.knowledge.base import METADATA_FILE
from modulenet.knowledge.build import RANDOM_SOURCE, untrained_architectures
from modulenet.quickstart import datamodule_signature, quickstart_knowledge_base
from modulenet.resolution import RESOLUTIONS
from modulenet.rundir import hold, read_results
from modulenet.runtime import check_accelerator, check_precision, use_float32_matmul_precision
from modulenet.search import SearchConfig, run_search
from modulenet.tracking import make_tracker

log = logging.getLogger(__name__)


def make_datamodule(dataset_cfg):
    """Instantiate the dataset group's `_target_`; a bad argument is a one-line error."""
    try:
        datamodule = instantiate(dataset_cfg)
    except Exception as err:  # hydra wraps the constructor's TypeError/ModuleNetError
        cause = err.__cause__ or err
        if isinstance(cause, ModuleNetError):
            raise cause from None
        raise ModuleNetError(
            f"cannot build dataset {dataset_cfg.get('_target_')}: {str(cause).splitlines()[0]}"
        ) from None
    datamodule.prepare_data()
    datamodule.setup("fit")
    return datamodule


def make_knowledge_base(
    kb_cfg, datamodule=None, progress: bool = True, seed: int = 0, accelerator: str = "cpu"
) -> KnowledgeBase:
    """A saved knowledge base (`path`), the quickstart one (`quickstart: true`), or one built from `archs`."""
    if kb_cfg.path:
        return load_knowledge_base(kb_cfg.path, trust_code=kb_cfg.trust_code)
    if kb_cfg.quickstart:
        check_quickstart_overrides(kb_cfg)
        if datamodule is None:
            raise ModuleNetError("knowledge_base.quickstart=true trains on a dataset: give dataset=quickstart")
        return quickstart_knowledge_base(
            datamodule,
            kb_cfg.cache_dir,
            epochs=kb_cfg.quickstart_epochs,
            seed=seed,
            progress=progress,
            accelerator=accelerator,
        )
    if not kb_cfg.archs:
        raise ModuleNetError(
            "knowledge_base.archs is empty: name the architectures (e.g. [resnet34,vgg16_bn]) "
            "or set knowledge_base.path to a saved knowledge base"
        )
    if kb_cfg.train_epochs > 0:  # trained from scratch on the dataset, as the quickstart's are
        if kb_cfg.weights is not None or kb_cfg.source_finetune_epochs > 0:
            raise ModuleNetError(
                "knowledge_base.train_epochs > 0 trains the architectures from scratch: "
                "knowledge_base.weights and source_finetune_epochs cannot take effect with it"
            )
        if datamodule is None:
            raise ModuleNetError("knowledge_base.train_epochs > 0 trains on a dataset: give one")
        return quickstart_knowledge_base(
            datamodule,
            kb_cfg.cache_dir,
            archs=list(kb_cfg.archs),
            epochs=kb_cfg.train_epochs,
            lr=kb_cfg.train_lr,
            seed=seed,
            progress=progress,
            accelerator=accelerator,
        )
    weights = kb_cfg.weights
    if isinstance(weights, DictConfig):
        weights = OmegaConf.to_container(weights, resolve=True)
    if kb_cfg.source_finetune_epochs > 0:
        if datamodule is None:
            raise ModuleNetError(
                "knowledge_base.source_finetune_epochs > 0 fine-tunes the source networks on a "
                "dataset: give one (e.g. dataset=cifar10)"
            )
        cached = finetuned_cache_dir(kb_cfg, datamodule, seed)  # once, then reused by sweeps and fine-tuning
        if (cached / METADATA_FILE).is_file():
            log.info("knowledge base fine-tuned on the target: loading %s", cached)
            return load_knowledge_base(cached, trust_code=kb_cfg.trust_code)
    kb = build_knowledge_base(
        list(kb_cfg.archs), kb_cfg.num_cells, weights, kb_cfg.cifar_stem, kb_cfg.image_size, progress=progress
    )
    if kb_cfg.source_finetune_epochs > 0:
        from modulenet.source_training import finetune_sources

        log.info(
            "fine-tuning the %d source networks on the target dataset for %d epochs",
            kb.num_archs,
            kb_cfg.source_finetune_epochs,
        )
        accuracies = finetune_sources(
            kb, datamodule, kb_cfg.source_finetune_epochs, kb_cfg.source_finetune_lr, accelerator, progress
        )
        log.info(
            "source networks' validation accuracy after fine-tuning: %s",
            ", ".join(f"{k} {v:.3f}" for k, v in accuracies.items()),
        )
        kb.save(cached)
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


def fit_connections(kb: KnowledgeBase, connection_cfg, datamodule, cache_dir: str, progress: bool) -> None:
    """`connection=aligned | least_squares`: fitted on the first `connection.fit_images` images of the
    search's training split, once, then cached beside the knowledge bases (keyed by their weights,
    the data and the resolution rule)."""
    name, resolution = connection_cfg.name, connection_cfg.get("resolution", "resample")
    if name not in FITTED or resolution in kb.fitted:
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
        log.info("fitted connections: loading %s", cached)
        kb.load_fitted(cached, len(images))
        return
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


def check_connection_name(what: str, name: str) -> None:
    """A connection name the search can build: the parameter-free, trainable and fitted ones."""
    if name not in (*CONNECTIONS, *FITTED):
        raise ModuleNetError(f"{what}{name!r}: valid connections are {sorted((*CONNECTIONS, *FITTED))}")


def check_trainer(trainer_cfg) -> None:
    """trainer.accelerator and trainer.precision, checked before any work."""
    check_accelerator(trainer_cfg.accelerator)
    check_precision(trainer_cfg.precision)
    use_float32_matmul_precision(torch.device("cpu"), trainer_cfg.float32_matmul_precision)  # validates only


def finetuned_cache_dir(kb_cfg, datamodule, seed: int) -> Path:
    """Where a knowledge base fine-tuned on the target is cached: keyed by everything that decides
    what its source networks saw (the knowledge base's recipe, the dataset and its search split)."""
    recipe = {
        "kb": OmegaConf.to_container(kb_cfg, resolve=True),
        "data": datamodule_signature(datamodule),
        "dataset": type(datamodule).__name__,
        "seed": seed,
    }
    for key in ("cache_dir", "trust_code", "allow_random"):  # where it lives and what loading may do
        recipe["kb"].pop(key, None)
    key = hashlib.sha256(json.dumps(recipe, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return Path(kb_cfg.cache_dir).expanduser() / f"finetuned-kb-{key}"


def search_job(cfg: DictConfig, run_dir: Path, group: str | None = None) -> float:
    """Algorithm 1 end to end: data, knowledge base, evaluator, NSGA-II; returns the best score."""
    search_dir = Path(cfg.resume) if cfg.resume else run_dir
    if cfg.resume and not (search_dir / rundir.STATE).is_file():
        raise ModuleNetError(f"resume={cfg.resume} is not a search run: it has no search_state.json")
    with hold(search_dir):  # one search per run directory, for the whole job
        return _search_job(cfg, run_dir, search_dir, group)


def _search_job(cfg: DictConfig, run_dir: Path, search_dir: Path, group: str | None) -> float:
    _check_positive(cfg)
    check_trainer(cfg.trainer)
    check_connection_name("connection.name=", cfg.connection.name)
    if cfg.connection.resolution not in RESOLUTIONS:
        raise ModuleNetError(
            f"connection.resolution={cfg.connection.resolution!r}: valid values are {list(RESOLUTIONS)}"
        )
    for name in cfg.ablation.compare if cfg.ablation.connections else ():
        check_connection_name("ablation.compare has ", name)
    if cfg.evaluator.name not in EVALUATORS:
        raise ModuleNetError(f"evaluator.name={cfg.evaluator.name!r}: valid evaluators are {list(EVALUATORS)}")
    kb_cfg = cfg.knowledge_base
    if not kb_cfg.path and not kb_cfg.quickstart and kb_cfg.archs and not kb_cfg.train_epochs:  # before any work
        weights = OmegaConf.to_container(kb_cfg.weights) if isinstance(kb_cfg.weights, DictConfig) else kb_cfg.weights
        refuse_untrained(untrained_architectures(list(kb_cfg.archs), weights), kb_cfg)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = make_datamodule(cfg.dataset)
    kb = make_knowledge_base(kb_cfg, datamodule, cfg.progress, cfg.seed, cfg.trainer.accelerator)
    refuse_untrained([name for name, source in zip(kb.arch_names, kb.sources) if source == RANDOM_SOURCE], kb_cfg)
    log.info("\n%s", kb.summary())
    fit_connections(kb, cfg.connection, datamodule, kb_cfg.cache_dir, cfg.progress)
    settings = EvaluationSettings(
        epochs=cfg.search.epochs,
        batch_size=cfg.evaluator.batch_size,
        hidden=list(cfg.evaluator.hidden),
        pool=cfg.evaluator.pool,
        dropout=cfg.evaluator.dropout,
        lr=cfg.evaluator.lr,
        weight_decay=cfg.evaluator.weight_decay,
        connection=cfg.connection.name,
        resolution=cfg.connection.resolution,
        alpha=cfg.search.alpha,
        beta=cfg.search.beta,
        seed=cfg.seed,
        cache_features=cfg.evaluator.cache_features,
        feature_batch_size=cfg.evaluator.feature_batch_size,
        accelerator=cfg.trainer.accelerator,
        precision=cfg.trainer.precision,
        float32_matmul_precision=cfg.trainer.float32_matmul_precision,
        share_prefixes=cfg.evaluator.share_prefixes,
        stack_individuals=cfg.evaluator.stack_individuals,
        feature_memory_gb=cfg.evaluator.feature_memory_gb,
    )
    context = {
        "dataset": OmegaConf.to_container(cfg.dataset, resolve=True),
        "archs": kb.arch_names,
        "sources": kb.sources,
    }
    if cfg.connection.name in FITTED:  # fitted on this many training images
        context["fit_images"] = kb.fitted_images
    # What a resume must match: the memo's key plus the knowledge base's tensors themselves.
    depends_on = {**settings.relevant(context), "weights": kb.weight_hashes()}
    ev = cfg.evaluator
    evaluator = make_evaluator(
        ev.name,
        kb,
        datamodule.search_tensors(),
        datamodule.num_classes,
        settings,
        memo_path=search_dir / rundir.MEMO,
        context=context,
        progress=cfg.progress,
        devices=list(ev.devices) if ev.devices is not None else None,
        num_workers=ev.num_workers,
        address=ev.address,
        gpus_per_worker=ev.gpus_per_worker,
    )
    search_config = SearchConfig(
        generations=cfg.search.generations,
        population_size=cfg.search.population_size,
        crossover_prob=cfg.search.crossover_prob,
        mutation_prob=cfg.search.mutation_prob,
        mutation_indpb=cfg.search.mutation_indpb,
        objectives=list(cfg.search.objectives),
        seed=cfg.seed,
        initial_genotypes=[kb.parse_genotype(g) for g in cfg.search.initial_genotypes],
    )
    tracker = make_tracker(
        cfg.logger.name,
        search_dir,
        OmegaConf.to_container(cfg, resolve=True),
        **(
            {}
            if cfg.logger.name != "wandb"
            else dict(
                project=cfg.logger.project,
                entity=cfg.logger.entity,
                group=cfg.logger.group or group,
                job_type="search",
                name=f"{cfg.name}-{run_dir.name}",
                tags=list(cfg.logger.tags),
                mode=cfg.logger.mode,
                arch_names=kb.arch_names,
            )
        ),
    )
    try:
        result = run_search(
            kb.num_archs,
            kb.num_cells,
            evaluator,
            search_config,
            search_dir,
            arch_names=kb.arch_names,
            callbacks=[tracker] if tracker else [],
            resume=bool(cfg.resume),
            progress=cfg.progress,
            depends_on=depends_on,
        )
    finally:
        evaluator.close()
        if tracker is not None:
            tracker.finish()
    best = result.best
    log.info(
        "best genotype %s (%s): score %.4f, err_val %.4f, l_rate %.4f, sim %.2f",
        format_genotype(best.genotype),
        "+".join(kb.arch_names[i] for i in best.genotype),
        best.score,
        best.err_val,
        best.l_rate,
        best.sim,
    )
    if cfg.ablation.connections:  # Sec. V-C, Fig. 10
        from modulenet.ablation import connection_ablation

        compare = [name for name in cfg.ablation.compare if name != cfg.connection.name]
        for name in compare:
            fit_connections(
                kb,
                OmegaConf.merge(cfg.connection, {"name": name}),
                datamodule,
                cfg.knowledge_base.cache_dir,
                cfg.progress,
            )
        connection_ablation(
            kb,
            datamodule.search_tensors(),
            datamodule.num_classes,
            settings,
            search_dir,
            max_architectures=cfg.ablation.max_architectures,
            progress=cfg.progress,
            compare=compare,
        )
    if cfg.finetune.after_search:  # the evaluation stage (Sec. IV) in the same run
        finetune_stage(
            cfg.finetune,
            cfg,
            search_dir,
            search_dir / "finetune",
            cfg.logger,
            cfg.trainer,
            group,
            cfg.seed,
            cfg.progress,
            kb=kb,
        )
    return float(best.score)


def kb_job(cfg: DictConfig, run_dir: Path) -> Path:
    """Build a knowledge base and save it (modulenet-kb)."""
    check_trainer(cfg.trainer)
    if cfg.knowledge_base.quickstart and not cfg.knowledge_base.path:
        check_quickstart_overrides(cfg.knowledge_base)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    needs_data = (
        cfg.knowledge_base.quickstart or cfg.knowledge_base.source_finetune_epochs > 0
    ) and cfg.dataset is not None
    datamodule = make_datamodule(cfg.dataset) if needs_data else None
    kb = make_knowledge_base(cfg.knowledge_base, datamodule, cfg.progress, cfg.seed, cfg.trainer.accelerator)
    out = Path(cfg.output) if cfg.output else run_dir / "knowledge_base"
    kb.save(out)
    log.info("\n%s\nsaved to %s (use knowledge_base.path=%s)", kb.summary(), out, out)
    return out


def finetune_job(cfg: DictConfig, run_dir: Path, group: str | None = None) -> float:
    """modulenet-finetune: the search run's candidates and the originals, fine-tuned; returns the
    selected architecture's validation error."""

    check_trainer(cfg.trainer)
    search_run = Path(cfg.search_run)
    read_results(search_run)  # a clear error before anything is built
    config_path = search_run / rundir.CONFIG
    if not config_path.is_file():
        raise ModuleNetError(
            f"search_run={search_run} has no config_resolved.yaml to rebuild its data and knowledge base"
        )
    try:
        search_cfg = OmegaConf.load(config_path)
        if not isinstance(search_cfg, DictConfig) or "dataset" not in search_cfg or "knowledge_base" not in search_cfg:
            raise ValueError("no dataset or knowledge_base section")
    except Exception as err:  # YAML and OmegaConf errors alike
        raise ModuleNetError(f"{config_path} is not a search run's config ({str(err).splitlines()[0]})") from None
    # The run directory is data: only this command line may trust code, never the saved config.
    search_cfg.knowledge_base.trust_code = bool(cfg.trust_code)
    check_targets(search_cfg, config_path, trusted=cfg.trust_code)
    return finetune_stage(
        cfg.finetune, search_cfg, search_run, run_dir, cfg.logger, cfg.trainer, group, cfg.seed, cfg.progress
    )


def check_targets(cfg, source, trusted: bool = False, prefix: str = "modulenet.") -> None:
    """Refuse a saved config whose `_target_`s name anything but this project's classes (a run
    directory is data; `trust_code=true` lifts the rule for a run the user trusts)."""
    if trusted:
        return
    container = OmegaConf.to_container(cfg, resolve=False) if isinstance(cfg, (DictConfig, ListConfig)) else cfg
    stack = [container]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            target = node.get("_target_")
            if target is not None and not str(target).startswith(prefix):
                raise ModuleNetError(
                    f"{source} names _target_ {target!r}, which is not modulenet's own: a saved config "
                    "is data, so only modulenet.* classes are built from it (trust_code=true if you "
                    "trust this run)"
                )
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


def finetune_stage(
    ft,
    search_cfg: DictConfig,
    search_run: Path,
    out_dir: Path,
    logger_cfg,
    trainer_cfg,
    group: str | None,
    seed: int,
    progress: bool,
    kb: KnowledgeBase | None = None,
) -> float:
    """The evaluation stage (Sec. IV) of `search_run`, written to `out_dir`: rebuilds the search's
    data (with the fine-tuning augmentation) and knowledge base, fine-tunes, reports."""
    from modulenet.finetune import CANDIDATES, FinetuneSettings, run_finetune

    results = read_results(search_run)
    pl.seed_everything(seed, workers=True, verbose=False)
    for key in ("top_k", "epochs", "batch_size", "max_candidates"):
        if ft[key] <= 0:
            raise ModuleNetError(f"finetune.{key}={ft[key]} must be a positive integer")
    if ft.candidates not in CANDIDATES:
        raise ModuleNetError(f"finetune.candidates={ft.candidates!r}; valid values are {list(CANDIDATES)}")
    dataset_cfg = OmegaConf.merge(
        OmegaConf.to_container(search_cfg.dataset, resolve=True),
        {"augment": ft.augment, "cutout": ft.cutout, "batch_size": ft.batch_size},
    )
    datamodule = make_datamodule(dataset_cfg)
    if kb is None:  # from the search's own data (its augmentation included), so every cache is the search's
        source_data = make_datamodule(search_cfg.dataset)
        kb = make_knowledge_base(search_cfg.knowledge_base, source_data, progress, search_cfg.seed)
        fit_connections(kb, search_cfg.connection, source_data, search_cfg.knowledge_base.cache_dir, progress)
    settings = FinetuneSettings(
        top_k=ft.top_k,
        include_originals=ft.include_originals,
        candidates=ft.candidates,
        max_candidates=ft.max_candidates,
        epochs=ft.epochs,
        lr=ft.lr,
        momentum=ft.momentum,
        weight_decay=ft.weight_decay,
        hidden=list(search_cfg.evaluator.hidden),
        pool=search_cfg.evaluator.pool,
        connection=search_cfg.connection.name,
        resolution=search_cfg.connection.get("resolution", "resample"),  # runs from before the rule resampled
        accelerator=trainer_cfg.accelerator,
        precision=trainer_cfg.precision,
        float32_matmul_precision=trainer_cfg.float32_matmul_precision,
        seed=seed,
        seeds=list(ft.seeds),
    )
    tracker = make_tracker(
        logger_cfg.name,
        out_dir,
        {"finetune": OmegaConf.to_container(ft, resolve=True), "search_run": str(search_run)},
        **(
            {}
            if logger_cfg.name != "wandb"
            else dict(
                project=logger_cfg.project,
                entity=logger_cfg.entity,
                group=logger_cfg.group or group,
                job_type="finetune",
                name=f"finetune-{search_run.name}",
                tags=list(logger_cfg.tags),
                mode=logger_cfg.mode,
                arch_names=kb.arch_names,
            )
        ),
    )
    try:
        finished = run_finetune(kb, results, datamodule, settings, out_dir, tracker, progress, search_run=search_run)
    finally:
        if tracker is not None:
            tracker.finish()
    log.info("\n%s", (out_dir / rundir.FINETUNE_TABLE).read_text())
    # The value a Hydra sweeper would optimise: validation error, so the test split chooses nothing.
    chosen = [r for r in finished if r.selected] or finished
    return statistics.fmean(r.val_error for r in chosen)


def _check_positive(cfg: DictConfig) -> None:
    checks = {
        "search.generations": cfg.search.generations,
        "search.population_size": cfg.search.population_size,
        "search.epochs": cfg.search.epochs,
        "evaluator.batch_size": cfg.evaluator.batch_size,
        "evaluator.feature_batch_size": cfg.evaluator.feature_batch_size,
        "evaluator.stack_individuals": cfg.evaluator.stack_individuals,
    }
    if cfg.evaluator.num_workers is not None:
        checks["evaluator.num_workers"] = cfg.evaluator.num_workers
    if cfg.evaluator.feature_memory_gb <= 0:
        raise ModuleNetError(f"evaluator.feature_memory_gb={cfg.evaluator.feature_memory_gb} must be positive")
    checks.update({f"evaluator.hidden[{i}]": h for i, h in enumerate(cfg.evaluator.hidden)})
    for key, value in checks.items():
        if value <= 0:
            raise ModuleNetError(f"{key}={value} must be a positive integer")
    if cfg.evaluator.pool not in ("flatten", "avg"):
        raise ModuleNetError(f"evaluator.pool={cfg.evaluator.pool!r}; valid values are 'flatten' and 'avg'")
