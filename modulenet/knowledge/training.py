"""Training a whole source network (before decomposition): the quickstart's small CNNs, and
fine-tuning pretrained networks on a target dataset before they enter a knowledge base."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from modulenet.runtime.settings import TrainerSettings
from modulenet.runtime.trainer import make_trainer, quiet_lightning, use_float32_matmul_precision

SOURCE_TRAINER = TrainerSettings(precision="32-true")  # the Python API's default: float32 on the CPU


class SourceNetworkModule(pl.LightningModule):
    """A complete classifier network trained end to end with cross-entropy and SGD + cosine decay."""

    def __init__(self, model: nn.Module, lr: float = 0.05, epochs: int = 1, weight_decay: float = 5e-4):
        super().__init__()
        self.model = model
        self.lr, self.epochs, self.weight_decay = lr, epochs, weight_decay
        self.correct, self.total = 0, 0

    def forward(self, x):
        return self.model(x)

    def on_fit_start(self):
        # a knowledge base's modules are stored in eval mode, and Lightning (>= 2.2) trains modules
        # in the mode they are in: BatchNorm must learn its statistics here
        self.train()

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.correct += int((self(x).argmax(1) == y).sum())
        self.total += len(y)

    def on_validation_epoch_start(self):
        self.correct, self.total = 0, 0

    def configure_optimizers(self):
        opt = torch.optim.SGD(
            self.model.parameters(), lr=self.lr, momentum=0.9, weight_decay=self.weight_decay, nesterov=True
        )
        return [opt], [torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, self.epochs))]


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, loader: DataLoader) -> None:
    """Re-estimate BatchNorm running statistics as exact averages over one pass of `loader`.

    After a short training the exponential running averages still lag behind the weights, and
    the frozen modules of a knowledge base run in eval mode on exactly those statistics.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average
    device = next(model.parameters()).device
    model.train()
    for x, _ in loader:
        model(x.to(device))
    for m, momentum in zip(norms, saved):
        m.momentum = momentum
    model.eval()


def train_source_network(
    model: nn.Module,
    train_loader: DataLoader,
    val_loader: DataLoader | None = None,
    epochs: int = 3,
    lr: float = 0.05,
    trainer: TrainerSettings | None = None,
    progress: bool = True,
) -> float:
    """Train `model` in place for `epochs` where, and in the precision, `trainer` (the trainer
    group's settings; None: float32 on the CPU) says; returns validation accuracy (or nan without
    a loader)."""
    settings = trainer or SOURCE_TRAINER
    use_float32_matmul_precision(settings.device, settings.float32_matmul_precision)
    module = SourceNetworkModule(model, lr=lr, epochs=epochs)
    with quiet_lightning():
        trainer = make_trainer(epochs, settings.accelerator, settings.resolved_precision(), progress=progress)
        trainer.fit(module, train_loader)
        recalibrate_batchnorm(model, train_loader)
        if val_loader is None:
            return float("nan")
        trainer.validate(module, val_loader, verbose=False)
    model.eval()
    return module.correct / max(1, module.total)


def finetune_sources(
    kb, datamodule, epochs: int, lr: float = 0.01, trainer: TrainerSettings | None = None, progress: bool = True
) -> dict[str, float]:
    """Fine-tune every source network of `kb` on the target dataset before the search (Sec. IV-B1:
    "we first fine-tune those architectures ... for new modules in the knowledge base").

    Source network i is its modules in order, global average pooling and a new linear layer for
    the target's classes; it is trained end to end and its modules keep the new weights (the
    temporary head is dropped). Returns each network's validation accuracy."""
    accuracies = {}
    for i, name in enumerate(kb.arch_names):
        modules = [kb.modules[j][i] for j in range(kb.num_cells)]
        head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(kb.specs[-1][i].out_channels, datamodule.num_classes)
        )
        network = nn.Sequential(*modules, head)
        network.requires_grad_(True)
        accuracies[name] = train_source_network(
            network,
            datamodule.train_dataloader(),
            datamodule.val_dataloader(),
            epochs=epochs,
            lr=lr,
            trainer=trainer,
            progress=progress,
        )
        network.cpu().requires_grad_(False).eval()
        kb.sources[i] = f"{kb.sources[i]}, fine-tuned {epochs} epochs on the target (val acc {accuracies[name]:.3f})"
    return accuracies
