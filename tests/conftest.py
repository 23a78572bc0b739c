"""Shared fixtures. Real data and real pretrained weights come from ../shared (never copied)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

from modulenet.app.config import register_configs
from modulenet.evaluation.settings import EvaluationSettings
from modulenet.knowledge import build_knowledge_base
from modulenet.search.records import WORST_SCORE, Evaluation
from modulenet.search.score import search_score, similarity

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MODULENET_SHARED", REPO.parent / "shared"))
CIFAR_WEIGHTS = SHARED / "weights" / "resnet-cifar10"
CIFAR_NPZ = SHARED / "data" / "cifar10-partial.npz"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CONF = str(REPO / "conf")


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


def _settled_bytes(path: Path, quiet: float = 0.5, limit: float = 30.0) -> bytes:
    """The file once it has stopped growing: W&B's core process may still be flushing the log
    for a moment after `run.finish()` returns on a loaded machine."""
    import time

    size, since, start = -1, time.monotonic(), time.monotonic()
    while time.monotonic() - start < limit:
        now = path.stat().st_size
        if now != size:
            size, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            break
        time.sleep(0.05)
    return path.read_bytes()


def read_wandb_run(run_dir: Path) -> dict:
    """An offline W&B run read back from its transaction log (`run-*.wandb` under `run_dir`):
    wandb 0.31 ships its reader in the Go core only, so the log's block format (LevelDB's, 32 KiB
    blocks of FULL/FIRST/MIDDLE/LAST chunks after a 7-byte ':W&B' header) is read here and each
    record decoded with wandb's own protobuf `Record`. Returns history rows, the final summary,
    defined metrics (name or glob -> step metric) and logged artifacts (name -> type)."""
    from wandb.proto import wandb_internal_pb2 as pb

    (path,) = list(Path(run_dir).glob("wandb/offline-run-*/run-*.wandb"))
    data = _settled_bytes(path)
    assert data[:4] == b":W&B", f"{path} is not a W&B transaction log"
    block, pos, chunks, pending = 32768, 7, [], b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        length, kind = int.from_bytes(data[pos + 4 : pos + 6], "little"), data[pos + 6]
        if pos + 7 + length > len(data):  # a record still being written is not part of the run yet
            break
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


# ---- the config tree, composed as the app does, and recipes made tiny ---------------------------
def compose_search(overrides=()):
    register_configs()
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose(config_name="search_app", overrides=list(overrides))


TINY_DATA = [
    "dataset=quickstart",
    "dataset.num_train=160",
    "dataset.num_val=64",
    "dataset.num_test=64",
    "dataset.batch_size=32",
]
TINY_SEARCH = [
    "search.generations=2",
    "search.population_size=4",
    "search.epochs=2",
    "evaluator.hidden=[32,32]",
    "evaluator.batch_size=32",
    "evaluator.pool=avg",
    "finetune.epochs=1",
    "finetune.batch_size=32",
    "logger=none",
    "progress=false",
    "trainer.accelerator=cpu",
    "knowledge_base.allow_random=true",
]
# Knowledge bases made small: CIFAR-sized networks of two families (c = 3) stand in for the craft set
SMALL_CRAFT = [
    "knowledge_base.archs=[resnet_cifar8,vgg_cifar]",
    "knowledge_base.num_cells=3",
    "knowledge_base.weights=null",
]

# ---- a cheap real objective for the search loop ------------------------------------------------
N, C = 4, 5
TARGET = (2, 0, 3, 1, 2)
NAMES = ["resnet34", "resnet50", "vgg13", "vgg16"]
BETA = 0.1


class HiddenTarget:
    """err_val = Hamming distance to TARGET over c, plus beta * sim (Eq. 4 with alpha = 0).

    beta * sim varies by at most 0.08 while one wrong gene costs 0.2, so TARGET is the unique
    optimum. Records every request so tests can check what the search asked for.
    """

    def __init__(self, fail_first_gene: int | None = None):
        self.calls: list[list[tuple]] = []
        self.fail_first_gene = fail_first_gene

    def __call__(self, genotypes):
        self.calls.append([tuple(g) for g in genotypes])
        return [self.one(tuple(g)) for g in genotypes]

    def one(self, code):
        if code[0] == self.fail_first_gene:
            return Evaluation(
                genotype=code,
                score=WORST_SCORE,
                err_val=1.0,
                l_rate=0.0,
                sim=similarity(code),
                status="failed",
                error="out of memory",
            )
        err_val = sum(a != b for a, b in zip(code, TARGET)) / len(code)
        sim = similarity(code)
        return Evaluation(
            genotype=code,
            score=search_score(err_val, 0.0, sim, alpha=0.0, beta=BETA),
            err_val=err_val,
            l_rate=0.0,
            sim=sim,
            epoch_losses=[1.0, 0.9],
            params=sum(1000 * (i + 1) for i in code),
            flops=sum(7 * (N - i) for i in code),
        )

    @property
    def requested(self) -> list[tuple]:
        return [g for call in self.calls for g in call]


# ---- a real knowledge base of three small CNNs and data a frozen trunk can learn ---------------
GENERATION = [(0, 1, 2), (1, 1, 1), (2, 0, 1), (0, 0, 0), (0, 0, 2), (2, 2, 2)]


def evaluator_settings(**overrides) -> EvaluationSettings:
    base = dict(
        epochs=3, stack_individuals=1, batch_size=64, feature_batch_size=64, hidden=[64, 64], pool="avg", lr=3e-3
    )
    return EvaluationSettings(**{**base, **overrides})


def finetune_inputs(num_train: int = 64):
    """A fine-tune's small inputs: two CIFAR families' knowledge base and quickstart data, set up."""
    from modulenet.data import QuickstartDataModule

    torch.manual_seed(0)
    kb = build_knowledge_base(["resnet_cifar8", "vgg_cifar"], progress=False)
    dm = QuickstartDataModule(num_train=num_train, num_val=32, num_test=32, batch_size=32, seed=0)
    dm.setup("fit")
    return kb, dm


@pytest.fixture(scope="module")
def kb():
    torch.manual_seed(0)
    return build_knowledge_base(["resnet_cifar8", "vgg_cifar", "allconv_cifar"], progress=False)


@pytest.fixture(scope="module")
def data():
    """Classes set by a colour cast, learnable from frozen random features."""
    return colour_cast(320, 224, seed=1)


def colour_cast(n: int, train: int, seed: int):
    """(x_train, y_train, x_val, y_val) of 4 classes set by a colour cast, learnable from frozen
    random features: n images, the first `train` for training."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 4, (n,), generator=g)
    x = torch.randn(n, 3, 32, 32, generator=g) * 0.5
    x[torch.arange(n), y % 3] += 1.5 * (1 + (y == 3).float()).view(-1, 1, 1)
    return x[:train], y[:train], x[train:], y[train:]


# ---- a process that holds a run directory --------------------------------------------------------
HOLDER = """
import sys, time
from modulenet.rundir import hold
with hold(sys.argv[1]):
    print("held", flush=True)
    time.sleep(600)
"""
