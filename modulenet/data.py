"""Lightning DataModules for the search and fine-tuning stages (paper Sec. IV, Tables I-II).

Every module yields images normalised with the ImageNet mean/std, because the pretrained
knowledge-base modules were trained on inputs normalised that way. Each one offers

- `train_set` / `val_set` / `test_set`: the fine-tuning view (augmentation and Cutout on the
  training split only, when asked for);
- `search_tensors()`: the search split as whole un-augmented tensors. The search computes
  frozen-trunk features once per individual, so it needs exactly these fixed inputs.

The search split follows Tables I-II: a validation subset is drawn from the training set with
a fixed seed (40K / 10K on CIFAR); the test set is kept for the final evaluation only.

CIFAR reading: torchvision owns the download and the md5 list it checks the files against;
the python batch files are read by `read_cifar_batches` below (a restricted unpickler that
only admits numpy arrays), which is what `setup()` runs for every user.
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision import datasets, transforms
from torchvision.datasets.utils import check_integrity, download_and_extract_archive

from modulenet.errors import DataError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "QUICKSTART_CLASSES",
    "ArrayImages",
    "CIFAR10DataModule",
    "CIFAR100DataModule",
    "Cutout",
    "ImageDataModule",
    "ImageFolderDataModule",
    "NpzDataModule",
    "QuickstartDataModule",
    "TransformedDataset",
    "make_quickstart_images",
    "normalize_uint8",
    "read_cifar_batches",
    "read_cifar_meta",
]


# --------------------------------------------------------------------------------------------
# Transforms
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Datasets
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# The common DataModule
# --------------------------------------------------------------------------------------------


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
        self.batch_size = _check_int("batch_size", batch_size, 1)
        self.num_workers = _check_int("num_workers", num_workers, 0)
        self.seed = _check_int("seed", seed, 0)
        self.cutout = _check_int("cutout", cutout, 0)
        self.augment = bool(augment)
        self.pin_memory = bool(pin_memory)
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None
        self._train_plain: Dataset | None = None  # the training split with the eval transform
        self._search: tuple[Tensor, Tensor, Tensor, Tensor] | None = None

    # ---- subclass hooks -----------------------------------------------------------------
    def _load_splits(self) -> tuple[Dataset, Dataset, Dataset]:
        raise NotImplementedError

    def _augmentation(self) -> list:
        """Per-image augmentation on the raw image (before normalisation, so padding is black)."""
        return [
            transforms.RandomCrop(self.image_size, padding=max(1, self.image_size // 8)),
            transforms.RandomHorizontalFlip(),
        ]

    def _eval_geometry(self) -> list:
        """Deterministic resizing for evaluation; in-memory arrays are already at image_size."""
        return []

    def _to_float(self):
        return _uint8_to_float

    # ---- transforms ----------------------------------------------------------------------
    def train_transform(self):
        steps = self._augmentation() if self.augment else self._eval_geometry()
        steps = steps + [self._to_float(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
        if self.cutout > 0:
            steps.append(Cutout(self.cutout))
        return transforms.Compose(steps)

    def eval_transform(self):
        return transforms.Compose(
            self._eval_geometry() + [self._to_float(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
        )

    # ---- splits --------------------------------------------------------------------------
    def split_indices(self, n: int, val_size: int | float, what: str = "val_size") -> tuple[Tensor, Tensor]:
        """(train, val) indices of a pool of n: the search split of Tables I-II, fixed by `seed`."""
        k = _resolve_val_size(val_size, n, what)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed))
        return perm[k:].sort().values, perm[:k].sort().values

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
        if isinstance(base, ArrayImages) and not self._eval_geometry():
            return normalize_uint8(base.images), base.labels.clone()  # vectorised: seconds -> milliseconds
        xs, ys = [], []
        for x, y in DataLoader(dataset, batch_size=256, shuffle=False, num_workers=self.num_workers):
            xs.append(x)
            ys.append(y)
        return torch.cat(xs), torch.cat(ys).long()


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise DataError(f"dataset.{name}={value!r} must be an integer >= {minimum}")
    return value


def _resolve_val_size(val_size, n: int | None = None, what: str = "val_size") -> int | None:
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
            f"the training pool has {n}, so use 1..{n - 1} or a fraction in (0, 1)"
        )
    return k


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


# --------------------------------------------------------------------------------------------
# CIFAR-10 / CIFAR-100
# --------------------------------------------------------------------------------------------


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Admits only what a CIFAR batch holds (dicts, lists, numpy arrays): a pickle from a user's
    data folder must not be able to run code."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # how Python 3 writes bytes in protocol 2 (numpy's raw data)
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def _read_pickled_dict(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            # latin1: the original batches are Python 2 pickles (numpy needs latin1 for them)
            entry = _NumpyOnlyUnpickler(f, encoding="latin1").load()
    except FileNotFoundError:
        raise DataError(
            f"CIFAR batch file {path} not found: the folder needs the files of the original python archive"
        ) from None
    except Exception as err:
        raise DataError(
            f"CIFAR batch file {path} is not a readable python batch ({_one_line(err)}): "
            f"delete it and download the dataset again"
        ) from None
    if not isinstance(entry, dict):
        raise DataError(f"CIFAR batch file {path} holds a {type(entry).__name__}, not the dict of a python batch")
    # Python 2 str keys decode to str, Python 3 bytes keys stay bytes: accept both.
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in entry.items()}


def read_cifar_batches(folder: str | Path, names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Read CIFAR python batches (dicts with 'data' uint8 (N, 3072) in CHW order and 'labels' or
    'fine_labels') from `folder`; returns x uint8 (N, 32, 32, 3) and y int64 (N,)."""
    xs, ys = [], []
    for name in names:
        path = Path(folder) / name
        entry = _read_pickled_dict(path)
        label_key = "labels" if "labels" in entry else "fine_labels"
        if "data" not in entry or label_key not in entry:
            raise DataError(
                f"CIFAR batch file {path} lacks 'data' or 'labels'/'fine_labels' (has {sorted(map(str, entry))})"
            )
        data = np.asarray(entry["data"])
        labels = np.asarray(entry[label_key], dtype=np.int64)
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(labels):
            raise DataError(
                f"CIFAR batch file {path} has data {data.dtype}{list(data.shape)} and {len(labels)} "
                f"labels: expected uint8 (N, 3072) with N labels"
            )
        xs.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        ys.append(labels)
    return np.ascontiguousarray(np.concatenate(xs)), np.concatenate(ys)


def read_cifar_meta(folder: str | Path, name: str, key: str) -> list[str]:
    """Class names from a CIFAR meta file (`batches.meta` / 'label_names', `meta` / 'fine_label_names')."""
    path = Path(folder) / name
    entry = _read_pickled_dict(path)
    if key not in entry:
        raise DataError(f"CIFAR meta file {path} lacks '{key}' (has {sorted(map(str, entry))})")
    return [n.decode("latin1") if isinstance(n, bytes) else str(n) for n in entry[key]]


class CIFAR10DataModule(ImageDataModule):
    """CIFAR-10 (Table II): 40K/10K search split of the 50K training images, test set for the end.

    `prepare_data()` downloads with torchvision when `download=True` and the files are not
    already intact. `setup()` checks the files against torchvision's md5 list
    (`verify_integrity=True`, the default) and reads them with `read_cifar_batches`.
    `verify_integrity=False` skips only the md5 comparison, for a copy re-packed by hand.
    Other arguments: see `ImageDataModule`.
    """

    num_classes = 10
    image_size = 32
    _torchvision = datasets.CIFAR10  # source of the url, the archive md5 and each file's md5
    _title = "CIFAR-10"

    def __init__(
        self,
        root: str = "data/",
        download: bool = True,
        val_size: int | float = 10000,
        verify_integrity: bool = True,
        val_from: str = "train",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.root = str(root)
        self.download = bool(download)
        if val_from not in ("train", "test"):
            raise DataError(
                f"dataset.val_from={val_from!r} must be 'train' (a val_size split of the training "
                f"set, Tables I-II) or 'test' (all 50K for training, the test split validates: Table III)"
            )
        self.val_from = val_from
        if val_from == "train":
            _resolve_val_size(val_size)
        self.val_size = val_size
        self.verify_integrity = bool(verify_integrity)

    @property
    def folder(self) -> Path:
        return Path(self.root) / self._torchvision.base_folder

    def _files(self) -> list[tuple[str, str]]:
        tv = self._torchvision
        return [*map(tuple, tv.train_list), *map(tuple, tv.test_list), (tv.meta["filename"], tv.meta["md5"])]

    def _intact(self) -> bool:
        return all(check_integrity(str(self.folder / name), md5) for name, md5 in self._files())

    def prepare_data(self) -> None:
        if not self.download or self._intact():
            return
        tv = self._torchvision
        try:
            download_and_extract_archive(tv.url, self.root, filename=tv.filename, md5=tv.tgz_md5)
        except Exception as err:  # no network, proxy, disk full, bad archive: all end here
            raise DataError(
                f"could not download {self._title} to {self.root} ({_one_line(err)}): check the "
                f"network, or copy {tv.base_folder} under {self.root} from a machine with internet "
                f"and set dataset.download=false"
            ) from None

    def _load_splits(self):
        tv = self._torchvision
        missing = [name for name, _ in self._files() if not (self.folder / name).is_file()]
        if missing:
            if self.download:
                how = "call prepare_data() first to download it (download=true)"
            else:
                how = "run once with dataset.download=true on a machine with internet"
            where = (
                f"{self.root} (download={str(self.download).lower()})"
                if len(missing) == len(self._files())
                else f"{self.root}: {self.folder} lacks {', '.join(missing)}"
            )
            raise DataError(f"{self._title} not found under {where}: {how}, or copy {tv.base_folder} there")
        if self.verify_integrity:
            bad = [name for name, md5 in self._files() if not check_integrity(str(self.folder / name), md5)]
            if bad:
                raise DataError(
                    f"{self._title} files in {self.folder} fail torchvision's md5 check "
                    f"({', '.join(bad)}): delete {self.folder} and run with dataset.download=true"
                )
        x, y = read_cifar_batches(self.folder, [name for name, _ in tv.train_list])
        x_test, y_test = read_cifar_batches(self.folder, [name for name, _ in tv.test_list])
        self.class_names = read_cifar_meta(self.folder, tv.meta["filename"], tv.meta["key"])
        pool = ArrayImages.from_nhwc(x, y)
        test = ArrayImages.from_nhwc(x_test, y_test)
        if self.val_from == "test":  # DARTS' training scheme (Table III)
            return pool, test, test
        train_idx, val_idx = self.split_indices(len(pool), self.val_size)
        return pool.subset(train_idx), pool.subset(val_idx), test


class CIFAR100DataModule(CIFAR10DataModule):
    """CIFAR-100 (Table I), the fine labels; same split and reading as CIFAR-10."""

    num_classes = 100
    _torchvision = datasets.CIFAR100
    _title = "CIFAR-100"


# --------------------------------------------------------------------------------------------
# ImageNet-style folders
# --------------------------------------------------------------------------------------------


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
        self.image_size = _check_int("image_size", image_size, 1)
        _resolve_val_size(val_size)
        self.val_size = val_size

    def _augmentation(self) -> list:
        return [transforms.RandomResizedCrop(self.image_size), transforms.RandomHorizontalFlip()]

    def _eval_geometry(self) -> list:
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
                    f"cannot use {root / sub} as an image folder ({_one_line(err)}): it needs one "
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


# --------------------------------------------------------------------------------------------
# Arrays in an .npz file
# --------------------------------------------------------------------------------------------


class NpzDataModule(ImageDataModule):
    """Arrays `x_train, y_train, x_test, y_test` (uint8 NHWC, RGB; optional `classes`).

    `val_from="train"` draws `val_size` (count or fraction) from the training set with the fixed
    seed, as in Tables I-II. `val_from="test"` validates on x_test, which is also the test set:
    for checkpoints that saw x_train (the shared CIFAR-10 ResNets) no training image is a fair
    validation image. The number of classes comes from `classes`, else from `num_classes`, else
    from y_train when its labels cover 0..max; labels must lie in [0, num_classes). Other
    arguments: `ImageDataModule`.
    """

    REQUIRED = ("x_train", "y_train", "x_test", "y_test")

    def __init__(
        self, path: str, val_size: int | float = 1000, val_from: str = "train", num_classes: int | None = None, **kwargs
    ):
        super().__init__(**kwargs)
        if num_classes is not None:
            _check_int("num_classes", num_classes, 1)
        self._given_num_classes = num_classes
        if val_from not in ("train", "test"):
            raise DataError(
                f"dataset.val_from={val_from!r} must be 'train' (draw val_size from x_train) "
                f"or 'test' (validate on x_test)"
            )
        if val_from == "train":
            _resolve_val_size(val_size)  # type and sign now; the count against the data in setup
        self.path = str(path)
        self.val_size = val_size
        self.val_from = val_from

    def _load_splits(self):
        path = Path(self.path)
        if not path.is_file():
            raise DataError(
                f"npz dataset {path} not found: set dataset.path to a .npz file with {', '.join(self.REQUIRED)}"
            )
        try:
            with np.load(path, allow_pickle=False) as data:  # no pickle: arrays only, never code
                missing = [k for k in self.REQUIRED if k not in data.files]
                if missing:
                    raise DataError(
                        f"npz dataset {path} lacks {', '.join(missing)} (has {', '.join(data.files)}): "
                        f"it needs {', '.join(self.REQUIRED)} (uint8 NHWC images, integer labels)"
                    )
                arrays = {k: data[k] for k in (*self.REQUIRED, "classes") if k in data.files}
        except DataError:
            raise
        except Exception as err:
            raise DataError(
                f"cannot read npz dataset {path} ({_one_line(err)}): save it with numpy.savez "
                f"(string class names, no object arrays)"
            ) from None
        for split in ("train", "test"):
            x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
            if x.dtype != np.uint8 or x.ndim != 4 or x.shape[3] != 3 or x.shape[1] != x.shape[2]:
                raise DataError(
                    f"npz dataset {path}: x_{split} is {x.dtype}{list(x.shape)}, expected uint8 "
                    f"(N, H, W, 3) square RGB images"
                )
            if y.ndim != 1 or len(y) != len(x) or not np.issubdtype(y.dtype, np.integer) or (y < 0).any():
                raise DataError(
                    f"npz dataset {path}: y_{split} is {y.dtype}{list(y.shape)}, expected {len(x)} "
                    f"non-negative integer labels"
                )
        if arrays["x_train"].shape[1:] != arrays["x_test"].shape[1:]:
            raise DataError(
                f"npz dataset {path}: x_train images are {list(arrays['x_train'].shape[1:])} but "
                f"x_test images {list(arrays['x_test'].shape[1:])}; they must match"
            )
        self.class_names = self._class_names(path, arrays)
        self.num_classes = len(self.class_names)
        self.image_size = int(arrays["x_train"].shape[1])
        train = ArrayImages.from_nhwc(arrays["x_train"], arrays["y_train"])
        test = ArrayImages.from_nhwc(arrays["x_test"], arrays["y_test"])
        if self.val_from == "test":
            return train, test, test
        train_idx, val_idx = self.split_indices(len(train), self.val_size)
        return train.subset(train_idx), train.subset(val_idx), test

    def _class_names(self, path: Path, arrays: dict[str, np.ndarray]) -> list[str]:
        """Class names, from `classes`, else `num_classes`, else the labels of y_train when they
        cover 0..max; every label of both splits must lie in [0, num_classes)."""
        given = self._given_num_classes
        if "classes" in arrays:
            names = [str(c) for c in arrays["classes"].reshape(-1)]
            if given is not None and given != len(names):
                raise DataError(
                    f"npz dataset {path}: dataset.num_classes={given} but its classes array has "
                    f"{len(names)} names; drop dataset.num_classes or make them agree"
                )
            origin = f"the classes array has {len(names)} names"
        elif given is not None:
            names, origin = [str(i) for i in range(given)], "given as dataset.num_classes"
        else:
            y = arrays["y_train"]
            largest = int(y.max(initial=-1))
            absent = np.setdiff1d(np.arange(largest + 1), y)
            if largest < 0 or len(absent):
                shown = ", ".join(str(int(a)) for a in absent[:5]) + (", ..." if len(absent) > 5 else "")
                what = (
                    f"labels {shown} ({len(absent)} of 0..{largest}) are absent from y_train"
                    if largest >= 0
                    else "y_train has no labels"
                )
                raise DataError(
                    f"npz dataset {path}: cannot infer the number of classes: {what}; give "
                    f"dataset.num_classes= or save a classes array in the npz"
                )
            names, origin = [str(i) for i in range(largest + 1)], "inferred from y_train"
        for split in ("y_train", "y_test"):
            y = arrays[split]
            if len(y) and int(y.max()) >= len(names):
                raise DataError(
                    f"npz dataset {path}: {split} has label {int(y.max())}, but num_classes is "
                    f"{len(names)} ({origin}): labels must lie in [0, {len(names) - 1}]"
                )
        return names


# --------------------------------------------------------------------------------------------
# The embedded quickstart dataset
# --------------------------------------------------------------------------------------------

QUICKSTART_CLASSES = [
    "disc",
    "ring",
    "square",
    "frame",
    "triangle",
    "cross",
    "horizontal_stripes",
    "vertical_stripes",
    "checkerboard",
    "diagonal_stripes",
]


def _soft(d: np.ndarray, px: np.ndarray) -> np.ndarray:
    """Coverage of a pixel by a shape with signed distance d (>0 inside), anti-aliased over a pixel."""
    return np.clip(d / px + 0.5, 0.0, 1.0)


def _stripes(t: np.ndarray) -> np.ndarray:
    """Square-ish wave in [0, 1] of a phase t (in periods), soft enough not to alias at 3 px."""
    return np.clip(np.sin(2 * np.pi * t) * 2.0 + 0.5, 0.0, 1.0)


def make_quickstart_images(
    n: int, image_size: int = 32, seed: int | Sequence[int] = 0
) -> tuple[np.ndarray, np.ndarray]:
    """`n` generated RGB images (uint8 NHWC) of the 10 `QUICKSTART_CLASSES`, balanced, deterministic.

    Each image is one pattern at a random position and scale, in a random colour on a random
    background with a gentle colour gradient and pixel noise: the class is in the shape, never
    in a fixed pixel or colour, so a CNN learns it while a linear model on pixels does not.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 10:
        raise DataError(f"quickstart image count {n!r} must be an integer >= 10 (one per class at least)")
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 16:
        raise DataError(f"dataset.image_size={image_size!r} must be an integer >= 16 for the quickstart patterns")
    rng = np.random.default_rng(seed)
    s, f32 = image_size, np.float32
    labels = rng.permutation(np.arange(n) % len(QUICKSTART_CLASSES))

    # Geometry in "shape units": (u, v) = pixel offset from the centre over the half-size r.
    r = rng.uniform(0.2, 0.36, n).astype(f32) * s
    cx = rng.uniform(r, s - r).astype(f32)
    cy = rng.uniform(r, s - r).astype(f32)
    coords = np.arange(s, dtype=f32) + 0.5
    u = (coords[None, None, :] - cx[:, None, None]) / r[:, None, None]
    v = (coords[None, :, None] - cy[:, None, None]) / r[:, None, None]
    px = (1.0 / r)[:, None, None]  # one pixel in shape units, for anti-aliasing
    period = (rng.uniform(3.5, 6.0, n).astype(f32) / r)[:, None, None]  # texture period, shape units
    phase = rng.uniform(0, 1, n).astype(f32)[:, None, None]
    flip = rng.choice(np.array([-1, 1], dtype=f32), n)[:, None, None]  # triangle up/down, diagonal / or \

    alpha = np.empty((n, s, s), dtype=f32)
    for k in range(len(QUICKSTART_CLASSES)):
        i = np.flatnonzero(labels == k)
        if len(i) == 0:
            continue
        uu, vv, p = np.broadcast_to(u[i], (len(i), s, s)), np.broadcast_to(v[i], (len(i), s, s)), px[i]
        radius = np.sqrt(uu**2 + vv**2) if k in (0, 1) else None
        box = np.maximum(abs(uu), abs(vv)) if k in (2, 3) or k >= 6 else None
        window = _soft(1 - box, p) if k >= 6 else None  # textures fill a square patch like the shapes
        if k == 0:  # disc
            a = _soft(1 - radius, p)
        elif k == 1:  # ring
            a = _soft(0.2 - abs(radius - 0.8), p)
        elif k == 2:  # square
            a = _soft(0.85 - box, p)
        elif k == 3:  # frame (outlined square)
            a = _soft(0.2 - abs(box - 0.65), p)
        elif k == 4:  # triangle pointing up or down
            w = vv * flip[i]
            a = _soft(np.minimum(0.8 - w, ((w + 1) - 1.8 * abs(uu)) / np.hypot(1.8, 1.0)), p)
        elif k == 5:  # cross
            a = _soft(np.maximum(np.minimum(0.3 - abs(uu), 1 - abs(vv)), np.minimum(0.3 - abs(vv), 1 - abs(uu))), p)
        elif k == 6:  # horizontal stripes
            a = window * _stripes(vv / period[i] + phase[i])
        elif k == 7:  # vertical stripes
            a = window * _stripes(uu / period[i] + phase[i])
        elif k == 8:  # checkerboard
            a = window * np.clip(
                np.sin(np.pi * uu / period[i] * 2) * np.sin(np.pi * vv / period[i] * 2) * 4 + 0.5, 0, 1
            )
        else:  # diagonal stripes
            a = window * _stripes((uu + flip[i] * vv) / (np.sqrt(2) * period[i]) + phase[i])
        alpha[i] = a

    # Colours: random foreground and background, the foreground pushed about 0.25 lighter or darker
    # on average so that every pattern is visible; a random gradient across the background.
    bg = rng.uniform(0, 1, (n, 3)).astype(f32)
    fg = rng.uniform(0, 1, (n, 3)).astype(f32)
    gap = fg.mean(1) - bg.mean(1)
    direction = np.where(bg.mean(1) > 0.5, -1.0, 1.0).astype(f32)
    fg = np.clip(fg + np.where(abs(gap) < 0.25, direction * 0.25 - gap, 0)[:, None], 0, 1)
    angle = rng.uniform(0, 2 * np.pi, n).astype(f32)
    ramp = (
        np.cos(angle)[:, None, None] * (coords[None, None, :] / s - 0.5)
        + np.sin(angle)[:, None, None] * (coords[None, :, None] / s - 0.5)
    )[..., None]
    tilt = rng.uniform(-0.3, 0.3, (n, 1, 1, 3)).astype(f32)
    # In-place arithmetic on the (n, s, s, 3) array: this part dominates the generation time.
    image = bg[:, None, None, :] + tilt * ramp
    image += (fg[:, None, None, :] - image) * alpha[..., None]
    image *= 255
    image += rng.integers(-20, 21, image.shape, dtype=np.int8)  # pixel noise, sd about 0.05; ints are cheap
    np.clip(image, 0, 255, out=image)
    image += 0.5
    return image.astype(np.uint8), labels.astype(np.int64)


class QuickstartDataModule(ImageDataModule):
    """The embedded dataset of `modulenet-search`'s default run: no download, no GPU.

    Ten classes of generated patterns (`make_quickstart_images`), with separate, balanced
    train / validation / test sets derived from `seed`, so that a whole search (Algorithm 1 at
    a small scale) finishes in minutes on 2 CPU cores. Other arguments: `ImageDataModule`.
    """

    num_classes = len(QUICKSTART_CLASSES)

    def __init__(
        self,
        num_train: int = 4000,
        num_val: int = 1000,
        num_test: int = 1000,
        image_size: int = 32,
        seed: int = 0,
        **kwargs,
    ):
        super().__init__(seed=seed, **kwargs)
        self.num_train = _check_int("num_train", num_train, 10)
        self.num_val = _check_int("num_val", num_val, 10)
        self.num_test = _check_int("num_test", num_test, 10)
        self.image_size = _check_int("image_size", image_size, 16)
        self.class_names = list(QUICKSTART_CLASSES)

    def _load_splits(self):
        # One independent stream per split: changing num_val leaves the training images alone.
        splits = []
        for stream, count in enumerate((self.num_train, self.num_val, self.num_test)):
            x, y = make_quickstart_images(count, self.image_size, seed=[self.seed, stream])
            splits.append(ArrayImages.from_nhwc(x, y))
        return tuple(splits)
