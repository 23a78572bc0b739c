"""Knowledge base: decomposition, weights, lossless reassembly, save/load (Sec. III-B)."""

from __future__ import annotations

import itertools
import json
import shutil

import pytest
import torch
from conftest import cifar_checkpoint
from torch import nn
from torchvision.models import get_model

from modulenet.errors import GenotypeError, KnowledgeBaseError, ModuleNetError, WeightsError
from modulenet.knowledge import (
    CutPointArchitecture,
    KnowledgeBase,
    build_knowledge_base,
    known_architectures,
    load_knowledge_base,
)
from modulenet.knowledge.cifar_resnet import CifarResNet
from modulenet.knowledge.weights import load_checkpoint


def randomised_network(name: str, num_classes: int = 100) -> nn.Module:
    """A torchvision network with random weights and non-trivial BatchNorm statistics, as if
    fine-tuned on a 100-class dataset (so its classifier differs from the 1000-class default).
    A VGG's classifier gets 64-wide hidden layers, as a user's own head may: its checkpoint is
    a few MB instead of 0.5 GB (only the trunk is kept either way)."""
    model = get_model(name, weights=None, num_classes=num_classes)
    if name.startswith("vgg"):
        in_features = model.classifier[0].in_features
        for index, (fan_in, fan_out) in {0: (in_features, 64), 3: (64, 64), 6: (64, num_classes)}.items():
            model.classifier[index] = nn.Linear(fan_in, fan_out)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.normal_(1, 0.1)
                m.bias.normal_(0, 0.1)
    return model.eval()


def reference_features(name: str, model: nn.Module, cifar_stem: bool) -> nn.Module:
    """The source network's own feature extractor, written out as the issue states it."""
    if name.startswith("vgg"):
        return model.features
    stem = [model.conv1, model.bn1, model.relu] + ([] if cifar_stem else [model.maxpool])
    return nn.Sequential(*stem, model.layer1, model.layer2, model.layer3, model.layer4)


LOSSLESS_ARCHS = ["resnet34", "resnet50", "resnet101", "vgg13", "vgg16", "vgg13_bn", "vgg16_bn"]


@pytest.fixture(scope="module")
def saved_torchvision_networks(tmp_path_factory):
    """Random networks saved to checkpoint files in the three layouts users bring."""
    root = tmp_path_factory.mktemp("weights")
    torch.manual_seed(1)
    networks, files = {}, {}
    for k, name in enumerate(LOSSLESS_ARCHS):
        model = randomised_network(name)
        state = model.state_dict()
        if k % 3 == 1:
            state = {"state_dict": state}
        elif k % 3 == 2:
            state = {"state_dict": {f"module.{key}": v for key, v in state.items()}}
        torch.save(state, root / f"{name}.pt")
        networks[name], files[name] = model, str(root / f"{name}.pt")
    return networks, files


@pytest.mark.parametrize("cifar_stem", [True, False])
def test_lossless_reassembly_of_torchvision_networks(saved_torchvision_networks, cifar_stem):
    networks, files = saved_torchvision_networks
    image_size = 32 if cifar_stem else 64
    kb = build_knowledge_base(
        LOSSLESS_ARCHS, num_cells=5, weights=files, cifar_stem=cifar_stem, image_size=image_size, progress=False
    )
    assert kb.arch_names == LOSSLESS_ARCHS and kb.num_cells == 5
    x = torch.randn(2, 3, image_size, image_size)
    for i, name in enumerate(LOSSLESS_ARCHS):
        trunk = kb.assemble([i] * 5)
        assert not any(n.startswith("link") for n, _ in trunk.named_children()), (
            "the original genotype gets no adapters"
        )
        with torch.no_grad():
            expected = reference_features(name, networks[name], cifar_stem)(x)
            assert torch.equal(trunk(x), expected), name


def test_lossless_reassembly_of_real_cifar_resnets(cifar_test_set):
    """Assembled [i]*3 + global average pool + the checkpoint's linear layer gives the checkpoint's accuracy."""
    x, y = cifar_test_set
    depths = (20, 32, 44, 56)
    files = {f"resnet_cifar{d}": cifar_checkpoint(d) for d in depths}
    kb = build_knowledge_base(list(files), weights={k: str(v) for k, v in files.items()}, progress=False)
    assert kb.num_cells == 3
    for i, (name, path) in enumerate(files.items()):
        state = load_checkpoint(path)
        full = CifarResNet(int(name.removeprefix("resnet_cifar")))
        full.load_state_dict(state, strict=False)  # the checkpoints predate num_batches_tracked
        full.eval()
        with torch.no_grad():
            features = kb.assemble([i] * 3)(x)
            logits = nn.functional.linear(features.mean((2, 3)), state["linear.weight"], state["linear.bias"])
            reference = full(x[:256])  # the same predictions on a quarter of the images; accuracy on all
        accuracy = (logits.argmax(1) == y).float().mean().item()
        assert torch.equal(logits[:256].argmax(1), reference.argmax(1))
        published = torch.load(path, map_location="cpu", weights_only=True)["best_prec1"] / 100
        # x_test is about a tenth of the official test set: within two points of the published figure
        assert abs(accuracy - published) < 0.02, (name, accuracy, published)


@pytest.fixture(scope="module")
def family_kbs():
    """One network per torchvision family (basic-block ResNet, bottleneck ResNet, VGG, VGG-BN)."""
    archs = ["resnet18", "resnet50", "vgg11", "vgg11_bn"]
    return {
        32: build_knowledge_base(archs, num_cells=5, image_size=32, progress=False),
        224: build_knowledge_base(archs, num_cells=5, image_size=224, progress=False),
    }


def neighbour_covering_genotypes(n: int, c: int) -> list[tuple[int, ...]]:
    """Alternating genotypes a,b,a,b,...: together every (left, right) pair of architectures
    meets at every cell boundary, and a link depends only on its two neighbours."""
    return [tuple(a if j % 2 == 0 else b for j in range(c)) for a, b in itertools.product(range(n), repeat=2)]


@pytest.mark.parametrize("image_size", [32, 224])
def test_every_family_combination_assembles_and_runs(family_kbs, image_size):
    kb = family_kbs[image_size]
    for genotype in neighbour_covering_genotypes(kb.num_archs, kb.num_cells):
        trunk = kb.assemble(genotype)
        seen = []
        hooks = [
            getattr(trunk, f"cell{j + 1}").register_forward_hook(
                lambda m, inp, out, j=j, seen=seen: seen.append((j, tuple(inp[0].shape[1:])))
            )
            for j in range(kb.num_cells)
        ]
        with torch.no_grad():
            out = trunk(torch.randn(1, 3, image_size, image_size))
        for h in hooks:
            h.remove()
        # every module receives its native input channels and resolution (Sec. III-B)
        for j, shape in seen:
            spec = kb.specs[j][genotype[j]]
            assert shape == (spec.in_channels, *spec.in_size), (genotype, j)
        last = kb.output_spec(genotype)
        assert tuple(out.shape[1:]) == (last.out_channels, *last.out_size)


@pytest.mark.slow  # make test-all: every genotype of four families (about 15 s); make test keeps the pairs test
def test_all_genotypes_of_four_families_run_at_32px(family_kbs):
    kb = family_kbs[32]
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        for genotype in itertools.product(range(kb.num_archs), repeat=kb.num_cells):
            assert kb.assemble(genotype)(x).shape[1] == kb.output_spec(genotype).out_channels


def test_assembled_trunk_is_frozen_and_stays_in_eval_mode(family_kbs):
    kb = family_kbs[32]
    trunk = kb.assemble([3, 0, 1, 2, 3])
    assert not any(p.requires_grad for p in trunk.parameters())
    bn = next(m for m in trunk.modules() if isinstance(m, nn.BatchNorm2d))
    before = bn.running_mean.clone()
    trunk.train()  # a LightningModule calls this on its children
    with torch.no_grad():
        trunk(torch.randn(4, 3, 32, 32))
    assert not bn.training and torch.equal(bn.running_mean, before)


def test_trainable_assembly_copies_modules(family_kbs):
    kb = family_kbs[32]
    trunk = kb.assemble([1, 1, 0, 0, 0], trainable=True)
    assert all(p.requires_grad for p in trunk.parameters())
    with torch.no_grad():
        next(trunk.parameters()).add_(1.0)
    assert not torch.equal(next(trunk.parameters()), next(kb.modules[0][1].parameters()))


def test_conv1x1_connection_is_the_only_trainable_part(family_kbs):
    kb = family_kbs[32]
    trunk = kb.assemble([0, 1, 0, 1, 0], connection="conv1x1")
    trainable = [n for n, p in trunk.named_parameters() if p.requires_grad]
    assert trainable and all(n.startswith("link") for n in trainable)


def test_save_and_load_round_trip(tmp_path, family_kbs):
    kb = family_kbs[32]
    kb.save(tmp_path / "kb")
    loaded = load_knowledge_base(tmp_path / "kb")
    assert loaded.arch_names == kb.arch_names and loaded.num_cells == kb.num_cells
    assert loaded.specs == kb.specs and loaded.sources == kb.sources
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        for genotype in [(0,) * 5, (2, 0, 1, 3, 0)]:
            assert torch.equal(loaded.assemble(genotype)(x), kb.assemble(genotype)(x))


def test_load_refuses_a_directory_that_is_not_a_knowledge_base(tmp_path):
    with pytest.raises(KnowledgeBaseError, match="is not a knowledge base directory"):
        KnowledgeBase.load(tmp_path)


# -- weights ---------------------------------------------------------------------------------


def test_pretrained_default_comes_from_the_hub_cache(tmp_path, monkeypatch):
    """`weights="DEFAULT"` is the standard download; with the file already cached nothing is fetched."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    shutil.copy(cifar_checkpoint(20), cache / "resnet20-12fca82f.th")
    from torchvision.models import ResNet18_Weights

    resnet18 = randomised_network("resnet18", num_classes=1000)
    torch.save(resnet18.state_dict(), cache / ResNet18_Weights.DEFAULT.url.rsplit("/", 1)[1])

    kb = build_knowledge_base(["resnet_cifar20"], weights="DEFAULT", progress=False)
    reference = build_knowledge_base(["resnet_cifar20"], weights=str(cifar_checkpoint(20)), progress=False)
    assert torch.equal(kb.modules[2][0][0].conv1.weight, reference.modules[2][0][0].conv1.weight)
    assert kb.sources == ["pretrained DEFAULT"]

    kb18 = build_knowledge_base(["resnet18"], weights={"resnet18": "DEFAULT"}, progress=False)
    assert torch.equal(kb18.modules[4][0][1].conv2.weight, resnet18.layer4[1].conv2.weight)


def test_wrong_trunk_shape_is_an_error_naming_the_key(tmp_path):
    state = randomised_network("resnet18").state_dict()
    state["layer2.0.conv1.weight"] = torch.zeros(128, 64, 5, 5)
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(
        WeightsError, match=r"'layer2\.0\.conv1\.weight' has shape \(128, 64, 5, 5\), resnet18 needs \(128, 64, 3, 3\)"
    ):
        build_knowledge_base(["resnet18"], weights=str(tmp_path / "bad.pt"), progress=False)


def test_checkpoint_of_another_architecture_is_an_error(tmp_path):
    torch.save(randomised_network("vgg11").state_dict(), tmp_path / "vgg.pt")
    with pytest.raises(WeightsError, match=r"has no trunk tensor 'conv1.weight' for resnet18"):
        build_knowledge_base(["resnet18"], weights={"resnet18": str(tmp_path / "vgg.pt")}, progress=False)


def test_missing_corrupt_and_unsafe_files_are_clear_errors(tmp_path):
    with pytest.raises(WeightsError, match="weights file not found: .*nowhere.pt"):
        build_knowledge_base(["resnet_cifar20"], weights=str(tmp_path / "nowhere.pt"), progress=False)
    (tmp_path / "corrupt.pt").write_bytes(b"this is not a checkpoint")
    with pytest.raises(WeightsError, match="corrupt or not a torch checkpoint"):
        build_knowledge_base(["resnet_cifar20"], weights=str(tmp_path / "corrupt.pt"), progress=False)
    # a pickled nn.Module (not a plain tensor file) is refused by weights_only=True
    torch.save(CifarResNet(20), tmp_path / "module.pt")
    with pytest.raises(WeightsError, match="not a plain tensor file"):
        build_knowledge_base(["resnet_cifar20"], weights=str(tmp_path / "module.pt"), progress=False)


# -- bad input -------------------------------------------------------------------------------


def test_unknown_architecture_lists_valid_names():
    with pytest.raises(KnowledgeBaseError, match=r"unknown architecture 'resnet35'; valid names are \[") as info:
        build_knowledge_base(["resnet35"], progress=False)
    assert "resnet34" in str(info.value) and "resnet_cifar56" in str(info.value)
    assert "vgg16_bn" in known_architectures()


def test_architectures_with_different_c_are_refused():
    with pytest.raises(KnowledgeBaseError, match=r"c = 5 cells, but \{'resnet_cifar20': 3\}"):
        build_knowledge_base(["resnet18", "resnet_cifar20"], progress=False)
    with pytest.raises(KnowledgeBaseError, match=r"c = 4 cells"):
        build_knowledge_base(["resnet_cifar20"], num_cells=4, progress=False)


def test_bad_sizes_and_names_are_refused():
    with pytest.raises(KnowledgeBaseError, match="num_cells .* positive integer, got 0"):
        build_knowledge_base(["resnet_cifar20"], num_cells=0, progress=False)
    with pytest.raises(KnowledgeBaseError, match="image_size must be a positive"):
        build_knowledge_base(["resnet_cifar20"], image_size=-32, progress=False)
    with pytest.raises(KnowledgeBaseError, match=r"repeated: \['resnet_cifar20'\]"):
        build_knowledge_base(["resnet_cifar20", "resnet_cifar20"], progress=False)
    with pytest.raises(KnowledgeBaseError, match=r"weights given for \['resnet_cifar32'\]"):
        build_knowledge_base(["resnet_cifar20"], weights={"resnet_cifar32": "x.pt"}, progress=False)


def test_invalid_genotype_names_position_and_range():
    kb = build_knowledge_base(["resnet_cifar20", "resnet_cifar32"], progress=False)
    with pytest.raises(GenotypeError, match=r"position 1 is 5; valid range is \[0, 1\]"):
        kb.assemble([0, 5, 1])
    assert kb.parse_genotype(["resnet_cifar32", 0, "1"]) == (1, 0, 1)
    assert issubclass(GenotypeError, ModuleNetError)


# -- bring your own model ----------------------------------------------------------------------


class TinyNet(nn.Module):
    """A user's own network: three stages, then a classifier that the knowledge base drops."""

    def __init__(self, width: int = 8):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU())
        self.block1 = nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.block2 = nn.Sequential(nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.head = nn.Linear(2 * width, 10)

    def features(self, x):
        return self.block2(torch.relu(self.block1(self.stem(x))) * 2.0)

    def forward(self, x):
        return self.head(self.features(x).mean((2, 3)))


class ResidualNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3, padding=1)
        self.b = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x):
        y = self.a(x)
        return self.b(y) + y


def test_cut_point_architecture_is_lossless_and_mixes_with_the_zoo(tmp_path):
    net = TinyNet().eval()
    mine = CutPointArchitecture("tiny", net, ["stem", "mul", "block2"])
    assert mine.num_cells == 3
    kb = build_knowledge_base([mine, "resnet_cifar20"], progress=False)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(kb.assemble([0, 0, 0])(x), net.features(x))
        assert kb.assemble([1, 0, 1])(x).shape == (2, 64, 8, 8)
    with pytest.raises(KnowledgeBaseError, match="cannot save architecture 'tiny'"):
        kb.save(tmp_path / "kb")


def test_cut_point_architecture_from_import_path_saves_and_loads(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "user_models.py").write_text(
        "from torch import nn\n"
        "def make(width=4):\n"
        "    return nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),\n"
        "                         nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))\n"
    )
    arch = CutPointArchitecture("seq", "user_models:make", ["2", "5"], kwargs={"width": 6})
    kb = build_knowledge_base([arch], progress=False)
    assert [s.out_channels for s in (row[0] for row in kb.specs)] == [6, 12]
    kb.save(tmp_path / "kb")
    with pytest.raises(
        KnowledgeBaseError,
        match=r"names code to import and call \(seq: 'user_models:make'\).*"
        r"trust_code=True",
    ):
        load_knowledge_base(tmp_path / "kb")  # a knowledge base is data until the user trusts it
    loaded = load_knowledge_base(tmp_path / "kb", trust_code=True)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded.assemble([0, 0])(x), kb.assemble([0, 0])(x))


def test_cut_points_inside_a_residual_block_or_unknown_are_refused():
    with pytest.raises(KnowledgeBaseError, match="crosses the cut"):
        build_knowledge_base([CutPointArchitecture("res", ResidualNet(), ["b", "add"])], progress=False)
    with pytest.raises(KnowledgeBaseError, match=r"unknown cut point 'layer9'; valid points are \['a', 'b', 'add'\]"):
        build_knowledge_base([CutPointArchitecture("res", ResidualNet(), ["a", "layer9"])], progress=False)


def test_a_crafted_knowledge_base_runs_no_code_unless_trusted(tmp_path):
    """A metadata file naming os:system (the attack in the reliability issue) imports and calls nothing."""
    kb = build_knowledge_base(["resnet_cifar8"], progress=False)
    kb.save(tmp_path / "kb")
    meta_path = tmp_path / "kb" / "knowledge_base.json"
    meta = json.loads(meta_path.read_text())
    marker = tmp_path / "pwned"
    crafted = {
        "family": "cut_points",
        "name": "resnet_cifar8",
        "model": "os:system",
        "cut_points": ["a"],
        "kwargs": {"command": f"touch {marker}"},
    }
    meta_path.write_text(json.dumps({**meta, "architectures": [crafted]}))
    with pytest.raises(KnowledgeBaseError, match=r"names code to import and call \(resnet_cifar8: 'os:system'\)"):
        load_knowledge_base(tmp_path / "kb")
    assert not marker.exists()
    for broken, expected in (
        ({k: v for k, v in meta.items() if k != "architectures"}, "lacks 'architectures'"),
        ({**meta, "num_cells": "three"}, "has a bad value"),
    ):
        meta_path.write_text(json.dumps(broken))
        with pytest.raises(KnowledgeBaseError, match=expected) as info:
            load_knowledge_base(tmp_path / "kb")
        assert "\n" not in str(info.value)


MY_KNOWLEDGE_BASE = """
from modulenet.knowledge import build_knowledge_base


def two_small_cnns(datamodule=None, progress=True, seed=0, trainer=None, **settings):
    assert datamodule is not None and datamodule.num_classes == 10
    return build_knowledge_base(["resnet_cifar8", "allconv_cifar"], progress=False)


def not_a_knowledge_base(**kwargs):
    return "a string"
"""


def test_your_own_knowledge_base_function_from_knowledge_base_target(tmp_path, monkeypatch):
    from conftest import TINY_DATA, TINY_SEARCH, compose_search

    from modulenet.app.builders import make_knowledge_base
    from modulenet.app.jobs import search_job
    from modulenet.errors import ModuleNetError
    from modulenet.rundir import read_results

    (tmp_path / "my_kb.py").write_text(MY_KNOWLEDGE_BASE)
    monkeypatch.syspath_prepend(str(tmp_path))
    mine = ["knowledge_base._target_=my_kb.two_small_cnns", "knowledge_base.allow_random=true"]
    search_job(compose_search([*TINY_DATA, *TINY_SEARCH, *mine, "search.generations=1"]), tmp_path / "run")
    results = read_results(tmp_path / "run")
    assert set(results["best"]["arch_names"]) <= {"resnet_cifar8", "allconv_cifar"}  # one name per cell
    assert all(row["status"] == "ok" for row in results["population"])
    cfg = compose_search(["knowledge_base._target_=my_kb.not_a_knowledge_base"])
    with pytest.raises(ModuleNetError, match="returned a str, not a KnowledgeBase"):
        make_knowledge_base(cfg.knowledge_base)


def test_the_built_in_knowledge_base_target_builds_with_instantiate(tmp_path):
    """`hydra.utils.instantiate(cfg.knowledge_base, ...)` builds the same knowledge base as the app;
    the group always names its `_target_` (no format of an earlier version is read)."""
    from conftest import compose_search
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from modulenet.app.builders import make_knowledge_base

    build_knowledge_base(["resnet_cifar8", "vgg_cifar"], progress=False).save(tmp_path / "kb")
    cfg = compose_search([f"knowledge_base.path={tmp_path / 'kb'}"]).knowledge_base
    built = instantiate(cfg)
    for kb in (built, make_knowledge_base(cfg)):
        assert kb.arch_names == ["resnet_cifar8", "vgg_cifar"] and kb.weight_hashes() == built.weight_hashes()
    assert OmegaConf.is_missing(compose_search([]).knowledge_base, "_target_") is False


def test_a_damaged_cached_knowledge_base_is_built_again_with_a_warning(tmp_path, caplog):
    """Issue 25: the quickstart's cached knowledge base with a truncated module file is set aside
    and trained again (a warning), not a failed run."""
    import logging

    from modulenet.data import QuickstartDataModule
    from modulenet.knowledge.quickstart import SourceRecipe, quickstart_knowledge_base

    dm = QuickstartDataModule(num_train=64, num_val=32, num_test=32, batch_size=32, seed=0)
    first = quickstart_knowledge_base(dm, tmp_path, SourceRecipe(("resnet_cifar8",), epochs=1), progress=False)
    (module,) = tmp_path.glob("quickstart-kb-*/modules/resnet_cifar8.pt")
    module.write_bytes(module.read_bytes()[:100])
    with caplog.at_level(logging.WARNING, logger="modulenet"):
        again = quickstart_knowledge_base(dm, tmp_path, SourceRecipe(("resnet_cifar8",), epochs=1), progress=False)
    assert "is damaged" in caplog.text and "building it again" in caplog.text
    assert again.weight_hashes() == first.weight_hashes()  # the same seed trains the same network


def test_source_training_follows_the_trainer_groups_precision(tmp_path, monkeypatch):
    """Issue 24: knowledge-base training receives the trainer group's settings, not only the
    accelerator: its precision reaches Lightning, and the cache keys the networks by it."""
    import pytorch_lightning as pl

    from modulenet.data import QuickstartDataModule
    from modulenet.knowledge.quickstart import SourceRecipe, quickstart_knowledge_base
    from modulenet.runtime.settings import TrainerSettings

    seen = []
    fit = pl.Trainer.fit

    def recording(self, *args, **kwargs):
        seen.append(self.precision)
        return fit(self, *args, **kwargs)

    monkeypatch.setattr(pl.Trainer, "fit", recording)
    dm = QuickstartDataModule(num_train=64, num_val=32, num_test=32, batch_size=32, seed=0)
    for precision in ("32-true", "bf16-mixed"):
        quickstart_knowledge_base(
            dm,
            tmp_path,
            SourceRecipe(("resnet_cifar8",), epochs=1),
            progress=False,
            trainer=TrainerSettings(precision=precision),
        )
    assert seen == ["32-true", "bf16-mixed"]
    assert len(list(tmp_path.glob("quickstart-kb-*"))) == 2  # one cached base per precision
