"""The CIFAR ResNets of He et al. (2016), Sec. 4.2: depth 6n + 2, 3x3 stem with 16 channels,
three stages of n basic blocks with 16 / 32 / 64 channels, option-A shortcuts (stride-2
subsampling plus zero channel padding, no parameters), global average pool, linear 64 -> classes.

State-dict keys follow the widely used public reproduction whose checkpoints are in
`../shared/weights/resnet-cifar10/` (`conv1`, `bn1`, `layer{1,2,3}.{b}.{conv,bn}{1,2}`, `linear`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

CIFAR_RESNET_DEPTHS = (20, 32, 44, 56, 110)


class OptionAShortcut(nn.Module):
    """Identity shortcut across a stage change: subsample by `stride` (2), zero-pad the new channels."""

    def __init__(self, in_planes: int, planes: int, stride: int = 2):
        super().__init__()
        self.in_planes, self.planes, self.stride = in_planes, planes, stride
        self.pad = (planes - in_planes) // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x[:, :, :: self.stride, :: self.stride], (0, 0, 0, 0, self.pad, self.pad))

    def without_reduction(self) -> OptionAShortcut:
        """The same shortcut at stride 1 (the resolution rule, stitching/resolution.py)."""
        return OptionAShortcut(self.in_planes, self.planes, stride=1)


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        changes_shape = stride != 1 or in_planes != planes
        self.shortcut = OptionAShortcut(in_planes, planes) if changes_shape else nn.Identity()
        self.relu = nn.ReLU()  # a module, not F.relu, so activation hooks (evaluation/naswot.py) see it

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    def __init__(self, depth: int = 20, num_classes: int = 10):
        super().__init__()
        if (depth - 2) % 6 != 0 or depth < 8:
            raise ValueError(f"CIFAR ResNet depth must be 6n + 2 (20, 32, 44, 56, 110, ...), got {depth}")
        blocks = (depth - 2) // 6
        self.conv1 = nn.Conv2d(3, 16, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._stage(16, 16, blocks, stride=1)
        self.layer2 = self._stage(16, 32, blocks, stride=2)
        self.layer3 = self._stage(32, 64, blocks, stride=2)
        self.linear = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    @staticmethod
    def _stage(in_planes: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
        layers = [BasicBlock(in_planes, planes, stride)]
        layers += [BasicBlock(planes, planes) for _ in range(blocks - 1)]
        return nn.Sequential(*layers)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The feature extractor: stem and three stages (what a knowledge base decomposes)."""
        x = self.relu(self.bn1(self.conv1(x)))
        return self.layer3(self.layer2(self.layer1(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.adaptive_avg_pool2d(self.features(x), 1).flatten(1)
        return self.linear(x)
