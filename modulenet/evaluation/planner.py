"""How a generation's pending genotypes become tasks (speed only, ours; evaluation/stacked.py):
groups trained together where evaluation is stacked, single individuals otherwise, the largest
groups halved until every worker has one."""

from __future__ import annotations

from collections.abc import Sequence

from modulenet.evaluation.lit_module import classifier_input_size
from modulenet.evaluation.settings import EvaluationSettings
from modulenet.evaluation.stacked import group_by_width
from modulenet.genotype import Genotype
from modulenet.knowledge.base import KnowledgeBase
from modulenet.runtime.precision import is_bf16


class Planner:
    """Cuts pending genotypes into tasks for `settings`, on images of `image_shape` (C, H, W), with
    `num_images` (training + validation) resident as features per individual."""

    def __init__(self, kb: KnowledgeBase, settings: EvaluationSettings, image_shape: Sequence[int], num_images: int):
        self.kb, self.settings = kb, settings
        self.image_shape, self.num_images = tuple(image_shape), num_images
        self._widths: dict[int, int] = {}

    def tasks(self, pending: list[Genotype], workers: int = 1) -> list[list[Genotype]]:
        """Groups trained together (shared prefixes, stacked classifiers) where evaluation is
        stacked, else single individuals. With several workers the largest groups are halved until
        each worker has one, so no worker idles while another trains a whole stack."""
        tasks = self._groups(pending) if self.settings.stacked else [[code] for code in pending]
        while len(tasks) < workers and (largest := max(tasks, key=len, default=[])) and len(largest) > 1:
            i, half = tasks.index(largest), (len(largest) + 1) // 2
            tasks[i : i + 1] = [largest[:half], largest[half:]]  # contiguous halves keep shared prefixes
        return tasks

    def width(self, code: Genotype) -> int:
        """The classifier's input width for `code`. The last module always receives its native
        input (the resolution rule adapts the boundary before it), so the width is its
        architecture's: measured once per architecture on the original trunk, never on `code`'s."""
        last = code[-1]
        if last not in self._widths:
            original = self.kb.original_genotype(last)
            trunk = self.kb.assemble(original, connection="channel_pool", resolution=self.settings.resolution)
            size = trunk.output_size(self.image_shape[-2:])
            self._widths[last] = classifier_input_size(trunk.out_channels, size, self.settings.pool)
        return self._widths[last]

    def _groups(self, codes: list[Genotype]) -> list[list[Genotype]]:
        """Lexicographic order (neighbours share prefixes), cut into stackable groups whose
        resident features fit `feature_memory_gb`."""
        s = self.settings
        codes = sorted(codes)
        itemsize = 2 if is_bf16(s.precision) else 4
        widths = {code: self.width(code) for code in codes}
        sizes = {code: widths[code] * self.num_images * itemsize for code in codes}
        return group_by_width(codes, widths, max(1, s.stack_individuals), sizes, int(s.feature_memory_gb * 2**30))
