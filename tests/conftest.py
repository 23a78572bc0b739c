"""Shared fixtures. Real data and real pretrained weights come from ../shared (never copied)."""

from __future__ import annotations

import json
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


def read_wandb_run(run_dir: Path) -> dict:
    """An offline W&B run read back from its transaction log (`run-*.wandb` under `run_dir`):
    wandb 0.31 ships its reader in the Go core only, so the log's block format (LevelDB's, 32 KiB
    blocks of FULL/FIRST/MIDDLE/LAST chunks after a 7-byte ':W&B' header) is read here and each
    record decoded with wandb's own protobuf `Record`. Returns history rows, the final summary,
    defined metrics (name or glob -> step metric) and logged artifacts (name -> type)."""
    from wandb.proto import wandb_internal_pb2 as pb

    (path,) = list(Path(run_dir).glob("wandb/offline-run-*/run-*.wandb"))
    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B transaction log"
    block, pos, chunks, pending = 32768, 7, [], b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        length, kind = int.from_bytes(data[pos + 4 : pos + 6], "little"), data[pos + 6]
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind == 1:
            chunks.append(chunk)
        elif kind in (2, 3):
            pending = (pending if kind == 3 else b"") + chunk
        elif kind == 4:
            chunks.append(pending + chunk)
    run = {"history": [], "summary": {}, "metrics": {}, "artifacts": {}}
    key = lambda item: item.key or "/".join(item.nested_key)  # noqa: E731
    for record in map(pb.Record.FromString, chunks):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            run["history"].append({key(i): json.loads(i.value_json) for i in record.history.item})
        elif kind == "summary":
            run["summary"].update({key(i): json.loads(i.value_json) for i in record.summary.update})
        elif kind == "metric":
            run["metrics"][record.metric.name or record.metric.glob_name] = record.metric.step_metric
        elif kind == "artifact":
            run["artifacts"][record.artifact.name] = record.artifact.type
    return run
