"""What the evaluation stage measured: one row per architecture and seed, the selected searched
architecture (by validation error; the test split chooses nothing) and the paper's table form."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from modulenet.finetune.settings import FinetuneSettings


@dataclass
class FinetuneResult:
    label: str  # "ModuleNet #k" (k-th by search score) or the original architecture's name
    genotype: list[int]
    architecture: str
    test_error: float
    search_score: float | None
    epochs: int
    seconds: float
    val_error: float = math.nan
    test_error_top5: float | None = None  # where there are more than 5 classes (Table IV)
    seed: int = 0
    selected: bool = False  # the searched candidate chosen by validation error: the ModuleNet row
    validated_on: str = "val"  # "test" where the dataset has no separate validation split (Table III)
    network: str = ""  # the saved network's folder, relative to the fine-tune directory


def selected_network(results: list[FinetuneResult]) -> FinetuneResult | None:
    """The row whose saved network is handed to the user: of the selected architecture's seeds,
    the one with the lowest validation error (the first on ties)."""
    chosen = [r for r in results if r.selected and r.network]
    return min(chosen, key=lambda r: r.val_error) if chosen else None


def select(results: list[FinetuneResult]) -> str | None:
    """Mark the searched candidate with the lowest validation error, averaged over its seeds (ties:
    the better search score), as `selected` (every seed's row): the best final architecture, chosen
    without the test split. Returns its label."""
    by_label: dict[str, list[FinetuneResult]] = {}
    for r in results:
        r.selected = False
        if r.label.startswith("ModuleNet"):
            by_label.setdefault(r.label, []).append(r)
    if not by_label:
        return None
    best = min(
        by_label,
        key=lambda label: (
            statistics.fmean(r.val_error for r in by_label[label]),
            by_label[label][0].search_score if by_label[label][0].search_score is not None else math.inf,
        ),
    )
    for r in by_label[best]:
        r.selected = True
    return best


def markdown_table(results: list[FinetuneResult], settings: FinetuneSettings) -> str:
    """The paper's table form, one row per architecture (mean and standard deviation over its
    seeds); the selected searched architecture (by validation error) is the ModuleNet row."""
    top5 = any(r.test_error_top5 is not None for r in results)
    header = "| Method | Architecture (cell 1 .. c) | Search score | Val Error (%) | Test Error (%) |" + (
        " Top-5 Test Error (%) |" if top5 else ""
    )
    seeds = settings.seeds or [settings.seed]
    lines = [
        f"Fine-tuned {settings.epochs} epochs, all weights trainable, seed{'s' if len(seeds) > 1 else ''} "
        f"{', '.join(map(str, seeds))}{' (mean ± sd over seeds)' if len(seeds) > 1 else ''}. The searched "
        "architecture with the lowest validation error is selected (**bold**); test errors choose nothing.",
        "",
        header,
        "| --- " * (header.count("|") - 1) + "|",
    ]
    by_label: dict[str, list[FinetuneResult]] = {}
    for r in results:
        by_label.setdefault(r.label, []).append(r)
    for label, rows in by_label.items():
        r = rows[0]
        name = f"**ModuleNet (selected: {label})**" if r.selected else label
        if r.validated_on == "test":
            name += " (no separate validation split: validated on the test set, as the paper's Table III)"
        score = "" if r.search_score is None else f"{r.search_score:.3f}"
        row = (
            f"| {name} | {r.architecture} | {score} | {_pct([x.val_error for x in rows])} | "
            f"{_pct([x.test_error for x in rows])} |"
        )
        lines.append(row + (f" {_pct([x.test_error_top5 for x in rows])} |" if top5 else ""))
    return "\n".join(lines) + "\n"


def _pct(values: list[float | None]) -> str:
    """A percentage, or mean ± sd where there are several."""
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return ""
    if len(values) == 1:
        return f"{100 * values[0]:.2f}"
    return f"{100 * statistics.fmean(values):.2f} ± {100 * statistics.stdev(values):.2f}"
