"""Which precision trains the classifiers (ours: the paper says nothing of precision).

`trainer.precision=auto` measures instead of guessing. A CPU flag says an instruction exists,
not that it is fast: on an Intel Xeon with AVX-512 BF16 but no AMX, bf16 matrix products ran at
half float32's speed; on an AMD EPYC with the same flag, at 2.2x (both measured, 2 cores). So
for the search's classifiers `auto` times their own training step (the stacked head's forward,
backward and fused Adam) in float32 and in bf16 on this device, once per machine (the result is
cached under `MODULENET_CACHE`, keyed by the device's model, torch's version and the thread
count), and takes bf16 only where it is at least `MARGIN` faster: a tie keeps exact float32.

Whole networks (fine-tuning, source training) are not measured: `auto` is bf16-mixed on GPUs
with bf16 and float32 on CPUs. An explicit precision (`32-true`, `bf16-mixed`, ...) is obeyed.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import platform
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

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
class HeadShape:
    """The stacked classifiers whose step is timed: `copies` heads `in_features-hidden...-classes`."""

    in_features: int
    hidden: tuple[int, ...]
    classes: int
    copies: int
    batch_size: int


@dataclass(frozen=True)
class PrecisionChoice:
    precision: str
    reason: str
    seconds: dict[str, float] = field(default_factory=dict)  # measured seconds per step, by precision


def cache_path() -> Path:
    return Path(os.environ.get("MODULENET_CACHE", "~/.cache/modulenet")).expanduser() / "precision.json"


def head_step_seconds(
    head: HeadShape, device: torch.device, rounds: int = 3, steps: int = 2, seed: int = 0
) -> dict[str, float]:
    """Seconds per training step of `head` in float32 and bf16-mixed: rounds alternate the two (so
    a slow spell of the machine hits both), the best round counts. Own generator: the global RNG
    that evaluations draw from is left alone."""
    from modulenet.batched_evaluation import StackedClassifier
    from modulenet.lit_module import Classifier

    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(head.copies, head.batch_size, head.in_features, generator=generator).to(device)
    y = torch.randint(head.classes, (head.copies * head.batch_size,), generator=generator).to(device)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        template = Classifier(head.in_features, head.classes, head.hidden)
    model = StackedClassifier(template, head.copies).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=device.type in ("cpu", "cuda"))

    def step(bf16: bool) -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = model(x)
        F.cross_entropy(logits.flatten(0, 1).float(), y).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

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


def choose_precision(
    precision: str, device: torch.device, head: HeadShape | None = None, cache: Path | None = None
) -> PrecisionChoice:
    """The precision to train in, and why. `head`: the search's classifiers (measured, cached);
    None: whole networks (not measured). An explicit precision is returned as given."""
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
    if head is None:
        if device.type == "cuda":
            return PrecisionChoice(BF16, f"whole networks on a GPU with bf16 ({model})")
        return PrecisionChoice(FLOAT32, "whole networks on a CPU train in float32 (only classifiers are measured)")
    cache = cache or cache_path()
    key = " | ".join(
        (
            model,
            f"torch {torch.__version__}",
            f"{torch.get_num_threads()} threads",
            f"head {head.copies}x{head.batch_size}x{head.in_features}-{'-'.join(map(str, head.hidden))}-{head.classes}",
        )
    )
    entries = _read_cache(cache)
    if key in entries:
        seconds, where = entries[key]["seconds"], f"measured {entries[key]['measured']}, cached in {cache}"
    else:
        log.info("trainer.precision=auto: timing the classifiers' step in float32 and bf16 on %s", model)
        seconds = head_step_seconds(head, device)
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
    try:
        entries = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}  # none yet, or unreadable: measure again
    if not isinstance(entries, dict):
        return {}
    measured = lambda e: isinstance(e, dict) and isinstance(e.get("seconds"), dict)
    return {k: e for k, e in entries.items() if measured(e) and {FLOAT32, BF16} <= e["seconds"].keys()}


def _write_cache(path: Path, entries: dict) -> None:
    from modulenet.rundir import write_atomic

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps(entries, indent=2, sort_keys=True))
    except OSError as err:  # a read-only home: the choice stands, it is only measured again next time
        log.warning("could not cache the precision measurement in %s: %s", path, err)
