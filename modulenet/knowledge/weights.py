"""Reading trained weights safely: every file goes through `torch.load(weights_only=True)`.

A weights spec per architecture is one of: `None` / `"random"` (random init), a torchvision
weights name such as `"DEFAULT"` (the standard download into the torch hub cache), or a path
to a checkpoint file holding a plain state_dict or one wrapped as `{"state_dict": ...}` (also
`model_state_dict`, `model`, or `weight` as the ModuleNet authors' DARTS code saves it), keys
optionally prefixed by `module.` (DataParallel).
"""

from __future__ import annotations

import os
import pickle
import re
import warnings
from pathlib import Path

import torch
from torch import nn

from modulenet.errors import WeightsError

RANDOM = "random"
_RANDOM_SPELLINGS = {None, "random", "none", "scratch"}
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "weight")
_PREFIXES = ("module.", "_orig_mod.")
_AUX_HEAD = "auxiliary_head."  # DARTS training's auxiliary classifier, not part of the eval network


def is_random(spec) -> bool:
    return spec in _RANDOM_SPELLINGS or (isinstance(spec, str) and spec.lower() in _RANDOM_SPELLINGS)


def is_checkpoint_path(spec) -> bool:
    """A spec names a file when it is a Path or a string that looks like one."""
    if isinstance(spec, os.PathLike):
        return True
    return isinstance(spec, str) and (os.sep in spec or spec.endswith((".pt", ".pth", ".th", ".ckpt", ".bin")))


def load_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state_dict from `path` with `weights_only=True`, unwrapped and without `module.` prefixes.

    A file that the safe loader refuses (a pickled module or custom class, a raw `pickle.dump`)
    is a `WeightsError` that says how to save a safe checkpoint; torch's own text, which advises
    loading such files unsafely, is never passed on.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    try:
        with warnings.catch_warnings():  # "Detected pickle protocol 4 ...": noise before the refusal below
            warnings.filterwarnings("ignore", message=r".*pickle protocol", category=UserWarning)
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a damaged file
        unsafe = _unsafe_pickle(err, _file_head(path))
        if unsafe:
            raise WeightsError(f"refused to load {path}: {unsafe}") from None
        if isinstance(err, OSError):  # permissions, I/O: the file may be fine
            raise WeightsError(f"cannot read weights file {path} ({_reason(err)})") from None
        raise WeightsError(
            f"cannot read weights file {path}: corrupt or not a torch checkpoint ({_reason(err)})"
        ) from None
    return _as_state_dict(obj, path)


def strip_prefixes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        while key.startswith(_PREFIXES):
            key = key.split(".", 1)[1]
        out[key] = value
    return out


def torchvision_weights(arch_name: str, weights: str = "DEFAULT", progress: bool = True) -> dict[str, torch.Tensor]:
    """Torchvision's pretrained weights for `arch_name`, downloaded once into the torch hub cache
    ($TORCH_HOME/hub/checkpoints) and read with weights_only=True; a cached file is used as is."""
    return download_state_dict(torchvision_weights_url(arch_name, weights), progress=progress)


def torchvision_weights_url(arch_name: str, weights: str = "DEFAULT") -> str:
    """The download address of torchvision's weights `weights` (e.g. IMAGENET1K_V1, the paper's
    torchvision v0.3.0 weights; DEFAULT, the newest) for `arch_name`."""
    from torchvision.models import get_model_weights

    try:
        enum = get_model_weights(arch_name)
    except ValueError:
        raise WeightsError(f"torchvision has no pretrained weights for {arch_name!r}") from None
    try:
        entry = enum[weights] if weights != "DEFAULT" else enum.DEFAULT
    except KeyError:
        valid = ["DEFAULT"] + [w.name for w in enum]
        raise WeightsError(f"unknown weights {weights!r} for {arch_name}; valid names are {valid}") from None
    return entry.url


def download_state_dict(url: str, progress: bool = True) -> dict[str, torch.Tensor]:
    """A state_dict from `url` through the torch hub cache; the hash in the file name is checked on download."""
    try:
        obj = torch.hub.load_state_dict_from_url(
            url, map_location="cpu", progress=progress, check_hash=True, weights_only=True
        )
    except pickle.UnpicklingError as err:
        unsafe = _unsafe_pickle(err) or f"not a plain tensor file ({_reason(err)})"
        raise WeightsError(f"refused to load {url}: {unsafe}") from None
    except (OSError, RuntimeError) as err:  # URLError is an OSError
        cache = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)
        raise WeightsError(
            f"cannot fetch pretrained weights {url} ({_reason(err)}); offline, place the file at {cache}"
        ) from None
    return _as_state_dict(obj, url)


def load_trunk_weights(
    model: nn.Module, cells: list[nn.Module], state: dict[str, torch.Tensor], arch: str, source: str
) -> None:
    """Copy the tensors that the cells use from `state` (keys of the full `model`) into `model`.

    Every trunk tensor must be in `state` with the model's shape; a missing one or another shape
    is an error naming it. BatchNorm's `num_batches_tracked` may be absent (older checkpoints)
    and then starts at 0. Every other key of `state` must belong to a classifier or head, which
    is ignored: a key of the full model (a classifier of any size, say a 100-class `fc`), a key
    under a top-level child of the model that holds no trunk tensor (another structure's head),
    or a DARTS `auxiliary_head.*`. Anything else (a deeper network's extra blocks) is an error:
    the checkpoint is not of `arch`.
    """
    state = strip_prefixes(state)
    trunk_ids = {id(t) for cell in cells for t in cell.state_dict(keep_vars=True).values()}
    full = model.state_dict(keep_vars=True)
    own = {k: t for k, t in full.items() if id(t) in trunk_ids}
    with torch.no_grad():
        for key, target in own.items():
            if key not in state:
                if key.endswith("num_batches_tracked"):
                    target.zero_()
                    continue
                raise WeightsError(f"{source} has no trunk tensor {key!r} for {arch}: is it a checkpoint of {arch}?")
            value = state[key]
            if tuple(value.shape) != tuple(target.shape):
                raise WeightsError(
                    f"{source}: trunk tensor {key!r} has shape {tuple(value.shape)}, {arch} needs {tuple(target.shape)}"
                )
            target.copy_(value)
    heads = tuple(
        f"{name}."
        for name, child in model.named_children()
        if not any(id(t) in trunk_ids for t in child.state_dict(keep_vars=True).values())
    )
    unexpected = [
        key for key in state if key not in full and not key.startswith(heads) and not key.startswith(_AUX_HEAD)
    ]
    if unexpected:
        shown = ", ".join(unexpected[:5]) + (", ..." if len(unexpected) > 5 else "")
        raise WeightsError(
            f"{source} has {len(unexpected)} trunk tensor{'s' if len(unexpected) != 1 else ''} {arch} does not have "
            f"({shown}): is it a checkpoint of {arch}?"
        )


def _as_state_dict(obj, source) -> dict[str, torch.Tensor]:
    if isinstance(obj, dict):
        for key in _WRAPPER_KEYS:
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj:
        raise WeightsError(f"{source} holds no state_dict (expected a dict of tensors or {{'state_dict': ...}})")
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise WeightsError(f"{source} holds no tensors (expected a state_dict or {{'state_dict': ...}})")
    return strip_prefixes(tensors)


# torch's refusal text tells the user to re-run torch.load with weights_only=False (arbitrary code
# execution) or to allowlist globals; none of its lines that say so may reach a message.
_TORCH_ADVICE = (
    "weights_only",
    "weights only",
    "torch.load",
    "safe_globals",
    "file an issue",
    "documentation",
    "trust",
)
_GLOBAL = re.compile(r"GLOBAL\s+([\w.]+)")


def _reason(err: BaseException) -> str:
    """The first line of `err` that is a reason, not torch's advice on loading unsafely."""
    for line in str(err).splitlines():
        line = line.strip().removeprefix("WeightsUnpickler error:").strip()
        if line and not any(word in line.lower() for word in _TORCH_ADVICE):
            return line
    return type(err).__name__


def _file_head(path: Path) -> bytes:
    try:
        with path.open("rb") as f:
            return f.read(2)
    except OSError:
        return b""


def _unsafe_pickle(err: BaseException, head: bytes | None = None) -> str | None:
    """Why a file that the safe loader refused is not a safe checkpoint, or None when it is just damaged."""
    text = str(err)
    if not isinstance(err, pickle.UnpicklingError) or "weights only load failed" not in text.lower():
        return None
    how = "save one with torch.save(model.state_dict(), path)"
    found = _GLOBAL.search(text)
    if found:
        return (
            f"it is not a safe checkpoint (not a plain tensor file: it pickles {found.group(1)}, "
            f"which needs code to load); {how}"
        )
    if head is not None and len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5:  # pickle.dump's header
        return (
            f"it is not a safe checkpoint (not a plain tensor file: a raw Python pickle from pickle.dump, "
            f"which needs code to load); {how}"
        )
    if head is None:
        return f"it is not a safe checkpoint (not a plain tensor file: {_reason(err)}); {how}"
    return None
