"""Runtime set-up, in one place: the device an accelerator setting means, float32 matrix-product
precision (which precision trains is `runtime/precision.py`'s), and the one quiet Lightning trainer that
evaluation (Sec. III-E), fine-tuning (Sec. IV) and source training use."""

from __future__ import annotations

import contextlib
import logging
import warnings

import pytorch_lightning as pl
import torch

from modulenet.errors import ModuleNetError
from modulenet.runtime.precision import AUTO, choose_precision

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
        ):
            warnings.filterwarnings("ignore", pattern)
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels):
                lg.setLevel(level)


def make_trainer(
    epochs: int, accelerator: str = "cpu", precision: str = "32-true", progress: bool = False
) -> pl.Trainer:
    """The one Lightning trainer of evaluation, fine-tuning and source training: one device, no
    logger of its own (the search's W&B run is the only run), no checkpoints, no sanity pass; a
    progress bar only where one run is long (`progress`; a search shows its own). `precision="auto"`
    here means whole networks (`precision.choose_precision`)."""
    if precision == AUTO:
        precision = choose_precision(AUTO, accelerator_device(accelerator)).precision
    return pl.Trainer(
        max_epochs=epochs,
        accelerator=accelerator,
        devices=1,
        precision=precision,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=progress,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        deterministic=False,
    )
