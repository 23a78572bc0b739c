"""The embedded quickstart: a knowledge base made on the spot, with no download and no GPU.

Three small CNNs of different families (a CIFAR ResNet-8, a VGG-style and an all-conv
network) are trained for a few epochs on the generated quickstart dataset, decomposed into
c = 3 modules each and saved to a cache directory, so later runs load them in a second.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from modulenet.errors import ModuleNetError
from modulenet.knowledge import build_knowledge_base, get_architecture
from modulenet.knowledge.base import KnowledgeBase, load_cached_knowledge_base
from modulenet.knowledge.training import SOURCE_TRAINER, train_source_network
from modulenet.rng import seeded
from modulenet.runtime.settings import TrainerSettings

log = logging.getLogger(__name__)

QUICKSTART_ARCHS = ("resnet_cifar8", "vgg_cifar", "allconv_cifar")


@dataclass(frozen=True)
class SourceRecipe:
    """How the source networks are trained from scratch (ours: the paper starts from trained
    networks): which, for how many epochs, at what learning rate, from which seed."""

    archs: tuple[str, ...] = QUICKSTART_ARCHS
    epochs: int = 3
    lr: float = 0.05
    seed: int = 0


def quickstart_knowledge_base(
    datamodule,
    cache_dir: str | Path,
    recipe: SourceRecipe = SourceRecipe(),
    progress: bool = True,
    trainer: TrainerSettings | None = None,
) -> KnowledgeBase:
    """Load the cached knowledge base of `recipe.archs` trained from scratch on `datamodule` (the
    quickstart's, or `knowledge_base.train_epochs`), or train its source networks and build it,
    where and in the precision `trainer` says (None: float32 on the CPU)."""
    archs, trainer = list(recipe.archs), trainer or SOURCE_TRAINER
    device = trainer.device
    trained_in = {  # what the networks' weights depend on besides the data: the precision as resolved
        "precision": trainer.resolved_precision(),
        "float32_matmul_precision": trainer.float32_matmul_precision if device.type == "cuda" else "highest",
    }
    keyed = {**asdict(recipe), "data": datamodule_signature(datamodule), **trained_in}
    key = hashlib.sha256(json.dumps(keyed, sort_keys=True).encode()).hexdigest()[:12]
    path = Path(cache_dir).expanduser() / f"quickstart-kb-{key}"
    cached = load_cached_knowledge_base(path)
    if cached is not None:
        log.info("quickstart knowledge base: loaded %s", path)
        return cached
    datamodule.setup("fit")
    if getattr(datamodule, "num_classes", 10) > 10:
        raise ModuleNetError(
            f"training {archs} from scratch uses each network's own 10-class head, but the "
            f"dataset has {datamodule.num_classes} classes: give trained weights instead "
            "(knowledge_base.weights)"
        )
    log.info("quickstart knowledge base: training %s for %d epochs (cached at %s)", archs, recipe.epochs, path)
    files, accuracies = {}, {}
    (path / "sources").mkdir(parents=True, exist_ok=True)
    for arch_name in archs:
        with seeded(recipe.seed, device):
            model = get_architecture(arch_name).build()
            accuracies[arch_name] = train_source_network(
                model,
                datamodule.train_dataloader(),
                datamodule.val_dataloader(),
                epochs=recipe.epochs,
                lr=recipe.lr,
                trainer=trainer,
                progress=False,
            )
        log.info("  %s: validation accuracy %.3f", arch_name, accuracies[arch_name])
        files[arch_name] = str(path / "sources" / f"{arch_name}.pt")
        torch.save(model.state_dict(), files[arch_name])
    kb = build_knowledge_base(archs, weights=files, image_size=datamodule.image_size, progress=progress)
    (path / "source_accuracy.json").write_text(json.dumps(accuracies, indent=2))
    kb.save(path)
    return kb


def datamodule_signature(datamodule) -> dict:
    """What decides the images a dataset's training split holds: a cache of networks trained on it
    (the quickstart base, a knowledge base fine-tuned on the target) is keyed by it. The split
    (`val_size`, `val_from`) is part of it: networks that saw all 50K images must not serve a run
    that validates on 10K of them."""
    keys = (
        "num_train",
        "num_val",
        "num_test",
        "image_size",
        "seed",
        "val_size",
        "val_from",
        "path",
        "augment",
        "cutout",
    )
    return {k: getattr(datamodule, k) for k in keys if hasattr(datamodule, k)}
