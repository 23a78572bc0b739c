"""Faithful to the paper where it decides results: V1 weights, the resolution rule of Sec. III-B,
the 1x1 ablation at every boundary, no silent random knowledge, caches keyed by the split."""

from __future__ import annotations

import itertools
import logging
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import compose_search
from torch import nn

from modulenet.knowledge import CutPointArchitecture, build_knowledge_base
from modulenet.knowledge.weights import torchvision_weights_url
from modulenet.stitching.connections import Conv1x1Connection, SpatialAdapter
from modulenet.stitching.resolution import remove_reductions

PAPER_RECIPES = ["paper_cifar100_craft", "paper_cifar10_craft", "paper_cifar10_nas", "paper_imagenet_transfer"]


@pytest.mark.parametrize("experiment", PAPER_RECIPES)
def test_paper_recipes_use_v1_weights_and_fine_tune_the_final_population(experiment, monkeypatch, tmp_path):
    monkeypatch.setenv("MODULENET_CACHE", str(tmp_path))
    cfg = compose_search([f"experiment={experiment}"])
    assert cfg.finetune.candidates == "population"
    assert cfg.connection.resolution == "reduce"
    if experiment != "paper_cifar10_nas":  # DARTS networks have no torchvision weights
        assert cfg.knowledge_base.weights == "IMAGENET1K_V1"


def test_cfg_job_shows_what_the_paper_used(tmp_path):
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "modulenet-search"), "experiment=paper_cifar100_craft", "--cfg", "job"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "weights: IMAGENET1K_V1" in proc.stdout and "candidates: population" in proc.stdout
    assert "resolution: reduce" in proc.stdout


def test_v1_is_torchvision_030s_weights_and_default_is_not():
    assert torchvision_weights_url("resnet50", "IMAGENET1K_V1").endswith("resnet50-0676ba61.pth")
    assert torchvision_weights_url("resnet101", "IMAGENET1K_V1").endswith("resnet101-63fe2227.pth")
    assert torchvision_weights_url("resnet50", "DEFAULT") != torchvision_weights_url("resnet50", "IMAGENET1K_V1")
    assert torchvision_weights_url("vgg13_bn", "IMAGENET1K_V1").endswith("vgg13_bn-abd245e5.pth")


# --------------------------------------------------------------------------- the resolution rule (Sec. III-B)


def leaf_sizes(trunk: nn.Module, x: torch.Tensor) -> list[tuple[str, int, int]]:
    """(leaf type, input side, output side) of every leaf module the image passes."""
    seen = []
    hooks = [
        m.register_forward_hook(lambda m, a, o: seen.append((type(m).__name__, a[0].shape[-1], o.shape[-1])))
        for m in trunk.modules()
        if not list(m.children())
    ]
    with torch.no_grad():
        trunk(x)
    for hook in hooks:
        hook.remove()
    return seen


@pytest.mark.parametrize("image_size, cifar_stem", [(32, True), pytest.param(224, False, marks=pytest.mark.slow)])
def test_the_resolution_rule_never_upsamples_and_leaves_the_knowledge_base_alone(image_size, cifar_stem):
    torch.manual_seed(0)
    kb = build_knowledge_base(
        ["vgg13", "resnet34"], num_cells=5, cifar_stem=cifar_stem, image_size=image_size, progress=False
    )
    x = torch.randn(1, 3, image_size, image_size)
    originals = [kb.assemble([i] * 5)(x) for i in range(2)]
    reduced = 0
    for code in itertools.product(range(2), repeat=5):
        trunk = kb.assemble(code)
        grown = [leaf for leaf in leaf_sizes(trunk, x) if leaf[2] > leaf[1]]
        assert grown == [], (code, grown)
        reduced += any(r > 1 for r in trunk.removed)
        for j, spec in enumerate(trunk.specs[1:], start=1):  # every module sees its native input side
            assert spec.in_size == kb.specs[j][code[j]].in_size
    assert reduced > 0
    # The knowledge base's own modules are unchanged: originals reassemble exactly, strides and pools intact.
    for i in range(2):
        assert torch.equal(kb.assemble([i] * 5)(x), originals[i])
    assert isinstance(kb.modules[1][0][-1], nn.MaxPool2d)
    assert kb.modules[2][1][0].conv1.stride == (2, 2) and kb.modules[2][1][0].downsample[0].stride == (2, 2)
    # The former adapters, kept as resolution=resample, upsample where the rule removes a reduction.
    upsampled = [
        code
        for code in itertools.product(range(2), repeat=5)
        if any(o > i for _, i, o in leaf_sizes(kb.assemble(code, resolution="resample"), x))
    ]
    assert upsampled


def test_the_rule_drops_a_vgg_pool_and_a_cifar_resnet_stride_with_its_shortcut():
    kb = build_knowledge_base(["resnet_cifar20", "vgg_cifar", "allconv_cifar"], progress=False)
    x = torch.randn(2, 3, 32, 32)
    trunk = kb.assemble([1, 0, 0])  # vgg_cifar cell 1 outputs 16 px, ResNet cell 2 wants 32 px
    assert trunk.removed == (2.0, 1.0, 1.0) and not isinstance(trunk.cell1[-1], nn.MaxPool2d)
    assert trunk(x).shape == kb.assemble([0, 0, 0])(x).shape
    trunk = kb.assemble([0, 0, 1])  # ResNet cell 2 outputs 16 px, vgg_cifar cell 3 wants 8 px: pooled, not changed
    assert trunk.removed == (1.0, 1.0, 1.0) and isinstance(trunk.link3[0], SpatialAdapter)
    trunk = kb.assemble([2, 1, 0])  # vgg_cifar cell 2 drops its pool for ResNet cell 3 (16 px)
    assert trunk.removed == (1.0, 2.0, 1.0) and trunk(x).shape[-1] == 8
    assert trunk.cell2 is not kb.modules[1][1] and trunk.cell1 is kb.modules[0][2]  # a view; the rest shared
    assert isinstance(kb.modules[1][1][-1], nn.MaxPool2d)
    # A CIFAR ResNet stage: the first block's strided convolution and its option-A shortcut, together.
    stage, spec = kb.modules[1][0], kb.specs[1][0]
    view = remove_reductions(stage, (spec.in_channels, *spec.in_size), 2.0)
    y = view(torch.randn(2, spec.in_channels, *spec.in_size))
    assert y.shape[-2:] == spec.in_size and view[0].conv1.stride == (1, 1) and view[0].shortcut.stride == 1
    assert stage[0].conv1.stride == (2, 2) and stage[0].shortcut.stride == 2 and view[1] is stage[1]
    assert view[0].conv1.weight is stage[0].conv1.weight  # the same tensors, no copy


class FunctionalPools(nn.Module):
    """Reduces with F.max_pool2d: no pooling layer to drop, so the rule cannot apply to it."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = nn.Conv2d(3, 16, 3, padding=1), nn.Conv2d(16, 32, 3, padding=1), nn.Conv2d(32, 64, 1)

    def forward(self, x):
        x = F.max_pool2d(self.a(x), 2)
        x = F.max_pool2d(self.b(x), 2)
        return F.max_pool2d(self.c(x), 2)


def test_a_module_whose_reduction_cannot_be_removed_resamples_with_a_warning(caplog):
    mine = CutPointArchitecture("functional", FunctionalPools(), ["max_pool2d", "max_pool2d_1", "max_pool2d_2"])
    kb = build_knowledge_base([mine, "resnet_cifar8"], progress=False)
    with caplog.at_level(logging.WARNING, logger="modulenet.knowledge.base"):
        trunk = kb.assemble([0, 1, 1])
    assert trunk.removed == (1.0, 1.0, 1.0)
    assert "functional module 1 cannot drop a reduction of 2" in caplog.text
    assert trunk(torch.randn(1, 3, 32, 32)).shape == (1, 64, 8, 8)


def test_conv1x1_ablation_puts_a_convolution_at_every_boundary():
    kb = build_knowledge_base(["resnet_cifar8", "resnet_cifar20"], progress=False)  # equal channels everywhere
    every = kb.assemble([0, 1, 0], connection="conv1x1")
    assert sum(isinstance(m, Conv1x1Connection) for m in every.modules()) == 2
    needed = kb.assemble([0, 1, 0], connection="conv1x1_where_needed")
    assert not any(isinstance(m, Conv1x1Connection) for m in needed.modules())


# --------------------------------------------------------------------------- knowledge the user did not give


def test_the_fine_tuned_knowledge_base_cache_depends_on_the_validation_split(tmp_path):
    import numpy as np
    from omegaconf import OmegaConf

    from modulenet.app.builders import finetuned_cache_dir
    from modulenet.data import NpzDataModule

    rng = np.random.default_rng(0)
    np.savez(
        tmp_path / "d.npz",
        x_train=rng.integers(0, 255, (40, 8, 8, 3), dtype=np.uint8),
        y_train=np.arange(40) % 4,
        x_test=rng.integers(0, 255, (8, 8, 8, 3), dtype=np.uint8),
        y_test=np.arange(8) % 4,
    )
    kb_cfg = OmegaConf.create({"archs": ["resnet_cifar8"], "cache_dir": str(tmp_path), "source_finetune_epochs": 1})
    dirs = {
        finetuned_cache_dir(kb_cfg, NpzDataModule(str(tmp_path / "d.npz"), **split), 0)
        for split in ({"val_size": 10}, {"val_size": 20}, {"val_from": "test"})
    }
    assert len(dirs) == 3
    assert (
        finetuned_cache_dir(kb_cfg, NpzDataModule(str(tmp_path / "d.npz"), val_size=10, batch_size=7), 0) in dirs
    )  # the batch size of a later stage does not change what the sources saw
