"""Which precision trains the classifiers (ours: the paper says nothing of precision).

`trainer.precision=auto` measures instead of guessing. A CPU flag says an instruction exists,
not that it is fast: on an Intel Xeon with AVX-512 BF16 but no AMX, bf16 matrix products ran at
half float32's speed; on an AMD EPYC with the same flag, at 2.2x (both measured, 2 cores). So
for the search's classifiers `auto` times their own training step (the stacked head's forward,
backward and fused Adam) in float32 and in bf16 on this device, once per machine (the result is
cached under `MODULENET_CACHE`, keyed by the device's model, torch's version and the thread
count), and takes bf16 only where it is at least `MARGIN` faster: a tie keeps exact float32.

A fine-tuned network is measured the same way (`NetworkStep`: its own SGD step on a copy, cached
per machine and network shape). Source training is not measured: `auto` is bf16-mixed on GPUs
with bf16 and float32 on CPUs there. An explicit precision (`32-true`, `bf16-mixed`, ...) is obeyed.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import platform
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Protocol

import torch
import torch.nn.functional as F

from modulenet.errors import ModuleNetError

log = logging.getLogger(__name__)

AUTO, FLOAT32, BF16 = "auto", "32-true", "bf16-mixed"
# "auto" and Lightning's precision names (lightning_fabric's _PRECISION_INPUT), spelled out for a one-line error.
PRECISIONS = (
    AUTO,
    "32-true",
    "32",
    "16-mixed",
    "16",
    "bf16-mixed",
    "bf16",
    "16-true",
    "bf16-true",
    "64-true",
    "64",
    "transformer-engine",
    "transformer-engine-float16",
)
MARGIN = 1.1  # bf16 must be this much faster than float32 to be chosen


def check_precision(precision) -> None:
    if str(precision) not in PRECISIONS:
        raise ModuleNetError(f"trainer.precision={precision!r}: valid values are {', '.join(PRECISIONS[:11])}")


def has_bf16_units(device: torch.device) -> bool:
    """Whether this device has bf16 matrix instructions at all: GPUs with bf16 support, CPUs with
    AVX-512 BF16 or AMX. Without them (AVX2) bf16 is emulated, about 100x slower than float32
    (measured). Having them does not make bf16 faster: `choose_precision` measures that."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    flags = _cpuinfo().split()
    return any(flag in flags for flag in ("avx512_bf16", "amx_bf16"))


def device_model(device: torch.device) -> str:
    """The device's model name: the GPU's, or the CPU's from /proc/cpuinfo."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    for line in _cpuinfo().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


@functools.cache
def _cpuinfo() -> str:
    """/proc/cpuinfo, read once per process ("" where there is none)."""
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


@dataclass(frozen=True)
class PrecisionChoice:
    precision: str
    reason: str
    seconds: dict[str, float] = field(default_factory=dict)  # measured seconds per step, by precision


def cache_path() -> Path:
    return Path(os.environ.get("MODULENET_CACHE", "~/.cache/modulenet")).expanduser() / "precision.json"


class TimedStep(Protocol):
    """A training step `auto` can time: `key` names its shape in the cache, `seconds(device)`
    returns seconds per step by precision ({FLOAT32: ..., BF16: ...})."""

    key: str

    def seconds(self, device: torch.device) -> dict[str, float]: ...


def time_steps(step, device: torch.device, rounds: int = 3, steps: int = 2) -> dict[str, float]:
    """Seconds per call of `step(bf16)` in float32 and in bf16-mixed: rounds alternate the two (so a
    slow spell of the machine hits both), the best round counts; one warm-up call each first."""

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    best = {FLOAT32: float("inf"), BF16: float("inf")}
    for precision in best:  # warm-up: first-call costs are not the step's
        step(precision == BF16)
    for _ in range(rounds):
        for precision in best:
            sync()
            start = time.perf_counter()
            for _ in range(steps):
                step(precision == BF16)
            sync()
            best[precision] = min(best[precision], (time.perf_counter() - start) / steps)
    return best


@dataclass(frozen=True)
class NetworkStep:
    """A whole network's training step (fine-tuning: every weight trainable, SGD), as `auto` times
    it: `model` copied (the original is untouched), a batch of random images of `image_size`,
    `classes` classes. `name` describes the network in the cache key (its architecture and head)."""

    model: torch.nn.Module
    name: str
    image_size: int
    batch_size: int
    classes: int

    @property
    def key(self) -> str:
        return f"network {self.name} {self.image_size}px x{self.batch_size}"

    def seconds(self, device: torch.device, seed: int = 0) -> dict[str, float]:
        import copy

        generator = torch.Generator().manual_seed(seed)
        x = torch.randn(self.batch_size, 3, self.image_size, self.image_size, generator=generator).to(device)
        y = torch.randint(self.classes, (self.batch_size,), generator=generator).to(device)
        model = copy.deepcopy(self.model).to(device).train()
        optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3, momentum=0.9)

        def step(bf16: bool) -> None:
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                logits = model(x)
            F.cross_entropy(logits.float(), y).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            return time_steps(step, device, rounds=2, steps=1)


def choose_precision(
    precision: str, device: torch.device, step: TimedStep | None = None, cache: Path | None = None
) -> PrecisionChoice:
    """The precision to train in, and why. `step`: what is timed (measured, cached): the search's
    classifiers (evaluation/stacked.py's HeadShape) or a fine-tuned network (NetworkStep); None:
    source training (not measured). An explicit precision is returned as given."""
    check_precision(precision)
    if precision != AUTO:
        if precision.startswith("bf16") and not has_bf16_units(device):
            log.warning(
                "trainer.precision=%s on a %s without bf16 matrix units: bf16 is emulated here, far "
                "slower than float32 (trainer.precision=auto would use 32-true)",
                precision,
                device_model(device),
            )
        return PrecisionChoice(precision, "set by trainer.precision")
    model = device_model(device)
    if not has_bf16_units(device):
        return PrecisionChoice(FLOAT32, f"{model} has no bf16 matrix units (bf16 would be emulated)")
    if step is None:
        if device.type == "cuda":
            return PrecisionChoice(BF16, f"source networks on a GPU with bf16 ({model})")
        return PrecisionChoice(FLOAT32, "source networks on a CPU train in float32 (not measured)")
    cache = cache or cache_path()
    key = " | ".join(
        (
            model,
            f"torch {torch.__version__}",
            f"{torch.get_num_threads()} threads",
            step.key,
        )
    )
    entries = _read_cache(cache)
    if key in entries:
        seconds, where = entries[key]["seconds"], f"measured {entries[key]['measured']}, cached in {cache}"
    else:
        log.info("trainer.precision=auto: timing the classifiers' step in float32 and bf16 on %s", model)
        seconds = step.seconds(device)
        where = f"measured now, cached in {cache}"
        entries[key] = {"seconds": seconds, "measured": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
        _write_cache(cache, entries)
    chosen = BF16 if seconds[FLOAT32] >= MARGIN * seconds[BF16] else FLOAT32
    reason = (
        f"classifier step {seconds[FLOAT32]:.3g} s in float32, {seconds[BF16]:.3g} s in bf16 on "
        f"{model} ({where}); bf16 needs {MARGIN:g}x"
    )
    return PrecisionChoice(chosen, reason, dict(seconds))


def _read_cache(path: Path) -> dict:
    """The cache's entries that hold a measurement (both timings finite, positive numbers, and when
    they were measured); a damaged entry is dropped with a warning, so it is measured again."""
    try:
        entries = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}  # none yet, or unreadable: measure again
    if not isinstance(entries, dict):
        log.warning("%s is not a precision cache: measuring again", path)
        return {}
    kept = {}
    for key, entry in entries.items():
        if _valid_entry(entry):
            kept[key] = entry
        else:
            log.warning("precision cache %s: entry %r is damaged (%s): measuring again", path, key, _short(entry))
    return kept


def _valid_entry(entry) -> bool:
    if not isinstance(entry, dict) or not isinstance(entry.get("measured"), str):
        return False
    seconds = entry.get("seconds")
    if not isinstance(seconds, dict) or not {FLOAT32, BF16} <= seconds.keys():
        return False
    number = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0  # noqa: E731
    return all(number(seconds[p]) for p in (FLOAT32, BF16))


def _short(value, limit: int = 60) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _write_cache(path: Path, entries: dict) -> None:
    from modulenet.rundir import write_atomic

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps(entries, indent=2, sort_keys=True))
    except OSError as err:  # a read-only home: the choice stands, it is only measured again next time
        log.warning("could not cache the precision measurement in %s: %s", path, err)
