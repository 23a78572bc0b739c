import math

import pytest
import torch

from modulenet.errors import ModuleNetError
from modulenet.stitching.choices import get_connection
from modulenet.stitching.connections import (
    ChannelDePool,
    ChannelPool,
    Conv1x1Connection,
    ModuleLink,
    SpatialAdapter,
    channel_depool,
    channel_pool,
    connect,
)


def channel_ramp(c: int, n: int = 2, h: int = 3, w: int = 3) -> torch.Tensor:
    """Channel l holds the value l everywhere (float64 so hand-computed values compare exactly)."""
    return torch.arange(c, dtype=torch.float64).view(1, c, 1, 1).expand(n, c, h, w).clone()


def eq3_by_definition(x: torch.Tensor, c_out: int) -> torch.Tensor:
    """Eq. (3) written literally: concatenate C_out/eta ChPs of kernel C/eta over rotated inputs."""
    c = x.shape[1]
    eta = math.gcd(c, c_out)
    k = c // eta
    blocks = []
    for i in range(c_out // eta):
        rotated = torch.cat([x[:, i:], x[:, :i]], dim=1)  # C^In_i = Concat(C^In[i:end], C^In[begin:i])
        blocks.append(torch.stack([rotated[:, k * g : k * g + k].mean(1) for g in range(eta)], dim=1))
    return torch.cat(blocks, dim=1)


def test_fig4_channel_pool_192_to_128_by_hand():
    out = channel_pool(channel_ramp(192), 128)
    assert out.shape == (2, 128, 3, 3)
    values = out[0, :, 0, 0]
    # eta = gcd(192, 128) = 64, k' = 3: the first 64 channels average (0,1,2), (3,4,5), ...
    assert values[0].item() == pytest.approx((0 + 1 + 2) / 3)
    assert values[1].item() == pytest.approx((3 + 4 + 5) / 3)
    assert values[63].item() == pytest.approx((189 + 190 + 191) / 3)
    # ... the next 64 the input rotated by one channel: (1,2,3), ..., (190, 191, 0)
    assert values[64].item() == pytest.approx((1 + 2 + 3) / 3)
    assert values[127].item() == pytest.approx((190 + 191 + 0) / 3)


def test_eq1_channel_pool_divisible_case_by_hand():
    out = channel_pool(channel_ramp(8), 2)[0, :, 0, 0]
    assert out.tolist() == [1.5, 5.5]  # mean(0..3), mean(4..7)


@pytest.mark.parametrize("c, c_out", [(192, 128), (6, 4), (7, 3), (10, 4), (512, 256), (144, 64), (9, 1)])
def test_channel_pool_matches_eq3_literally(c, c_out):
    x = torch.randn(3, c, 4, 5, dtype=torch.float64)
    torch.testing.assert_close(channel_pool(x, c_out), eq3_by_definition(x, c_out))


def test_channel_depool_eq2_and_slice_rule_by_hand():
    x = channel_ramp(3)
    assert channel_depool(x, 6)[0, :, 0, 0].tolist() == [0, 1, 2, 0, 1, 2]  # k_DP = 2
    assert channel_depool(x, 7)[0, :, 0, 0].tolist() == [0, 1, 2, 0, 1, 2, 0]  # ceil(7/3) = 3 copies, sliced
    assert channel_depool(channel_ramp(128), 192)[0, 128:, 0, 0].tolist() == list(range(64))


def test_connect_dispatches_and_is_identity_for_equal_channels():
    x = torch.randn(2, 64, 4, 4)
    assert connect(x, 64) is x
    assert connect(x, 32).shape[1] == 32
    assert connect(x, 100).shape[1] == 100


def test_parameter_free_connections_have_no_parameters_but_pass_gradients():
    for layer in (ChannelPool(192, 128), ChannelDePool(64, 256), get_connection("channel_pool").between(96, 40)):
        assert sum(p.numel() for p in layer.parameters()) == 0
        x = torch.randn(2, layer.in_channels, 4, 4, requires_grad=True)
        layer(x).sum().backward()
        assert x.grad is not None and x.grad.abs().sum() > 0


def test_conv1x1_connection_is_trainable_and_selected_by_name():
    layer = get_connection("conv1x1").between(64, 256)
    assert isinstance(layer, Conv1x1Connection)
    assert sum(p.numel() for p in layer.parameters() if p.requires_grad) == 64 * 256 + 256
    assert layer(torch.randn(1, 64, 4, 4)).shape == (1, 256, 4, 4)
    assert isinstance(get_connection("conv1x1").between(64, 64), Conv1x1Connection)  # "between each module" (Sec. V-C)
    assert isinstance(get_connection("conv1x1_where_needed").between(64, 64), torch.nn.Identity)
    assert isinstance(get_connection("conv1x1_where_needed").between(64, 32), Conv1x1Connection)


def test_unknown_connection_is_a_clear_error():
    with pytest.raises(
        ModuleNetError,
        match=r"connection.name='conv3x3': valid values are \['channel_pool', 'conv1x1', 'conv1x1_where_needed', "
        r"'aligned', 'least_squares'\] or your own class's dotted path",
    ):
        get_connection("conv3x3").between(4, 8)


OWN_CONNECTIONS = """
import torch
from torch import nn


class Stitch(nn.Conv2d):  # trains with the classifier; only where channel counts differ
    def __init__(self, in_channels, out_channels):
        super().__init__(in_channels, out_channels, kernel_size=1, bias=False)


class FirstChannel(nn.Module):  # nothing to train, at every boundary
    parameter_free = True
    every_boundary = True

    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.out_channels = out_channels

    def forward(self, x):
        return x[:, :1].expand(-1, self.out_channels, -1, -1)


not_callable = 3
"""


@pytest.fixture
def own_connections(tmp_path, monkeypatch):
    (tmp_path / "my_connections.py").write_text(OWN_CONNECTIONS)
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib

    return importlib.import_module("my_connections")


def test_your_own_connection_class_is_built_from_connection_target(own_connections):
    from modulenet.evaluation.settings import EvaluationSettings
    from modulenet.stitching.choices import connection_id

    assert connection_id("channel_pool", "my_connections.Stitch") == "my_connections.Stitch"
    assert connection_id("conv1x1", "modulenet.stitching.connections.Conv1x1Connection") == "conv1x1"
    assert connection_id("least_squares") == "least_squares"  # the Python API: a built-in by its name
    assert isinstance(get_connection("my_connections.Stitch").between(4, 8), own_connections.Stitch)
    assert isinstance(get_connection("my_connections.Stitch").between(4, 4), torch.nn.Identity)
    assert isinstance(get_connection("my_connections.FirstChannel").between(4, 4), own_connections.FirstChannel)
    link = ModuleLink(4, 8, 1.0, 1.0, connection=get_connection("my_connections.FirstChannel"))
    x = channel_ramp(4)
    assert torch.equal(link(x), torch.zeros_like(x[:, :1]).expand(-1, 8, -1, -1))
    assert get_connection("my_connections.Stitch").trains and not get_connection("my_connections.FirstChannel").trains
    assert not EvaluationSettings(connection="my_connections.Stitch").features_cached
    assert EvaluationSettings(connection="my_connections.FirstChannel").features_cached


@pytest.mark.parametrize(
    "name, target, error",
    [
        ("foo", None, r"connection.name='foo': valid connections are \['aligned', .* \(or your own class as "),
        (
            "channel_pool",
            "modulenet.stitching.connections.Conv1x1Connection",
            r"is not connection.name='channel_pool''s class",
        ),
        ("channel_pool", "no_such_module.Stitch", r"connection._target_='no_such_module.Stitch' cannot be imported"),
        ("channel_pool", "my_connections.not_callable", r"is not a class or function"),
    ],
)
def test_a_bad_connection_is_one_line(name, target, error, own_connections):
    from modulenet.stitching.choices import connection_id

    with pytest.raises(ModuleNetError, match=error) as caught:
        connection_id(name, target)
    assert "\n" not in str(caught.value)


def test_spatial_adapter_restores_native_resolution():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    down = SpatialAdapter(2, 4)(x)  # the next module wants half the resolution
    assert down.shape[-2:] == (2, 2) and down[0, 0, 0, 0].item() == pytest.approx((0 + 1 + 4 + 5) / 4)
    up = SpatialAdapter(8, 4)(x)  # twice the resolution: nearest neighbour
    assert up.shape[-2:] == (8, 8) and up[0, 0, 1, 1].item() == 0 and up[0, 0, 7, 7].item() == 15
    odd = SpatialAdapter(2, 4)(torch.randn(1, 3, 7, 7))  # odd sides round up, like a strided conv
    assert odd.shape[-2:] == (4, 4)
    assert sum(p.numel() for p in SpatialAdapter(2, 4).parameters()) == 0


def test_module_link_is_empty_between_native_neighbours():
    assert len(ModuleLink(64, 64, 4.0, 4.0)) == 0
    link = ModuleLink(64, 128, 2.0, 4.0, get_connection("channel_pool"))
    assert [type(m) for m in link] == [SpatialAdapter, ChannelDePool]
    assert link(torch.randn(1, 64, 16, 16)).shape == (1, 128, 8, 8)


def test_a_search_with_your_own_connection_from_the_command_line(own_connections, tmp_path):
    from conftest import SMALL_CRAFT, TINY_DATA, TINY_SEARCH, compose_search

    from modulenet.app.jobs import search_job
    from modulenet.rundir import read_results

    overrides = ["knowledge_base=craft", *TINY_DATA, *TINY_SEARCH, *SMALL_CRAFT, "search.generations=1"]
    search_job(compose_search([*overrides, "connection._target_=my_connections.Stitch"]), tmp_path / "own")
    search_job(compose_search(overrides), tmp_path / "channel_pool")
    own, paper = (read_results(tmp_path / run) for run in ("own", "channel_pool"))
    assert all(row["status"] == "ok" for row in own["population"])
    mixed = [row for row in own["population"] if len(set(row["genotype"])) > 1]
    assert mixed, "the initial population has a genotype mixing both networks"
    by_genotype = {tuple(row["genotype"]): row["err_val"] for row in paper["population"]}
    # the same seed draws the same genotypes; a trained 1x1 stitch is not ChP/ChDP
    assert any(by_genotype[tuple(row["genotype"])] != row["err_val"] for row in mixed)
