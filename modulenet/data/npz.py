"""Images and labels from a .npz file (e.g. ../shared's real CIFAR-10 images)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from modulenet.data.base import ArrayImages, ImageDataModule, check_int, check_val_from, one_line
from modulenet.errors import DataError


class NpzDataModule(ImageDataModule):
    """Arrays `x_train, y_train, x_test, y_test` (uint8 NHWC, RGB; optional `classes`).

    `val_from` (`base.VAL_FROM`): "train" draws `val_size` (count or fraction) from x_train with
    the fixed seed, as in Tables I-II; "test" validates on x_test, which is also the test set;
    "test_split" draws `val_size` from x_test and tests on the rest: for checkpoints that saw
    x_train (the shared CIFAR-10 ResNets) no training image is a fair validation image. The
    number of classes comes from `classes`, else from `num_classes`, else from y_train when its
    labels cover 0..max; labels must lie in [0, num_classes). Other arguments: `ImageDataModule`.
    """

    REQUIRED = ("x_train", "y_train", "x_test", "y_test")

    def __init__(
        self, path: str, val_size: int | float = 1000, val_from: str = "train", num_classes: int | None = None, **kwargs
    ):
        super().__init__(**kwargs)
        if num_classes is not None:
            check_int("num_classes", num_classes, 1)
        self._given_num_classes = num_classes
        self.val_from = check_val_from(val_from, val_size)
        self.path = str(path)
        self.val_size = val_size

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
                f"cannot read npz dataset {path} ({one_line(err)}): save it with numpy.savez "
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
        return self.assign_validation(train, test, self.val_from, self.val_size)

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
