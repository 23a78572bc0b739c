"""ImageNet-style folders (one folder per class), read by torchvision's ImageFolder."""

from __future__ import annotations

from pathlib import Path

from torch.utils.data import Subset
from torchvision import datasets, transforms

from modulenet.data.base import ImageDataModule, check_int, one_line, resolve_val_size
from modulenet.errors import DataError


class ImageFolderDataModule(ImageDataModule):
    """`root/train` and `root/val` class folders, e.g. ImageNet (Sec. IV-B3, Table IV).

    The search split is drawn from `train` (`val_size`, count or fraction); `val` is the test
    set. Training augmentation (`augment=True`) is RandomResizedCrop(image_size) + flip;
    evaluation is Resize(image_size * 256/224) + CenterCrop(image_size). `search_tensors()`
    holds the whole search split in memory, so on full ImageNet point `root` at a subset.
    Other arguments: `ImageDataModule`.
    """

    def __init__(self, root: str, image_size: int = 224, val_size: int | float = 50000, **kwargs):
        super().__init__(**kwargs)
        self.root = str(root)
        self.image_size = check_int("image_size", image_size, 1)
        resolve_val_size(val_size)
        self.val_size = val_size

    def augmentation(self) -> list:
        return [transforms.RandomResizedCrop(self.image_size), transforms.RandomHorizontalFlip()]

    def eval_geometry(self) -> list:
        return [transforms.Resize(round(self.image_size * 256 / 224)), transforms.CenterCrop(self.image_size)]

    def _to_float(self):
        return transforms.ToTensor()

    def _load_splits(self):
        root = Path(self.root)
        for sub in ("train", "val"):  # both checked before the (slow, on ImageNet) scan of either
            if not (root / sub).is_dir():
                raise DataError(
                    f"image folder dataset root {root} has no {sub}/ folder: expected "
                    f"{root}/train/<class>/<image> and {root}/val/<class>/<image>"
                )
        folders = {}
        for sub in ("train", "val"):
            try:
                folders[sub] = datasets.ImageFolder(str(root / sub))
            except (FileNotFoundError, OSError) as err:
                raise DataError(
                    f"cannot use {root / sub} as an image folder ({one_line(err)}): it needs one "
                    f"sub-folder of images per class"
                ) from None
        train, test = folders["train"], folders["val"]
        if train.classes != test.classes:
            only = sorted(set(train.classes) ^ set(test.classes))[:3]
            raise DataError(
                f"{root}/train has {len(train.classes)} classes and {root}/val {len(test.classes)}, "
                f"not the same names (e.g. {only}): both need the same class folders"
            )
        self.class_names = list(train.classes)
        self.num_classes = len(self.class_names)
        train_idx, val_idx = self.split_indices(len(train), self.val_size)
        return Subset(train, train_idx.tolist()), Subset(train, val_idx.tolist()), test
