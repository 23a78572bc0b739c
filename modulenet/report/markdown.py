"""Small formatting helpers of the report's markdown tables."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

from modulenet.report.runs import as_float
from modulenet.search.records import WORST_SCORE


def pct(value, digits: int = 2) -> str:
    value = as_float(value)
    return "—" if not math.isfinite(value) else f"{100 * value:.{digits}f}"


def num(value, digits: int = 4) -> str:
    value = as_float(value)
    if not math.isfinite(value) or value >= WORST_SCORE:
        return "—"
    return f"{value:.{digits}f}"


def short_number(value) -> str:
    return "?" if value is None else f"{value:g}"


def corr(value: float) -> str:
    return "undefined" if not math.isfinite(value) else f"{value:.3f}"


def file_stem(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", label).strip("_") or "run"


def md_escape(text: str) -> str:
    return str(text).replace("|", "\\|")


def md_table(header: Sequence[str], rows: Sequence[Sequence]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(md_escape(c) for c in row) + " |" for row in rows]
    return lines


def architecture_text(code: Sequence[int], arch_names: Sequence[str]) -> str:
    return "+".join(arch_names[i] if 0 <= i < len(arch_names) else str(i) for i in code)
