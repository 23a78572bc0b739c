"""The fine-tuned network as a deliverable (ours: the paper keeps no trained network).

A saved network is a folder of data: `weights.pt`, a plain state dict of the trunk (modules and
connections) and the classifier, read back with `weights_only=True`; `network.json`, what rebuilds
it (the knowledge base's structure, not its weights; the genotype, connection and resolution rule;
the classifier; image size and normalisation) and what it measured when it was fine-tuned; a fitted
connection's `connections.pt` where there is one. `load_network` imports no code a file names
unless `trust_code=True` (a cut-point model, your own connection). The selected network is also
exported as a `torch.export` program (`network.pt2`) that runs without modulenet.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import torch
from torch import nn

import modulenet
from modulenet import rundir
from modulenet.errors import ModuleNetError, first_line
from modulenet.evaluation.lit_module import Classifier, pool_features
from modulenet.knowledge.base import KnowledgeBase, atomic_torch_save
from modulenet.rundir import atomic_path, write_atomic
from modulenet.runtime.precision import CHANNELS_LAST, is_bf16
from modulenet.stitching.choices import CONNECTIONS, get_connection

FORMAT = "modulenet-network/1"


class Network(nn.Module):
    """A genotype's trunk, pooled, then its classifier (Sec. III-E, IV): normalised images to logits.
    The same parameter names as the fine-tuning model, so its state dict loads as it is."""

    def __init__(self, trunk: nn.Module, classifier: nn.Module, pool: str):
        super().__init__()
        self.trunk = trunk
        self.classifier = classifier
        self.pool = pool
        self.description: dict = {}
        self.test_predictions: torch.Tensor | None = None  # (label, predicted) per test image, once measured
        self.test_index: torch.Tensor | None = None  # their positions in the dataset's test images, where known
        # the fitted connections it was assembled with (fitted_state), where its connection is fitted:
        # a reload assembles the same trunk before the weights go in
        self.fitted: dict[str, torch.Tensor] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(pool_features(self.trunk(x), self.pool))


def describe_network(
    kb: KnowledgeBase, genotype, settings, image_size: int, num_classes: int, in_features: int
) -> dict:
    """What rebuilds the network `genotype` fine-tuned with `settings` (FinetuneSettings); the
    caller adds the precision it trained in and what it measured (val_error, test_error, ...)."""
    from modulenet.data.base import IMAGENET_MEAN, IMAGENET_STD

    code = kb.parse_genotype(genotype)
    return {
        "format": FORMAT,
        "modulenet_version": modulenet.__version__,
        "genotype": list(code),
        "architecture": "+".join(kb.describe(code)),
        "arch_names": kb.arch_names,
        "knowledge_base": kb.metadata(),
        "knowledge_base_sha256": kb.weight_hashes(),
        "connection": settings.connection,
        "resolution": settings.resolution,
        "classifier": {"in_features": in_features, "hidden": list(settings.hidden), "pool": settings.pool},
        "num_classes": num_classes,
        "image_size": image_size,
        "normalisation": {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)},
        "seed": settings.seed,
        "epochs": settings.epochs,
        "init": settings.init,
    }


def save_network(directory: str | os.PathLike, network: Network, description: dict) -> Path:
    """Write `network` to `directory`; its description last, so a partial save never loads."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in network.state_dict().items()}
    atomic_torch_save(state, directory / rundir.NETWORK_WEIGHTS)
    if network.test_predictions is not None:
        save_predictions(directory / rundir.NETWORK_PREDICTIONS, network.test_predictions, network.test_index)
    if network.fitted is not None:
        atomic_torch_save(network.fitted, directory / rundir.NETWORK_CONNECTIONS)
    write_atomic(directory / rundir.NETWORK_DESCRIPTION, json.dumps(description, indent=2))
    return directory


def read_description(directory: str | os.PathLike) -> dict:
    """A saved network's `network.json`, with one-line errors for what is not one."""
    path = Path(directory) / rundir.NETWORK_DESCRIPTION
    if not path.is_file():
        raise ModuleNetError(f"{directory} is not a saved network: it has no {rundir.NETWORK_DESCRIPTION}")
    try:
        description = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise ModuleNetError(f"{path} is not valid JSON ({err}): truncated or corrupt") from None
    if not isinstance(description, dict) or description.get("format") != FORMAT:
        found = description.get("format") if isinstance(description, dict) else None
        raise ModuleNetError(f"{path} has format {found!r}; this modulenet reads {FORMAT}")
    return description


def load_network(directory: str | os.PathLike, trust_code: bool = False) -> Network:
    """The network saved in `directory`, in eval mode, on the CPU: normalised images
    (`network.description["normalisation"]`) to logits. Architectures come from the zoo; a
    cut-point model or your own connection is code, imported only with `trust_code=True`."""
    directory = Path(directory)
    d = read_description(directory)
    try:
        connection = d["connection"]
        if connection not in CONNECTIONS and not trust_code:
            raise ModuleNetError(
                f"{directory} names the connection {connection!r}, code to import: a saved network is data, "
                "so it is loaded only with trust_code=True, if you trust where it came from"
            )
        kb = KnowledgeBase.from_metadata(directory, d["knowledge_base"], trust_code, "a saved network", weights=False)
        if get_connection(connection).fitted:
            kb.load_fitted(directory / rundir.NETWORK_CONNECTIONS, int(d["knowledge_base"].get("fitted_images", 0)))
        trunk = kb.assemble(d["genotype"], connection=connection, trainable=True, resolution=d["resolution"])
        head = d["classifier"]
        network = Network(trunk, Classifier(head["in_features"], d["num_classes"], head["hidden"]), head["pool"])
    except (KeyError, TypeError) as err:
        raise ModuleNetError(
            f"{directory / rundir.NETWORK_DESCRIPTION} lacks or mistypes {err}: it was edited"
        ) from None
    try:
        state = torch.load(directory / rundir.NETWORK_WEIGHTS, map_location="cpu", weights_only=True)
        network.load_state_dict(state, strict=True)
    except FileNotFoundError:
        raise ModuleNetError(f"{directory} lacks {rundir.NETWORK_WEIGHTS}") from None
    except Exception as err:
        raise ModuleNetError(
            f"{directory / rundir.NETWORK_WEIGHTS} does not hold this network's weights ({first_line(err)})"
        ) from None
    network.description = d
    if d.get("memory_format") == CHANNELS_LAST:  # measured after fine-tuning in this layout
        network.to(memory_format=torch.channels_last)
    return network.eval()


@torch.no_grad()
def measure_network(
    network: nn.Module,
    loader,
    precision: str = "32-true",
    device: str | torch.device = "cpu",
    predictions: bool = False,
) -> dict:
    """Top-1 and top-5 error of `network` over `loader` (top-5 None with 5 classes or fewer), in
    `precision` as it was measured after fine-tuning (bf16 autocast for bf16-mixed). With
    `predictions`, also each image's label and predicted class in the loader's order (`predictions`:
    a (images, 2) int64 tensor), what paired tests between two networks need."""
    device = torch.device(device)
    network = network.to(device).eval()
    correct = correct5 = total = 0
    pairs = []
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=is_bf16(precision)):
            logits = network(x)
        predicted = logits.argmax(1)
        correct += int((predicted == y).sum())
        if logits.shape[1] > 5:
            correct5 += int((logits.topk(5, dim=1).indices == y[:, None]).any(dim=1).sum())
        total += len(y)
        if predictions:
            pairs.append(torch.stack([y, predicted], dim=1).cpu().long())
    measured = {"error": math.nan, "error_top5": None, "images": total}
    if total:
        top5 = 1.0 - correct5 / total if logits.shape[1] > 5 else None
        measured.update(error=1.0 - correct / total, error_top5=top5)
    if predictions:
        measured["predictions"] = torch.cat(pairs) if pairs else torch.zeros(0, 2, dtype=torch.long)
    return measured


def save_predictions(path: str | os.PathLike, predictions: torch.Tensor, x_test_index=None) -> Path:
    """Each test image's index (its position in the tested split), label and predicted class as a
    compressed `.npz` (plain arrays); with `x_test_index`, also each image's position in the dataset's
    own test images (ImageDataModule.test_index: a test split that validates on part of them)."""
    import numpy as np

    path = Path(path)
    pairs = predictions.numpy().astype(np.int16)
    arrays = {"index": np.arange(len(pairs), dtype=np.int32), "label": pairs[:, 0], "predicted": pairs[:, 1]}
    if x_test_index is not None:
        arrays["x_test_index"] = np.asarray(x_test_index, dtype=np.int32)
        if len(arrays["x_test_index"]) != len(pairs):
            raise ModuleNetError(f"{len(pairs)} test predictions but {len(arrays['x_test_index'])} test indices")
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez_compressed(handle, **arrays)
    return path


def read_predictions(path: str | os.PathLike) -> dict:
    """A `save_predictions` file as {"index", "label", "predicted"} arrays, and "x_test_index" where it
    was saved (no pickled objects)."""
    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as data:
            found = {key: data[key] for key in ("index", "label", "predicted")}
            if "x_test_index" in data.files:
                found["x_test_index"] = data["x_test_index"]
            return found
    except (OSError, KeyError, ValueError) as err:
        raise ModuleNetError(f"{path} is not a predictions file ({first_line(err)})") from None


def export_network(network: Network, path: str | os.PathLike) -> Path:
    """`network` as a `torch.export` program (any batch size) that `torch.export.load` runs in a
    process that never imports modulenet."""
    path = Path(path)
    size = network.description["image_size"]
    example = torch.zeros(2, 3, size, size)
    batch = torch.export.Dim("batch", min=1)
    program = torch.export.export(network.cpu().eval(), (example,), dynamic_shapes=({0: batch},))
    with atomic_path(path) as tmp:
        torch.export.save(program, str(tmp))
    return path
