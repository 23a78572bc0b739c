"""Small CIFAR-size CNNs of three more families, c = 3, for the quickstart knowledge base and the
same-data study.

Their channels (32/64/128, 24/48/96 and 40/80/160) and reductions (pool at the end of each cell,
a strided convolution at its start, or a strided depthwise convolution at its end) differ from
the CIFAR ResNets' 16/32/64, so a search exercises ChP, ChDP and the resolution rule.
"""

from __future__ import annotations

import torch
from torch import nn


def _conv_bn(c_in: int, c_out: int, stride: int = 1) -> list[nn.Module]:
    return [
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    ]


class VGGCifar(nn.Module):
    """VGG-style: three cells of conv-BN-ReLU followed by a 2x2 max-pool (the cell's reduction)."""

    def __init__(self, widths=(32, 64, 128), num_classes: int = 10):
        super().__init__()
        cells, c_in = [], 3
        for width in widths:
            cells.append(nn.Sequential(*_conv_bn(c_in, width), *_conv_bn(width, width), nn.MaxPool2d(2)))
            c_in = width
        self.features = nn.Sequential(*cells)
        self.classifier = nn.Linear(c_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).mean((2, 3)))


def _depthwise_separable(c_in: int, c_out: int, stride: int = 1) -> list[nn.Module]:
    return [
        nn.Conv2d(c_in, c_in, 3, stride=stride, padding=1, groups=c_in, bias=False),
        nn.BatchNorm2d(c_in),
        nn.ReLU(inplace=True),
        nn.Conv2d(c_in, c_out, 1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    ]


class MobileNetCifar(nn.Module):
    """MobileNet-style: depthwise-separable convolutions; each cell ends with a strided depthwise one."""

    def __init__(self, widths=(40, 80, 160), num_classes: int = 10):
        super().__init__()
        cells, c_in = [], 3
        for j, width in enumerate(widths):
            first = _conv_bn(c_in, width) if j == 0 else _depthwise_separable(c_in, width)
            cells.append(nn.Sequential(*first, *_depthwise_separable(width, width, stride=2)))
            c_in = width
        self.features = nn.Sequential(*cells)
        self.classifier = nn.Linear(c_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).mean((2, 3)))


class AllConvCifar(nn.Module):
    """All-convolutional: no pooling; cells 2 and 3 reduce with a strided first convolution."""

    def __init__(self, widths=(24, 48, 96), num_classes: int = 10):
        super().__init__()
        cells, c_in = [], 3
        for j, width in enumerate(widths):
            cells.append(nn.Sequential(*_conv_bn(c_in, width, stride=1 if j == 0 else 2), *_conv_bn(width, width)))
            c_in = width
        self.features = nn.Sequential(*cells)
        self.classifier = nn.Linear(c_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).mean((2, 3)))
