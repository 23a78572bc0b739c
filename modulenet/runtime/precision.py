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
MARGIN = 1.1  # bf16 must be this much faster than float32 to be chosen (channels-last than contiguous)
# A whole network's layout in fine-tuning (trainer.memory_format): its weights', which convolutions follow
CONTIGUOUS, CHANNELS_LAST = "contiguous", "channels_last"
LAYOUTS = (CONTIGUOUS, CHANNELS_LAST)
MEMORY_FORMATS = {CONTIGUOUS: torch.contiguous_format, CHANNELS_LAST: torch.channels_last}


def is_bf16(precision) -> bool:
    """Whether a Lightning precision ("bf16-mixed", "bf16-true", ...) computes in bfloat16."""
    return str(precision).startswith("bf16")


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


@dataclass(frozen=True)
class LayoutChoice:
    memory_format: str  # contiguous | channels_last
    reason: str
    seconds: dict[str, float] = field(default_factory=dict)  # measured seconds per step, by layout


def cache_path() -> Path:
    return Path(os.environ.get("MODULENET_CACHE", "~/.cache/modulenet")).expanduser() / "precision.json"


class TimedStep(Protocol):
    """A training step `auto` can time: `key` names its shape in the cache, `seconds(device)`
    returns seconds per step by precision ({FLOAT32: ..., BF16: ...})."""

    key: str

    def seconds(self, device: torch.device) -> dict[str, float]: ...


def time_steps(
    step, device: torch.device, rounds: int = 3, steps: int = 2, variants: tuple[str, ...] = (FLOAT32, BF16)
) -> dict[str, float]:
    """Seconds per call of `step(variant)` for each variant (float32 and bf16-mixed by default):
    rounds alternate them (so a slow spell of the machine hits all), the best round counts; one
    warm-up call each first."""

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    best = dict.fromkeys(variants, float("inf"))
    for variant in best:  # warm-up: first-call costs are not the step's
        step(variant)
    for _ in range(rounds):
        for variant in best:
            sync()
            start = time.perf_counter()
            for _ in range(steps):
                step(variant)
            sync()
            best[variant] = min(best[variant], (time.perf_counter() - start) / steps)
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

    def seconds(self, device: torch.device, precisions: tuple[str, ...] = (FLOAT32, BF16)) -> dict[str, float]:
        """Seconds per step in each of `precisions` (float32 and bf16-mixed; contiguous layout)."""
        step = self._steps(device, dict.fromkeys(precisions, CONTIGUOUS), {p: p == BF16 for p in precisions})
        return self._timed(step, device, precisions)

    def layout_seconds(self, device: torch.device, precision: str) -> dict[str, float]:
        """Seconds per step in `precision` with the weights contiguous and channels-last."""
        bf16 = is_bf16(precision)
        step = self._steps(device, {layout: layout for layout in LAYOUTS}, dict.fromkeys(LAYOUTS, bf16))
        return self._timed(step, device, LAYOUTS)

    def _steps(self, device: torch.device, layouts: dict[str, str], bf16: dict[str, bool]):
        """A step per variant: SGD on its own copy of the model in its layout, the same random batch."""
        import copy

        generator = torch.Generator().manual_seed(0)
        x = torch.randn(self.batch_size, 3, self.image_size, self.image_size, generator=generator).to(device)
        y = torch.randint(self.classes, (self.batch_size,), generator=generator).to(device)
        models, optimizers = {}, {}
        for variant, layout in layouts.items():
            model = copy.deepcopy(self.model).to(device).train().to(memory_format=MEMORY_FORMATS[layout])
            models[variant] = model
            trainable = [p for p in model.parameters() if p.requires_grad]
            optimizers[variant] = torch.optim.SGD(trainable, lr=1e-3, momentum=0.9)

        def step(variant: str) -> None:
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16[variant]):
                logits = models[variant](x)
            F.cross_entropy(logits.float(), y).backward()
            optimizers[variant].step()
            optimizers[variant].zero_grad(set_to_none=True)

        return step

    @staticmethod
    def _timed(step, device: torch.device, variants: tuple[str, ...]) -> dict[str, float]:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):  # dropout draws roll back
            return time_steps(step, device, rounds=2, steps=1, variants=variants)


def choose_precision(
    precision: str, device: torch.device, step: TimedStep | None = None, cache: Path | None = None
) -> PrecisionChoice:
    """The precision to train in, and why. `step`: what is timed (measured, cached): the search's
    classifiers (evaluation/stacked.py's HeadShape) or a fine-tuned network (NetworkStep); None:
    source training (not measured). An explicit precision is returned as given."""
    check_precision(precision)
    if precision != AUTO:
        if is_bf16(precision) and not has_bf16_units(device):
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
    log_line = f"trainer.precision=auto: timing the step in float32 and bf16 on {model}"
    seconds, where = _measured(step.key, device, lambda: step.seconds(device), (FLOAT32, BF16), log_line, cache)
    chosen = BF16 if seconds[FLOAT32] >= MARGIN * seconds[BF16] else FLOAT32
    reason = (
        f"step {seconds[FLOAT32]:.3g} s in float32, {seconds[BF16]:.3g} s in bf16 on "
        f"{model} ({where}); bf16 needs {MARGIN:g}x"
    )
    return PrecisionChoice(chosen, reason, dict(seconds))


def choose_memory_format(
    memory_format: str, device: torch.device, step: NetworkStep, precision: str, cache: Path | None = None
) -> LayoutChoice:
    """The layout a whole network fine-tunes in (`trainer.memory_format`), and why: `auto` times
    its step in `precision` contiguous and channels-last on this device (cached per machine and
    network shape) and takes channels-last where it is at least `MARGIN` faster; an explicit
    layout is obeyed. (Ours: channels-last feeds GPU tensor cores and oneDNN without transposes.)"""
    check_memory_format(memory_format)
    if memory_format != AUTO:
        return LayoutChoice(memory_format, "set by trainer.memory_format")
    model = device_model(device)
    log_line = f"trainer.memory_format=auto: timing the step contiguous and channels-last on {model}"
    measure = functools.partial(step.layout_seconds, device, precision)
    seconds, where = _measured(f"{step.key} {precision} layout", device, measure, LAYOUTS, log_line, cache)
    chosen = CHANNELS_LAST if seconds[CONTIGUOUS] >= MARGIN * seconds[CHANNELS_LAST] else CONTIGUOUS
    reason = (
        f"step {seconds[CONTIGUOUS]:.3g} s contiguous, {seconds[CHANNELS_LAST]:.3g} s channels-last in {precision} "
        f"on {model} ({where}); channels-last needs {MARGIN:g}x"
    )
    return LayoutChoice(chosen, reason, dict(seconds))


def check_memory_format(memory_format) -> None:
    if memory_format not in (AUTO, *LAYOUTS):
        raise ModuleNetError(f"trainer.memory_format={memory_format!r}; valid values are {[AUTO, *LAYOUTS]}")


def _measured(key: str, device: torch.device, measure, variants: tuple[str, ...], log_line: str, cache: Path | None):
    """Seconds per step by variant for the step named `key` on this machine (device model, torch
    version, threads): read from the cache, else measured now and cached; and where they came from."""
    cache = cache or cache_path()
    key = " | ".join((device_model(device), f"torch {torch.__version__}", f"{torch.get_num_threads()} threads", key))
    entries = _read_cache(cache, variants, key)
    if key in entries:
        return entries[key]["seconds"], f"measured {entries[key]['measured']}, cached in {cache}"
    log.info(log_line)
    seconds = measure()
    entries = _read_cache(cache)  # another process may have added entries meanwhile
    entries[key] = {"seconds": seconds, "measured": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
    _write_cache(cache, entries)
    return seconds, f"measured now, cached in {cache}"


def _read_cache(path: Path, variants: tuple[str, ...] = (), wanted: str | None = None) -> dict:
    """The cache's entries that hold a measurement (every timing a finite, positive number, and when
    it was measured); a damaged entry is dropped with a warning, so it is measured again. The entry
    `wanted` must also time every one of `variants`."""
    try:
        entries = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}  # none yet, or unreadable: measure again
    if not isinstance(entries, dict):
        log.warning("%s is not a precision cache: measuring again", path)
        return {}
    kept = {}
    for key, entry in entries.items():
        if _valid_entry(entry, variants if key == wanted else ()):
            kept[key] = entry
        else:
            log.warning("precision cache %s: entry %r is damaged (%s): measuring again", path, key, _short(entry))
    return kept


def _valid_entry(entry, variants: tuple[str, ...] = ()) -> bool:
    if not isinstance(entry, dict) or not isinstance(entry.get("measured"), str):
        return False
    seconds = entry.get("seconds")
    if not isinstance(seconds, dict) or not seconds or not set(variants) <= seconds.keys():
        return False
    number = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0  # noqa: E731
    return all(number(v) for v in seconds.values())


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
