"""One individual as the search stage trains it (Sec. III-E): its genotype, the frozen trunk the
knowledge base assembles for it, the classifier's input width and the trunk's FLOPs. Built once,
in the process that trains it, from a genotype parsed once by the `Evaluator`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from modulenet.evaluation.lit_module import classifier_input_size
from modulenet.evaluation.settings import EvaluationSettings
from modulenet.genotype import Genotype
from modulenet.knowledge.base import KnowledgeBase
from modulenet.stitching.assembly import Trunk


@dataclass
class Candidate:
    """An assembled individual: `code` (a parsed genotype), its frozen `trunk` on the training
    device, `in_features` (the classifier's input width, Sec. IV) and `flops` (the trunk's forward
    FLOPs for one image)."""

    code: Genotype
    trunk: Trunk
    in_features: int
    flops: int

    @classmethod
    def assemble(
        cls, kb: KnowledgeBase, code: Genotype, settings: EvaluationSettings, image_shape: Sequence[int], device
    ) -> Candidate:
        """`code`'s trunk with the settings' connection and resolution rule, on `device`."""
        trunk = kb.assemble(code, connection=settings.connection, resolution=settings.resolution).to(device)
        size = trunk.output_size(tuple(image_shape[-2:]))
        return cls(
            code, trunk, classifier_input_size(trunk.out_channels, size, settings.pool), count_flops(trunk, image_shape)
        )

    @property
    def trunk_params(self) -> int:
        return int(sum(p.numel() for p in self.trunk.parameters()))


@torch.no_grad()
def trunk_features(trunk: torch.nn.Module, images: torch.Tensor, batch_size: int, device: torch.device) -> torch.Tensor:
    """The frozen trunk's output for every image, computed once (kept on `device`)."""
    chunks = [trunk(images[i : i + batch_size].to(device)) for i in range(0, len(images), batch_size)]
    return torch.cat(chunks)


def count_flops(trunk: torch.nn.Module, image_shape: Sequence[int]) -> int:
    """Forward FLOPs of the trunk for one image (torch's flop counter)."""
    from torch.utils.flop_counter import FlopCounterMode

    param = next(trunk.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        trunk(torch.zeros(1, *image_shape, device=device))
    return int(counter.get_total_flops())
