"""An array-backed training split as one uint8 tensor on the training device, batched and
augmented there with tensor operations (ours, for speed: a per-image transform on one CPU thread
cannot feed a GPU, as airbench and FFCV-style loaders show).

The augmentation is the per-image path's (base.py: `RandomCrop` with zero padding of
image_size / 8, `RandomHorizontalFlip`, normalisation, then `Cutout` clipped at the border), in
the same order and arithmetic; each image draws its own offsets, flip and Cutout centre from the
batches' own generator, so the distribution is the per-image path's while the draws differ. The
generator is checkpointed with a fine-tune (`generator_state`), so a resumed run draws what an
uninterrupted one would.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from modulenet.data.base import IMAGENET_MEAN, IMAGENET_STD, ArrayImages, ImageDataModule


def crop_and_flip(padded: Tensor, offsets: Tensor, flips: Tensor, size: tuple[int, int]) -> Tensor:
    """Crops of `size` = (H, W) from zero-padded images `padded` (N, C, H + 2p, W + 2p) at each
    image's top-left `offsets[i] = (y, x)` in [0, 2p] (torchvision's RandomCrop), mirrored left to
    right where `flips[i]` (RandomHorizontalFlip): one gather per batch."""
    n, c, hp, wp = padded.shape
    h, w = size
    rows = offsets[:, :1] + torch.arange(h, device=padded.device)  # (N, H)
    across = torch.arange(w, device=padded.device)
    cols = offsets[:, 1:] + torch.where(flips[:, None], w - 1 - across, across)  # (N, W)
    index = (rows[:, :, None] * wp + cols[:, None, :]).view(n, 1, h * w).expand(n, c, h * w)
    return padded.view(n, c, hp * wp).gather(2, index).view(n, c, h, w)


def normalize(images: Tensor) -> Tensor:
    """uint8 -> float, ImageNet-normalised: the per-image path's arithmetic (x / 255 - mean) / std."""
    mean = torch.tensor(IMAGENET_MEAN, device=images.device).view(1, -1, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=images.device).view(1, -1, 1, 1)
    return images.float().div_(255).sub_(mean).div_(std)


def cutout(images: Tensor, centres: Tensor, length: int) -> Tensor:
    """Each image with the `length` x `length` square centred at `centres[i] = (y, x)` zeroed,
    clipped at the border (base.Cutout.erase, per image)."""
    _, _, h, w = images.shape
    top, left = centres[:, :1] - length // 2, centres[:, 1:] - length // 2  # (N, 1)
    ys = torch.arange(h, device=images.device)[None, :]
    xs = torch.arange(w, device=images.device)[None, :]
    inside_y = (ys >= top) & (ys < top + length)  # (N, H)
    inside_x = (xs >= left) & (xs < left + length)  # (N, W)
    mask = inside_y[:, :, None] & inside_x[:, None, :]
    return images.masked_fill(mask[:, None], 0.0)


class DeviceBatches:
    """Batches of (images, labels) from `data`'s uint8 images (N, C, H, W), kept on `device`: shuffled
    and augmented per epoch when `shuffle` / `augment` (and `cutout` > 0), normalised always. The order
    and every draw come from this object's generator (seeded by `seed`), on the CPU, so the same
    seed gives the same batches on any device."""

    def __init__(
        self,
        data: ArrayImages,
        batch_size: int,
        device: torch.device | str = "cpu",
        shuffle: bool = True,
        augment: bool = True,
        cutout: int = 0,
        seed: int = 0,
    ):
        self.device = torch.device(device)
        self.images = data.images.to(self.device)
        self.labels = data.labels.long().to(self.device)
        self.batch_size, self.shuffle, self.augment, self.cutout = batch_size, shuffle, augment, cutout
        self.padding = max(1, self.images.shape[-1] // 8)  # the per-image path's RandomCrop padding
        self.size = tuple(self.images.shape[-2:])
        p = self.padding  # padded once, with zeros as RandomCrop pads: each batch is then one gather
        self.padded = F.pad(self.images, (p, p, p, p)) if augment else None
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return math.ceil(len(self.labels) / self.batch_size)

    def __iter__(self):
        n, g = len(self.labels), self.generator
        order = torch.randperm(n, generator=g) if self.shuffle else torch.arange(n)
        for start in range(0, n, self.batch_size):
            index = order[start : start + self.batch_size]
            yield self.augmented(index), self.labels[index.to(self.device)]

    def augmented(self, index: Tensor) -> Tensor:
        """The images at `index`, augmented and normalised as the per-image path does."""
        g, b = self.generator, len(index)
        (h, w), index = self.size, index.to(self.device)
        if self.augment:
            offsets = torch.randint(0, 2 * self.padding + 1, (b, 2), generator=g)
            flips = torch.rand(b, generator=g) < 0.5
            x = crop_and_flip(self.padded[index], offsets.to(self.device), flips.to(self.device), self.size)
        else:
            x = self.images[index]
        x = normalize(x)
        if self.cutout > 0:
            centres = torch.stack([torch.randint(h, (b,), generator=g), torch.randint(w, (b,), generator=g)], 1)
            x = cutout(x, centres.to(self.device), self.cutout)
        return x

    # Named apart from Lightning's Stateful protocol: the fine-tune's checkpoint callback saves and
    # restores this state at epoch ends, and nothing else should restore it at another time.
    def generator_state(self) -> dict:
        return {"generator": self.generator.get_state()}

    def set_generator_state(self, state: dict) -> None:
        self.generator.set_state(state["generator"])


def device_batches(datamodule, device: torch.device | str, seed: int) -> DeviceBatches | None:
    """The training split of `datamodule` on `device` (its batch size, augmentation and Cutout),
    where it is array-backed and augmented as the base class does (CIFAR, npz, the quickstart's);
    None where the per-image path must stay (ImageFolder's resizing, a subclass's own augmentation)."""
    datamodule.setup("fit")
    base = getattr(datamodule.train_set, "base", None)
    own_augmentation = type(datamodule).augmentation is not ImageDataModule.augmentation
    if not isinstance(base, ArrayImages) or datamodule.eval_geometry() or own_augmentation:
        return None
    return DeviceBatches(
        base,
        datamodule.batch_size,
        device,
        augment=datamodule.augment,
        cutout=datamodule.cutout,
        seed=seed,
    )
