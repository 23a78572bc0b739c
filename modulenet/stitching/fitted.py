"""Connections fitted from data (ours, beyond the paper): knowledge that transfers between
independently trained networks.

The paper's ChP / ChDP (Sec. III-D) fix the channel count, not what the channels mean: two
networks trained apart order and scale their channels differently. At each boundary
(position j, preceding architecture p, next architecture q, p != q) two connections are fitted
once from training images, with no gradient and no module changed; both read what p's module
j-1 outputs (after the resolution rule, stitching/resolution.py) and aim at what q's module j was
trained on, q's own module j-1 output on the same images:

* `aligned`, parameter-free in the strict sense (nothing a gradient could train): ChP/ChDP
  bring p's channels to q's count (the paper's connection does the count), then the channels
  are reordered by the assignment (Hungarian, `scipy.optimize.linear_sum_assignment`) that
  maximises their summed correlation with q's channels, and each channel's mean and standard
  deviation are matched to q's.
* `least_squares`, as Stitchable Neural Networks (Pan, Cai, Zhuang, CVPR 2023) initialise their
  stitching layers: a 1x1 convolution with bias solved in closed form from p's output to q's.
  Frozen during the search (nothing is trained, the paper's "no tuning" holds), trainable in
  fine-tuning.

Where p == q the boundary is the source network's own, and no connection is placed: original
genotypes stay exactly as they were.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn
from tqdm.auto import tqdm

from modulenet.errors import KnowledgeBaseError
from modulenet.stitching.choices import CONNECTIONS, Connection, Fitted
from modulenet.stitching.connections import ModuleLink, parameter_free_connection

RIDGE = 1e-6  # relative to the mean feature energy: keeps the normal equations solvable for dead channels


class AlignedConnection(nn.Module):
    """ChP/ChDP to the next module's channels, then `x[:, perm] * scale + shift` (fitted buffers only)."""

    def __init__(
        self, in_channels: int, out_channels: int, perm: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor
    ):
        super().__init__()
        self.count = parameter_free_connection(in_channels, out_channels)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.register_buffer("perm", perm.long().clone())
        self.register_buffer("scale", scale.float().clone().view(1, -1, 1, 1))
        self.register_buffer("shift", shift.float().clone().view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.count(x).index_select(1, self.perm) * self.scale + self.shift

    def extra_repr(self) -> str:
        return f"{self.in_channels} -> {self.out_channels}, fitted"


class LeastSquaresConnection(nn.Conv2d):
    """A 1x1 convolution with bias whose weights are the least-squares stitch (trainable in fine-tuning)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor):
        out_channels, in_channels = weight.shape
        super().__init__(in_channels, out_channels, kernel_size=1)
        with torch.no_grad():
            self.weight.copy_(weight.view(out_channels, in_channels, 1, 1))
            self.bias.copy_(bias)


def fitted_link(kb, connection: str, resolution: str, position: int, prev: int, nxt: int) -> nn.Module:
    """The fitted channel connection between module position-1 (arch `prev`) and module position (arch `nxt`)."""
    try:
        fit = kb.fitted[resolution][(position, prev, nxt)][connection]
    except KeyError:
        raise KnowledgeBaseError(
            f"connection={connection!r} needs connections fitted from data for resolution={resolution!r}: call "
            f"kb.fit_connections(images, resolution={resolution!r}) first (the app does it at start)"
        ) from None
    c_in, c_out = kb.specs[position - 1][prev].out_channels, kb.specs[position][nxt].in_channels
    return CONNECTIONS.get(connection).fitted.link(fit, c_in, c_out)


# --------------------------------------------------------------------------- fitting


class _Statistics:
    """Running sums over every pixel of every image: enough for both fits, in float64."""

    def __init__(self, c_in: int, c_out: int, c_counted: int):
        self.n = 0
        self.xx = torch.zeros(c_in + 1, c_in + 1, dtype=torch.float64)  # [x, 1] for least squares
        self.xy = torch.zeros(c_in + 1, c_out, dtype=torch.float64)
        self.a = torch.zeros(c_counted, dtype=torch.float64)  # ChP/ChDP(x), for the assignment
        self.aa = torch.zeros(c_counted, dtype=torch.float64)
        self.ab = torch.zeros(c_counted, c_out, dtype=torch.float64)
        self.b = torch.zeros(c_out, dtype=torch.float64)
        self.bb = torch.zeros(c_out, dtype=torch.float64)

    def add(self, x: torch.Tensor, counted: torch.Tensor, y: torch.Tensor) -> None:
        x, counted, y = (_pixels(t) for t in (x, counted, y))
        x1 = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], dim=1)
        self.n += len(x)
        self.xx += x1.T @ x1
        self.xy += x1.T @ y
        self.a += counted.sum(0)
        self.aa += (counted * counted).sum(0)
        self.ab += counted.T @ y
        self.b += y.sum(0)
        self.bb += (y * y).sum(0)


def _pixels(t: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N * H * W, C) in float64."""
    return t.detach().to("cpu", torch.float64).permute(0, 2, 3, 1).reshape(-1, t.shape[1])


def solve_least_squares(stats: _Statistics) -> dict[str, torch.Tensor]:
    """W, b minimising sum ||W x + b - y||^2 (normal equations, a tiny ridge on W only)."""
    d = stats.xx.shape[0] - 1
    ridge = RIDGE * float(torch.diagonal(stats.xx)[:d].mean()) if d else 0.0
    lhs = stats.xx + torch.diag(
        torch.cat([torch.full((d,), ridge, dtype=torch.float64), torch.zeros(1, dtype=torch.float64)])
    )
    solution = torch.linalg.solve(lhs, stats.xy)  # (d + 1, c_out)
    return {"weight": solution[:d].T.float().contiguous(), "bias": solution[d].float().contiguous()}


def solve_aligned(stats: _Statistics) -> dict[str, torch.Tensor]:
    """The assignment of counted channels to target channels maximising summed correlation, then
    each target channel's mean and standard deviation matched."""
    from scipy.optimize import linear_sum_assignment

    n = stats.n
    mean_a, mean_b = stats.a / n, stats.b / n
    std_a = (stats.aa / n - mean_a**2).clamp_min(0).sqrt()
    std_b = (stats.bb / n - mean_b**2).clamp_min(0).sqrt()
    cov = stats.ab / n - mean_a[:, None] * mean_b[None, :]
    corr = cov / (std_a[:, None] * std_b[None, :]).clamp_min(1e-12)
    rows, cols = linear_sum_assignment(corr.numpy(), maximize=True)
    perm = torch.empty(len(cols), dtype=torch.long)
    perm[torch.as_tensor(cols)] = torch.as_tensor(rows)  # target channel c reads counted channel perm[c]
    scale = torch.where(std_a[perm] > 1e-12, std_b / std_a[perm].clamp_min(1e-12), torch.zeros_like(std_b))
    shift = mean_b - scale * mean_a[perm]
    return {"perm": perm, "scale": scale.float(), "shift": shift.float()}


def _own_inputs(kb, batch: torch.Tensor) -> Iterator[list[torch.Tensor]]:
    """For each architecture i, the input of each of its modules in its own network: x[0] = images."""
    for i in range(kb.num_archs):
        xs = [batch]
        for j in range(kb.num_cells - 1):
            xs.append(kb.modules[j][i](xs[-1]))
        yield xs


@torch.no_grad()
def fit_boundaries(
    kb, images: torch.Tensor, resolution: str, batch_size: int, device: torch.device, progress: bool = True
) -> dict[tuple[int, int, int], dict[str, dict[str, torch.Tensor]]]:
    """Both fits for every boundary (j, p, q), p != q, from `images` (streamed in batches)."""
    if len(images) == 0:
        raise KnowledgeBaseError("fit_connections needs at least one training image")
    n, c = kb.num_archs, kb.num_cells
    boundaries = [(j, p, q) for j in range(1, c) for p in range(n) for q in range(n) if p != q]
    stages = {}
    for j, p, q in boundaries:
        module, spec, _ = kb.preceding(j - 1, p, q, resolution)
        target = kb.specs[j][q]
        # The spatial part of the link (an average pool, or an upsample where the rule could not
        # apply): what the trunk does between the modules, before the channel connection.
        spatial = ModuleLink(spec.out_channels, spec.out_channels, spec.out_reduction, target.in_reduction)
        count = parameter_free_connection(spec.out_channels, target.in_channels)
        stages[(j, p, q)] = (
            module,
            spatial,
            count,
            _Statistics(spec.out_channels, target.in_channels, target.in_channels),
        )
    was_training = [m.training for m in kb.iter_modules()]
    kb.to(device)
    for m in kb.iter_modules():
        m.eval()
    try:
        starts = range(0, len(images), batch_size)
        for start in tqdm(starts, desc="fitting connections", unit="batch", disable=not progress):
            batch = images[start : start + batch_size].to(device)
            own = list(_own_inputs(kb, batch))
            outputs = {}  # boundaries that share a preceding module (and its adjustment) share its output
            for (j, p, q), (module, spatial, count, stats) in stages.items():
                key = (j, p, id(module), repr(spatial))
                if key not in outputs:
                    outputs[key] = spatial(module(own[p][j - 1]))
                x = outputs[key]
                y = own[q][j]
                if x.shape[-2:] != y.shape[-2:]:
                    raise KnowledgeBaseError(
                        f"cannot fit the boundary {kb.arch_names[p]} -> {kb.arch_names[q]} at "
                        f"module {j + 1}: maps of {tuple(x.shape[-2:])} and {tuple(y.shape[-2:])}"
                    )
                stats.add(x, count(x), y)
    finally:
        for m, mode in zip(kb.iter_modules(), was_training):
            m.train(mode)
    fitted = {}
    for key, (_, _, _, stats) in stages.items():
        fitted[key] = {name: choice.fitted.solve(stats) for name, choice in fitted_connections()}
    return fitted


# --------------------------------------------------------------------------- persistence


def fitted_state(kb) -> dict[str, torch.Tensor]:
    """Every fitted tensor under a flat key `resolution/j/prev_arch/next_arch/connection/name` (a plain tensor file)."""
    names = kb.arch_names
    return {
        f"{resolution}/{j}/{names[p]}/{names[q]}/{connection}/{name}": tensor.detach().cpu()
        for resolution, boundaries in kb.fitted.items()
        for (j, p, q), fits in boundaries.items()
        for connection, tensors in fits.items()
        for name, tensor in tensors.items()
    }


def fitted_from_state(kb, state: dict[str, torch.Tensor]) -> dict:
    """The inverse of `fitted_state` for this knowledge base's architecture names."""
    index = {name: i for i, name in enumerate(kb.arch_names)}
    fitted: dict = {}
    for key, tensor in state.items():
        parts = key.split("/")
        if (
            len(parts) != 6
            or parts[2] not in index
            or parts[3] not in index
            or parts[4] not in dict(fitted_connections())
        ):
            raise KnowledgeBaseError(
                f"fitted connection key {key!r} does not match this knowledge base ({kb.arch_names})"
            )
        resolution, j, prev, nxt, connection, name = parts
        boundary = (int(j), index[prev], index[nxt])
        _check_fitted(key, tensor, kb, boundary, connection, name)
        fitted.setdefault(resolution, {}).setdefault(boundary, {}).setdefault(connection, {})[name] = tensor
    return fitted


def _check_fitted(key: str, tensor, kb, boundary: tuple[int, int, int], connection: str, name: str) -> None:
    """A fitted tensor of the shape its boundary needs, with finite values (or one line)."""
    j, prev, nxt = boundary
    if not 0 < j < kb.num_cells:
        raise KnowledgeBaseError(f"fitted connection key {key!r}: position {j} is not a boundary of c = {kb.num_cells}")
    c_in, c_out = kb.specs[j - 1][prev].out_channels, kb.specs[j][nxt].in_channels
    shapes = CONNECTIONS.get(connection).fitted.shapes(c_in, c_out)
    if not torch.is_tensor(tensor) or name not in shapes or tuple(tensor.shape) != shapes[name]:
        shape = tuple(tensor.shape) if torch.is_tensor(tensor) else type(tensor).__name__
        raise KnowledgeBaseError(f"fitted connection {key!r} has shape {shape}; this boundary needs {shapes.get(name)}")
    if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
        raise KnowledgeBaseError(f"fitted connection {key!r} holds values that are not finite")


# --------------------------------------------------------------------------- the registered connections


def fitted_connections() -> list[tuple[str, Connection]]:
    """Every registered connection fitted from data, by name."""
    return [(name, choice) for name, choice in CONNECTIONS.items() if choice.fitted is not None]


def random_stitch(fit: dict) -> dict[str, torch.Tensor]:
    """A least-squares stitch's tensors as a freshly initialised 1x1 convolution would hold them."""
    out_channels, in_channels = fit["weight"].shape
    conv = nn.Conv2d(in_channels, out_channels, kernel_size=1)
    return {"weight": conv.weight.detach().view(out_channels, in_channels).clone(), "bias": conv.bias.detach().clone()}


_HERE = "modulenet.stitching.fitted"
CONNECTIONS.register(
    "aligned",
    Connection(
        "aligned",
        f"{_HERE}.AlignedConnection",
        None,
        fitted=Fitted(
            solve=solve_aligned,
            shapes=lambda c_in, c_out: {"perm": (c_out,), "scale": (c_out,), "shift": (c_out,)},
            link=lambda fit, c_in, c_out: AlignedConnection(c_in, c_out, fit["perm"], fit["scale"], fit["shift"]),
            scratch=None,  # a permutation fitted to inherited features has no random counterpart
        ),
    ),
)
CONNECTIONS.register(
    "least_squares",
    Connection(
        "least_squares",
        f"{_HERE}.LeastSquaresConnection",
        None,
        fitted=Fitted(
            solve=solve_least_squares,
            shapes=lambda c_in, c_out: {"weight": (c_out, c_in), "bias": (c_out,)},
            link=lambda fit, c_in, c_out: LeastSquaresConnection(fit["weight"], fit["bias"]),
            scratch=random_stitch,
        ),
    ),
)
