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

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from modulenet.errors import first_line
from modulenet.evaluation.lit_module import Classifier, pool_features
from modulenet.runtime.precision import BF16, is_bf16, time_steps
from modulenet.stitching.assembly import Trunk

log = logging.getLogger(__name__)

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


class StackedIndividuals:
    """The classifiers of G individuals trained on their resident cached features, with per-
    individual epoch losses (Eq. 6) and validation accuracy (Eq. 5) as `IndividualModule`
    records them.

    A plain loop, not a Lightning trainer (ours, for speed): all batches are drawn before training
    (from the same generator and `DataLoader` as the plain way, so in the same order) and stay on
    the device, and nothing in a step waits for the host. On a GPU the whole step (forward,
    backward, fused Adam) is captured once as a CUDA graph and replayed (`graph=True`), which
    removes Python and kernel-launch overhead per step; its first steps run eagerly to warm up,
    and a last, shorter batch of an epoch runs eagerly too. A capture that raises or a replay that
    disagrees with the eager step is one warning, and the loop continues eagerly."""

    WARMUP = 3  # eager steps before the capture (CUDA graphs need warmed-up kernels and optimizer state)

    def __init__(
        self,
        x_train: torch.Tensor,
        y_train: torch.Tensor,
        x_val: torch.Tensor,
        y_val: torch.Tensor,
        template: Classifier,
        optimizer,
        precision: str = "32-true",
    ):
        self.x_train, self.y_train, self.x_val, self.y_val = x_train, y_train, x_val, y_val  # (G, N, in), (N,)
        self.device = x_train.device
        self.copies = x_train.shape[0]
        self.classifier = StackedClassifier(template, self.copies).to(self.device)
        self.optimizer_factory = optimizer
        self.bf16 = is_bf16(precision)
        self.epoch_losses: list[list[float]] = [[] for _ in range(self.copies)]
        self.val_accuracies: list[float] = []

    def _autocast(self):
        # cache_enabled=False: autocast's weight-cast cache must not outlive a captured graph
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16, cache_enabled=False)

    def _logits(self, features: torch.Tensor) -> torch.Tensor:
        return self.classifier(features.to(self.classifier.weights[0].dtype))

    def _loss(self, index: torch.Tensor, loss_sum: torch.Tensor) -> torch.Tensor:
        """The summed loss of one batch (each classifier gets exactly its own gradient); the
        per-individual mean loss, times the batch size, is added to `loss_sum` on the device."""
        y = self.y_train[index]
        with self._autocast():
            logits = self._logits(self.x_train[:, index])
            losses = F.cross_entropy(logits.flatten(0, 1).float(), y.repeat(self.copies), reduction="none")
        per_individual = losses.view(self.copies, -1).mean(1)
        loss_sum.add_(per_individual.detach() * len(index))
        return per_individual.sum()

    def fit(self, epochs: int, batch_size: int, generator: torch.Generator, graph: bool = False) -> None:
        n = self.x_train.shape[1]
        order = torch.stack([epoch_order(n, batch_size, generator) for _ in range(epochs)]).to(self.device)
        capturable = graph and self._can_capture()
        optimizer = self.optimizer_factory(self.classifier.parameters(), capturable)
        loss_sum = torch.zeros(self.copies, device=self.device)

        def eager(index: torch.Tensor) -> None:
            optimizer.zero_grad(set_to_none=True)
            self._loss(index, loss_sum).backward()
            optimizer.step()

        beside = self._beside(eager) if capturable else eager
        replay = None
        steps = 0
        self.classifier.train()
        for epoch in range(epochs):
            for start in range(0, n, batch_size):
                index = order[epoch, start : start + batch_size]
                if capturable and len(index) == batch_size and steps >= self.WARMUP and replay is None:
                    # this batch is stepped once, eagerly; a graph that fails or disagrees is never replayed
                    replay = self._first_graph_step(optimizer, index, loss_sum, beside)
                    capturable = replay is not None
                elif capturable and len(index) == batch_size and replay is not None:
                    replay(index)
                elif capturable:
                    beside(index)
                else:
                    eager(index)
                steps += 1
            for g, value in enumerate((loss_sum / n).tolist()):  # the one host sync of an epoch
                self.epoch_losses[g].append(value)
            loss_sum.zero_()

    def _can_capture(self) -> bool:
        return self.device.type == "cuda"

    def _beside(self, eager):
        """`eager` on a side stream: eager work beside a graph must not run on the capture's stream."""
        side = torch.cuda.Stream(self.device)

        def beside(index: torch.Tensor) -> None:
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                eager(index)
            torch.cuda.current_stream().wait_stream(side)

        return beside

    def _first_graph_step(self, optimizer, index: torch.Tensor, loss_sum: torch.Tensor, eager):
        """Capture the step on this batch and check it (`replay_agrees`); returns `replay(index)`,
        or None when the capture raised or the replay disagreed: then one warning, this batch
        stepped eagerly from the state before the capture, and the run continues eagerly. A
        graph is a speed-up only, so no failure of it may end an evaluation."""
        restore = self._saved_state(optimizer, loss_sum)
        try:
            replay = self._capture(optimizer, index, loss_sum)
        except RuntimeError as err:  # CUDA's capture errors (and torch.AcceleratorError) are RuntimeErrors
            restore()
            log.warning(
                "capturing the CUDA-graph step of the stacked classifiers failed (%s): continuing eagerly "
                "(evaluator.graph_step=false does so from the start)",
                first_line(err),
            )
            eager(index)
            return None
        return replay if self.replay_agrees(replay, eager, index, optimizer, loss_sum) else None

    def _saved_state(self, optimizer, loss_sum: torch.Tensor):
        """The parameters, the optimizer's state and `loss_sum` as they are now; the function
        returned puts them back and drops any optimizer state created since (a first step's)."""
        params = list(self.classifier.parameters())
        tensors = params + [v for p in params for v in optimizer.state[p].values() if torch.is_tensor(v)] + [loss_sum]
        before = [v.detach().clone() for v in tensors]
        keys = {p: set(optimizer.state[p]) for p in params}

        def restore() -> None:
            with torch.no_grad():
                for v, saved in zip(tensors, before):
                    v.copy_(saved)
            for p in params:
                for key in set(optimizer.state[p]) - keys[p]:
                    del optimizer.state[p][key]

        return restore

    def replay_agrees(self, replay, eager, index: torch.Tensor, optimizer, loss_sum: torch.Tensor) -> bool:
        """The graph checks itself at first use: one replayed step and one eager step on the same
        batch, from the same parameters and optimizer state, must give the same parameters (to a
        tolerance bf16 explains). A wrong replay would silently change every score, so a mismatch
        is one warning, and the run continues eagerly from the eager step's state."""
        restore = self._saved_state(optimizer, loss_sum)
        replay(index)
        replayed = [p.detach().clone() for p in self.classifier.parameters()]
        restore()
        eager(index)
        params = list(self.classifier.parameters())
        tolerance = 1e-2 if self.bf16 else 1e-4
        if all(torch.allclose(a, b, rtol=tolerance, atol=tolerance) for a, b in zip(replayed, params)):
            return True
        worst = max(float((a - b.detach()).abs().max()) for a, b in zip(replayed, params))
        log.warning(
            "the CUDA-graph step of the stacked classifiers differs from the eager step (max |d param| %.3g "
            "> %g): continuing eagerly (evaluator.graph_step=false does so from the start)",
            worst,
            tolerance,
        )
        return False

    def _capture(self, optimizer, first: torch.Tensor, loss_sum: torch.Tensor):
        """One full-batch step (gradients allocated by the captured backward, fused Adam) as a
        CUDA graph over a static index buffer; returns `replay(index)`. An eager step between
        replays sets the gradients aside and allocates its own; the graph keeps its memory."""
        torch.cuda.synchronize(self.device)
        static_index = first.clone()
        optimizer.zero_grad(set_to_none=True)
        cuda_graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(cuda_graph):
            self._loss(static_index, loss_sum).backward()
            optimizer.step()

        def replay(index: torch.Tensor) -> None:
            static_index.copy_(index)
            cuda_graph.replay()

        return replay

    @torch.no_grad()
    def validate(self, batch_size: int) -> list[float]:
        self.classifier.eval()
        correct = torch.zeros(self.copies, dtype=torch.long, device=self.device)
        n = self.x_val.shape[1]
        for start in range(0, n, batch_size):
            index = torch.arange(start, min(n, start + batch_size), device=self.device)
            with self._autocast():
                predictions = self._logits(self.x_val[:, index]).argmax(-1)
            correct += (predictions == self.y_val[index]).sum(1)
        self.val_accuracies = (correct.double() / max(1, n)).tolist()
        return self.val_accuracies


def epoch_order(n: int, batch_size: int, generator: torch.Generator) -> torch.Tensor:
    """One epoch's shuffled indices, drawn as a Lightning trainer draws them from
    `batch_loader`: a fresh iterator per epoch, stopped after `len(loader)` batches (Lightning
    stops by length, so when `batch_size` divides `n` the sampler's exhausting draw never comes)."""
    loader = batch_loader(n, batch_size, generator)
    batches = iter(loader)
    return torch.cat([next(batches) for _ in range(len(loader))])


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


# What trainer.precision=auto times for the search's classifiers (runtime/precision.py chooses).
@dataclass(frozen=True)
class HeadShape:
    """The stacked classifiers whose step is timed: `copies` heads `in_features-hidden...-classes`."""

    in_features: int
    hidden: tuple[int, ...]
    classes: int
    copies: int
    batch_size: int

    @property
    def key(self) -> str:
        """The shape in the precision cache's key."""
        hidden = "-".join(map(str, self.hidden))
        return f"head {self.copies}x{self.batch_size}x{self.in_features}-{hidden}-{self.classes}"

    def seconds(self, device: torch.device) -> dict[str, float]:
        return head_step_seconds(self, device)


def head_step_seconds(
    head: HeadShape, device: torch.device, rounds: int = 3, steps: int = 2, seed: int = 0
) -> dict[str, float]:
    """Seconds per training step of `head` in float32 and bf16-mixed: rounds alternate the two (so
    a slow spell of the machine hits both), the best round counts. Own generator: the global RNG
    that evaluations draw from is left alone."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(head.copies, head.batch_size, head.in_features, generator=generator).to(device)
    y = torch.randint(head.classes, (head.copies * head.batch_size,), generator=generator).to(device)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):  # its init draws roll back
        template = Classifier(head.in_features, head.classes, head.hidden)
    model = StackedClassifier(template, head.copies).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=device.type in ("cpu", "cuda"))

    def step(precision: str) -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == BF16):
            logits = model(x)
        F.cross_entropy(logits.flatten(0, 1).float(), y).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return time_steps(step, device, rounds, steps)
