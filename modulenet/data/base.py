"""Shared by every dataset: ImageNet normalisation, Cutout, array-backed datasets and the ImageDataModule base class."""

from __future__ import annotations

import numpy as np
import pytorch_lightning as pl
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from modulenet.errors import DataError, first_line

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Cutout(nn.Module):
    """Cutout (DeVries & Taylor 2017): zero a `length` x `length` square at a random centre.

    The centre is uniform over the image, so the square is clipped at the border (the paper's
    fine-tuning uses length 16, Tables I-III). Applied after normalisation, so zero is the mean
    colour. Uses the global torch RNG unless a generator is given: DataLoader workers are seeded
    apart by torch/Lightning, whereas one generator would be copied identically into each worker.
    """

    def __init__(self, length: int, generator: torch.Generator | None = None):
        super().__init__()
        if isinstance(length, bool) or not isinstance(length, int) or length <= 0:
            raise DataError(f"cutout length={length!r} must be a positive integer (16 in the paper)")
        self.length = length
        self.generator = generator

    def forward(self, img: Tensor) -> Tensor:
        h, w = img.shape[-2:]
        cy = int(torch.randint(h, (1,), generator=self.generator))
        cx = int(torch.randint(w, (1,), generator=self.generator))
        return self.erase(img, cy, cx)

    def erase(self, img: Tensor, cy: int, cx: int) -> Tensor:
        """A copy of `img` (C, H, W) with the square centred at (cy, cx) zeroed."""
        h, w = img.shape[-2:]
        y0, x0 = cy - self.length // 2, cx - self.length // 2
        out = img.clone()
        out[..., max(y0, 0) : min(y0 + self.length, h), max(x0, 0) : min(x0 + self.length, w)] = 0
        return out

    def extra_repr(self) -> str:
        return f"length={self.length}"


def _uint8_to_float(x: Tensor) -> Tensor:
    # A named function, not a lambda, so transforms pickle into DataLoader worker processes.
    return x.float().div_(255)


def normalize_uint8(images: Tensor, chunk: int = 4096) -> Tensor:
    """uint8 (N, C, H, W) -> float ImageNet-normalised, the same arithmetic as the per-item path."""
    mean = torch.tensor(IMAGENET_MEAN).view(1, -1, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, -1, 1, 1)
    out = torch.empty(images.shape, dtype=torch.float32)
    for start in range(0, len(images), chunk):  # chunks bound the temporary memory on 50K images
        out[start : start + chunk] = _uint8_to_float(images[start : start + chunk]).sub_(mean).div_(std)
    return out


class ArrayImages(Dataset):
    """In-memory uint8 images (N, C, H, W) and labels; items are (uint8 CxHxW tensor, int)."""

    def __init__(self, images: Tensor, labels: Tensor):
        self.images = images
        self.labels = labels

    @classmethod
    def from_nhwc(cls, x: np.ndarray, y: np.ndarray) -> ArrayImages:
        images = torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2).contiguous()
        return cls(images, torch.as_tensor(np.asarray(y), dtype=torch.long))

    def subset(self, indices: Tensor) -> ArrayImages:
        return ArrayImages(self.images[indices], self.labels[indices])

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.images[i], int(self.labels[i])


class TransformedDataset(Dataset):
    """(transform(image), label) over a dataset of raw (image, label) pairs."""

    def __init__(self, base: Dataset, transform):
        self.base = base
        self.transform = transform

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int):
        image, label = self.base[i]
        return self.transform(image), int(label)


class ImageDataModule(pl.LightningDataModule):
    """Base of every dataset: transforms, fixed-seed search split, loaders, search tensors.

    Subclasses implement `_load_splits()` -> (train, val, test) datasets of raw (image, label)
    pairs (uint8 CxHxW tensors or PIL images) and set `num_classes`, `image_size`,
    `class_names`. `augment=True` adds random crop (padding image_size/8, i.e. 4 at 32 px) and
    horizontal flip; `cutout=L > 0` adds Cutout of side L after normalisation. Both touch the
    training split of the loaders only, never `search_tensors()`.
    """

    num_classes: int
    image_size: int
    class_names: list[str]

    def __init__(
        self,
        batch_size: int = 128,
        num_workers: int = 0,
        seed: int = 0,
        cutout: int = 0,
        augment: bool = False,
        pin_memory: bool = False,
    ):
        super().__init__()
        self.batch_size = check_int("batch_size", batch_size, 1)
        self.num_workers = check_int("num_workers", num_workers, 0)
        self.seed = check_int("seed", seed, 0)
        self.cutout = check_int("cutout", cutout, 0)
        self.augment = bool(augment)
        self.pin_memory = bool(pin_memory)
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None
        # each test image's position in the dataset's own test images (x_test of an npz), once set up by
        # assign_validation: what a saved prediction file records, so paired tests name the images
        self.test_index: Tensor | None = None
        self._train_plain: Dataset | None = None  # the training split with the eval transform
        self._search: tuple[Tensor, Tensor, Tensor, Tensor] | None = None

    # ---- subclass hooks -----------------------------------------------------------------
    def _load_splits(self) -> tuple[Dataset, Dataset, Dataset]:
        raise NotImplementedError

    def augmentation(self) -> list:
        """Per-image augmentation on the raw image (before normalisation, so padding is black)."""
        return [
            transforms.RandomCrop(self.image_size, padding=max(1, self.image_size // 8)),
            transforms.RandomHorizontalFlip(),
        ]

    def eval_geometry(self) -> list:
        """Deterministic resizing for evaluation; in-memory arrays are already at image_size."""
        return []

    def _to_float(self):
        return _uint8_to_float

    # ---- transforms ----------------------------------------------------------------------
    def train_transform(self):
        steps = self.augmentation() if self.augment else self.eval_geometry()
        steps = steps + [self._to_float(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
        if self.cutout > 0:
            steps.append(Cutout(self.cutout))
        return transforms.Compose(steps)

    def eval_transform(self):
        return transforms.Compose(
            self.eval_geometry() + [self._to_float(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
        )

    # ---- splits --------------------------------------------------------------------------
    def split_indices(self, n: int, val_size: int | float, what: str = "val_size") -> tuple[Tensor, Tensor]:
        """(train, val) indices of a pool of n: the search split of Tables I-II, fixed by `seed`."""
        k = resolve_val_size(val_size, n, what)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed))
        return perm[k:].sort().values, perm[:k].sort().values

    def assign_validation(
        self, pool: ArrayImages, test: ArrayImages, val_from: str, val_size: int | float
    ) -> tuple[Dataset, Dataset, Dataset]:
        """(train, val, test) by `val_from` (see `check_val_from`)."""
        self.test_index = torch.arange(len(test))
        if val_from == "test":
            return pool, test, test
        if val_from == "test_split":
            test_idx, val_idx = self.split_indices(len(test), val_size)
            self.test_index = test_idx
            return pool, test.subset(val_idx), test.subset(test_idx)
        train_idx, val_idx = self.split_indices(len(pool), val_size)
        return pool.subset(train_idx), pool.subset(val_idx), test

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:  # Lightning calls setup per stage; the data is the same
            return
        train, val, test = self._load_splits()
        evaluation = self.eval_transform()
        self.train_set = TransformedDataset(train, self.train_transform())
        self._train_plain = TransformedDataset(train, evaluation)
        self.val_set = TransformedDataset(val, evaluation)
        self.test_set = TransformedDataset(test, evaluation)

    # ---- loaders -------------------------------------------------------------------------
    def _loader(self, dataset: Dataset, shuffle: bool) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self, shuffle: bool = True) -> DataLoader:
        self.setup()
        return self._loader(self.train_set, shuffle)

    def val_dataloader(self) -> DataLoader:
        self.setup()
        return self._loader(self.val_set, False)

    def test_dataloader(self) -> DataLoader:
        self.setup()
        return self._loader(self.test_set, False)

    def search_tensors(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(x_train, y_train, x_val, y_val): the whole search split, normalised, never augmented."""
        if self._search is None:
            self.setup("fit")
            self._search = (*self._stack(self._train_plain), *self._stack(self.val_set))
        return self._search

    def _stack(self, dataset: TransformedDataset) -> tuple[Tensor, Tensor]:
        base = dataset.base
        if isinstance(base, ArrayImages) and not self.eval_geometry():
            return normalize_uint8(base.images), base.labels.clone()  # vectorised: seconds -> milliseconds
        xs, ys = [], []
        for x, y in DataLoader(dataset, batch_size=256, shuffle=False, num_workers=self.num_workers):
            xs.append(x)
            ys.append(y)
        return torch.cat(xs), torch.cat(ys).long()


def check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise DataError(f"dataset.{name}={value!r} must be an integer >= {minimum}")
    return value


VAL_FROM = {
    "train": "draw val_size from the training images, the paper's Tables I-II",
    "test": "validate on the test split, which also tests: the paper's Table III",
    "test_split": "draw val_size from the test images, test on the rest: for networks that saw every training image",
}


def check_val_from(val_from: str, val_size) -> str:
    """Where validation images come from: `VAL_FROM`. `test_split` is ours: the shared CIFAR
    checkpoints saw every training image, so only held-out test images can validate fairly and
    still leave a test set that chose nothing."""
    if val_from not in VAL_FROM:
        choices = "; ".join(f"{k!r} ({v})" for k, v in VAL_FROM.items())
        raise DataError(f"dataset.val_from={val_from!r} must be one of {choices}")
    if val_from != "test":
        resolve_val_size(val_size)  # type and sign now; the count against the data in setup
    return val_from


def resolve_val_size(val_size, n: int | None = None, what: str = "val_size") -> int | None:
    """An absolute count 1..n-1 or a fraction in (0, 1) of the pool of n images; with n=None only
    the type and sign are checked (constructors fail early, before any data is read)."""
    if isinstance(val_size, bool) or not isinstance(val_size, (int, float)):
        raise DataError(f"dataset.{what}={val_size!r} must be an integer count or a fraction in (0, 1)")
    fraction = isinstance(val_size, float) and not val_size.is_integer()
    if fraction and not 0 < val_size < 1:
        raise DataError(f"dataset.{what}={val_size!r} must be a fraction in (0, 1) or an integer count")
    if not fraction and val_size < 1:
        raise DataError(f"dataset.{what}={val_size!r} must be a positive count or a fraction in (0, 1)")
    if n is None:
        return None
    k = round(val_size * n) if fraction else int(val_size)
    if not 1 <= k <= n - 1:
        raise DataError(
            f"dataset.{what}={val_size!r} leaves no training or no validation images: "
            f"the pool it is drawn from has {n}, so use 1..{n - 1} or a fraction in (0, 1)"
        )
    return k


def one_line(err: BaseException) -> str:
    """An exception as `Type: first line` (a file that cannot be read, in a DataError)."""
    text = first_line(err)
    return text if text == type(err).__name__ else f"{type(err).__name__}: {text}"
