"""The training-free NASWOT score (evaluation/naswot.py) on hand examples and real networks."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import cifar_checkpoint
from torch import nn

from modulenet.evaluation.naswot import naswot_score
from modulenet.knowledge import build_knowledge_base


class Codes(nn.Module):
    """A 'network' whose ReLU sees exactly the given pre-activations."""

    def __init__(self):
        super().__init__()
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(x)


def test_the_kernel_counts_agreeing_units_and_the_score_is_its_log_determinant():
    # codes 110, 011, 100 (3 units): K = [[3, 1, 2], [1, 3, 0], [2, 0, 3]], det = 27 - 3 - 12 = 12
    x = torch.tensor([[1.0, 1.0, -1.0], [-1.0, 1.0, 1.0], [1.0, -1.0, -1.0]])
    assert naswot_score(Codes(), x) == pytest.approx(math.log(12))
    # two images with the same code: K is singular, the score -inf
    assert naswot_score(Codes(), torch.tensor([[1.0, -1.0], [2.0, -3.0]])) == -math.inf


def test_a_network_without_relu_modules_is_refused():
    with pytest.raises(ValueError, match="no ReLU modules"):
        naswot_score(nn.Conv2d(3, 4, 3), torch.zeros(2, 3, 8, 8))


def test_the_score_of_a_real_cifar_resnet_is_finite_and_leaves_it_in_its_mode(cifar_test_set):
    """Every block's ReLU is a module, so the pretrained ResNet-20 contributes all 19 activations."""
    images, _ = cifar_test_set
    kb = build_knowledge_base(["resnet_cifar20"], weights=str(cifar_checkpoint(20)), progress=False)
    trunk = kb.assemble((0, 0, 0))
    calls = []
    hooks = [m.register_forward_hook(lambda *a: calls.append(1)) for m in trunk.modules() if isinstance(m, nn.ReLU)]
    score = naswot_score(trunk, images[:64])
    for hook in hooks:
        hook.remove()
    assert len(calls) == 1 + 2 * 9 and math.isfinite(score) and not trunk.training
