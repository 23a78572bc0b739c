"""The evaluation stage (Sec. IV): the final population's architectures, and for comparison each
original architecture of the knowledge base, fine-tuned with every weight trainable (50 epochs
with cutout 16 in the paper). The paper fine-tunes the final population and determines the best
final architecture from it; here the searched candidate with the lowest **validation** error is
`selected`, and its **test** error is the ModuleNet row of Tables I-IV (top-1, and top-5 where
there are more than 5 classes). The test split never chooses anything."""

from __future__ import annotations

import functools
import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

import pytorch_lightning as pl
import torch

from modulenet import rundir
from modulenet.data.device import device_batches
from modulenet.errors import ModuleNetError, first_line
from modulenet.evaluation.lit_module import IndividualModule, classifier_input_size
from modulenet.finetune.candidates import select_candidates
from modulenet.finetune.network import (
    Network,
    describe_network,
    export_network,
    load_network,
    measure_network,
    save_network,
)
from modulenet.finetune.results import FinetuneResult, markdown_table, select, selected_network
from modulenet.finetune.settings import FinetuneSettings
from modulenet.genotype import format_genotype
from modulenet.knowledge.base import KnowledgeBase
from modulenet.rng import seeded
from modulenet.rundir import hold, read_scores, write_atomic
from modulenet.runtime.precision import AUTO, MEMORY_FORMATS, NetworkStep, choose_memory_format, choose_precision
from modulenet.runtime.trainer import (
    accelerator_device,
    make_trainer,
    quiet_lightning,
    resume_from,
    use_float32_matmul_precision,
)

log = logging.getLogger(__name__)


def finetune_architecture(
    kb: KnowledgeBase,
    genotype,
    datamodule,
    settings: FinetuneSettings,
    progress: bool = True,
    checkpoints: Path | None = None,
    report: Callable[[dict], None] | None = None,
) -> tuple[Network, dict]:
    """Fine-tune one architecture with all weights trainable on the training split; returns the
    network (eval mode) and its description (network.py) with what it measured: `val_error`
    (validation split), `test_error` and `test_error_top5` (None with <= 5 classes).
    `checkpoints`: a folder that keeps the last finished epoch; a rerun continues from it.
    `report`: given each epoch's training loss, validation error and learning rate (EpochCurves)."""
    device = accelerator_device(settings.accelerator)
    use_float32_matmul_precision(device, settings.float32_matmul_precision)
    with seeded(settings.seed, device):
        return _finetune_architecture(kb, genotype, datamodule, settings, progress, checkpoints, report)


def _finetune_architecture(
    kb: KnowledgeBase, genotype, datamodule, settings: FinetuneSettings, progress, checkpoints, report
) -> tuple[Network, dict]:
    if settings.init == "scratch":  # the control: the same architecture, none of the knowledge
        if settings.connection == "aligned":
            raise ModuleNetError(
                "finetune.init=scratch with connection=aligned: a permutation fitted to inherited features has no "
                "random counterpart; use least_squares (a 1x1 convolution), channel_pool or conv1x1"
            )
        kb = kb.reinitialized(settings.seed)
    trunk = kb.assemble(genotype, connection=settings.connection, trainable=True, resolution=settings.resolution)
    size = trunk.output_size(datamodule.image_size)
    in_features = classifier_input_size(trunk.out_channels, size, settings.pool)
    s = settings

    def optimizer(params):
        opt = torch.optim.SGD(params, lr=s.lr, momentum=s.momentum, weight_decay=s.weight_decay, nesterov=True)
        return {"optimizer": opt, "lr_scheduler": torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, s.epochs))}

    model = IndividualModule(trunk, in_features, datamodule.num_classes, s.hidden, s.pool, optimizer=optimizer)
    device = accelerator_device(s.accelerator)
    with quiet_lightning():
        curves = [EpochCurves(report, datamodule.val_dataloader())] if report is not None else []
        # array-backed data: batched and augmented on the training device (data/device.py)
        on_device = device_batches(datamodule, device, s.seed) if s.data_on_device else None
        train = on_device if on_device is not None else datamodule.train_dataloader()
        owned = [on_device] if on_device is not None else []
        precision, layout = _network_precision_and_layout(model, kb, genotype, datamodule, s, device)
        model.to(memory_format=MEMORY_FORMATS[layout])  # convolutions follow their weights' layout
        trainer = make_trainer(s.epochs, s.accelerator, precision, progress, checkpoints, curves, owned)
        last, finished = resume_from(checkpoints)
        if last is not None:
            log.info("  continuing from %s (epoch %d of %d)", last, finished, s.epochs)
        trainer.fit(model, train, ckpt_path=last, weights_only=True)
        trainer.validate(model, datamodule.val_dataloader(), verbose=False)
        val_error = 1.0 - model.val_accuracy
    network = Network(model.trunk, model.classifier, s.pool).eval()
    # the test split as modulenet-evaluate measures it, each image's prediction kept for paired tests
    test = measure_network(network, datamodule.test_dataloader(), trainer.precision, device, predictions=True)
    network.test_predictions = test["predictions"]
    network.description = {
        **describe_network(kb, genotype, s, datamodule.image_size, datamodule.num_classes, in_features),
        "precision": trainer.precision,  # what `auto` chose: a reload measures in it
        "memory_format": layout,  # and in this layout, so it measures the same numbers
        "val_error": val_error,
        "test_error": test["error"],
        "test_error_top5": test["error_top5"],
    }
    return network, network.description


def run_finetune(
    kb: KnowledgeBase,
    results: dict,
    datamodule,
    settings: FinetuneSettings,
    out_dir: Path,
    tracker=None,
    progress: bool = True,
    search_run: Path | None = None,
    dataset_config: dict | None = None,
) -> list[FinetuneResult]:
    """Fine-tune every candidate, writing `finetune.json` after each one (a crash keeps them) and
    `finetune.md`, a table in the form of the paper's Tables I-II, and each network under
    `networks/` (network.py; `dataset_config`, the dataset group it was fine-tuned on, is recorded
    with it for `modulenet-evaluate`). `out_dir` is held while it runs."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with hold(out_dir):
        return _run_finetune(kb, results, datamodule, settings, out_dir, tracker, progress, search_run, dataset_config)


def _run_finetune(
    kb, results, datamodule, settings, out_dir, tracker, progress, search_run, dataset_config
) -> list[FinetuneResult]:
    json_path = out_dir / rundir.FINETUNE
    done = {}
    if json_path.is_file():  # resume: keep architectures already fine-tuned with these settings
        previous = json.loads(json_path.read_text())
        if previous.get("settings") == asdict(settings):
            done = {
                (r["label"], r["seed"]): FinetuneResult(**{k: v for k, v in r.items() if k != "score"})
                for r in previous["results"]
                if "val_error" in r
            }
        else:  # checkpoints of other settings must not be continued
            for stale in (out_dir / rundir.NETWORKS).glob(f"*/{rundir.CHECKPOINTS}"):
                shutil.rmtree(stale, ignore_errors=True)
    # the settings first: a killed first architecture's checkpoint is continued only under them
    _write_finetune_json(json_path, settings, search_run, list(done.values()))
    validated_on = "test" if getattr(datamodule, "val_from", "train") == "test" else "val"
    scores = read_scores(search_run) if search_run is not None else {}
    scores.update({tuple(r["genotype"]): r["score"] for r in results.get("population", [])})
    finished: list[FinetuneResult] = []
    runs = [
        (label, code, seed)
        for label, code in select_candidates(results, kb, settings, scores)
        for seed in settings.seeds or [settings.seed]
    ]
    for label, code, seed in runs:
        if (label, seed) in done and tuple(done[label, seed].genotype) == tuple(code):
            finished.append(done[label, seed])
            continue
        log.info("fine-tuning %s: %s (%s), seed %d", label, format_genotype(code), "+".join(kb.describe(code)), seed)
        start = time.perf_counter()
        folder = Path(rundir.NETWORKS) / f"{_slug(label)}-seed{seed}"
        checkpoints = out_dir / folder / rundir.CHECKPOINTS
        report = None
        if tracker is not None and hasattr(tracker, "log_finetune_epoch"):
            report = functools.partial(tracker.log_finetune_epoch, label, seed)
        network, errors = finetune_architecture(
            kb, code, datamodule, replace(settings, seed=seed), progress, checkpoints, report
        )
        save_network(
            out_dir / folder,
            network,
            kb,
            {**errors, "label": label, "validated_on": validated_on, "dataset": dataset_config},
        )
        result = FinetuneResult(
            label,
            list(code),
            "+".join(kb.describe(code)),
            errors["test_error"],
            scores.get(code),
            settings.epochs,
            time.perf_counter() - start,
            val_error=errors["val_error"],
            test_error_top5=errors["test_error_top5"],
            seed=seed,
            validated_on=validated_on,
            network=str(folder),
        )
        if not settings.keep_checkpoints:  # the network is saved: only the deliverable stays
            shutil.rmtree(checkpoints, ignore_errors=True)
        finished.append(result)
        log.info("  validation error %.2f %%, test error %.2f %%", 100 * result.val_error, 100 * result.test_error)
        if tracker is not None:
            tracker.log_finetune(result)
        _write_finetune_json(json_path, settings, search_run, finished)
    select(finished)
    selected = selected_network(finished)
    if selected is not None:
        _export(out_dir / selected.network)
        log.info("selected network (%s, seed %d): %s", selected.label, selected.seed, out_dir / selected.network)
        if tracker is not None and hasattr(tracker, "log_selected_network"):
            tracker.log_selected_network(selected, out_dir / selected.network)
    _write_finetune_json(json_path, settings, search_run, finished)
    write_atomic(out_dir / rundir.FINETUNE_TABLE, markdown_table(finished, settings))
    return finished


def _network_precision_and_layout(
    model, kb: KnowledgeBase, genotype, datamodule, s: FinetuneSettings, device
) -> tuple[str, str]:
    """The precision and layout a whole network fine-tunes in. `auto`: its own training step timed
    in float32 and bf16, then in the chosen precision contiguous and channels-last, on this device,
    once per machine and network shape (cached, runtime/precision.py); an explicit setting as given.
    Measured on copies, so the network trains as if never timed."""
    head = f"{'-'.join(map(str, s.hidden))}-{datamodule.num_classes} {s.pool}"
    name = f"{'+'.join(kb.describe(genotype))} {s.connection} {s.resolution} head {head}"
    step = NetworkStep(model, name, datamodule.image_size, s.batch_size, datamodule.num_classes)
    precision = s.precision
    if precision == AUTO:
        choice = choose_precision(AUTO, device, step)
        log.info("  trainer.precision=auto chose %s: %s", choice.precision, choice.reason)
        precision = choice.precision
    layout = choose_memory_format(s.memory_format, device, step, precision)
    if s.memory_format == AUTO:
        log.info("  trainer.memory_format=auto chose %s: %s", layout.memory_format, layout.reason)
    return precision, layout.memory_format


class EpochCurves(pl.Callback):
    """A fine-tune's curves for the tracker: each epoch's mean training loss, validation error
    (measured here in eval mode, so the checkpoints and the training are those of a run without
    curves) and learning rate."""

    def __init__(self, report: Callable[[dict], None], val_loader):
        self.report, self.val_loader, self.lr = report, val_loader, None

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.lr = trainer.optimizers[0].param_groups[0]["lr"]  # the rate this epoch trains at

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        train_loss = pl_module.running_loss  # before the module's own hook resets it
        measured = measure_network(pl_module, self.val_loader, trainer.precision, pl_module.device)
        pl_module.train()
        self.report(
            {
                "epoch": trainer.current_epoch + 1,
                "train_loss": train_loss,
                "val_error": measured["error"],
                "lr": self.lr,
            }
        )


def _export(folder: Path) -> None:
    """The selected network as a torch.export program beside its weights. A network that
    torch.export cannot trace keeps its weights and description: a warning, not a failure."""
    try:
        export_network(load_network(folder, trust_code=True), folder / rundir.NETWORK_EXPORT)  # our own run
    except Exception as err:  # torch.export's failures have no common type
        log.warning("could not export %s with torch.export: %s", folder, first_line(err))


def _slug(label: str) -> str:
    """A folder name for a label ("ModuleNet #1" -> "modulenet-1", "resnet_cifar20" as it is)."""
    return "".join(c if c.isalnum() or c in "_-" else "-" for c in label.lower().replace(" #", "-")).strip("-")


def _write_finetune_json(path: Path, settings: FinetuneSettings, search_run, finished: list[FinetuneResult]) -> None:
    rows = [{**asdict(r), "score": r.search_score} for r in finished]  # `score`: the search score, by its name
    selected = selected_network(finished)
    document = {
        "settings": asdict(settings),
        "search_run": str(search_run or ""),
        "selected_network": selected.network if selected is not None else None,
        "results": rows,
    }
    write_atomic(path, json.dumps(document, indent=2))
