"""DARTS-family CIFAR networks built from a cell genotype, and their ModuleNet modules (Sec. IV-B2).

The network is the DARTS evaluation network (Liu et al. 2019, "NetworkCIFAR"): a stem
(3x3 conv + BN), `layers` cells, global average pooling and a linear classifier. Cell k reads
the outputs of cells k-2 and k-1 (the stem's output stands in for both at the start); a
reduction cell doubles the channels and halves the resolution.

Stacking (Sec. IV-B2). The paper re-stacks the searched cells for c = 5: "reduction in 5, 10
and 15 layers, and 20 layers in total ... 5 cells in each module, together with a stem cell as
the first module, making up 5 modules". Its implementation (github.com/flymin/darts,
cnn/model.py) puts the reductions at cells `layers // 4 * (1, 2, 3)`, 0-indexed, i.e. cells
5, 10 and 15 of 0..19, with a stem of C channels (`stem_multiplier=1`; DARTS' own is 3 C).
Both are the defaults here and both can be changed (`reductions=(6, 13), stem_multiplier=3`
is the original DARTS network, 3.3M parameters for DARTS_V2 at C = 36).

Module split (c = 5), like torchvision ResNets' layer2..4, each later module opens with its
reduction cell:

    module 1: stem                         image 32x32 ->  72 @ 32x32  (the pair (s, s))
    module 2: cells 0-4   (normal cells)    72 @ 32x32 -> 288 @ 32x32  (cells 3, 4: 144 each)
    module 3: cells 5-9   (5 = reduction)  288 @ 32x32 -> 576 @ 16x16
    module 4: cells 10-14 (10 = reduction) 576 @ 16x16 -> 1152 @ 8x8
    module 5: cells 15-19 (15 = reduction) 1152 @ 8x8  -> 1152 @ 4x4  (cell 19 alone, to the classifier)

(channels at C = 36, stem_multiplier = 1, 32x32 images). In general module 1 is the stem and
a new module opens at every reduction cell, so c = len(reductions) + 2.

Module boundary: the first cell of a module needs both previous outputs (s0, s1), so every
module but the last returns `cat([s0, s1], dim=1)` and the next module splits it in halves.
With reductions opening modules, s0 and s1 at a boundary are the outputs of two cells of the
same stage (or the stem twice), so they always have the same channels and resolution (checked
when the network is split). The stem module returns `cat([s, s])`; the last module returns s1
alone, the final cell's output that the classifier reads. Between DARTS networks of the same
C and stem no connection is needed; with another family, or another C, the knowledge base's
parameter-free ChP/ChDP (Sec. III-D) and spatial adapter act on the concatenated tensor like
on any feature map.

Parameter names follow the DARTS, P-DARTS and PC-DARTS code (`stem.0`, `cells.3.preprocess0.op.1`,
`cells.3._ops.2.op.5`, `classifier`), so their `state_dict` files load; `module.` prefixes and
`auxiliary_head.*` tensors are ignored on loading (weights.py), and so is the classifier.
Eval only: no auxiliary head and no drop-path (which is the identity at evaluation); training
a source network here therefore runs without drop-path.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from modulenet.knowledge.darts_genotypes import DartsGenotype, validate_genotype

# -- operations --------------------------------------------------------------------------------


class ReLUConvBN(nn.Module):
    def __init__(self, c_in: int, c_out: int, kernel_size: int, stride: int = 1, padding: int = 0):
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(),
            nn.Conv2d(c_in, c_out, kernel_size, stride=stride, padding=padding, bias=False),
            nn.BatchNorm2d(c_out),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class SepConv(nn.Module):
    """Two stacked (ReLU, depthwise k x k, pointwise 1x1, BN); only the first may stride."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, stride: int, padding: int):
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(),
            nn.Conv2d(c_in, c_in, kernel_size, stride=stride, padding=padding, groups=c_in, bias=False),
            nn.Conv2d(c_in, c_in, 1, bias=False),
            nn.BatchNorm2d(c_in),
            nn.ReLU(),
            nn.Conv2d(c_in, c_in, kernel_size, padding=padding, groups=c_in, bias=False),
            nn.Conv2d(c_in, c_out, 1, bias=False),
            nn.BatchNorm2d(c_out),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class DilConv(nn.Module):
    """ReLU, dilated depthwise k x k (dilation 2), pointwise 1x1, BN."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, stride: int, padding: int, dilation: int):
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(),
            nn.Conv2d(
                c_in, c_in, kernel_size, stride=stride, padding=padding, dilation=dilation, groups=c_in, bias=False
            ),
            nn.Conv2d(c_in, c_out, 1, bias=False),
            nn.BatchNorm2d(c_out),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class FactorizedReduce(nn.Module):
    """Halve the resolution with two 1x1 stride-2 convolutions, one offset by a pixel, concatenated."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        if c_out % 2:
            raise ValueError(f"FactorizedReduce needs an even number of output channels, got {c_out}")
        self.relu = nn.ReLU()
        self.conv_1 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.conv_2 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.bn = nn.BatchNorm2d(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(x)
        return self.bn(torch.cat([self.conv_1(x), self.conv_2(x[:, :, 1:, 1:])], dim=1))


class Zero(nn.Module):
    """The `none` operation: zeros at the output resolution."""

    def __init__(self, stride: int):
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :, :: self.stride, :: self.stride].mul(0.0)


def make_op(name: str, channels: int, stride: int) -> nn.Module:
    """One DARTS operation on `channels` channels; stride 2 on a reduction cell's input edges."""
    c = channels
    if name == "none":
        return Zero(stride)
    if name == "max_pool_3x3":
        return nn.MaxPool2d(3, stride=stride, padding=1)
    if name == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False)
    if name == "skip_connect":
        return nn.Identity() if stride == 1 else FactorizedReduce(c, c)
    if name in ("sep_conv_3x3", "sep_conv_5x5"):
        k = int(name[-1])
        return SepConv(c, c, k, stride, k // 2)
    if name in ("dil_conv_3x3", "dil_conv_5x5"):
        k = int(name[-1])
        return DilConv(c, c, k, stride, k - 1, 2)
    raise ValueError(f"unknown DARTS operation {name!r}")


# -- cells and network -------------------------------------------------------------------------


class DartsCell(nn.Module):
    """One cell: preprocess both inputs to C channels, then nodes summing two operations each, concatenated."""

    def __init__(
        self,
        genotype: DartsGenotype,
        c_prev_prev: int,
        c_prev: int,
        channels: int,
        reduction: bool,
        reduction_prev: bool,
    ):
        super().__init__()
        self.reduction = reduction
        if reduction_prev:  # s0 is at twice s1's resolution
            self.preprocess0 = FactorizedReduce(c_prev_prev, channels)
        else:
            self.preprocess0 = ReLUConvBN(c_prev_prev, channels, 1)
        self.preprocess1 = ReLUConvBN(c_prev, channels, 1)
        edges = genotype.reduce if reduction else genotype.normal
        self.concat = tuple(genotype.reduce_concat if reduction else genotype.normal_concat)
        self.indices = tuple(index for _, index in edges)
        self._ops = nn.ModuleList(make_op(op, channels, 2 if reduction and index < 2 else 1) for op, index in edges)
        self.out_channels = len(self.concat) * channels

    def forward(self, s0: torch.Tensor, s1: torch.Tensor) -> torch.Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        for node in range(len(self._ops) // 2):
            a, b = 2 * node, 2 * node + 1
            states.append(self._ops[a](states[self.indices[a]]) + self._ops[b](states[self.indices[b]]))
        return torch.cat([states[i] for i in self.concat], dim=1)


def paper_reductions(layers: int) -> tuple[int, ...]:
    """The paper's re-stacking for c = 5: reduction cells at layers // 4 * (1, 2, 3), 0-indexed (Sec. IV-B2)."""
    return tuple(layers // 4 * k for k in (1, 2, 3))


class DartsNetwork(nn.Module):
    """The DARTS CIFAR evaluation network for one genotype; `forward` returns logits."""

    def __init__(
        self,
        genotype: DartsGenotype,
        C: int = 36,
        num_classes: int = 10,
        layers: int = 20,
        reductions: Sequence[int] | None = None,
        stem_multiplier: int = 1,
    ):
        super().__init__()
        validate_genotype(genotype)
        self.reductions = tuple(paper_reductions(layers) if reductions is None else sorted(set(reductions)))
        if layers < 1 or any(not 0 <= r < layers for r in self.reductions):
            raise ValueError(f"reduction cells {list(self.reductions)} must lie in [0, {layers}) for {layers} layers")
        stem_channels = stem_multiplier * C
        self.stem = nn.Sequential(nn.Conv2d(3, stem_channels, 3, padding=1, bias=False), nn.BatchNorm2d(stem_channels))
        self.cells = nn.ModuleList()
        self.out_channels = [stem_channels]  # the stem's, then each cell's
        c_prev_prev, c_prev, channels, reduction_prev = stem_channels, stem_channels, C, False
        for k in range(layers):
            reduction = k in self.reductions
            if reduction:
                channels *= 2
            cell = DartsCell(genotype, c_prev_prev, c_prev, channels, reduction, reduction_prev)
            self.cells.append(cell)
            self.out_channels.append(cell.out_channels)
            c_prev_prev, c_prev, reduction_prev = c_prev, cell.out_channels, reduction
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_prev, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The last cell's output, the feature map the classifier pools."""
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1)
        return s1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.global_pooling(self.features(x)).flatten(1))


# -- ModuleNet modules -------------------------------------------------------------------------


class DartsStem(nn.Module):
    """Module 1: the stem; returns cat([s, s]), the (s0, s1) pair of the first cell."""

    def __init__(self, stem: nn.Module):
        super().__init__()
        self.stem = stem

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.stem(x)
        return torch.cat([s, s], dim=1)


class DartsStage(nn.Module):
    """Modules 2..c: consecutive cells; input cat([s0, s1]), output cat([s0, s1]) or, last, s1 alone."""

    def __init__(self, cells: Sequence[DartsCell], last: bool):
        super().__init__()
        self.cells = nn.ModuleList(cells)
        self.last = last

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s0, s1 = x.chunk(2, dim=1)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1)
        return s1 if self.last else torch.cat([s0, s1], dim=1)


def module_bounds(layers: int, reductions: Sequence[int]) -> list[tuple[int, int]]:
    """[start, end) cell ranges of modules 2..c: a new module opens at every reduction cell.

    A boundary carries the outputs of the module's last two cells, so every module but the
    last needs at least two cells (else the pair would mix the stem or a reduction's input).
    """
    starts = [0, *sorted(reductions)]
    bounds = list(zip(starts, [*starts[1:], layers]))
    short = [b for b in bounds[:-1] if b[1] - b[0] < 2] + [b for b in bounds[-1:] if b[1] <= b[0]]
    if short:
        raise ValueError(
            f"reduction cells {list(reductions)} of {layers} layers leave modules {short} (cell ranges) "
            "with too few cells: each module but the last needs two, the last one"
        )
    return bounds


def split_darts(network: DartsNetwork) -> list[nn.Module]:
    """The network's ModuleNet modules (stem, then one per reduction stage), sharing its tensors."""
    bounds = module_bounds(len(network.cells), network.reductions)
    for _start, end in bounds[:-1]:  # s0, s1 handed over at the boundary: same channels (and resolution)
        c0, c1 = network.out_channels[end - 1], network.out_channels[end]  # cells end-2 and end-1 (index + 1)
        if c0 != c1:
            raise ValueError(
                f"cells {end - 2} and {end - 1} output {c0} and {c1} channels: they cannot share a boundary"
            )
    stages = [
        DartsStage(network.cells[start:end], last=(j == len(bounds) - 1)) for j, (start, end) in enumerate(bounds)
    ]
    return [DartsStem(network.stem), *stages]
