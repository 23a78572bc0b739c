"""The jobs behind the console scripts, free of Hydra so tests and notebooks can call them."""

from __future__ import annotations

import logging
import statistics
from dataclasses import replace
from pathlib import Path

import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf

from modulenet import rundir
from modulenet.app.builders import (
    check_knowledge_base,
    check_quickstart_overrides,
    connection_of,
    evaluation_context,
    fit_connections,
    group_settings,
    inherited_finetune,
    is_built_in_knowledge_base,
    make_datamodule,
    make_knowledge_base,
    make_search_knowledge_base,
)
from modulenet.app.bundle import SearchBundle, dispatcher, trainer_settings
from modulenet.errors import ModuleNetError, first_line
from modulenet.evaluation.settings import EvaluationSettings
from modulenet.genotype import format_genotype
from modulenet.knowledge import KnowledgeBase
from modulenet.rundir import hold, read_results
from modulenet.runtime.dispatch import Dispatcher
from modulenet.runtime.settings import TrainerSettings
from modulenet.search import SearchProgress, run_search
from modulenet.stitching.choices import get_connection
from modulenet.targets import check_targets
from modulenet.tracking import check_tracker, make_tracker

log = logging.getLogger(__name__)


def search_job(cfg: DictConfig, run_dir: Path, group: str | None = None) -> float:
    """Algorithm 1 end to end: data, knowledge base, evaluator, NSGA-II; returns the best score."""
    search_dir = Path(cfg.resume) if cfg.resume else run_dir
    resume = bool(cfg.resume) and (search_dir / rundir.STATE).is_file()
    if cfg.resume and not resume:
        if not (search_dir / rundir.CONFIG).is_file():
            raise ModuleNetError(f"resume={cfg.resume} is not a search run: it has no search_state.json")
        # killed before its first generation's checkpoint: the same seed draws the same first
        # generation, and its memo gives back every evaluation that finished
        log.info("resume=%s has no checkpoint yet: starting at generation 1 with its memo", cfg.resume)
    with hold(search_dir):  # one search per run directory, for the whole job
        return _search_job(cfg, run_dir, search_dir, group, resume)


def _search_job(cfg: DictConfig, run_dir: Path, search_dir: Path, group: str | None, resume: bool) -> float:
    bundle = SearchBundle.resolve(cfg)  # every group built once, and so checked, before any work
    check_knowledge_base(cfg.knowledge_base)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = make_datamodule(cfg.dataset)
    kb = make_search_knowledge_base(cfg, datamodule, bundle.trainer, bundle.settings.connection)
    settings = bundle.for_data(datamodule.num_classes, search_dir if resume else None)
    context = evaluation_context(cfg, kb, settings.connection)
    evaluator = bundle.evaluator(
        kb,
        datamodule.search_tensors(),
        datamodule.num_classes,
        settings,
        memo_path=search_dir / rundir.MEMO,
        context=context,
        progress=cfg.progress,
        dispatcher=bundle.dispatcher,
    )
    tracker = make_tracker(
        cfg.logger,
        search_dir,
        OmegaConf.to_container(cfg, resolve=True),
        group=group,
        job_type="search",
        name=f"{cfg.name}-{run_dir.name}",
        arch_names=kb.arch_names,
    )
    try:
        # What a resume must match: the memo's key (the evaluator's settings hold the precision
        # `auto` chose) plus the knowledge base's tensors themselves.
        depends_on = {**evaluator.settings.relevant(context), "weights": kb.weight_hashes()}
        callbacks = [c for c in (tracker, SearchProgress() if cfg.progress else None) if c is not None]
        initial = [kb.parse_genotype(g) for g in bundle.search.initial_genotypes]
        search = replace(bundle.search, initial_genotypes=initial)
        result = run_search(kb, evaluator, search, search_dir, callbacks, resume=resume, depends_on=depends_on)
    finally:
        evaluator.close()
        if tracker is not None:
            tracker.finish()
    best = result.best
    log.info(
        "best genotype %s (%s): %s",
        format_genotype(best.genotype),
        "+".join(kb.describe(best.genotype)),
        best.summary(),
    )
    if cfg.ablation.connections:  # Sec. V-C, Fig. 10
        ablation_stage(cfg, kb, datamodule, settings, search_dir)
    if cfg.finetune.after_search:  # the evaluation stage (Sec. IV) in the same run
        finetune_dir = search_dir / rundir.FINETUNE_DIR
        finetune_stage(cfg.finetune, cfg, search_dir, finetune_dir, cfg, group, kb=kb, bundle=bundle)
    return float(best.score)


def ablation_stage(cfg: DictConfig, kb: KnowledgeBase, datamodule, settings: EvaluationSettings, search_dir: Path):
    """Fig. 10: the search path's architectures again with the connections of `ablation.compare`."""
    from modulenet.app.ablation import connection_ablation

    compare = [name for name in cfg.ablation.compare if name != settings.connection]
    for name in compare:
        connection = OmegaConf.merge(cfg.connection, {"name": name, "_target_": get_connection(name).target})
        fit_connections(kb, connection, datamodule, cfg.knowledge_base.cache_dir, cfg.progress)
    connection_ablation(
        kb,
        datamodule,
        settings,
        search_dir,
        max_architectures=cfg.ablation.max_architectures,
        progress=cfg.progress,
        compare=compare,
    )


def kb_job(cfg: DictConfig, run_dir: Path) -> Path:
    """Build a knowledge base and save it (modulenet-kb)."""
    trainer = trainer_settings(cfg.trainer)
    kb_cfg = cfg.knowledge_base
    built_in = is_built_in_knowledge_base(kb_cfg)
    if built_in and kb_cfg.quickstart and not kb_cfg.path:
        check_quickstart_overrides(kb_cfg)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    # yours gets the dataset when there is one; the built-in only where it trains on it
    needs_data = (not built_in or kb_cfg.quickstart or kb_cfg.source_finetune_epochs > 0) and cfg.dataset is not None
    datamodule = make_datamodule(cfg.dataset) if needs_data else None
    kb = make_knowledge_base(cfg.knowledge_base, datamodule, cfg.progress, cfg.seed, trainer)
    out = Path(cfg.output) if cfg.output else run_dir / "knowledge_base"
    kb.save(out)
    log.info("\n%s\nsaved to %s (use knowledge_base.path=%s)", kb.summary(), out, out)
    return out


def finetune_job(cfg: DictConfig, run_dir: Path, group: str | None = None, given: set[str] = frozenset()) -> float:
    """modulenet-finetune: the search run's candidates and the originals, fine-tuned; returns the
    selected architecture's validation error. `given`: the keys this command line set (they win
    over the search run's own finetune group)."""

    trainer = trainer_settings(cfg.trainer)
    check_tracker(cfg.logger)
    held = dispatcher(cfg.evaluator, trainer)  # built (and so checked) before any work
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
        raise ModuleNetError(f"{config_path} is not a search run's config ({first_line(err)})") from None
    # The run directory is data: only this command line may trust code, never the saved config.
    search_cfg.knowledge_base.trust_code = bool(cfg.trust_code)
    check_targets(search_cfg, config_path, trusted=cfg.trust_code)
    finetune_cfg = inherited_finetune(cfg.finetune, search_cfg, given)
    return finetune_stage(finetune_cfg, search_cfg, search_run, run_dir, cfg, group, held=held)


def finetune_stage(
    ft,
    search_cfg: DictConfig,
    search_run: Path,
    out_dir: Path,
    run_cfg: DictConfig,
    group: str | None,
    kb: KnowledgeBase | None = None,
    held: Dispatcher | None = None,
    bundle: SearchBundle | None = None,
) -> float:
    """The evaluation stage (Sec. IV) of `search_run`, written to `out_dir`: rebuilds the search's
    data (with the fine-tuning augmentation) and knowledge base, fine-tunes, reports. `ft`: the
    finetune group; `run_cfg`: this job's logger, trainer, seed and progress; `held`: the dispatcher;
    `kb`, `bundle`: the search's own when it runs in the same job (nothing is built twice)."""
    from modulenet.finetune.settings import FinetuneSettings
    from modulenet.finetune.stage import FinetuneStage

    seed, progress = run_cfg.seed, run_cfg.progress
    results = read_results(search_run)
    if bundle is not None:
        held, searched = bundle.dispatcher, bundle.settings
        head = {"hidden": list(searched.hidden), "pool": searched.pool}
        joined = {"connection": searched.connection, "resolution": searched.resolution}
        trainer = {k: getattr(bundle.trainer, k) for k in TrainerSettings.__dataclass_fields__}
    else:
        head = {"hidden": list(search_cfg.evaluator.hidden), "pool": search_cfg.evaluator.pool}
        joined = {"connection": connection_of(search_cfg.connection), "resolution": search_cfg.connection.resolution}
        trainer = group_settings(run_cfg.trainer, TrainerSettings)
    # the finetune group's recipe, the search's head and connection, this job's trainer
    settings = FinetuneSettings(**group_settings(ft, FinetuneSettings), **head, **joined, **trainer, seed=seed)
    pl.seed_everything(seed, workers=True, verbose=False)
    dataset_cfg, datamodule = finetune_datamodule(search_cfg.dataset, ft)
    if kb is None:  # from the search's own data (its augmentation included), so every cache is the search's
        source_data = make_datamodule(search_cfg.dataset)
        # the search's own trainer settings (its precision keys the cached sources), on this device
        trained = TrainerSettings(
            **{**group_settings(search_cfg.trainer, TrainerSettings), "accelerator": run_cfg.trainer.accelerator}
        )
        kb = make_knowledge_base(search_cfg.knowledge_base, source_data, progress, search_cfg.seed, trained)
        cache_dir = search_cfg.knowledge_base.cache_dir
        fit_connections(kb, search_cfg.connection, source_data, cache_dir, progress, settings.connection)
    tracker = make_tracker(
        run_cfg.logger,
        out_dir,
        {"finetune": OmegaConf.to_container(ft, resolve=True), "search_run": str(search_run)},
        group=group,
        job_type="finetune",
        name=f"finetune-{search_run.name}",
        arch_names=kb.arch_names,
    )
    # the search's dispatcher: this process, a worker per GPU (or CPU workers), or Ray actors
    stage = FinetuneStage(kb, datamodule, settings, held, tracker, progress)
    try:
        finished = stage.run(results, out_dir, search_run=search_run, dataset_config=dataset_cfg)
    finally:
        if tracker is not None:
            tracker.finish()
    log.info("\n%s", (out_dir / rundir.FINETUNE_TABLE).read_text())
    # The value a Hydra sweeper would optimise: validation error, so the test split chooses nothing.
    chosen = [r for r in finished if r.selected] or finished
    return statistics.fmean(r.val_error for r in chosen)


def finetune_datamodule(dataset_cfg: DictConfig, ft) -> tuple[dict, object]:
    """The search's dataset with the finetune group's augmentation and batch size: its config (recorded
    with each saved network) and its datamodule, set up."""
    merged = OmegaConf.merge(
        OmegaConf.to_container(dataset_cfg, resolve=True),
        {"augment": ft.augment, "cutout": ft.cutout, "batch_size": ft.batch_size},
    )
    return OmegaConf.to_container(merged, resolve=True), make_datamodule(merged)


def evaluate_job(cfg: DictConfig, run_dir: Path) -> float:
    """modulenet-evaluate: a saved network, reloaded, measured on a split of `cfg.dataset` (default:
    the dataset it was fine-tuned on, read as data); prints and writes evaluation.json; returns the error."""
    import json

    from modulenet.finetune.network import load_network, measure_network, read_description
    from modulenet.runtime.trainer import accelerator_device, check_accelerator

    if cfg.split not in ("test", "val"):
        raise ModuleNetError(f"split={cfg.split!r}: valid values are 'test' and 'val'")
    check_accelerator(cfg.accelerator)
    description = read_description(cfg.network)
    dataset_cfg = cfg.dataset
    if dataset_cfg is None:
        if not description.get("dataset"):
            raise ModuleNetError(f"{cfg.network} does not record its dataset: choose one (dataset=npz_shared, ...)")
        dataset_cfg = OmegaConf.create(description["dataset"])
        check_targets(dataset_cfg, f"{cfg.network}/network.json", trusted=cfg.trust_code)
    network = load_network(cfg.network, trust_code=cfg.trust_code)
    datamodule = make_datamodule(dataset_cfg)
    loader = datamodule.test_dataloader() if cfg.split == "test" else datamodule.val_dataloader()
    precision = cfg.precision or description.get("precision", "32-true")
    measured = measure_network(network, loader, precision, accelerator_device(cfg.accelerator))
    recorded = description.get(f"{cfg.split}_error")
    result = {"network": str(cfg.network), "split": cfg.split, "precision": precision, **measured, "recorded": recorded}
    rundir.write_atomic(run_dir / rundir.EVALUATION, json.dumps(result, indent=2))
    line = f"{cfg.split} error {100 * measured['error']:.2f} % on {measured['images']} images"
    if measured["error_top5"] is not None:
        line += f" (top-5 {100 * measured['error_top5']:.2f} %)"
    if recorded is not None:
        line += f"; recorded after fine-tuning: {100 * recorded:.2f} %"
    print(line)
    return float(measured["error"])
