"""Shared fixtures. Real data and real pretrained weights come from ../shared (never copied)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MODULENET_SHARED", REPO.parent / "shared"))
CIFAR_WEIGHTS = SHARED / "weights" / "resnet-cifar10"
CIFAR_NPZ = SHARED / "data" / "cifar10-partial.npz"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@pytest.fixture(scope="session")
def _session_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("modulenet-cache")


@pytest.fixture(autouse=True)
def _offline_and_seeded(monkeypatch, _session_cache):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("MODULENET_CACHE", str(_session_cache))  # tests never write to the user's cache
    torch.manual_seed(0)


def cifar_checkpoint(depth: int) -> Path:
    matches = sorted(CIFAR_WEIGHTS.glob(f"resnet{depth}-*.th"))
    if not matches:
        pytest.skip(f"shared CIFAR ResNet-{depth} checkpoint not found under {CIFAR_WEIGHTS}")
    return matches[0]


@pytest.fixture(scope="session")
def cifar_test_set():
    """The real CIFAR-10 test images of ../shared, normalised as the checkpoints expect."""
    if not CIFAR_NPZ.is_file():
        pytest.skip(f"shared CIFAR-10 arrays not found at {CIFAR_NPZ}")
    data = np.load(CIFAR_NPZ)
    x = torch.from_numpy(data["x_test"]).permute(0, 3, 1, 2).float().div(255)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std, torch.from_numpy(data["y_test"]).long()
