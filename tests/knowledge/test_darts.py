"""DARTS-family knowledge base (Sec. IV-B2): published genotypes, the c = 5 split, lossless reassembly."""

from __future__ import annotations

import random

import pytest
import torch
from conftest import REPO
from omegaconf import OmegaConf
from torch import nn

from modulenet.errors import KnowledgeBaseError, WeightsError
from modulenet.knowledge import build_knowledge_base, get_architecture, known_architectures, load_knowledge_base
from modulenet.knowledge.darts import DartsNetwork, DartsStage, DartsStem, module_bounds
from modulenet.knowledge.darts_genotypes import GENOTYPES, PRIMITIVES, DartsGenotype, validate_genotype
from modulenet.knowledge.zoo import DartsArchitecture, architecture_from_config

NAMES = ["darts_v2", "pdarts", "pc_darts_cifar", "pc_darts_image"]
TINY = {"C": 8}  # the paper's 20 cells with reductions at 5, 10, 15, at a small width


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny networks of many small convolutions run fastest on one thread (and do not fight a busy CPU)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny(name: str, **kwargs) -> DartsArchitecture:
    return DartsArchitecture(name, **{**TINY, **kwargs})


def randomised(model: nn.Module) -> nn.Module:
    """Random weights with non-trivial BatchNorm statistics, as a trained network has."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.normal_(1, 0.1)
                m.bias.normal_(0, 0.1)
    return model.eval()


def test_published_genotypes_are_valid_and_round_trip():
    assert list(GENOTYPES) == NAMES
    for name, genotype in GENOTYPES.items():
        validate_genotype(genotype, name)
        for kind in ("normal", "reduce"):
            edges = getattr(genotype, kind)
            assert len(edges) == 8 and all(op in PRIMITIVES and op != "none" for op, _ in edges)
            assert getattr(genotype, f"{kind}_concat") == (2, 3, 4, 5)
        assert DartsGenotype.from_config(genotype.to_config()) == genotype
    # spot checks against the papers' figures
    assert GENOTYPES["darts_v2"].reduce.count(("max_pool_3x3", 1)) == 3
    assert GENOTYPES["pdarts"].normal[-1] == ("dil_conv_5x5", 4)
    assert GENOTYPES["pc_darts_image"].normal[0] == ("skip_connect", 1)


def test_invalid_genotypes_are_refused():
    good = GENOTYPES["darts_v2"].to_config()
    with pytest.raises(KnowledgeBaseError, match="unknown operation 'conv_9x9'"):
        DartsGenotype.from_config({**good, "normal": [["conv_9x9", 0]] + good["normal"][1:]})
    with pytest.raises(KnowledgeBaseError, match="node 2 cannot read input 2"):
        DartsGenotype.from_config({**good, "reduce": [["skip_connect", 2]] + good["reduce"][1:]})
    with pytest.raises(KnowledgeBaseError, match="two .* edges per node"):
        DartsGenotype.from_config({**good, "normal": good["normal"][:3]})


@pytest.mark.parametrize(
    "reductions,stem_multiplier,published",
    [((6, 13), 3, {"darts_v2": 3.3, "pdarts": 3.4, "pc_darts_cifar": 3.6}), (None, 1, {})],
)
def test_parameter_counts_match_the_published_networks(reductions, stem_multiplier, published):
    """The original stacking (reductions at cells 6 and 13, stem 3 C) has the papers' sizes, without
    auxiliary head: DARTS 3.3M, P-DARTS 3.4M, PC-DARTS 3.6M; the paper's re-stacking is larger."""
    for name in NAMES:
        with torch.device("meta"):
            net = DartsNetwork(
                GENOTYPES[name], C=36, num_classes=10, layers=20, reductions=reductions, stem_multiplier=stem_multiplier
            )
        millions = sum(p.numel() for p in net.parameters()) / 1e6
        if name in published:
            assert round(millions, 1) == published[name], name
        if reductions is None:
            assert net.reductions == (5, 10, 15) and 8 < millions < 11


def test_paper_split_is_the_stem_and_four_stages_of_five_cells():
    arch = get_architecture("darts_v2")
    assert isinstance(arch, DartsArchitecture) and arch.num_cells == 5
    assert (arch.C, arch.layers, arch.reductions, arch.stem_multiplier) == (36, 20, (5, 10, 15), 1)
    assert module_bounds(20, arch.reductions) == [(0, 5), (5, 10), (10, 15), (15, 20)]
    net = tiny("darts_v2").build()
    modules = tiny("darts_v2").cells(net)
    assert isinstance(modules[0], DartsStem) and all(isinstance(m, DartsStage) for m in modules[1:])
    assert [len(m.cells) for m in modules[1:]] == [5, 5, 5, 5]
    assert [[c.reduction for c in m.cells] for m in modules[1:]] == [[False] * 5] + [[True] + [False] * 4] * 3
    assert [m.last for m in modules[1:]] == [False, False, False, True]
    assert all(m.cells[0] is net.cells[5 * j] for j, m in enumerate(modules[1:])), "modules share the network's cells"


@pytest.mark.parametrize("name", NAMES)
def test_each_network_runs_at_32px_and_boundaries_carry_equal_halves(name):
    arch = tiny(name)
    net = arch.build().eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert net(x).shape == (2, 10)
        shapes, h = [], x
        for module in arch.cells(net):
            h = module(h)
            shapes.append(tuple(h.shape[1:]))
    # stem: (s, s); then 4 C per cell output, doubled at each boundary; the last module gives s1 only
    assert shapes == [(16, 32, 32), (64, 32, 32), (128, 16, 16), (256, 8, 8), (256, 4, 4)]


@pytest.fixture(scope="module")
def saved_darts_networks(tmp_path_factory):
    """Random DARTS networks saved as their training code saves them: DataParallel `module.` prefixes,
    an auxiliary head, plain or wrapped as {"epoch", "weight"} (the paper authors' code)."""
    root = tmp_path_factory.mktemp("darts_weights")
    torch.manual_seed(2)
    networks, files = {}, {}
    for k, name in enumerate(NAMES):
        net = randomised(tiny(name).build())
        state = {f"module.{key}": v for key, v in net.state_dict().items()}
        state["module.auxiliary_head.classifier.weight"] = torch.randn(10, 768)
        if k % 2:
            state = {"epoch": 599, "weight": state}
        torch.save(state, root / f"{name}.pt")
        networks[name], files[name] = net, str(root / f"{name}.pt")
    return networks, files


@pytest.fixture(scope="module")
def darts_kb(saved_darts_networks):
    _, files = saved_darts_networks
    return build_knowledge_base([tiny(n) for n in NAMES], weights=files, progress=False)


def test_lossless_reassembly_from_checkpoints(saved_darts_networks, darts_kb):
    networks, files = saved_darts_networks
    assert darts_kb.arch_names == NAMES and darts_kb.num_cells == 5 and darts_kb.sources == [files[n] for n in NAMES]
    x = torch.randn(3, 3, 32, 32)
    for i, name in enumerate(NAMES):
        net = networks[name]
        trunk = darts_kb.assemble([i] * 5)
        assert not any(n.startswith("link") for n, _ in trunk.named_children())
        with torch.no_grad():
            logits = net.classifier(net.global_pooling(trunk(x)).flatten(1))
            torch.testing.assert_close(logits, net(x), rtol=0, atol=0)


def test_darts_networks_mix_without_connections(darts_kb):
    """Same C and stem: every boundary already matches, so no link is inserted (Sec. III-D not needed)."""
    rng = random.Random(0)
    genotypes = [[j % 4 for j in range(k, k + 5)] for k in range(4)] + [
        [rng.randrange(4) for _ in range(5)] for _ in range(6)
    ]
    x = torch.randn(2, 3, 32, 32)
    for genotype in genotypes:
        trunk = darts_kb.assemble(genotype)
        assert not any(n.startswith("link") for n, _ in trunk.named_children()), genotype
        with torch.no_grad():
            out = trunk(x)
        assert out.shape == (2, darts_kb.output_spec(genotype).out_channels, 4, 4) and torch.isfinite(out).all()


def test_darts_mixes_with_a_resnet_through_connections():
    """resnet18 (cifar stem, 16x16 after its stride-2 conv) and DARTS modules: ChP/ChDP and the
    spatial adapter act on the concatenated (s0, s1) tensor at each boundary."""
    kb = build_knowledge_base([tiny("pdarts"), "resnet18"], num_cells=5, image_size=32, progress=False)
    x = torch.randn(2, 3, 32, 32)
    for genotype in ([0, 1, 0, 1, 0], [1, 0, 1, 0, 1], [1, 0, 0, 0, 0], [0, 0, 0, 0, 1]):
        trunk = kb.assemble(genotype)
        assert any(n.startswith("link") for n, _ in trunk.named_children()), genotype
        assert sum(p.numel() for p in trunk.parameters() if p.requires_grad) == 0, "connections are parameter-free"
        with torch.no_grad():
            out = trunk(x)
        spec = kb.output_spec(genotype)
        assert out.shape == (2, spec.out_channels, *spec.out_size) and torch.isfinite(out).all()


def test_save_and_load_round_trip(tmp_path, darts_kb):
    custom = DartsArchitecture(
        "my_cell",
        C=8,
        layers=8,
        genotype=GENOTYPES["pdarts"]._replace(normal=(("sep_conv_5x5", 0), ("max_pool_3x3", 1)) * 4),
    )
    assert custom.reductions == (2, 4, 6) and custom.num_cells == 5
    kb = build_knowledge_base([*darts_kb.architectures[:2], custom], progress=False)
    kb.save(tmp_path / "kb")
    loaded = load_knowledge_base(tmp_path / "kb")
    assert [a.to_config() for a in loaded.architectures] == [a.to_config() for a in kb.architectures]
    assert loaded.architectures[2].genotype == custom.genotype and loaded.specs == kb.specs
    x = torch.randn(2, 3, 32, 32)
    for genotype in ([0] * 5, [2] * 5, [0, 1, 2, 1, 0]):
        with torch.no_grad():
            assert torch.equal(loaded.assemble(genotype)(x), kb.assemble(genotype)(x))


def test_config_round_trip_and_registry():
    assert set(NAMES) <= set(known_architectures())
    arch = DartsArchitecture("pc_darts_image", C=16, layers=12, reductions=(3, 6, 9), stem_multiplier=3)
    again = architecture_from_config(arch.to_config())
    assert isinstance(again, DartsArchitecture) and again.to_config() == arch.to_config()
    assert again.genotype == GENOTYPES["pc_darts_image"] and again.num_cells == 5
    conf = OmegaConf.load(REPO / "conf" / "knowledge_base" / "darts.yaml")
    assert list(conf.archs) == NAMES and conf.num_cells == 5


def test_bad_darts_settings_are_refused(tmp_path):
    with pytest.raises(KnowledgeBaseError, match="unknown architecture 'darts_v3'"):
        get_architecture("darts_v3")
    with pytest.raises(KnowledgeBaseError, match="too few cells"):
        DartsArchitecture("darts_v2", C=8, layers=8, reductions=(1, 4, 6))  # module 2 would be one cell
    with pytest.raises(KnowledgeBaseError, match="positive even"):
        DartsArchitecture("darts_v2", C=7)
    # a checkpoint of the original DARTS stem (3 C channels) is refused with the tensor named
    torch.save(tiny("darts_v2", stem_multiplier=3).build().state_dict(), tmp_path / "darts.pt")
    with pytest.raises(WeightsError, match="stem.0.weight"):
        build_knowledge_base([tiny("darts_v2")], weights={"darts_v2": tmp_path / "darts.pt"}, progress=False)
