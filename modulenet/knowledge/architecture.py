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

    # How the zoo finds a family (knowledge/zoo.py, ARCHITECTURES): the names `get_architecture`
    # builds from it (none: built another way, e.g. cut points or knowledge_base=timm) ...
    @classmethod
    def zoo_names(cls) -> tuple[str, ...]:
        return ()

    @classmethod
    def knows(cls, name: str) -> bool:
        """Whether `name` is this family's beyond `zoo_names` (a pattern, e.g. any CIFAR ResNet depth)."""
        return False

    @classmethod
    def named(cls, name: str, cifar_stem: bool = True) -> Architecture:
        """... and the architecture a zoo name means (`cifar_stem`: for families that have one)."""
        return cls(name)

    @classmethod
    def from_config(cls, config: dict) -> Architecture:
        """The architecture `to_config()` described (a saved knowledge base's)."""
        return cls(**{k: v for k, v in config.items() if k != "family"})

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
