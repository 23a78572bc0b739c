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

from modulenet.data.base import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ArrayImages,
    Cutout,
    ImageDataModule,
    TransformedDataset,
    normalize_uint8,
)
from modulenet.data.cifar import CIFAR10DataModule, CIFAR100DataModule, read_cifar_batches, read_cifar_meta
from modulenet.data.folder import ImageFolderDataModule
from modulenet.data.generated import QUICKSTART_CLASSES, QuickstartDataModule, make_quickstart_images
from modulenet.data.npz import NpzDataModule

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
