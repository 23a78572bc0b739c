"""Building a knowledge base from architectures and their weights (Algorithm 1, lines 1-6)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from modulenet.errors import KnowledgeBaseError, first_line
from modulenet.knowledge.architecture import Architecture
from modulenet.knowledge.base import RANDOM_SOURCE, KnowledgeBase
from modulenet.knowledge.weights import (
    download_state_dict,
    is_checkpoint_path,
    is_random,
    load_checkpoint,
    load_trunk_weights,
    torchvision_weights,
)
from modulenet.knowledge.zoo import get_architecture
from modulenet.stitching.assembly import ModuleSpec

WeightsSpec = str | os.PathLike | None


def build_knowledge_base(
    archs: Sequence[str | Architecture],
    num_cells: int | None = None,
    weights: WeightsSpec | Mapping[str, WeightsSpec] = None,
    cifar_stem: bool | None = None,
    image_size: int = 32,
    progress: bool = True,
) -> KnowledgeBase:
    """Decompose each architecture into `num_cells` modules that keep their weights.

    archs: names (`"resnet34"`, `"vgg16_bn"`, `"resnet_cifar20"`, ...) or `Architecture`
        objects (e.g. a `CutPointArchitecture` for your own model), in the order that genotype
        integers refer to.
    num_cells: c; every architecture must decompose into it (None: take it from the archs).
    weights: one spec for all, or {arch name: spec}; a spec is None/"random", a pretrained
        name ("DEFAULT"), or a checkpoint path. Names missing from the mapping get random init.
    cifar_stem: drop the torchvision ResNet stem max-pool; default True for images <= 64 px.
    image_size: the input side the knowledge base is meant for; module resolutions are
        measured at it.
    """
    if not archs:
        raise KnowledgeBaseError("a knowledge base needs at least one architecture, got none")
    if image_size <= 0:
        raise KnowledgeBaseError(f"image_size must be a positive number of pixels, got {image_size}")
    if cifar_stem is None:
        cifar_stem = image_size <= 64
    architectures = [a if isinstance(a, Architecture) else get_architecture(str(a), cifar_stem) for a in archs]
    names = [a.name for a in architectures]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise KnowledgeBaseError(f"architecture names must be unique in a knowledge base, repeated: {duplicates}")
    cells_per_arch = {a.name: a.num_cells for a in architectures}
    if num_cells is None:
        num_cells = architectures[0].num_cells
    if num_cells <= 0:
        raise KnowledgeBaseError(f"num_cells (c) must be a positive integer, got {num_cells}")
    mismatched = {n: c for n, c in cells_per_arch.items() if c != num_cells}
    if mismatched:
        raise KnowledgeBaseError(
            f"every architecture must decompose into c = {num_cells} cells, but {mismatched} "
            f"(cells per architecture: {cells_per_arch})"
        )
    specs_by_arch = weights_per_arch(weights, names)

    columns, spec_columns, sources = [], [], []
    for arch in tqdm(architectures, desc="knowledge base", unit="arch", disable=not progress):
        model, source = instantiate(arch, specs_by_arch[arch.name], progress=progress)
        cells = arch.cells(model)
        columns.append(cells)
        spec_columns.append(measure_specs(arch.name, cells, image_size))
        sources.append(source)
    modules = [[col[j] for col in columns] for j in range(num_cells)]
    specs = [[col[j] for col in spec_columns] for j in range(num_cells)]
    return KnowledgeBase(architectures, modules, specs, image_size, sources)


def instantiate(arch: Architecture, spec: WeightsSpec, progress: bool = True) -> tuple[nn.Module, str]:
    """The architecture's network with the weights `spec` asks for, and where they came from."""
    if is_random(spec):
        return arch.build(), RANDOM_SOURCE
    if is_checkpoint_path(spec) or (isinstance(spec, str) and Path(spec).expanduser().is_file()):
        state, source = load_checkpoint(spec), str(spec)
    elif isinstance(spec, str):
        url = arch.pretrained_url(spec)
        state = download_state_dict(url, progress) if url else torchvision_weights(arch.name, spec, progress)
        source = f"pretrained {spec}"
    else:
        raise KnowledgeBaseError(
            f"weights for {arch.name} must be None, 'random', 'DEFAULT' or a file path, got {spec!r}"
        )
    model = arch.build_empty()
    load_trunk_weights(model, arch.cells(model), state, arch.name, source)
    return model, source


@torch.no_grad()
def measure_specs(arch_name: str, cells: Sequence[nn.Module], image_size: int) -> list[ModuleSpec]:
    """Each module's native channels and resolution, from one probe image through the cells."""
    x = torch.zeros(1, 3, image_size, image_size)
    specs = []
    for j, cell in enumerate(cells):
        was_training = cell.training
        cell.eval()
        try:
            y = cell(x)
        except RuntimeError as err:
            raise KnowledgeBaseError(
                f"{arch_name} cell {j + 1} fails on a {image_size}x{image_size} image ({first_line(err)}); "
                "is image_size too small for this network?"
            ) from None
        finally:
            cell.train(was_training)
        if y.dim() != 4:
            raise KnowledgeBaseError(
                f"{arch_name} cell {j + 1} outputs shape {tuple(y.shape)}, not a feature map (N, C, H, W)"
            )
        specs.append(
            ModuleSpec(
                arch=arch_name,
                cell=j,
                in_channels=x.shape[1],
                out_channels=y.shape[1],
                in_size=tuple(x.shape[-2:]),
                out_size=tuple(y.shape[-2:]),
                in_reduction=image_size / x.shape[-1],
                out_reduction=image_size / y.shape[-1],
                num_params=sum(p.numel() for p in cell.parameters()),
            )
        )
        x = y
    return specs


def untrained_architectures(archs: Sequence[str], weights) -> list[str]:
    """The architectures that `weights` (one spec or {arch: spec}) leaves at random init."""
    names = [str(a) for a in archs]
    return [name for name, spec in weights_per_arch(weights, names).items() if is_random(spec)]


def weights_per_arch(weights, names: list[str]) -> dict[str, WeightsSpec]:
    if isinstance(weights, Mapping):
        unknown = sorted(set(weights) - set(names))
        if unknown:
            raise KnowledgeBaseError(f"weights given for {unknown}, which are not in the knowledge base {names}")
        return {n: weights.get(n) for n in names}
    return {n: weights for n in names}
