"""The same-data study's summary (summary.md beside the report): per connection, the selected
searched architecture against the originals (test error, mean and spread over the fine-tuning
seeds), and Fig. 8's rank correlations on real data. Selection is by validation error only.

    python studies/summarize_same_data.py OUT DOCS
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

from modulenet.report.correlation import kendall, spearman

CONNECTIONS = ("channel_pool", "aligned", "least_squares")


def by_label(rows: list[dict]) -> dict[str, list[dict]]:
    grouped: dict[str, list[dict]] = {}
    for row in rows:
        grouped.setdefault(row["label"], []).append(row)
    return grouped


def pct(values: list[float]) -> str:
    if len(values) == 1:
        return f"{100 * values[0]:.2f}"
    return f"{100 * statistics.fmean(values):.2f} ± {100 * statistics.stdev(values):.2f}"


def main(out: Path, docs: Path) -> str:
    lines = [
        "# Same-data study: summary",
        "",
        "Test error (%) on the 1017 `x_test` images, mean ± sd over the fine-tuning seeds; every choice "
        "(the selected searched architecture, the best original) by validation error.",
        "",
        "| Connection | Selected searched architecture | its val error | its test error | best original (by val) "
        "| its test error | all originals' test error | searched mean below that original's? |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    fig8 = [
        "",
        "## Fig. 8 on real data: search score vs fine-tuned test error",
        "",
        "| Connection | architectures | Spearman | Kendall |",
        "| --- | --- | --- | --- |",
    ]
    for connection in CONNECTIONS:
        path = out / f"search-{connection}" / "finetune" / "finetune.json"
        if not path.is_file():
            lines.append(f"| {connection} | (not run) | | | | | | |")
            continue
        groups = by_label(json.loads(path.read_text())["results"])
        searched = {label: rows for label, rows in groups.items() if label.startswith("ModuleNet")}
        if not searched:
            lines.append(f"| {connection} | (fine-tuning not reached) | | | | | | |")
            continue
        # finetune.json marks the selection when its run ends; a run still going is selected by the same rule
        selected = next((rows for rows in searched.values() if rows[0]["selected"]), None) or min(
            searched.values(), key=lambda rows: statistics.fmean(r["val_error"] for r in rows)
        )
        originals = {label: rows for label, rows in groups.items() if not label.startswith("ModuleNet")}
        best = min(originals, key=lambda label: statistics.fmean(r["val_error"] for r in originals[label]))
        sel_test = [r["test_error"] for r in selected]
        best_test = [r["test_error"] for r in originals[best]]
        verdict = "yes" if statistics.fmean(sel_test) < statistics.fmean(best_test) else "no"
        others = ", ".join(f"{label} {pct([r['test_error'] for r in rows])}" for label, rows in originals.items())
        lines.append(
            f"| {connection} | {selected[0]['architecture']} ({selected[0]['label']}) | "
            f"{pct([r['val_error'] for r in selected])} | {pct(sel_test)} | {best} | {pct(best_test)} | "
            f"{others} | {verdict} |"
        )
        fig8_path = out / f"fig8-{connection}" / "finetune.json"
        if fig8_path.is_file():
            rows = [r for r in json.loads(fig8_path.read_text())["results"] if r.get("score") is not None]
            scores, errors = [r["score"] for r in rows], [r["test_error"] for r in rows]
            if len(rows) >= 3:
                fig8.append(
                    f"| {connection} | {len(rows)} | {spearman(scores, errors):.3f} | {kendall(scores, errors):.3f} |"
                )
            else:
                fig8.append(f"| {connection} | {len(rows)} (too few yet) | | |")
    text = "\n".join(lines + fig8) + "\n"
    (docs / "summary.md").write_text(text)
    return text


if __name__ == "__main__":
    print(main(Path(sys.argv[1]), Path(sys.argv[2])))
