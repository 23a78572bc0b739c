"""knowledge_base=timm (issue 33): real timm models cut at their feature_info stages, weights
through timm's own loading from local files (nothing downloads), lossless reassembly against
timm's features_only network, a least-squares hybrid of two families trained and fine-tuned."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import CIFAR_NPZ, compose_search, evaluator_settings
from torch import nn

from modulenet.errors import KnowledgeBaseError, ModuleNetError, WeightsError
from modulenet.knowledge import TimmArchitecture, load_knowledge_base, timm_knowledge_base
from modulenet.knowledge.base import RANDOM_SOURCE
from modulenet.knowledge.timm_zoo import choose_reductions, model_stage_reductions

timm = pytest.importorskip("timm")

ARCHS = ["resnet18", "efficientnet_b0"]  # two families; both list stages at reductions 2, 4, 8, 16, 32
C = 3  # so the cut is at the deepest three: 8, 16, 32


def randomised(name: str) -> nn.Module:
    """A timm model with random weights and BatchNorm statistics away from their defaults, as a
    trained model's are (so the comparisons below could fail)."""
    model = timm.create_model(name, pretrained=False)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.normal_(1, 0.1)
                m.bias.normal_(0, 0.1)
    return model.eval()


@pytest.fixture(scope="module")
def weight_files(tmp_path_factory):
    """Each model's state dict in a local file: a torch.save .pth and a .safetensors."""
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("timm-weights")
    torch.manual_seed(0)
    files = {"resnet18": root / "resnet18.pth", "efficientnet_b0": root / "efficientnet_b0.safetensors"}
    torch.save(randomised("resnet18").state_dict(), files["resnet18"])
    save_file({k: v.contiguous() for k, v in randomised("efficientnet_b0").state_dict().items()},
              str(files["efficientnet_b0"]))  # fmt: skip
    return {name: str(path) for name, path in files.items()}


@pytest.fixture(scope="module")
def cifar_subset(tmp_path_factory):
    if not CIFAR_NPZ.is_file():
        pytest.skip(f"shared CIFAR-10 arrays not found at {CIFAR_NPZ}")
    data = np.load(CIFAR_NPZ)
    path = tmp_path_factory.mktemp("cifar") / "cifar-subset.npz"
    np.savez(path, x_train=data["x_train"][:192], y_train=data["y_train"][:192],
             x_test=data["x_test"][:64], y_test=data["y_test"][:64])  # fmt: skip
    return path


@pytest.fixture(scope="module")
def kb(weight_files):
    """Built as the app builds it: knowledge_base=timm composed, then its `_target_` called."""
    from modulenet.app.builders import make_knowledge_base

    weights = "{" + ",".join(f"{k}:'{v}'" for k, v in weight_files.items()) + "}"
    cfg = compose_search(
        [
            "knowledge_base=timm",
            f"knowledge_base.archs=[{','.join(ARCHS)}]",
            f"knowledge_base.num_cells={C}",
            f"knowledge_base.weights={weights}",
        ]  # fmt: skip
    )
    return make_knowledge_base(cfg.knowledge_base, progress=False)


def test_the_boundaries_are_the_deepest_reductions_every_architecture_shares():
    stages = {
        name: model_stage_reductions(name) for name in ("resnet50", "vgg16_bn", "convnext_tiny", "efficientnet_b0")
    }
    assert stages["convnext_tiny"] == [4, 8, 16, 32] and stages["vgg16_bn"] == [1, 2, 4, 8, 16, 32]
    assert choose_reductions(stages, 4) == [4, 8, 16, 32] and choose_reductions(stages, None) == [4, 8, 16, 32]
    assert choose_reductions(stages, 2) == [16, 32]
    with pytest.raises(KnowledgeBaseError, match=r"share 4 stage reductions .*convnext_tiny \[4, 8, 16, 32\]") as err:
        choose_reductions(stages, 5)
    assert "\n" not in str(err.value)


def test_each_model_is_cut_where_timm_says_its_stages_end(kb, weight_files):
    assert kb.arch_names == ARCHS and kb.num_cells == C
    assert all(isinstance(a, TimmArchitecture) and a.reductions == (8, 16, 32) for a in kb.architectures)
    assert kb.sources == [weight_files[name] for name in ARCHS]
    for i, name in enumerate(ARCHS):
        info = timm.create_model(name, pretrained=False).feature_info
        assert [row[i].out_channels for row in kb.specs] == [info[k]["num_chs"] for k in (2, 3, 4)]
        assert [row[i].out_size for row in kb.specs] == [(4, 4), (2, 2), (1, 1)]  # 32 px / 8, 16, 32
    for j in range(C - 1):  # every boundary: the same resolution out of one module and into the next
        assert {s.out_reduction for s in kb.specs[j]} == {(8, 16, 32)[j]}
        assert {s.in_reduction for s in kb.specs[j + 1]} == {(8, 16, 32)[j]}


def test_the_reassembled_original_reproduces_timms_features_only_network(kb, weight_files):
    """Each original genotype against timm's own features_only network (its feature class:
    FeatureListNet for ResNet, EfficientNetFeatures), loaded by timm from the same file."""
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    for i, name in enumerate(ARCHS):
        reference = timm.create_model(
            name, features_only=True, out_indices=(2, 3, 4), pretrained=True,
            pretrained_cfg_overlay={"file": weight_files[name]},
        ).eval()  # fmt: skip
        with torch.no_grad():
            expected = reference(x)[-1]
            got = kb.assemble(kb.original_genotype(i))(x)
        assert torch.equal(got, expected)  # the same operations in the same order: bit for bit


def test_a_timm_knowledge_base_saves_and_loads_without_timm_downloading(kb, tmp_path):
    kb.save(tmp_path / "kb")
    loaded = load_knowledge_base(tmp_path / "kb")  # a timm family is data: no trust_code needed
    assert loaded.weight_hashes() == kb.weight_hashes() and len(set(kb.weight_hashes().values())) == 2
    assert loaded.sources == kb.sources and [a.to_config() for a in loaded.architectures] == [
        {"family": "timm", "name": name, "model": name, "reductions": [8, 16, 32]} for name in ARCHS
    ]
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded.assemble([1, 0, 1])(x), kb.assemble([1, 0, 1])(x))


def test_a_hybrid_of_two_families_through_least_squares_trains_its_head_and_fine_tunes(kb, cifar_subset):
    from modulenet.data import NpzDataModule
    from modulenet.evaluation.evaluator import Evaluator
    from modulenet.finetune.settings import FinetuneSettings
    from modulenet.finetune.training import finetune_architecture
    from modulenet.stitching.fitted import LeastSquaresConnection

    dm = NpzDataModule(str(cifar_subset), val_size=64, batch_size=64, augment=True, cutout=8)
    dm.setup("fit")
    data = dm.search_tensors()
    hashes = kb.weight_hashes()
    kb.fit_connections(data[0][:64], progress=False)
    hybrid = [0, 1, 0]  # ResNet-18 stem..layer2, EfficientNet-B0 blocks 3-4, ResNet-18 layer4
    trunk = kb.assemble(hybrid, connection="least_squares")
    assert sum(isinstance(m, LeastSquaresConnection) for m in trunk.modules()) == 2

    settings = evaluator_settings(epochs=2, connection="least_squares", hidden=[32])  # on cached trunk features
    (evaluation,) = Evaluator(kb, data, 10, settings, progress=False)([hybrid])
    assert evaluation.status == "ok" and 0.0 <= evaluation.err_val <= 1.0
    assert len(evaluation.epoch_losses) == 2 and evaluation.flops > 0

    tune = FinetuneSettings(epochs=1, hidden=[32], pool="avg", batch_size=64, connection="least_squares", lr=0.01)
    network, description = finetune_architecture(kb, hybrid, dm, tune, progress=False)
    assert 0.0 <= description["val_error"] <= 1.0 and 0.0 <= description["test_error"] <= 1.0
    assert description["knowledge_base"]["architectures"][0]["family"] == "timm"
    start = kb.assemble(hybrid, connection="least_squares", trainable=True)  # the inherited weights, copied
    pairs = list(zip(start.parameters(), network.trunk.parameters()))
    assert pairs and any(not torch.equal(a, b) for a, b in pairs)  # every weight trainable: they moved
    assert kb.weight_hashes() == hashes  # fine-tuning trained a copy; the knowledge base is unchanged


def test_a_missing_weight_file_is_one_line_naming_it(tmp_path):
    missing = tmp_path / "resnet18.pth"
    with pytest.raises(WeightsError, match=rf"weights file for timm model resnet18 not found: {missing}$") as err:
        timm_knowledge_base(["resnet18"], num_cells=2, weights={"resnet18": str(missing)}, progress=False)
    assert "\n" not in str(err.value)


def test_a_file_of_another_model_or_an_unsafe_one_is_one_line(weight_files, tmp_path):
    with pytest.raises(WeightsError, match=r"cannot load .*resnet18.pth into timm's resnet34: ") as err:
        timm_knowledge_base(["resnet34"], num_cells=2, weights=weight_files["resnet18"], progress=False)
    assert "\n" not in str(err.value)
    pickled = tmp_path / "module.pth"
    torch.save(nn.Linear(2, 2), pickled)  # a pickled module, not a state dict: loading it would run code
    with pytest.raises(WeightsError, match=r"refused to load .*module.pth: it is not a safe checkpoint") as err:
        timm_knowledge_base(["resnet18"], num_cells=2, weights=str(pickled), progress=False)
    assert "weights_only" not in str(err.value) and "\n" not in str(err.value)


def test_without_network_or_cache_timms_pretrained_weights_are_refused_in_one_line(tmp_path, monkeypatch):
    """No download happens: the Hugging Face client in offline mode, with an empty cache."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(
        WeightsError, match=r"weights for resnet18\.a1_in1k \(not in the local cache, .*weights=\{resnet18: FILE\}$"
    ) as err:
        timm_knowledge_base(["resnet18"], num_cells=2, progress=False)
    assert "\n" not in str(err.value)


def test_random_modules_only_when_asked_for_and_bad_names_in_one_line():
    with pytest.raises(KnowledgeBaseError, match=r"have no weights .*allow_random=true"):
        timm_knowledge_base(["resnet18"], num_cells=2, weights=None, progress=False)
    kb = timm_knowledge_base(["resnet18"], num_cells=2, weights=None, allow_random=True, progress=False)
    assert kb.sources == [RANDOM_SOURCE] and [s.out_reduction for s in kb.specs[0]] == [16]
    for archs, weights, message in [
        (["resnet18x"], None, r"unknown timm model 'resnet18x'"),
        (
            ["resnet18"],
            "no_such_tag",
            r"no pretrained tag 'no_such_tag' for resnet18: valid are \['DEFAULT', 'a1_in1k'",
        ),
    ]:
        with pytest.raises(ModuleNetError, match=message) as err:
            timm_knowledge_base(archs, num_cells=2, weights=weights, allow_random=True, progress=False)
        assert "\n" not in str(err.value)
    with pytest.raises(KnowledgeBaseError, match=r"train_epochs=3 cannot take effect with knowledge_base=timm"):
        timm_knowledge_base(["resnet18"], weights=None, allow_random=True, train_epochs=3, progress=False)
    # a ViT's blocks are its stages but its forward adds a position embedding between them
    with pytest.raises(KnowledgeBaseError, match=r"vit_tiny_patch16_224: module 1 .* not a chain of its stages"):
        timm_knowledge_base(["vit_tiny_patch16_224"], num_cells=1, weights=None, allow_random=True, image_size=224,
                            progress=False)  # fmt: skip
    with pytest.raises(KnowledgeBaseError, match=r"different sizes .*divisible by 32"):
        timm_knowledge_base(["resnet18", "convnext_atto"], weights=None, allow_random=True, image_size=40,
                            progress=False)  # fmt: skip


@pytest.mark.slow  # make test-all: a search, its fine-tune and modulenet-evaluate through the console scripts
def test_a_timm_search_fine_tunes_and_its_network_measures_again_from_the_command_line(
    weight_files, cifar_subset, tmp_path
):
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "MODULENET_CACHE": str(tmp_path / "cache"), "WANDB_MODE": "offline"}
    weights = "{" + ",".join(f"{k}:'{v}'" for k, v in weight_files.items()) + "}"
    run = tmp_path / "run"
    args = [
        "knowledge_base=timm", f"knowledge_base.archs=[{','.join(ARCHS)}]", f"knowledge_base.num_cells={C}",
        f"knowledge_base.weights={weights}", "connection=least_squares", "connection.fit_images=64",
        "dataset=npz", f"dataset.path={cifar_subset}", "dataset.val_size=64", "dataset.batch_size=64",
        "search.generations=2", "search.population_size=4", "search.epochs=2", "evaluator.hidden=[32,32]",
        "evaluator.batch_size=64", "evaluator.pool=avg", "finetune.after_search=true", "finetune.epochs=1",
        "finetune.batch_size=64", "finetune.include_originals=false", "logger=none", "progress=false",
        "trainer.accelerator=cpu",
    ]  # fmt: skip
    search = subprocess.run([str(bin_dir / "modulenet-search"), *args, f"hydra.run.dir={run}"], cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=900)  # fmt: skip
    assert search.returncode == 0, search.stderr[-3000:]
    document = json.loads((run / "finetune" / "finetune.json").read_text())
    network = run / "finetune" / document["selected_network"]
    described = json.loads((network / "network.json").read_text())
    assert [a["family"] for a in described["knowledge_base"]["architectures"]] == ["timm", "timm"]
    measured = subprocess.run([str(bin_dir / "modulenet-evaluate"), f"network={network}",
                               f"hydra.run.dir={tmp_path / 'evaluate'}"], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=300)  # fmt: skip
    assert measured.returncode == 0, measured.stderr[-3000:]
    assert f"test error {100 * described['test_error']:.2f} %" in measured.stdout  # the same network, reloaded

    # the same search offline with timm's default weights, not cached: one line, no traceback
    offline = {**env, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "TORCH_HOME": str(tmp_path / "torch")}
    refused = subprocess.run([str(bin_dir / "modulenet-search"), *args[:3], "knowledge_base.weights=DEFAULT",
                              *args[4:], f"hydra.run.dir={tmp_path / 'offline'}"], cwd=tmp_path, env=offline,
                             capture_output=True, text=True, timeout=300)  # fmt: skip
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    assert "cannot load timm's pretrained weights for resnet18.a1_in1k" in refused.stderr
