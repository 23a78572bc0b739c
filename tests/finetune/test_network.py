"""The fine-tuned network as a deliverable: saved, reloaded in a fresh process to the same test
error, exported as a torch.export program that runs without modulenet (issue 22)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import CIFAR_NPZ, cifar_checkpoint

from modulenet import rundir
from modulenet.data import NpzDataModule
from modulenet.errors import ModuleNetError
from modulenet.finetune.network import load_network, measure_network, read_description, read_predictions
from modulenet.finetune.settings import FinetuneSettings
from modulenet.finetune.stage import FinetuneStage
from modulenet.knowledge import build_knowledge_base

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory):
    """Two real pretrained CIFAR ResNets, a mixed genotype fine-tuned one epoch on real CIFAR-10
    images (a subset of ../shared's, so it takes seconds), saved by the evaluation stage."""
    if not CIFAR_NPZ.is_file():
        pytest.skip(f"shared CIFAR-10 arrays not found at {CIFAR_NPZ}")
    root = tmp_path_factory.mktemp("network")
    data = np.load(CIFAR_NPZ)
    subset = root / "cifar-subset.npz"
    np.savez(subset, x_train=data["x_train"][:384], y_train=data["y_train"][:384],
             x_test=data["x_test"][:200], y_test=data["y_test"][:200])  # fmt: skip
    dataset = {"_target_": "modulenet.data.NpzDataModule", "path": str(subset), "val_size": 128, "batch_size": 64}
    dm = NpzDataModule(str(subset), val_size=128, batch_size=64, augment=True, cutout=8)
    dm.setup("fit")
    torch.manual_seed(0)
    kb = build_knowledge_base(
        ["resnet_cifar20", "resnet_cifar32"],
        weights={"resnet_cifar20": str(cifar_checkpoint(20)), "resnet_cifar32": str(cifar_checkpoint(32))},
        progress=False,
    )
    settings = FinetuneSettings(epochs=1, hidden=[32], pool="avg", batch_size=64, include_originals=False, lr=0.01)
    results = {"population": [{"genotype": [0, 1, 1], "score": 1.0}]}
    out = root / "finetune"
    finished = FinetuneStage(kb, dm, settings, progress=False).run(results, out, dataset_config=dataset)
    return out, finished, kb


def test_every_finetuned_architecture_is_saved_and_the_selected_one_named(finetuned):
    out, finished, kb = finetuned
    (row,) = finished
    document = json.loads((out / rundir.FINETUNE).read_text())
    assert row.selected and document["selected_network"] == row.network
    folder = out / row.network
    assert {rundir.NETWORK_WEIGHTS, rundir.NETWORK_DESCRIPTION, rundir.NETWORK_EXPORT} <= {
        p.name for p in folder.iterdir()
    }
    d = read_description(folder)
    assert d["genotype"] == [0, 1, 1] and d["architecture"] == "resnet_cifar20+resnet_cifar32+resnet_cifar32"
    assert d["knowledge_base_sha256"] == kb.weight_hashes()
    assert d["test_error"] == row.test_error and d["val_error"] == row.val_error
    assert d["classifier"] == {"in_features": 64, "hidden": [32], "pool": "avg"}
    assert d["num_classes"] == 10 and d["image_size"] == 32 and d["seed"] == 0
    state = torch.load(folder / rundir.NETWORK_WEIGHTS, weights_only=True)  # plain tensors only
    assert any(k.startswith("trunk.") for k in state) and any(k.startswith("classifier.") for k in state)


def test_a_reloaded_network_in_a_fresh_process_gives_the_recorded_test_error(finetuned, tmp_path):
    out, (row,), _ = finetuned
    env = {**os.environ, "WANDB_MODE": "offline"}
    proc = subprocess.run(
        [str(BIN / "modulenet-evaluate"), f"network={out / row.network}", f"hydra.run.dir={tmp_path}"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    measured = json.loads((tmp_path / rundir.EVALUATION).read_text())
    assert measured["images"] == 200
    assert measured["error"] == row.test_error  # exactly: same images, same predictions
    assert f"test error {100 * row.test_error:.2f} %" in proc.stdout


def test_the_reloaded_network_predicts_what_the_finetuned_one_did(finetuned):
    """In this process too: the network rebuilt from its description gives the recorded error."""
    import modulenet

    out, (row,), _ = finetuned
    network = modulenet.load_network(out / row.network)  # the package's own name for it
    assert not network.training
    dm = NpzDataModule(**{k: v for k, v in network.description["dataset"].items() if k != "_target_"})
    dm.setup("fit")
    assert measure_network(network, dm.test_dataloader())["error"] == row.test_error
    assert measure_network(network, dm.val_dataloader())["error"] == row.val_error


def test_the_export_runs_without_modulenet_and_gives_the_same_logits(finetuned, tmp_path):
    out, (row,), _ = finetuned
    network = load_network(out / row.network)
    x = torch.randn(5, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    torch.save({"x": x, "logits": network(x).detach()}, tmp_path / "io.pt")
    code = (
        "import sys, torch\n"
        f"program = torch.export.load({str(out / row.network / rundir.NETWORK_EXPORT)!r})\n"
        f"io = torch.load({str(tmp_path / 'io.pt')!r}, weights_only=True)\n"
        "logits = program.module()(io['x'])\n"
        "assert not any(m == 'modulenet' or m.startswith('modulenet.') for m in sys.modules), 'imported modulenet'\n"
        "torch.testing.assert_close(logits, io['logits'], rtol=1e-4, atol=1e-5)\n"
        "print('same logits')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "same logits" in proc.stdout


def test_a_damaged_or_foreign_network_folder_is_one_line(finetuned, tmp_path):
    out, (row,), _ = finetuned
    with pytest.raises(ModuleNetError, match="is not a saved network"):
        load_network(tmp_path)
    (tmp_path / rundir.NETWORK_DESCRIPTION).write_text("{truncated")
    with pytest.raises(ModuleNetError, match="truncated or corrupt"):
        load_network(tmp_path)
    d = read_description(out / row.network)
    (tmp_path / rundir.NETWORK_DESCRIPTION).write_text(json.dumps({**d, "connection": "mypkg.Stitch"}))
    with pytest.raises(ModuleNetError, match="trust_code=True"):
        load_network(tmp_path)
    (tmp_path / rundir.NETWORK_DESCRIPTION).write_text(json.dumps(d))
    (tmp_path / rundir.NETWORK_WEIGHTS).write_bytes(b"not a tensor file")
    with pytest.raises(ModuleNetError, match="does not hold this network's weights"):
        load_network(tmp_path)


def test_each_test_images_prediction_is_saved_and_gives_the_recorded_error(finetuned):
    out, finished, _ = finetuned
    (row,) = finished
    predictions = read_predictions(out / row.network / rundir.NETWORK_PREDICTIONS)
    assert list(predictions["index"]) == list(range(200))
    assert list(predictions["x_test_index"]) == list(range(200))  # val_from=train: every x_test image tests
    assert np.mean(predictions["predicted"] != predictions["label"]) == pytest.approx(row.test_error)
    assert list(predictions["label"]) == list(np.load(CIFAR_NPZ)["y_test"][:200])
