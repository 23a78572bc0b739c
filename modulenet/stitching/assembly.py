"""Assembling a new architecture from modules (Algorithm 1 line 15, Sec. III-B and III-D).

Module j of the genotype keeps its position (cell j) and its weights; between neighbours a
`ModuleLink` restores the next module's native input resolution and channel count. The
result maps images to the last module's feature map; the classifier is not part of it.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from modulenet.stitching.choices import get_connection
from modulenet.stitching.connections import ModuleLink


@dataclass(frozen=True)
class ModuleSpec:
    """A module's native interface in its source network, measured at the knowledge base's image size."""

    arch: str
    cell: int  # 0-based position j
    in_channels: int
    out_channels: int
    in_size: tuple[int, int]
    out_size: tuple[int, int]
    in_reduction: float  # image side / input side
    out_reduction: float  # image side / output side
    num_params: int


class Trunk(nn.Sequential):
    """cell_1 -> link -> cell_2 -> ... -> cell_c: images to the last module's feature map.

    A frozen trunk (the search setting) has no trainable module weights and keeps its modules
    in eval mode even when a parent calls `.train()`, so BatchNorm statistics never move.
    """

    def __init__(
        self,
        layers: dict[str, nn.Module],
        genotype: Sequence[int],
        specs: Sequence[ModuleSpec],
        frozen: bool,
        removed: Sequence[float] | None = None,
    ):
        super().__init__()
        for name, layer in layers.items():
            self.add_module(name, layer)
        self.genotype = tuple(genotype)
        self.specs = tuple(specs)
        # The reduction factor taken out of each module by the resolution rule (1: the module as is).
        self.removed = tuple(removed) if removed is not None else (1.0,) * len(self.genotype)
        self.frozen = frozen
        self.out_channels = specs[-1].out_channels
        self.out_reduction = specs[-1].out_reduction
        self.train(False)

    def train(self, mode: bool = True) -> Trunk:
        super().train(mode)
        if self.frozen:
            for name, child in self.named_children():
                if name.startswith("cell"):
                    child.eval()
        return self

    @property
    def stage_keys(self) -> tuple[tuple[int, float], ...]:
        """What decides the output of modules 1..j: their genes and the reduction removed from each."""
        return tuple(zip(self.genotype, self.removed))

    def output_size(self, image_size: int | tuple[int, int]) -> tuple[int, int]:
        """Spatial size of the output for square or (H, W) images, by running a probe."""
        h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
        param = next(self.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        with torch.no_grad():
            return tuple(self(torch.zeros(1, 3, h, w, device=device)).shape[-2:])


def assemble(
    modules: Sequence[nn.Module],
    specs: Sequence[ModuleSpec],
    genotype: Sequence[int],
    connection: str = "channel_pool",
    trainable: bool = False,
    removed: Sequence[float] | None = None,
    channel_links: dict[int, nn.Module] | None = None,
) -> Trunk:
    """Chain `modules` (module j from the genotype's architecture at cell j) with links.

    `specs` describe the modules as given: where the resolution rule removed a reduction from a
    module (`removed[j]` > 1, stitching/resolution.py), its spec's output reduction already says so and the
    link adds no spatial adapter. `channel_links[j]`: the channel connection before module j
    where one was made elsewhere (a fitted connection), frozen unless `trainable`.

    Frozen (default): modules are shared with the knowledge base, nothing in them is trainable
    and only a `conv1x1` connection has parameters. `trainable=True` (fine-tuning, Sec. IV)
    copies the modules so training never alters the knowledge base.
    """
    layers: dict[str, nn.Module] = {}
    choice = get_connection(connection)
    for j, (module, spec) in enumerate(zip(modules, specs)):
        if j > 0:
            prev = specs[j - 1]
            channel = (channel_links or {}).get(j)
            if channel is not None:
                channel.requires_grad_(trainable)
            link = ModuleLink(
                prev.out_channels, spec.in_channels, prev.out_reduction, spec.in_reduction, choice, channel=channel
            )
            if len(link) > 0:
                layers[f"link{j + 1}"] = link
        if trainable:
            module = copy.deepcopy(module)
            module.requires_grad_(True)
        else:
            module.requires_grad_(False)
        layers[f"cell{j + 1}"] = module
    return Trunk(layers, genotype, specs, frozen=not trainable, removed=removed)
