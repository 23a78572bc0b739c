"""The quickstart's embedded dataset: ten classes of generated patterns, no download."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from modulenet.data.base import ArrayImages, ImageDataModule, check_int
from modulenet.errors import DataError

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

    alpha = _pattern_alphas(labels, u, v, px, period, phase, flip)
    image = _painted(rng, alpha, coords)
    return image.astype(np.uint8), labels.astype(np.int64)


def _pattern_alphas(labels, u, v, px, period, phase, flip) -> np.ndarray:
    """Each image's pattern as an opacity in [0, 1] (n, s, s), drawn in shape units (u, v)."""
    n, s = len(labels), u.shape[-1]
    alpha = np.empty((n, s, s), dtype=np.float32)
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

    return alpha


def _painted(rng: np.random.Generator, alpha: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """The patterns painted: a foreground colour over a background with a gradient, and pixel noise
    (float, 0-255 plus 0.5 for rounding)."""
    n, s, f32 = len(alpha), alpha.shape[-1], np.float32
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
    return image


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
        self.num_train = check_int("num_train", num_train, 10)
        self.num_val = check_int("num_val", num_val, 10)
        self.num_test = check_int("num_test", num_test, 10)
        self.image_size = check_int("image_size", image_size, 16)
        self.class_names = list(QUICKSTART_CLASSES)

    def _load_splits(self):
        # One independent stream per split: changing num_val leaves the training images alone.
        splits = []
        for stream, count in enumerate((self.num_train, self.num_val, self.num_test)):
            x, y = make_quickstart_images(count, self.image_size, seed=[self.seed, stream])
            splits.append(ArrayImages.from_nhwc(x, y))
        return tuple(splits)
