"""Connections fitted from data (aligned, least_squares): exact on original genotypes, the
identity between an architecture and itself, saved and loaded with the knowledge base."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import CIFAR_NPZ, cifar_checkpoint

from modulenet.errors import KnowledgeBaseError
from modulenet.knowledge import build_knowledge_base, load_knowledge_base
from modulenet.stitching.fitted import (
    AlignedConnection,
    LeastSquaresConnection,
    _Statistics,
    solve_aligned,
    solve_least_squares,
)


@pytest.fixture(scope="module")
def real():
    """Two real pretrained CIFAR-10 ResNets and 256 real training images (../shared)."""
    weights = {f"resnet_cifar{d}": str(cifar_checkpoint(d)) for d in (20, 32)}
    if not CIFAR_NPZ.is_file():
        pytest.skip("shared CIFAR-10 arrays not found")
    kb = build_knowledge_base(list(weights), weights=weights, progress=False)
    data = np.load(CIFAR_NPZ)
    x = torch.from_numpy(data["x_train"][:320]).permute(0, 3, 1, 2).float().div(255)
    x = (x - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(
        1, 3, 1, 1
    )
    kb.fit_connections(x[:256], progress=False)
    return kb, x[256:]


@pytest.mark.parametrize("connection", ["aligned", "least_squares"])
def test_fitted_connections_leave_every_original_genotype_exactly_unchanged(real, connection):
    kb, x = real
    for i in range(kb.num_archs):
        with torch.no_grad():
            assert torch.equal(kb.assemble([i] * 3, connection=connection)(x), kb.assemble([i] * 3)(x))
    mixed = kb.assemble([0, 1, 0], connection=connection)
    links = [m for m in mixed.modules() if isinstance(m, (AlignedConnection, LeastSquaresConnection))]
    assert len(links) == 2  # one at each boundary between different architectures


def test_a_least_squares_stitch_between_an_architecture_and_itself_is_the_identity(real):
    kb, x = real
    with torch.no_grad():
        features = kb.modules[0][0](x)  # ResNet-20 module 1 output, 16 channels
    stats = _Statistics(16, 16, 16)
    stats.add(features, features, features)
    fit = solve_least_squares(stats)
    assert torch.allclose(fit["weight"], torch.eye(16), atol=1e-3) and fit["bias"].abs().max() < 1e-3
    aligned = solve_aligned(stats)
    assert torch.equal(aligned["perm"], torch.arange(16))
    assert torch.allclose(aligned["scale"], torch.ones(16), atol=1e-4) and aligned["shift"].abs().max() < 1e-4


def test_the_assignment_recovers_a_shuffled_and_rescaled_network():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(64, 8, 5, 5, generator=g)
    perm = torch.randperm(8, generator=g)
    scale, shift = torch.rand(8, generator=g) + 0.5, torch.randn(8, generator=g)
    b = a[:, perm] * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1)
    stats = _Statistics(8, 8, 8)
    stats.add(a, a, b)
    fit = solve_aligned(stats)
    assert torch.equal(fit["perm"], perm)
    assert torch.allclose(fit["scale"], scale, atol=1e-4) and torch.allclose(fit["shift"], shift, atol=1e-4)
    link = AlignedConnection(8, 8, fit["perm"], fit["scale"], fit["shift"])
    assert torch.allclose(link(a), b, atol=1e-4) and not list(link.parameters())  # buffers only


def test_a_fitted_knowledge_base_saves_and_loads_the_same_trunks(real, tmp_path):
    kb, x = real
    kb.save(tmp_path / "kb")
    assert json.loads((tmp_path / "kb" / "knowledge_base.json").read_text())["fitted_images"] == 256
    loaded = load_knowledge_base(tmp_path / "kb")
    for connection in ("aligned", "least_squares"):
        with torch.no_grad():
            assert torch.equal(
                loaded.assemble([1, 0, 1], connection=connection)(x), kb.assemble([1, 0, 1], connection=connection)(x)
            )


def test_least_squares_is_frozen_in_the_search_and_trainable_in_fine_tuning(real):
    kb, _ = real
    frozen = kb.assemble([0, 1, 1], connection="least_squares")
    assert not any(p.requires_grad for p in frozen.parameters())
    trainable = kb.assemble([0, 1, 1], connection="least_squares", trainable=True)
    (link,) = [m for m in trainable.modules() if isinstance(m, LeastSquaresConnection)]
    assert all(p.requires_grad for p in link.parameters())


def test_an_unfitted_knowledge_base_is_a_one_line_error():
    kb = build_knowledge_base(["resnet_cifar8", "vgg_cifar"], progress=False)
    with pytest.raises(
        KnowledgeBaseError,
        match=r"connection='aligned' needs connections fitted from data .*"
        r"call kb.fit_connections\(images",
    ) as info:
        kb.assemble([0, 1, 0], connection="aligned")
    assert "\n" not in str(info.value)
    assert kb.assemble([1, 1, 1], connection="aligned") is not None  # no boundary between different networks


@pytest.mark.parametrize("connection", ["aligned", "least_squares"])
def test_the_app_fits_at_start_and_caches_with_the_knowledge_base(connection, monkeypatch, tmp_path, caplog):
    import logging

    from conftest import SMALL_CRAFT, TINY_DATA, TINY_SEARCH, compose_search

    from modulenet.app.jobs import search_job

    monkeypatch.setenv("MODULENET_CACHE", str(tmp_path / "cache"))
    overrides = [
        "knowledge_base=craft",
        *TINY_DATA,
        *TINY_SEARCH,
        *SMALL_CRAFT,
        f"connection={connection}",
        "connection.fit_images=64",
        "search.generations=1",
    ]
    with caplog.at_level(logging.INFO, logger="modulenet"):
        search_job(compose_search(overrides), tmp_path / "a")
        assert "fitting the" in caplog.text and "on 64 training images" in caplog.text
        (cached,) = (tmp_path / "cache").glob("fitted-connections-*.pt")
        caplog.clear()
        search_job(compose_search(overrides), tmp_path / "b")  # the same base and data: from the cache
        assert f"fitted connections: loaded {cached}" in caplog.text
    results = json.loads((tmp_path / "b" / "results.json").read_text())
    assert results["population"] and all(row["status"] == "ok" for row in results["population"])


@pytest.mark.parametrize(
    "damage",
    [
        lambda path, state: path.write_bytes(b"not a tensor file"),
        lambda path, state: torch.save({k: v[:-1] for k, v in state.items()}, path),  # wrong shapes
        lambda path, state: torch.save({k: v * float("nan") for k, v in state.items()}, path),
    ],
)
def test_a_damaged_fitted_connection_cache_is_fitted_again_with_a_warning(damage, monkeypatch, tmp_path, caplog):
    """Issue 25: a cache is validated entry by entry (readable, each tensor of its boundary's shape,
    finite); a damaged one is fitted again and rewritten, never a failed run."""
    import logging

    from conftest import SMALL_CRAFT, TINY_DATA, TINY_SEARCH, compose_search

    from modulenet.app.jobs import search_job

    monkeypatch.setenv("MODULENET_CACHE", str(tmp_path / "cache"))
    overrides = [
        "knowledge_base=craft", *TINY_DATA, *TINY_SEARCH, *SMALL_CRAFT,
        "connection=least_squares", "connection.fit_images=64", "search.generations=1",
    ]  # fmt: skip
    search_job(compose_search(overrides), tmp_path / "a")
    (cached,) = (tmp_path / "cache").glob("fitted-connections-*.pt")
    good = torch.load(cached, weights_only=True)
    damage(cached, good)
    with caplog.at_level(logging.INFO, logger="modulenet"):
        search_job(compose_search(overrides), tmp_path / "b")
    assert f"cached fitted connections {cached} are damaged" in caplog.text and "fitting the" in caplog.text
    again = torch.load(cached, weights_only=True)
    assert again.keys() == good.keys() and all(torch.allclose(again[k], good[k]) for k in good)


class MeanShift(torch.nn.Module):
    """docs/layout.md's worked example: a fitted connection of one's own (ChP/ChDP, then a shift)."""

    def __init__(self, c_in: int, c_out: int, shift: torch.Tensor):
        super().__init__()
        from modulenet.stitching.connections import parameter_free_connection

        self.count = parameter_free_connection(c_in, c_out)
        self.register_buffer("shift", shift.float().view(1, -1, 1, 1))

    def forward(self, x):
        return self.count(x) + self.shift


def test_a_fitted_connection_is_one_registration(monkeypatch, tmp_path):
    """Issue 32: a new fitted connection declares how it is solved, checked, built and re-initialised,
    and nothing else names it: fitting, assembling, saving and loading the knowledge base all follow."""
    from modulenet.stitching.choices import CONNECTIONS, Connection, Fitted

    fitted = Fitted(
        solve=lambda stats: {"shift": (stats.b / stats.n).float()},
        shapes=lambda c_in, c_out: {"shift": (c_out,)},
        link=lambda fit, c_in, c_out: MeanShift(c_in, c_out, fit["shift"]),
    )
    monkeypatch.setitem(
        CONNECTIONS._entries, "mean_shift", Connection("mean_shift", "mine.MeanShift", None, fitted=fitted)
    )
    torch.manual_seed(0)
    kb = build_knowledge_base(["resnet_cifar8", "vgg_cifar"], progress=False)
    kb.fit_connections(torch.randn(16, 3, 32, 32), progress=False)
    trunk = kb.assemble((0, 1, 1), connection="mean_shift")
    assert any(isinstance(m, MeanShift) for m in trunk.modules())
    assert trunk(torch.randn(2, 3, 32, 32)).shape[1] == kb.specs[-1][1].out_channels
    kb.save(tmp_path / "kb")
    again = load_knowledge_base(tmp_path / "kb")
    assert torch.equal(
        again.fitted["reduce"][(1, 0, 1)]["mean_shift"]["shift"], kb.fitted["reduce"][(1, 0, 1)]["mean_shift"]["shift"]
    )
    assert "mean_shift" not in kb.reinitialized(0).fitted["reduce"][(1, 0, 1)]  # scratch=None: none at random
