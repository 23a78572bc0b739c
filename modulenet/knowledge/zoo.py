"""Architectures that decompose into ordered cells (Sec. III-B, Fig. 2; Algorithm 1 line 1).

A cell is a run of convolutional layers with the reduction that follows it; its module is the
cell with the trained weights it had in the source network. Each `Architecture` knows how to
build its network and how to cut it into `num_cells` cells that share the network's tensors.

- torchvision ResNet-18/34/50/101/152 (c = 5): stem (conv1, bn1, relu, maxpool), layer1..layer4.
  `cifar_stem=True` drops the stem max-pool for small images (Sec. IV-A).
- torchvision VGG-11/13/16/19 with and without BN (c = 5): `features` cut after each max-pool.
- CIFAR ResNet-20/32/44/56/110 (c = 3): stem + layer1, layer2, layer3 (ResNet-8 for the quickstart).
- `vgg_cifar`, `allconv_cifar` (c = 3): small CNNs of two more families for the quickstart.
- DARTS-family CIFAR networks `darts_v2`, `pdarts`, `pc_darts_cifar`, `pc_darts_image` (c = 5,
  Sec. IV-B2): the stem, then cells 0-4, 5-9, 10-14, 15-19 (see `darts.py`).
- Your own model: `CutPointArchitecture` (see `cut_points.py`).
- timm models (`knowledge_base=timm`): `TimmArchitecture`, cut at `feature_info` stages (see `timm_zoo.py`).
"""

from __future__ import annotations

import re

from torch import nn

from modulenet.errors import KnowledgeBaseError
from modulenet.knowledge.architecture import Architecture
from modulenet.knowledge.cifar_resnet import CIFAR_RESNET_DEPTHS, CifarResNet
from modulenet.knowledge.cut_points import CutPointArchitecture
from modulenet.knowledge.darts import DartsNetwork, module_bounds, paper_reductions, split_darts
from modulenet.knowledge.darts_genotypes import GENOTYPES, DartsGenotype
from modulenet.knowledge.timm_zoo import TimmArchitecture  # imports timm only when a timm model is built
from modulenet.registry import Registry

TORCHVISION_RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
TORCHVISION_VGGS = tuple(f"vgg{d}{bn}" for d in (11, 13, 16, 19) for bn in ("", "_bn"))
CIFAR_RESNETS = tuple(f"resnet_cifar{d}" for d in CIFAR_RESNET_DEPTHS)
DARTS_NETWORKS = tuple(GENOTYPES)

# The public CIFAR-10 checkpoints (hub-style names: the hex part is the sha256 prefix).
CIFAR_RESNET_URLS = {
    "resnet_cifar20": "resnet20-12fca82f.th",
    "resnet_cifar32": "resnet32-d509ac18.th",
    "resnet_cifar44": "resnet44-014dd654.th",
    "resnet_cifar56": "resnet56-4bfd9763.th",
    "resnet_cifar110": "resnet110-1d1ed7c2.th",
}
CIFAR_RESNET_URL_ROOT = "https://github.com/akamaster/pytorch_resnet_cifar10/raw/master/pretrained_models/"


class TorchvisionResNet(Architecture):
    family = "torchvision_resnet"
    num_cells = 5

    def __init__(self, name: str, cifar_stem: bool = False):
        super().__init__(name)
        self.cifar_stem = bool(cifar_stem)

    @classmethod
    def zoo_names(cls) -> tuple[str, ...]:
        return TORCHVISION_RESNETS

    @classmethod
    def named(cls, name: str, cifar_stem: bool = True) -> Architecture:
        return cls(name, cifar_stem=cifar_stem)

    def build(self) -> nn.Module:
        from torchvision.models import get_model

        return get_model(self.name, weights=None)

    def cells(self, model: nn.Module) -> list[nn.Module]:
        stem = [model.conv1, model.bn1, model.relu] + ([] if self.cifar_stem else [model.maxpool])
        return [nn.Sequential(*stem), model.layer1, model.layer2, model.layer3, model.layer4]

    def to_config(self) -> dict:
        return {**super().to_config(), "cifar_stem": self.cifar_stem}


class TorchvisionVGG(Architecture):
    family = "torchvision_vgg"
    num_cells = 5

    @classmethod
    def zoo_names(cls) -> tuple[str, ...]:
        return TORCHVISION_VGGS

    def build(self) -> nn.Module:
        from torchvision.models import get_model

        return get_model(self.name, weights=None)

    def cells(self, model: nn.Module) -> list[nn.Module]:
        cells, current = [], []
        for layer in model.features:
            current.append(layer)
            if isinstance(layer, nn.MaxPool2d):  # the reduction closes the cell
                cells.append(nn.Sequential(*current))
                current = []
        return cells


class CifarResNetArchitecture(Architecture):
    family = "cifar_resnet"
    num_cells = 3

    def __init__(self, name: str):
        super().__init__(name)
        self.depth = int(name.removeprefix("resnet_cifar"))

    @classmethod
    def zoo_names(cls) -> tuple[str, ...]:
        return (*CIFAR_RESNETS, "resnet_cifar8")  # the published depths, and the quickstart's

    @classmethod
    def knows(cls, name: str) -> bool:
        """Any depth 6k + 2 >= 8, not only the published ones (resnet_cifar8 is the quickstart's)."""
        return bool(re.fullmatch(r"resnet_cifar\d+", name)) and (int(name[12:]) - 2) % 6 == 0 and int(name[12:]) >= 8

    def build(self) -> nn.Module:
        return CifarResNet(self.depth)

    def cells(self, model: nn.Module) -> list[nn.Module]:
        stem = nn.Sequential(model.conv1, model.bn1, model.relu, model.layer1)
        return [stem, model.layer2, model.layer3]

    def pretrained_url(self, weights: str) -> str | None:
        if weights not in ("DEFAULT", "CIFAR10"):
            raise KnowledgeBaseError(f"{self.name}: pretrained weights are 'DEFAULT' (CIFAR-10), got {weights!r}")
        if self.name not in CIFAR_RESNET_URLS:
            raise KnowledgeBaseError(f"no published checkpoint for {self.name}; pass a weights file instead")
        return CIFAR_RESNET_URL_ROOT + CIFAR_RESNET_URLS[self.name]


class SmallCifarCNN(Architecture):
    """`vgg_cifar`, `allconv_cifar` and `mobilenet_cifar` (small_cnns.py), c = 3: one cell per stage."""

    family = "small_cifar"
    num_cells = 3

    @classmethod
    def zoo_names(cls) -> tuple[str, ...]:
        return ("vgg_cifar", "allconv_cifar", "mobilenet_cifar")  # small_cnns.py

    def build(self) -> nn.Module:
        from modulenet.knowledge.small_cnns import AllConvCifar, MobileNetCifar, VGGCifar

        return {"vgg_cifar": VGGCifar, "allconv_cifar": AllConvCifar, "mobilenet_cifar": MobileNetCifar}[self.name]()

    def cells(self, model: nn.Module) -> list[nn.Module]:
        return list(model.features)


class DartsArchitecture(Architecture):
    """A DARTS-family CIFAR network (darts.py), c = len(reductions) + 2: the stem, then a module per stage.

    `name` picks a published genotype (darts_genotypes.GENOTYPES) unless `genotype` is given.
    The defaults are the paper's stacking (Sec. IV-B2): C = 36, 20 cells, reductions at cells
    5, 10, 15, a stem of C channels; so c = 5.
    """

    family = "darts"

    @classmethod
    def zoo_names(cls) -> tuple[str, ...]:
        return DARTS_NETWORKS

    def __init__(
        self,
        name: str,
        C: int = 36,
        layers: int = 20,
        reductions=None,
        stem_multiplier: int = 1,
        num_classes: int = 10,
        genotype: DartsGenotype | dict | None = None,
    ):
        super().__init__(name)
        if genotype is None:
            if name not in GENOTYPES:
                raise KnowledgeBaseError(
                    f"no published DARTS genotype {name!r}; valid are {list(GENOTYPES)} (or pass genotype=)"
                )
            self.genotype, self.custom_genotype = GENOTYPES[name], False
        else:
            self.genotype = DartsGenotype.from_config(genotype if isinstance(genotype, dict) else genotype.to_config())
            self.custom_genotype = True
        self.C, self.layers, self.stem_multiplier, self.num_classes = (
            int(C),
            int(layers),
            int(stem_multiplier),
            int(num_classes),
        )
        self.reductions = tuple(
            paper_reductions(self.layers) if reductions is None else sorted(int(r) for r in reductions)
        )
        if self.C <= 0 or self.C % 2 or self.stem_multiplier <= 0:
            raise KnowledgeBaseError(
                f"{name}: C must be a positive even number and stem_multiplier positive, "
                f"got C={C}, stem_multiplier={stem_multiplier}"
            )
        try:
            module_bounds(self.layers, self.reductions)
        except ValueError as err:
            raise KnowledgeBaseError(f"{name}: {err}") from None

    @property
    def num_cells(self) -> int:
        return len(self.reductions) + 2

    def build(self) -> nn.Module:
        return DartsNetwork(self.genotype, self.C, self.num_classes, self.layers, self.reductions, self.stem_multiplier)

    def cells(self, model: nn.Module) -> list[nn.Module]:
        return split_darts(model)

    def to_config(self) -> dict:
        config = {
            **super().to_config(),
            "C": self.C,
            "layers": self.layers,
            "reductions": list(self.reductions),
            "stem_multiplier": self.stem_multiplier,
            "num_classes": self.num_classes,
        }
        if self.custom_genotype:
            config["genotype"] = self.genotype.to_config()
        return config


# The architecture families: what a saved knowledge base may name (`family`), and where
# `get_architecture` looks up a zoo name (each family's `zoo_names`). timm models are a family
# with no zoo names: theirs are timm's (resnet50 is also torchvision's), so knowledge_base=timm
# (timm_zoo.timm_knowledge_base) builds them; cut points are your own model's.
ARCHITECTURES: Registry[type[Architecture]] = Registry("architecture family", dotted=False)
for _family in (
    TorchvisionResNet,
    TorchvisionVGG,
    CifarResNetArchitecture,
    SmallCifarCNN,
    DartsArchitecture,
    TimmArchitecture,
    CutPointArchitecture,
):
    ARCHITECTURES.register(_family.family, _family)


def known_architectures() -> list[str]:
    return [name for _, family in ARCHITECTURES.items() for name in family.zoo_names()]


def get_architecture(name: str, cifar_stem: bool = True) -> Architecture:
    """The architecture called `name`; an unknown name is an error listing the valid ones."""
    for _, family in ARCHITECTURES.items():
        if name in family.zoo_names() or family.knows(name):
            return family.named(name, cifar_stem=cifar_stem)
    raise KnowledgeBaseError(
        f"unknown architecture {name!r}; valid names are {known_architectures()} "
        "(or a CutPointArchitecture for your own model)"
    )


def architecture_from_config(config: dict) -> Architecture:
    """Rebuild an architecture from `Architecture.to_config()` output."""
    family = config.get("family")
    if family not in ARCHITECTURES:
        raise KnowledgeBaseError(f"unknown architecture family {family!r}; valid are {sorted(ARCHITECTURES)}")
    return ARCHITECTURES.get(family).from_config(config)
