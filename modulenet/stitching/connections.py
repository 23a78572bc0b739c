"""Connections between neighbouring modules (Sec. III-D).

Channel Pool (ChP, Eq. 1 and its gcd form Eq. 3) lowers the channel count and Channel
DePool (ChDP, Eq. 2 and its slice rule) raises it. Neither has trainable parameters, so a
searched trunk stays frozen end to end and no gradient reaches the modules. `conv1x1` is the
trainable alternative of the paper's ablation (Sec. V-C), "a 1x1 convolution between each
module": at every boundary, channel counts equal or not. `conv1x1_where_needed` (ours) puts
one only where the channel counts differ.

Spatial rule (Sec. III-B, "keep the resolution of input unchanged by adjusting the reduction
in the preceding block"): every module receives its native input resolution; stitching/resolution.py
says how. Where the preceding module's output reduction r_prev (relative to the image) is
smaller than the next module's native input reduction r_next, `SpatialAdapter` average-pools
to ceil(H * r_prev / r_next) (the ceil matches strided convolutions); where it is larger, the
paper's rule (`resolution="reduce"`) removes the preceding module's last reduction, and
`resolution="resample"` upsamples with nearest neighbours here instead. Both are
parameter-free; the original genotype never needs one.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import nn

from modulenet.errors import ModuleNetError


def channel_pool(x: torch.Tensor, c_out: int) -> torch.Tensor:
    """ChP: (N, C, H, W) -> (N, c_out, H, W), c_out < C.

    When c_out divides C this is Eq. (1), an average over consecutive groups of k = C / c_out
    channels. Otherwise Eq. (3): with eta = gcd(C, c_out), concatenate c_out / eta ChP outputs
    of kernel C / eta, the i-th taken on the input rotated left by i channels.
    """
    c = x.shape[1]
    if not 0 < c_out <= c:
        raise ValueError(f"channel_pool reduces channels: c_out must be in [1, {c}], got {c_out}")
    if c % c_out == 0:
        n, _, h, w = x.shape
        return x.reshape(n, c_out, c // c_out, h, w).mean(dim=2)
    # Eq. (3) is linear in the input: apply it as its fixed averaging matrix, whose cost does
    # not grow with the number of rotations c_out / eta.
    weights = _channel_pool_matrix(c, c_out).to(device=x.device, dtype=x.dtype)
    return torch.einsum("oc,nchw->nohw", weights, x)


def channel_depool(x: torch.Tensor, c_out: int) -> torch.Tensor:
    """ChDP: (N, C, H, W) -> (N, c_out, H, W), c_out > C; out[l] = in[l mod C] (Eq. 2).

    When C does not divide c_out, the input is duplicated ceil(c_out / C) times and sliced to
    c_out channels, which is the same rule.
    """
    c = x.shape[1]
    if c_out < c:
        raise ValueError(f"channel_depool raises channels: c_out must be >= {c}, got {c_out}")
    index = torch.arange(c_out, device=x.device) % c
    return x.index_select(1, index)


def connect(x: torch.Tensor, c_out: int) -> torch.Tensor:
    """The parameter-free connection to c_out channels: identity, ChP or ChDP."""
    c = x.shape[1]
    if c_out == c:
        return x
    return channel_pool(x, c_out) if c_out < c else channel_depool(x, c_out)


@lru_cache(maxsize=256)
def _channel_pool_matrix(c: int, c_out: int) -> torch.Tensor:
    """The (c_out, c) matrix of Eq. (3): row (i * eta + l) averages input channels
    (i + k * l + m) mod c for m < k, with eta = gcd(c, c_out) and k = c / eta."""
    eta = math.gcd(c, c_out)
    k = c // eta
    matrix = torch.zeros(c_out, c, dtype=torch.float64)
    for i in range(c_out // eta):  # rotation i of the input
        for group in range(eta):
            for m in range(k):
                matrix[i * eta + group, (i + k * group + m) % c] = 1.0 / k
    return matrix


class ChannelPool(nn.Module):
    """ChP as a layer (Eq. 1/3); no parameters."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        if not 0 < out_channels < in_channels:
            raise ValueError(f"ChannelPool needs 0 < out_channels < in_channels, got {in_channels} -> {out_channels}")
        self.in_channels, self.out_channels = in_channels, out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return channel_pool(x, self.out_channels)

    def extra_repr(self) -> str:
        return f"{self.in_channels} -> {self.out_channels}"


class ChannelDePool(nn.Module):
    """ChDP as a layer (Eq. 2); no parameters."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        if not 0 < in_channels < out_channels:
            raise ValueError(f"ChannelDePool needs 0 < in_channels < out_channels, got {in_channels} -> {out_channels}")
        self.in_channels, self.out_channels = in_channels, out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return channel_depool(x, self.out_channels)

    def extra_repr(self) -> str:
        return f"{self.in_channels} -> {self.out_channels}"


class Conv1x1Connection(nn.Conv2d):
    """The ablation's trainable connection (Sec. V-C): a 1x1 convolution between modules."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(in_channels, out_channels, kernel_size=1)


class SpatialAdapter(nn.Module):
    """Rescale a feature map from reduction `from_reduction` to `to_reduction` (see module doc)."""

    def __init__(self, from_reduction: float, to_reduction: float):
        super().__init__()
        if from_reduction <= 0 or to_reduction <= 0:
            raise ValueError(f"reductions must be positive, got {from_reduction} -> {to_reduction}")
        self.from_reduction, self.to_reduction = float(from_reduction), float(to_reduction)
        self.scale = self.from_reduction / self.to_reduction

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if self.scale < 1:
            stride = round(1 / self.scale)
            if abs(stride * self.scale - 1) < 1e-9 and h % stride == 0 and w % stride == 0:
                return F.avg_pool2d(x, kernel_size=stride, stride=stride)
            size = (max(1, math.ceil(h * self.scale)), max(1, math.ceil(w * self.scale)))
            return F.adaptive_avg_pool2d(x, size)
        size = (round(h * self.scale), round(w * self.scale))
        return F.interpolate(x, size=size, mode="nearest")

    def extra_repr(self) -> str:
        return f"reduction {self.from_reduction:g} -> {self.to_reduction:g}"


def parameter_free_connection(in_channels: int, out_channels: int) -> nn.Module:
    """ChP when channels fall, ChDP when they rise, identity when equal (Sec. III-D)."""
    if in_channels == out_channels:
        return nn.Identity()
    if out_channels < in_channels:
        return ChannelPool(in_channels, out_channels)
    return ChannelDePool(in_channels, out_channels)


class ModuleLink(nn.Sequential):
    """Everything between module j-1 and module j: a spatial adapter, then a channel connection."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        from_reduction: float,
        to_reduction: float,
        connection=None,
        channel: nn.Module | None = None,
    ):
        """`connection`: the group's choice (choices.Connection) that builds the channel connection;
        `channel`: one made elsewhere (a fitted one), used instead. Neither: channels must agree."""
        layers = []
        if not math.isclose(from_reduction, to_reduction):
            layers.append(SpatialAdapter(from_reduction, to_reduction))
        if channel is not None:
            layers.append(channel)
        elif connection is not None and (in_channels != out_channels or connection.every_boundary):
            layers.append(connection.between(in_channels, out_channels))
        elif in_channels != out_channels:
            raise ModuleNetError(f"a link from {in_channels} to {out_channels} channels needs a connection")
        super().__init__(*layers)
