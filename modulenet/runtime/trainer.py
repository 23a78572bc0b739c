"""Runtime set-up, in one place: the device an accelerator setting means, float32 matrix-product
precision (which precision trains is `runtime/precision.py`'s), and the one quiet Lightning trainer that
evaluation (Sec. III-E), fine-tuning (Sec. IV) and source training use."""

from __future__ import annotations

import contextlib
import logging
import warnings
from pathlib import Path

import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from pytorch_lightning.callbacks import ModelCheckpoint

from modulenet.errors import ModuleNetError, first_line
from modulenet.rundir import atomic_path
from modulenet.runtime.precision import AUTO

ACCELERATORS = ("cpu", "gpu", "cuda", "mps", "auto")


def check_accelerator(accelerator: str) -> None:
    """A one-line error, before any work, for an accelerator Lightning would refuse after it."""
    if accelerator not in ACCELERATORS:
        raise ModuleNetError(f"trainer.accelerator={accelerator!r}: valid values are {', '.join(ACCELERATORS)}")
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ModuleNetError(
            f"trainer.accelerator={accelerator} but torch sees no CUDA GPU here: use trainer.accelerator=cpu (or auto)"
        )
    if accelerator == "mps" and not torch.backends.mps.is_available():
        raise ModuleNetError("trainer.accelerator=mps but this machine has no Apple GPU: use trainer.accelerator=cpu")


def accelerator_device(accelerator: str) -> torch.device:
    """The device a Lightning `trainer.accelerator` setting (cpu | gpu | cuda | auto) trains on."""
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


MATMUL_PRECISIONS = ("highest", "high", "medium")


def use_float32_matmul_precision(device: torch.device, value: str) -> None:
    """TF32 ("high") or bf16-based ("medium") float32 products on GPUs, set per process (each
    `evaluator=gpus` worker sets its own). CPUs keep exact float32. "highest" turns TF32 off for
    cuDNN's convolutions too (torch leaves it on there by default): measured on an H200, TF32
    trunks made the cached-feature way drift from the plain way by 3 of 1017 validation images."""
    if value not in MATMUL_PRECISIONS:
        raise ModuleNetError(
            f"trainer.float32_matmul_precision={value!r}: expected one of {', '.join(MATMUL_PRECISIONS)}"
        )
    if device.type == "cuda":
        torch.set_float32_matmul_precision(value)
        torch.backends.cudnn.allow_tf32 = value != "highest"


@contextlib.contextmanager
def quiet_lightning():
    """Silence Lightning's per-trainer banners and benign warnings: a search builds hundreds of
    trainers, and their chatter would bury the search's own progress."""
    loggers = [logging.getLogger(n) for n in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    with warnings.catch_warnings():
        for pattern in (
            ".*does not have many workers.*",
            ".*number of training batches.*",
            ".*in eval mode.*",
            ".*LeafSpec.*",
            ".*no `val_dataloader`.*",
            ".*litlogger.*",
            ".*exists and is not empty.*",
        ):
            warnings.filterwarnings("ignore", pattern)
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels):
                lg.setLevel(level)


class GeneratorStates(pl.Callback):
    """The generators that shuffle and augment, saved in each checkpoint and restored on resume,
    so a resumed fine-tune draws the batches an uninterrupted one would: torch's global ones (a
    DataLoader's shuffling, the per-image augmentation) and those of `owned` (objects with
    `generator_state` / `set_generator_state`: data.device.DeviceBatches)."""

    def __init__(self, owned=()):
        self.owned = list(owned)

    def state_dict(self) -> dict:
        cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
        return {"cpu": torch.get_rng_state(), "cuda": cuda, "owned": [o.generator_state() for o in self.owned]}

    def load_state_dict(self, state_dict: dict) -> None:
        torch.set_rng_state(state_dict["cpu"])
        if state_dict["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state_dict["cuda"])
        for owner, state in zip(self.owned, state_dict["owned"]):
            owner.set_generator_state(state)


LAST_CHECKPOINT = "last.ckpt"  # the last finished epoch's checkpoint


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, whole or not at all (rundir.atomic_path): a kill while it
    writes leaves the previous epoch's checkpoint, never a torn one."""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            super().save_checkpoint(checkpoint, tmp, storage_options)


def make_trainer(
    epochs: int,
    accelerator: str = "cpu",
    precision: str = "32-true",
    progress: bool = False,
    checkpoints: Path | None = None,
    callbacks: list[pl.Callback] = (),
    owned_generators=(),
) -> pl.Trainer:
    """The one Lightning trainer of evaluation, fine-tuning and source training: one device, no
    sanity pass; a progress bar only where one run is long (`progress`; a search shows its own).
    No logger of its own (the job's tracker is the only W&B run; `callbacks` may report to it).
    `checkpoints`: a folder where the last finished epoch is kept (model, optimiser, scheduler,
    loops and generators, torch's and those of `owned_generators`; `resume_from(checkpoints)`
    continues from it).
    `precision`: as chosen (TrainerSettings.choose_precision decides `auto`, never this)."""
    if precision == AUTO:
        raise ValueError("make_trainer needs a precision already chosen (TrainerSettings.choose_precision)")
    callbacks = list(callbacks)
    if checkpoints is not None:
        # save_top_k=1 without a monitor: the newest epoch's, replacing the one before
        every_epoch = ModelCheckpoint(
            dirpath=checkpoints, filename=LAST_CHECKPOINT.removesuffix(".ckpt"), enable_version_counter=False
        )
        callbacks += [every_epoch, GeneratorStates(owned_generators)]
    return pl.Trainer(
        max_epochs=epochs,
        accelerator=accelerator,
        devices=1,
        precision=precision,
        logger=False,
        callbacks=callbacks,
        plugins=[AtomicCheckpointIO()] if checkpoints is not None else None,
        enable_checkpointing=checkpoints is not None,
        enable_progress_bar=progress,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        deterministic=False,
    )


def resume_from(checkpoints: Path | None) -> tuple[Path | None, int]:
    """The checkpoint `trainer.fit(ckpt_path=...)` continues from (the last finished epoch's, if
    any) and the epochs it has finished. One that cannot be read is set aside with a warning."""
    last = None if checkpoints is None else Path(checkpoints) / LAST_CHECKPOINT
    if last is None or not last.is_file():
        return None, 0
    try:
        epoch = torch.load(last, map_location="cpu", weights_only=True, mmap=True)["epoch"]
    except Exception as err:  # a file of another kind: start this architecture again
        logging.getLogger(__name__).warning("cannot continue from %s (%s): starting again", last, first_line(err))
        last.unlink(missing_ok=True)
        return None, 0
    return last, int(epoch) + 1
