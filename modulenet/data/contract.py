"""What the search and the evaluation stage need of a dataset (the `dataset` group's contract,
ours): a `LightningDataModule` whose loaders give fine-tuning batches, plus the members below.
Checked when the dataset is built, with one line naming what a class lacks."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from torch import Tensor

from modulenet.errors import ModuleNetError


@runtime_checkable
class SearchDataModule(Protocol):
    """A dataset the method can use. After `setup("fit")`:

    - `num_classes`: the classifier's output size (Sec. IV);
    - `image_size`: the side (or (H, W)) of the images its splits yield;
    - `search_tensors()`: (x_train, y_train, x_val, y_val), the search split as whole
      un-augmented, normalised tensors (the frozen trunks' features are computed once from them);
    - `train_dataloader()`, `val_dataloader()`, `test_dataloader()`: the fine-tuning splits.

    `data.base.ImageDataModule` provides all of them; subclass it and override `_load_splits`
    (and `augmentation()` / `eval_geometry()` where your images need other transforms)."""

    num_classes: int
    image_size: int | tuple[int, int]

    def search_tensors(self) -> tuple[Tensor, Tensor, Tensor, Tensor]: ...

    def train_dataloader(self): ...

    def val_dataloader(self): ...

    def test_dataloader(self): ...


CONTRACT = ("num_classes", "image_size", "search_tensors", "train_dataloader", "val_dataloader", "test_dataloader")


def check_dataset(datamodule, target: str) -> None:
    """One line naming what the dataset built from `target` lacks of `SearchDataModule`."""
    missing = [name for name in CONTRACT if not hasattr(datamodule, name)]
    if missing:
        raise ModuleNetError(
            f"dataset._target_={target!r} lacks {', '.join(missing)}: a dataset must provide "
            f"{', '.join(CONTRACT)} (modulenet.data.contract.SearchDataModule; subclass ImageDataModule)"
        )
