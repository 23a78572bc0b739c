"""The search-stage model of Sec. III-E / Sec. IV: a frozen assembled trunk and the trainable
classifier `input_size - 4096 - 4096 - classes` (three fully connected layers).

With `trunk=None` the module trains on cached trunk features: the trunk is frozen and in eval
mode, so its output for an image never changes and computing it once per individual gives the
same training as running it in every step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn


class Classifier(nn.Sequential):
    """input_size - hidden... - classes, ReLU between (Sec. IV: hidden = 4096, 4096)."""

    def __init__(self, in_features: int, num_classes: int, hidden: Sequence[int] = (4096, 4096), dropout: float = 0.0):
        layers: list[nn.Module] = []
        width = in_features
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU(inplace=True)]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = size
        layers.append(nn.Linear(width, num_classes))
        super().__init__(*layers)


def pool_features(features: torch.Tensor, pool: str) -> torch.Tensor:
    """The classifier input: the last module's map flattened (the paper: input size set by the
    last convolutional layer) or globally average-pooled (`pool="avg"`, a smaller head)."""
    if pool == "avg":
        return features.mean(dim=(2, 3))
    return features.flatten(1)


def classifier_input_size(channels: int, size: tuple[int, int], pool: str) -> int:
    return channels if pool == "avg" else channels * size[0] * size[1]


class IndividualModule(pl.LightningModule):
    """One individual of the search: frozen trunk (or its cached features) + trainable classifier.

    Records the mean training loss of every epoch (for l_rate, Eq. 6) and validation accuracy
    (for err_val, Eq. 5). With a trainable trunk (`kb.assemble(..., trainable=True)`) the same
    module is the fine-tuning model of the evaluation stage (Sec. IV).
    """

    def __init__(
        self,
        trunk: nn.Module | None,
        in_features: int,
        num_classes: int,
        hidden: Sequence[int] = (4096, 4096),
        pool: str = "flatten",
        dropout: float = 0.0,
        optimizer: Callable[..., torch.optim.Optimizer | dict] | None = None,
    ):
        super().__init__()
        self.trunk = trunk
        self.pool = pool
        self.classifier = Classifier(in_features, num_classes, hidden, dropout)
        self.optimizer_factory = optimizer or (lambda params: torch.optim.Adam(params, lr=1e-3))
        self.epoch_losses: list[float] = []
        self._loss_sum = torch.zeros(())
        self._seen = 0
        self._correct = 0
        self._correct5 = 0
        self._total = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # a frozen trunk has no parameter that requires grad, so autograd records nothing in it
        features = self.trunk(x) if self.trunk is not None else x
        return self.classifier(pool_features(features, self.pool))

    def on_fit_start(self) -> None:
        # Lightning (>= 2.2) trains modules in whatever mode they are in, and an assembled trunk
        # starts in eval mode: without this, fine-tuning would train BatchNorm networks on frozen
        # running statistics. A frozen trunk keeps its modules in eval mode (Trunk.train).
        self.train()

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self._loss_sum = self._loss_sum.to(loss.device) + loss.detach() * len(y)
        self._seen += len(y)
        return loss

    @property
    def running_loss(self) -> float:
        """The mean training loss of the epoch so far."""
        return float(self._loss_sum) / max(1, self._seen)

    def on_train_epoch_end(self) -> None:
        self.epoch_losses.append(self.running_loss)
        self._loss_sum, self._seen = torch.zeros(()), 0

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        self._correct += int((logits.argmax(1) == y).sum())
        if logits.shape[1] > 5:
            self._correct5 += int((logits.topk(5, dim=1).indices == y[:, None]).any(dim=1).sum())
        self._total += len(y)

    def on_validation_epoch_start(self) -> None:
        self._correct, self._correct5, self._total = 0, 0, 0

    @property
    def val_accuracy(self) -> float:
        return self._correct / max(1, self._total)

    @property
    def val_accuracy_top5(self) -> float | None:
        """Top-5 accuracy of the last validation or test pass (Table IV); None with 5 classes or fewer."""
        return self._correct5 / max(1, self._total) if self.classifier[-1].out_features > 5 else None

    def test_step(self, batch, batch_idx):
        self.validation_step(batch, batch_idx)

    def on_test_epoch_start(self) -> None:
        self.on_validation_epoch_start()

    def configure_optimizers(self):
        # the classifier, plus whatever of the trunk is trainable: 1x1 links (Sec. V-C) or,
        # when fine-tuning (Sec. IV), every module
        return self.optimizer_factory([p for p in self.parameters() if p.requires_grad])
