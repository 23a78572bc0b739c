"""Every weight trainable means BatchNorm learns too: the evaluation stage (Sec. IV) and the
fine-tuning of source networks before the search (Sec. IV-B1).

Lightning (>= 2.2) trains modules in the mode it finds them in, and an assembled trunk or a saved
knowledge base's modules start in eval mode: fine-tuning then ran on frozen running statistics, and
a learning rate that suits a BatchNorm network wrecked it (docs/cpu_cifar10_same_data/README.md)."""

from __future__ import annotations

from contextlib import contextmanager

import pytest
import torch
from torch import nn
from torch.nn.modules.module import register_module_forward_pre_hook

from modulenet.data import QuickstartDataModule
from modulenet.finetune.settings import FinetuneSettings
from modulenet.finetune.stage import finetune_architecture
from modulenet.knowledge import build_knowledge_base
from modulenet.knowledge.training import finetune_sources


@contextmanager
def batchnorm_modes():
    """The `training` flag of every BatchNorm forward pass that records gradients (a training step,
    not a BatchNorm recalibration or an evaluation pass), in any module, while the block runs."""
    modes: list[bool] = []

    def record(module, args):
        if isinstance(module, nn.BatchNorm2d) and torch.is_grad_enabled():
            modes.append(module.training)

    handle = register_module_forward_pre_hook(record)
    try:
        yield modes
    finally:
        handle.remove()


@pytest.fixture(scope="module")
def kb_and_data():
    torch.manual_seed(0)
    kb = build_knowledge_base(["resnet_cifar8", "vgg_cifar"], progress=False)
    dm = QuickstartDataModule(num_train=64, num_val=32, num_test=32, batch_size=32, seed=0)
    dm.setup("fit")
    return kb, dm


def test_fine_tuning_an_architecture_trains_batchnorm_in_train_mode(kb_and_data):
    kb, dm = kb_and_data
    assert not kb.assemble((0, 1, 1), trainable=True).training  # where it starts
    with batchnorm_modes() as modes:
        finetune_architecture(kb, (0, 1, 1), dm, FinetuneSettings(epochs=1, hidden=[16], pool="avg"), progress=False)
    assert modes and all(modes)


def test_fine_tuning_the_sources_trains_batchnorm_in_train_mode(kb_and_data):
    kb, dm = kb_and_data
    with batchnorm_modes() as modes:
        finetune_sources(kb, dm, epochs=1, progress=False)
    assert modes and all(modes)


def test_fig8_candidates_span_the_evaluated_genotypes_or_the_populations():
    """`evaluated` takes every genotype the search scored, survivor or not; `every_generation` only
    the populations'; beyond max_candidates, evenly spaced ranks from best to worst."""
    from modulenet.finetune.stage import select_candidates

    results = {"population": [{"genotype": [0, 0, 0], "score": 1.0}], "populations": [[[0, 0, 0]]]}
    scores = {(0, 1, 1): 0.5, (1, 1, 0): 2.0, (0, 0, 0): 1.0, (1, 0, 1): 3.0}

    def codes(candidates, limit=10):
        settings = FinetuneSettings(candidates=candidates, max_candidates=limit, include_originals=False)
        return [code for _, code in select_candidates(results, None, settings, scores)]

    assert codes("every_generation") == [(0, 0, 0)]
    assert codes("evaluated") == [(0, 1, 1), (0, 0, 0), (1, 1, 0), (1, 0, 1)]
    assert codes("evaluated", limit=2) == [(0, 1, 1), (1, 0, 1)]
