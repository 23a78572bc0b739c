"""Random generators owned by their part: the search's, and each evaluation's.

Library code never reseeds the process-wide generators another part depends on. The search
owns a `random.Random` (checkpointed with it); DEAP's operators draw from the module-level
`random`, so they run inside `drawing_from(rng)`, which lends the owned state to the module
generator and takes it back afterwards, leaving the process's own state as it was. Each
evaluation trains under `seeded(seed)`: torch, numpy and `random` seeded for that individual
and restored on exit, so an individual's result depends on its seed alone and training one
never moves anybody else's stream. (Our design; the paper says nothing about randomness.)
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator

import numpy as np


@contextlib.contextmanager
def drawing_from(rng: random.Random) -> Iterator[None]:
    """Module-level `random` draws come from `rng` inside the block; the outer state is restored."""
    outer = random.getstate()
    random.setstate(rng.getstate())
    try:
        yield
    finally:
        rng.setstate(random.getstate())
        random.setstate(outer)


def rng_state_to_json(rng: random.Random) -> list:
    version, internal, gauss = rng.getstate()
    return [version, list(internal), gauss]


def rng_from_json(state: list) -> random.Random:
    version, internal, gauss = state
    rng = random.Random()
    rng.setstate((int(version), tuple(int(i) for i in internal), gauss))
    return rng


@contextlib.contextmanager
def seeded(seed: int, device=None) -> Iterator[None]:
    """torch (CPU, and `device` if it is a GPU), numpy and `random` seeded with `seed` inside the
    block, as `pl.seed_everything` would, and every one of them restored on exit."""
    import torch

    device = torch.device(device if device is not None else "cpu")
    gpus = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    py_state, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=gpus):
        torch.default_generator.manual_seed(seed)
        for gpu in gpus:  # only this device: fork_rng restores only the devices it was given
            with torch.cuda.device(gpu):
                torch.cuda.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed % 2**32)
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)
