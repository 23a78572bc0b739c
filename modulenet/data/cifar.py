"""CIFAR-10 / CIFAR-100: torchvision downloads and checks the files; a numpy-only unpickler reads them."""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from torchvision import datasets
from torchvision.datasets.utils import check_integrity, download_and_extract_archive

from modulenet.data.base import ArrayImages, ImageDataModule, check_val_from, one_line
from modulenet.errors import DataError


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
            f"CIFAR batch file {path} is not a readable python batch ({one_line(err)}): "
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
        self.val_from = check_val_from(val_from, val_size)
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
                f"could not download {self._title} to {self.root} ({one_line(err)}): check the "
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
        return self.assign_validation(pool, test, self.val_from, self.val_size)


class CIFAR100DataModule(CIFAR10DataModule):
    """CIFAR-100 (Table I), the fine labels; same split and reading as CIFAR-10."""

    num_classes = 100
    _torchvision = datasets.CIFAR100
    _title = "CIFAR-100"
