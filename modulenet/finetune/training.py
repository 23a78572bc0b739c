"""One architecture fine-tuned with every weight trainable (Sec. IV), and one candidate of the
evaluation stage: fine-tuned, saved with its per-image test predictions, measured. The unit that
the stage runs in this process or sends to a worker (finetune/dispatch.py)."""

from __future__ import annotations

import contextlib
import functools
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import pytorch_lightning as pl
import torch

from modulenet import rundir
from modulenet.data.device import device_batches
from modulenet.errors import ModuleNetError
from modulenet.evaluation.lit_module import IndividualModule, classifier_input_size
from modulenet.finetune.network import Network, describe_network, measure_network, save_network
from modulenet.finetune.results import FinetuneResult
from modulenet.finetune.settings import FinetuneSettings
from modulenet.knowledge.base import KnowledgeBase
from modulenet.rng import seeded
from modulenet.runtime.dispatch import worker_accelerator
from modulenet.runtime.precision import AUTO, MEMORY_FORMATS, NetworkStep
from modulenet.runtime.trainer import (
    accelerator_device,
    make_trainer,
    quiet_lightning,
    resume_from,
    use_float32_matmul_precision,
)
from modulenet.stitching.choices import get_connection
from modulenet.stitching.fitted import fitted_state

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
    with seeded(settings.seed, device), cpu_threads(settings.threads if device.type == "cpu" else None):
        return _finetune_architecture(kb, genotype, datamodule, settings, progress, checkpoints, report)


@contextlib.contextmanager
def cpu_threads(threads: int | None):
    """This process computes with `threads` CPU threads inside the block (None: as it is), and
    with its own count again after it. Set before `auto` times the step, whose cache keys by it."""
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _finetune_architecture(
    kb: KnowledgeBase, genotype, datamodule, settings: FinetuneSettings, progress, checkpoints, report
) -> tuple[Network, dict]:
    if settings.init == "scratch":  # the control: the same architecture, none of the knowledge
        fitted = get_connection(settings.connection).fitted
        if fitted is not None and fitted.scratch is None:
            raise ModuleNetError(
                f"finetune.init=scratch with connection={settings.connection}: a connection fitted to inherited "
                "features has no random counterpart; use least_squares (a 1x1 convolution), channel_pool or conv1x1"
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
    network.fitted = fitted_state(kb) if get_connection(s.connection).fitted else None  # scratch: its own stitches
    # the test split as modulenet-evaluate measures it, each image's prediction kept for paired tests
    test = measure_network(network, datamodule.test_dataloader(), trainer.precision, device, predictions=True)
    network.test_predictions = test["predictions"]
    network.test_index = getattr(datamodule, "test_index", None)
    network.description = {
        **describe_network(kb, genotype, s, datamodule.image_size, datamodule.num_classes, in_features),
        "precision": trainer.precision,  # what `auto` chose: a reload measures in it
        "memory_format": layout,  # and in this layout, so it measures the same numbers
        "val_error": val_error,
        "test_error": test["error"],
        "test_error_top5": test["error_top5"],
    }
    return network, network.description


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
    choice = s.choose_precision(step)
    if s.precision == AUTO:
        log.info("  trainer.precision=auto chose %s: %s", choice.precision, choice.reason)
    precision = choice.precision
    layout = s.choose_memory_format(step, precision)
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


@dataclass(frozen=True)
class Candidate:
    """One fine-tune of the evaluation stage: an architecture (`label`, `genotype`) and a seed."""

    label: str
    genotype: tuple[int, ...]
    seed: int

    @property
    def folder(self) -> str:
        """Its saved network's folder, relative to the fine-tune directory."""
        return f"{rundir.NETWORKS}/{_slug(self.label)}-seed{self.seed}"


@dataclass
class StageContext:
    """What every candidate of one fine-tune run shares, sent once to each worker."""

    kb: KnowledgeBase
    datamodule: object
    settings: FinetuneSettings
    out_dir: Path
    scores: dict  # genotype -> search score
    dataset_config: dict | None = None  # recorded with each network for modulenet-evaluate
    curves: bool = False  # measure each epoch's curves (EpochCurves) for a tracker


def finetune_candidate(
    context: StageContext, candidate: Candidate, progress: bool = False, report: Callable[[dict], None] | None = None
) -> FinetuneResult:
    """Fine-tune `candidate`, save its network (and predictions) under its folder, return its row.
    A killed fine-tune continues from its last epoch; the checkpoint goes once the network is saved
    (unless finetune.keep_checkpoints)."""
    kb, settings, code = context.kb, context.settings, tuple(candidate.genotype)
    validated_on = "test" if getattr(context.datamodule, "val_from", "train") == "test" else "val"
    start = time.perf_counter()
    checkpoints = context.out_dir / candidate.folder / rundir.CHECKPOINTS
    network, errors = finetune_architecture(
        kb, code, context.datamodule, replace(settings, seed=candidate.seed), progress, checkpoints, report
    )
    record = {**errors, "label": candidate.label, "validated_on": validated_on, "dataset": context.dataset_config}
    save_network(context.out_dir / candidate.folder, network, record)
    if not settings.keep_checkpoints:  # the network is saved: only the deliverable stays
        shutil.rmtree(checkpoints, ignore_errors=True)
    return FinetuneResult(
        candidate.label,
        list(code),
        "+".join(kb.describe(code)),
        errors["test_error"],
        context.scores.get(code),
        settings.epochs,
        time.perf_counter() - start,
        val_error=errors["val_error"],
        test_error_top5=errors["test_error_top5"],
        seed=candidate.seed,
        validated_on=validated_on,
        network=candidate.folder,
    )


def candidate_worker(
    context: StageContext, progress: bool, live: Callable[[str, int, dict], None] | None, device
) -> Callable[[Candidate], tuple]:
    """Built where candidates are fine-tuned (runtime/dispatch.py): on the dispatcher's device (this
    process's, a GPU a worker sees as cuda:0, or the CPU); answers each with its row and the epoch
    curves it measured, or hands them to `live` (label, seed, row) as they come in this process."""
    settings = replace(context.settings, accelerator=worker_accelerator(device, context.settings.accelerator))
    context = replace(context, settings=settings)

    def run(candidate: Candidate) -> tuple[FinetuneResult, list[dict]]:
        curves: list[dict] = []
        report = curves.append if context.curves else None
        if live is not None:
            report = functools.partial(live, candidate.label, candidate.seed)
        result = finetune_candidate(context, candidate, progress, report)
        return result, curves

    return run


def _slug(label: str) -> str:
    """A folder name for a label ("ModuleNet #1" -> "modulenet-1", "resnet_cifar20" as it is)."""
    return "".join(c if c.isalnum() or c in "_-" else "-" for c in label.lower().replace(" #", "-")).strip("-")
