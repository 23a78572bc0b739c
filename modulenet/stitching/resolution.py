"""The resolution rule between modules (Sec. III-B): "keep the resolution of input unchanged by
adjusting the reduction in the preceding block".

Two modes (`connection.resolution`):

* `reduce` (the paper's rule, the default). Where the preceding module reduces more than the next
  module's native input, its last reduction is removed: a pooling layer is dropped, a strided
  convolution (with the strided convolution or subsampling of its shortcut) runs at stride 1, as
  many times as the difference needs. Where it reduces less, a parameter-free average pooling at
  its end reduces more (`connections.SpatialAdapter`). A feature map is never upsampled. The
  weights are unchanged and the knowledge base's modules are never mutated: the trunk gets its own
  view of the module, sharing its tensors.
* `resample` (this project's earlier adapter, kept to measure the difference): the preceding
  module is left alone and a `SpatialAdapter` average-pools or nearest-upsamples its output.

How "the last reduction" is found (ours, family-agnostic): one probe image at the module's native
input size goes through it with hooks on every leaf layer; the leaves whose output is smaller than
their input and whose output has the module's final size make up the last reduction (in a ResNet
stage: the first block's strided convolution and its shortcut's). Pooling leaves are dropped,
convolutions get stride 1, and a leaf of ours that reduces otherwise offers `without_reduction()`
(the CIFAR ResNets' option-A shortcut). The result is probed again and must reduce exactly as
much less as asked; where it cannot (a DARTS reduction cell, whose factorized-reduce shortcut has
no stride-1 form; a cut-point model that pools functionally), that boundary falls back to
`resample` with a warning. Per family: torchvision ResNet (stem: max-pool, then conv1's stride;
layer2-4: the first block's stride), torchvision VGG and `vgg_cifar` (the cell's closing max-pool),
CIFAR ResNets and `allconv_cifar` (the stage's strided first convolution and its shortcut),
DARTS (resample; a DARTS-only base never needs either, its reductions all sit at cells 5, 10, 15).
"""

from __future__ import annotations

import copy
import logging
import math

import torch
from torch import nn

log = logging.getLogger(__name__)

RESOLUTIONS = ("reduce", "resample")
_POOLS = (nn.MaxPool2d, nn.AvgPool2d, nn.LPPool2d)


def remove_reductions(module: nn.Module, in_shape: tuple[int, int, int], factor: float) -> nn.Module | None:
    """A view of `module` (native input `in_shape` = C, H, W) whose output is `factor` times larger,
    sharing every tensor with `module`; None where its own reductions cannot be removed so."""
    removed, view, shape = 1.0, module, tuple(in_shape)
    while removed < factor - 1e-9:
        step = _last_reduction(view, shape)
        if step is None:
            return None
        replacements, ratio = step
        if removed * ratio > factor + 1e-9:
            return None
        try:
            view = _with_replaced(view, replacements)
        except (TypeError, AttributeError):
            return None
        removed *= ratio
    out = _probe(view, shape)
    expected = _probe(module, shape)
    if out is None or expected is None:
        return None
    if any(not math.isclose(o, e * factor) for o, e in zip(out, expected)):
        return None
    return view


def _probe(module: nn.Module, shape: tuple[int, int, int]) -> tuple[int, int] | None:
    """The output size of one zero image of `shape` (C, H, W), or None where the module fails on it."""
    tensor = next(module.parameters(), None)
    if tensor is None:
        tensor = next(module.buffers(), None)
    device = tensor.device if tensor is not None else torch.device("cpu")
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            y = module(torch.zeros(1, *shape, device=device))
    except (RuntimeError, ValueError, TypeError):
        return None
    finally:
        module.train(was_training)
    return tuple(y.shape[-2:]) if y.dim() == 4 else None


def _last_reduction(module: nn.Module, shape: tuple[int, int, int]) -> tuple[dict[str, nn.Module], float] | None:
    """The leaves that make the module's last reduction step, each with its replacement, and the step's factor."""
    seen: list[tuple[str, nn.Module, tuple, tuple]] = []
    hooks = []
    for name, leaf in module.named_modules():
        if name and not list(leaf.children()):
            hooks.append(
                leaf.register_forward_hook(
                    lambda m, args, out, name=name: (
                        seen.append((name, m, tuple(args[0].shape[-2:]), tuple(out.shape[-2:])))
                        if args
                        and isinstance(args[0], torch.Tensor)
                        and isinstance(out, torch.Tensor)
                        and args[0].dim() == 4
                        and out.dim() == 4
                        else None
                    )
                )
            )
    try:
        out = _probe(module, shape)
    finally:
        for hook in hooks:
            hook.remove()
    if out is None:
        return None
    step = [(name, m, i, o) for name, m, i, o in seen if o == out and (o[0] < i[0] or o[1] < i[1])]
    if not step:
        return None
    ratios = {round(i[0] / o[0], 6) for _, _, i, o in step}
    if len(ratios) != 1:
        return None
    replacements = {}
    for name, leaf, _, _ in step:
        new = _without_reduction(leaf)
        if new is None:
            return None
        replacements[name] = new
    return replacements, float(step[0][2][0]) / step[0][3][0]


def _without_reduction(leaf: nn.Module) -> nn.Module | None:
    if isinstance(leaf, _POOLS):
        return nn.Identity()
    if isinstance(leaf, nn.Conv2d) and max(leaf.stride) > 1:
        view = copy.copy(leaf)  # shares the weight tensors; only the stride differs
        view.stride = (1, 1)
        return view
    if hasattr(leaf, "without_reduction"):
        return leaf.without_reduction()
    return None


def _with_replaced(module: nn.Module, replacements: dict[str, nn.Module]) -> nn.Module:
    """A shallow copy of `module` with the submodules at the dotted paths replaced; every other
    submodule (and every tensor) is shared, and `module` itself is unchanged."""
    if "" in replacements:
        return replacements[""]
    clone = copy.copy(module)
    clone._modules = dict(module._modules)
    children: dict[str, dict[str, nn.Module]] = {}
    for path, new in replacements.items():
        head, _, rest = path.partition(".")
        children.setdefault(head, {})[rest] = new
    for head, sub in children.items():
        clone._modules[head] = _with_replaced(module._modules[head], sub)
    return clone
