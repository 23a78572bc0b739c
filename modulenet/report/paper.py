"""The paper's own numbers (Tables I-IV) as data, and which table a run's dataset and knowledge base belong to."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class PaperRow:
    """One row of a table of the paper, and which measured row it compares with.

    `kind`: best_original (the lowest test error among originals whose name starts with one of
    `names`), original (the original named one of `names`), best_searched (the best "ModuleNet #k"
    row; `cutout` True/False restricts it to fine-tuning with/without cutout), hybrid (a searched
    or given architecture whose cell 1 is `names[0]` and whose other cells are all `names[1]`).
    """

    method: str
    errors: tuple[float, ...]  # test error in %, (top-1,) or (top-1, top-5)
    kind: str
    names: tuple[str, ...] = ()
    cutout: bool | None = None
    note: str = ""


@dataclass(frozen=True)
class PaperTable:
    key: str
    caption: str
    dataset: str
    columns: tuple[str, ...]
    rows: tuple[PaperRow, ...]
    knowledge_base: tuple[str, ...] = ()


CRAFT_KB = ("resnet34", "resnet50", "resnet101", "vgg13", "vgg16", "vgg13_bn", "vgg16_bn")

PAPER_TABLES: dict[str, PaperTable] = {
    "I": PaperTable(
        "I",
        "Table I: CIFAR-100, craft knowledge base (3 ResNets, 4 VGGs), fine-tuned with cutout 16",
        "cifar100",
        ("Test Error",),
        (
            PaperRow("Best for ResNets + cutout", (22.97,), "best_original", ("resnet",)),
            PaperRow("Best for VGGs + cutout", (28.27,), "best_original", ("vgg",)),
            PaperRow("ModuleNet (Ours) + cutout", (15.87,), "best_searched"),
        ),
        CRAFT_KB,
    ),
    "II": PaperTable(
        "II",
        "Table II: CIFAR-10, craft knowledge base (3 ResNets, 4 VGGs)",
        "cifar10",
        ("Test Error",),
        (
            PaperRow(
                "Best for ResNets", (6.43,), "best_original", ("resnet",), note="obtained directly from He et al."
            ),
            PaperRow("Best for VGGs", (6.27,), "best_original", ("vgg",)),
            PaperRow("ModuleNet (Ours)", (5.81,), "best_searched", cutout=False),
            PaperRow("ModuleNet (Ours) + cutout", (4.64,), "best_searched", cutout=True),
        ),
        CRAFT_KB,
    ),
    "III": PaperTable(
        "III",
        "Table III: CIFAR-10, knowledge base of NAS-searched modules (DARTS family), cutout",
        "cifar10",
        ("Test Error",),
        (
            PaperRow("DARTSv2 + cutout", (2.86,), "original", ("dartsv2", "darts")),
            PaperRow("PDARTS + cutout", (2.91,), "original", ("pdarts",)),
            PaperRow("PC-DARTS-cifar + cutout", (2.87,), "original", ("pcdartscifar",)),
            PaperRow("PC-DARTS-image + cutout", (2.8,), "original", ("pcdartsimage",)),
            PaperRow("ModuleNet (Ours) + cutout", (2.77,), "best_searched"),
        ),
        ("darts_v2", "pdarts", "pc_darts_cifar", "pc_darts_image"),
    ),
    "IV": PaperTable(
        "IV",
        "Table IV: ImageNet, cell 1 of VGG13bn in front of a ResNet",
        "imagenet",
        ("Test Error top1", "Test Error top5"),
        (
            PaperRow("VGG13bn", (28.45, 9.63), "original", ("vgg13bn",)),
            PaperRow("ResNet-50", (23.85, 7.13), "original", ("resnet50",)),
            PaperRow("VGG13bn+ResNet-50", (22.744, 6.396), "hybrid", ("vgg13bn", "resnet50")),
            PaperRow("ResNet-101", (22.63, 6.44), "original", ("resnet101",)),
            PaperRow("VGG13bn+ResNet-101", (21.308, 5.802), "hybrid", ("vgg13bn", "resnet101")),
        ),
        ("vgg13_bn", "resnet50", "resnet101"),
    ),
}


def normalised_name(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", str(name).lower())


def paper_table_for(dataset: str | None, arch_names: Sequence[str] | None) -> PaperTable | None:
    """The table of the paper for a dataset key (see `dataset_key`): CIFAR-100 -> I; CIFAR-10 -> III
    when the knowledge base holds DARTS-family modules, else II; ImageNet -> IV; otherwise None."""
    if dataset == "cifar100":
        return PAPER_TABLES["I"]
    if dataset == "cifar10":
        if any("darts" in normalised_name(a) for a in arch_names or ()):
            return PAPER_TABLES["III"]
        return PAPER_TABLES["II"]
    if dataset == "imagenet":
        return PAPER_TABLES["IV"]
    return None


def dataset_key(dataset_cfg) -> str | None:
    """cifar10 | cifar100 | imagenet | quickstart | the data module's class name, from a config's `dataset`."""
    if not isinstance(dataset_cfg, dict):
        return None
    target = str(dataset_cfg.get("_target_", ""))
    text = (
        target + " " + str(dataset_cfg.get("path", "") or "") + " " + str(dataset_cfg.get("root", "") or "")
    ).lower()
    cls = target.rsplit(".", 1)[-1].lower()
    if "cifar100" in cls:
        return "cifar100"
    if "cifar10" in cls:
        return "cifar10"
    if "quickstart" in cls:
        return "quickstart"
    if "imagefolder" in cls or "imagenet" in cls:
        return "imagenet" if "imagenet" in text else cls or None
    for key in ("cifar100", "cifar10", "imagenet"):  # an npz / folder named after its data
        if key in text:
            return key
    return cls or None
