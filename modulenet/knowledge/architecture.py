"""What an architecture of the knowledge base is (Sec. III-B): a network and its cut into cells."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn


class Architecture:
    """A source network and its decomposition into cells."""

    family: ClassVar[str]
    num_cells: ClassVar[int]
    # Weights are loaded right after building, so skip the random init (VGG-16's takes seconds).
    init_on_meta: ClassVar[bool] = True

    def __init__(self, name: str):
        self.name = name

    def build(self) -> nn.Module:
        """The whole network with random weights (classifier included, as checkpoints store it)."""
        raise NotImplementedError

    def cells(self, model: nn.Module) -> list[nn.Module]:
        """The network's cells, in order, sharing its parameters and buffers."""
        raise NotImplementedError

    def pretrained_url(self, weights: str) -> str | None:
        """A download address for a named pretrained checkpoint, or None to ask torchvision."""
        return None

    def build_empty(self) -> nn.Module:
        """The network with storage allocated but not initialised (weights are about to be loaded)."""
        if not self.init_on_meta:
            return self.build()
        with torch.device("meta"):
            model = self.build()
        return model.to_empty(device="cpu")

    def to_config(self) -> dict:
        """What `architecture_from_config` needs to rebuild this architecture (saved with a knowledge base)."""
        return {"family": self.family, "name": self.name}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"
