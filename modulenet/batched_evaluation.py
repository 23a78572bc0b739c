"""Evaluating a whole generation at once (speed only: Sec. III-E's results, computed faster).

Two savings over one trainer per individual, both exact in float32:

* **Shared prefixes.** The output of modules 1..k depends only on the genotype's first k
  genes (and on the reduction the resolution rule removed from each, `Trunk.stage_keys`), so
  within a generation every distinct prefix is computed once per image batch: the
  genotypes are walked in lexicographic order as a trie of module prefixes, keeping only the
  activations of the current path (at most c tensors of one batch) alive.
* **Stacked classifiers.** The search trains one `input-4096-4096-classes` classifier per
  individual on cached features, from the same seed (hence the same initial weights) and the
  same shuffled batches. Individuals whose features have the same width are trained together:
  their weights are stacked along a leading axis, each layer is one batched matrix product,
  and one Adam steps them all (Adam is element-wise, so this is G independent Adams). The
  summed loss gives each classifier exactly its own gradient.

Reduced precision (`precision="bf16-mixed"`) runs the products in bfloat16 with float32
master weights, on CPUs with bf16 matrix units and on GPUs alike.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from modulenet.assembly import Trunk
from modulenet.lit_module import Classifier, pool_features

# --------------------------------------------------------------------------- shared prefixes


def trunk_stages(trunk: Trunk) -> list[list[nn.Module]]:
    """The trunk's layers grouped by cell: stage j is [link_j (if any), cell_j]. The output of
    stages 1..j depends only on genes 1..j, which is what makes prefixes shareable."""
    stages, pending = [], []
    for name, layer in trunk.named_children():
        pending.append(layer)
        if name.startswith("cell"):
            stages.append(pending)
            pending = []
    return stages


@torch.no_grad()
def prefix_shared_features(
    trunks: dict[tuple[int, ...], Trunk],
    images: torch.Tensor,
    batch_size: int,
    device: torch.device,
    pool: str = "flatten",
    channels_last: bool = False,
    out_dtype: torch.dtype = torch.float32,
) -> tuple[dict[tuple[int, ...], torch.Tensor], int]:
    """Pooled trunk features of every genotype in `trunks`, computing each distinct module prefix
    once per image batch. Returns the features (on `device`) and the number of module stages run
    per batch (the trie's node count; c * len(trunks) without sharing)."""
    order = sorted(trunks)
    stages = {code: trunk_stages(trunks[code]) for code in order}
    keys = {code: trunks[code].stage_keys for code in order}
    chunks: dict[tuple[int, ...], list[torch.Tensor]] = {code: [] for code in order}
    nodes = 0
    for start in range(0, len(images), batch_size):
        x0 = images[start : start + batch_size].to(device, non_blocking=True)
        if channels_last:
            x0 = x0.contiguous(memory_format=torch.channels_last)
        path: list[tuple[tuple[int, ...], torch.Tensor]] = []  # (prefix, its output), root first
        nodes = 0
        for code in order:
            key = keys[code]
            while path and key[: len(path[-1][0])] != path[-1][0]:
                path.pop()
            x = path[-1][1] if path else x0
            for j in range(len(path), len(code)):
                for layer in stages[code][j]:
                    x = layer(x)
                path.append((key[: j + 1], x))
                nodes += 1
            chunks[code].append(pool_features(x, pool).to(out_dtype))
    return {code: torch.cat(parts) for code, parts in chunks.items()}, nodes


# --------------------------------------------------------------------------- stacked classifiers


class StackedClassifier(nn.Module):
    """G copies of `Classifier` trained side by side: layer l's weights are one (G, in, out)
    tensor and its forward pass one batched matrix product."""

    def __init__(self, template: Classifier, copies: int):
        super().__init__()
        linears = [m for m in template if isinstance(m, nn.Linear)]
        self.weights = nn.ParameterList(
            nn.Parameter(m.weight.detach().t().unsqueeze(0).repeat(copies, 1, 1).contiguous()) for m in linears
        )
        self.biases = nn.ParameterList(
            nn.Parameter(m.bias.detach().view(1, 1, -1).repeat(copies, 1, 1).contiguous()) for m in linears
        )
        self.dropout = next((m.p for m in template if isinstance(m, nn.Dropout)), 0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(G, B, in) -> (G, B, classes)."""
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            x = torch.baddbmm(b, x, w)
            if i < last:
                x = F.relu(x)
                if self.dropout > 0:
                    x = F.dropout(x, self.dropout, self.training)
        return x

    def num_params(self) -> int:
        """Parameters of one of the G classifiers."""
        return sum(p[0].numel() for p in (*self.weights, *self.biases))


class StackedIndividualsModule(pl.LightningModule):
    """The classifiers of G individuals on their resident cached features: per-individual epoch
    losses (Eq. 6) and validation accuracy (Eq. 5), as `IndividualModule` records them."""

    def __init__(
        self,
        x_train: torch.Tensor,
        y_train: torch.Tensor,
        x_val: torch.Tensor,
        y_val: torch.Tensor,
        template: Classifier,
        optimizer,
    ):
        super().__init__()
        self.x_train, self.y_train, self.x_val, self.y_val = x_train, y_train, x_val, y_val  # (G, N, in), (N,)
        self.copies = x_train.shape[0]
        self.classifier = StackedClassifier(template, self.copies)
        self.optimizer_factory = optimizer
        self.epoch_losses: list[list[float]] = [[] for _ in range(self.copies)]
        self._loss_sum = torch.zeros(self.copies)
        self._seen = 0
        self.correct = torch.zeros(self.copies, dtype=torch.long)
        self.total = 0

    def _logits(self, features: torch.Tensor) -> torch.Tensor:
        return self.classifier(features.to(self.classifier.weights[0].dtype))

    def training_step(self, index, batch_idx):
        index = index.to(self.x_train.device)
        y = self.y_train[index]
        logits = self._logits(self.x_train[:, index])
        losses = F.cross_entropy(logits.flatten(0, 1).float(), y.repeat(self.copies), reduction="none")
        per_individual = losses.view(self.copies, -1).mean(1)
        self._loss_sum = self._loss_sum.to(per_individual.device) + per_individual.detach() * len(y)
        self._seen += len(y)
        return per_individual.sum()

    def on_train_epoch_end(self) -> None:
        for g, value in enumerate((self._loss_sum / max(1, self._seen)).tolist()):
            self.epoch_losses[g].append(value)
        self._loss_sum, self._seen = torch.zeros(self.copies), 0

    def validation_step(self, index, batch_idx):
        index = index.to(self.x_val.device)
        predictions = self._logits(self.x_val[:, index]).argmax(-1)
        self.correct += (predictions == self.y_val[index]).sum(1).cpu()
        self.total += len(index)

    def on_validation_epoch_start(self) -> None:
        self.correct, self.total = torch.zeros(self.copies, dtype=torch.long), 0

    @property
    def val_accuracies(self) -> list[float]:
        return (self.correct.double() / max(1, self.total)).tolist()

    def configure_optimizers(self):
        return self.optimizer_factory(self.classifier.parameters())


def batch_loader(n: int, batch_size: int, generator: torch.Generator | None) -> DataLoader:
    """Index batches over resident features, shuffled when given a generator. A DataLoader over
    `range(n)` draws from the generator exactly as the per-individual `DataLoader(TensorDataset,
    shuffle=True, generator=g)` does (its sampler and its per-epoch base seed alike), so stacked
    classifiers see the same batches in the same order."""
    return DataLoader(range(n), batch_size=batch_size, shuffle=generator is not None, generator=generator)


def group_by_width(
    codes: Sequence[tuple[int, ...]],
    widths: dict[tuple[int, ...], int],
    group_size: int,
    bytes_per_individual: dict[tuple[int, ...], int],
    memory_budget: int,
) -> list[list[tuple[int, ...]]]:
    """Groups of at most `group_size` genotypes with equal classifier input width whose resident
    features fit `memory_budget` bytes together (a single individual always forms a group)."""
    groups: list[list[tuple[int, ...]]] = []
    by_width: dict[int, list[tuple[int, ...]]] = {}
    for code in codes:
        by_width.setdefault(widths[code], []).append(code)
    for members in by_width.values():
        current: list[tuple[int, ...]] = []
        used = 0
        for code in members:
            size = bytes_per_individual[code]
            if current and (len(current) >= group_size or used + size > memory_budget):
                groups.append(current)
                current, used = [], 0
            current.append(code)
            used += size
        if current:
            groups.append(current)
    return groups
