"""Batches augmented on the device have the per-image path's augmentation: the same operations
(checked against torchvision's and our Cutout one image at a time), the same distribution of
offsets, flips and centres, and the same batches for the same seed (issue 23)."""

from __future__ import annotations

import pytest
import torch
import torchvision.transforms.functional as TF
from torchvision import transforms

from modulenet.data.base import IMAGENET_MEAN, IMAGENET_STD, ArrayImages, Cutout, _uint8_to_float
from modulenet.data.device import DeviceBatches, crop_and_flip, cutout, normalize


def images(n: int = 64, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def test_crop_flip_normalise_and_cutout_are_the_per_image_operations():
    x = images(6)
    offsets = torch.tensor([[0, 0], [8, 8], [3, 5], [8, 0], [0, 8], [4, 4]])
    flips = torch.tensor([True, False, True, False, True, False])
    centres = torch.tensor([[0, 0], [31, 31], [16, 5], [2, 30], [15, 15], [31, 0]])
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    batch = cutout(normalize(crop_and_flip(padded, offsets, flips, (32, 32))), centres, 16)
    per_image = transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)
    for i in range(6):
        expected = TF.crop(TF.pad(x[i], 4, fill=0), int(offsets[i, 0]), int(offsets[i, 1]), 32, 32)
        if flips[i]:
            expected = TF.hflip(expected)
        expected = Cutout(16).erase(per_image(_uint8_to_float(expected)), int(centres[i, 0]), int(centres[i, 1]))
        assert torch.equal(batch[i], expected), i


def test_without_augmentation_the_batches_are_the_evaluation_transform_exactly():
    x, y = images(10), torch.arange(10)
    batches = DeviceBatches(ArrayImages(x, y), batch_size=4, shuffle=False, augment=False)
    got = torch.cat([b for b, _ in batches])
    per_image = transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)
    assert torch.equal(got, torch.stack([per_image(_uint8_to_float(img)) for img in x]))
    assert [len(labels) for _, labels in batches] == [4, 4, 2] and len(batches) == 3


def test_the_same_seed_gives_the_same_batches_and_a_restored_state_continues_them():
    x, y = images(40), torch.arange(40)
    a = DeviceBatches(ArrayImages(x, y), batch_size=16, augment=True, cutout=8, seed=3)
    b = DeviceBatches(ArrayImages(x, y), batch_size=16, augment=True, cutout=8, seed=3)
    first = [(im.clone(), lab.clone()) for im, lab in a]
    assert all(torch.equal(p[0], q[0]) and torch.equal(p[1], q[1]) for p, q in zip(first, b))
    state = a.generator_state()  # after epoch 1: a resumed fine-tune restores this
    second = [im for im, _ in a]
    c = DeviceBatches(ArrayImages(x, y), batch_size=16, augment=True, cutout=8, seed=99)
    c.set_generator_state(state)
    assert all(torch.equal(p, q) for p, q in zip(second, (im for im, _ in c)))
    assert not torch.equal(first[0][0], second[0])  # another epoch, other draws
    other = DeviceBatches(ArrayImages(x, y), batch_size=16, augment=True, cutout=8, seed=4)
    assert not torch.equal(first[0][0], next(iter(other))[0])


def test_offsets_flips_and_centres_have_the_per_image_distribution():
    """Over 4000 draws: crop offsets uniform over the 9 values of [0, 8] (padding 4 at 32 px), a flip
    rate of 1/2, Cutout centres uniform over the image (chi-square against uniform, generous bound)."""
    batches = DeviceBatches(ArrayImages(images(1), torch.zeros(1)), batch_size=1, augment=True, cutout=16, seed=0)
    draws = {"offsets": [], "flips": [], "centres": []}
    g = batches.generator
    for _ in range(4000):  # the draws `augmented` makes, in its order, from the same generator
        draws["offsets"].append(torch.randint(0, 2 * batches.padding + 1, (1, 2), generator=g))
        draws["flips"].append(torch.rand(1, generator=g) < 0.5)
        draws["centres"].append(
            torch.stack([torch.randint(32, (1,), generator=g), torch.randint(32, (1,), generator=g)], 1)
        )
    offsets = torch.cat(draws["offsets"]).flatten()
    assert set(offsets.tolist()) == set(range(9))

    def chi_square(values, k):
        counts = torch.bincount(values, minlength=k).float()
        expected = len(values) / k
        return float(((counts - expected) ** 2 / expected).sum())

    assert chi_square(offsets, 9) < 30  # 8 degrees of freedom: p < 1e-3 beyond 26.1
    assert chi_square(torch.cat(draws["centres"]).flatten(), 32) < 62  # 31 dof: p < 1e-3 beyond 61.1
    assert abs(torch.cat(draws["flips"]).float().mean().item() - 0.5) < 0.03


@pytest.mark.parametrize("size", [32, 64])
def test_the_padding_follows_the_image_size_as_the_per_image_path(size):
    assert DeviceBatches(ArrayImages(images(2, size), torch.zeros(2)), batch_size=2).padding == size // 8
