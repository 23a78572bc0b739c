"""report.md and its figures from a set of runs."""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from modulenet.errors import ModuleNetError
from modulenet.genotype import format_genotype
from modulenet.report.calibration import Calibration, calibration_section
from modulenet.report.correlation import kendall, spearman
from modulenet.report.figures import plot_architecture, plot_new_survival, plot_score_curves, plot_score_vs_error
from modulenet.report.markdown import architecture_text, corr, file_stem, md_table, num, pct
from modulenet.report.runs import FinetuneRun, Runs, SearchRun, load_runs
from modulenet.report.sections import connections_section, fig8_points, finetune_section, runs_summary, sweep_section

REPORT_FILE = "report.md"


@dataclass
class Report:
    path: Path
    figures: list[Path]
    calibration: Calibration | None
    runs: Runs


def write_report(
    run_paths: Sequence[str | Path],
    out_dir: str | Path,
    calibrate_weights: bool = False,
    title: str = "ModuleNet report",
    calibration_max: float = 50.0,
    calibration_step: float = 1.0,
) -> Report:
    """Read the runs, write `report.md` and its figures into `out_dir`; returns what was written."""
    if not calibration_step > 0 or not calibration_max >= 0:
        raise ModuleNetError(
            f"calibration_step={calibration_step} must be > 0 and calibration_max={calibration_max} >= 0"
        )
    runs = load_runs(run_paths)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    figures: list[Path] = []
    lines = _header(runs, title)
    if runs.search:
        lines += _search_sections(runs.search, out, figures)
    lines += _finetune_sections(runs.finetune)
    lines += _fig8_sections(runs.finetune, out, figures)
    lines += ["## Parameter-free vs 1×1 connections (Fig. 10)", ""]
    ablations = [r for r in [*runs.search, *runs.ablation_only] if r.ablation]
    for run in ablations:
        lines += connections_section(run, out, figures)
    if not ablations:
        lines += ["No run has an `ablation_connections.json`.", ""]
    lines += sweep_section(runs.search, runs.finetune, out, figures)
    calibration = None
    if calibrate_weights:
        section, calibration = calibration_section(runs.finetune, calibration_max, calibration_step, out, figures)
        lines += section
    lines += _inputs(runs)
    path = out / REPORT_FILE
    path.write_text("\n".join(lines))
    return Report(path, figures, calibration, runs)


def _header(runs: Runs, title: str) -> list[str]:
    ablations = f", {len(runs.ablation_only)} connection ablation(s)" if runs.ablation_only else ""
    return [
        f"# {title}",
        "",
        f"Generated {datetime.datetime.now().isoformat(timespec='seconds')} by `modulenet-report` from "
        f"{len(runs.search)} search run(s), {len(runs.finetune)} fine-tune run(s){ablations}.",
        "Test errors and err_val in %, lower is better; scores are Eq. 4 (lower is better).",
        "",
    ]


def _search_sections(search: list[SearchRun], out: Path, figures: list[Path]) -> list[str]:
    """The runs' summary, their score curves and new survival (Fig. 9), each run's best architecture (Figs. 5-7)."""
    curves, survival = out / "score_curves.png", out / "new_survival.png"
    plot_score_curves(search, curves)
    plot_new_survival(search, survival)
    figures += [curves, survival]
    lines = ["## Search runs", ""] + runs_summary(search) + [""]
    lines += [
        "## Search curves",
        "",
        "Population score (min, mean) and best score so far per generation:",
        "",
        f"![score curves]({curves.name})",
        "",
        "New survival (Fig. 9): genotypes of generation i's population that were not in generation i−1's. "
        "The paper sees it fall as the population settles.",
        "",
        f"![new survival]({survival.name})",
        "",
    ]
    survival_rows = [[run.label, ", ".join(str(s) for _, s in run.new_survival())] for run in search]
    lines += md_table(["Run", "New survival per generation"], survival_rows) + [""]
    lines += ["## Searched architectures (Figs. 5-7)", ""]
    for run in search:
        best = run.best
        path = out / f"architecture_{file_stem(run.label)}.png"
        plot_architecture(
            best["genotype"],
            run.arch_names,
            f"{run.label}: best genotype {format_genotype(best['genotype'])}, "
            f"score {num(best.get('score'))}, err_val {pct(best.get('err_val'))} %",
            path,
        )
        figures.append(path)
        architecture = architecture_text(best["genotype"], run.arch_names)
        lines += [
            f"**{run.label}**: {format_genotype(best['genotype'])} = {architecture}",
            "",
            f"![architecture {run.label}]({path.name})",
            "",
        ]
    return lines


def _finetune_sections(finetune: list[FinetuneRun]) -> list[str]:
    lines = ["## Fine-tuned test error (Tables I-IV)", ""]
    for ft in finetune:
        lines += finetune_section(ft)
    if not finetune:
        lines += ["No fine-tune run given (`modulenet-finetune search_run=<search run>` writes one).", ""]
    return lines


def _fig8_sections(finetune: list[FinetuneRun], out: Path, figures: list[Path]) -> list[str]:
    """Fig. 8: each fine-tune run's search scores against its fine-tuned test errors, with rank correlations."""
    lines = ["## Search score vs fine-tuned test error (Fig. 8)", ""]
    drawn = 0
    for ft in finetune:
        points = fig8_points(ft)
        if len(points) < 2:
            continue
        drawn += 1
        scores, errors = [p["score"] for p in points], [p["test_error"] for p in points]
        rho, tau = spearman(scores, errors), kendall(scores, errors)
        path = out / f"fig8_{file_stem(ft.label)}.png"
        plot_score_vs_error(points, rho, tau, f"Search score vs test error: {ft.label}", path)
        figures.append(path)
        lines += [
            f"### {ft.label}",
            "",
            f"{len(points)} fine-tuned architectures with a search score: Spearman ρ = {corr(rho)}, "
            f"Kendall τ = {corr(tau)} (positive: a lower score goes with a lower test error, as in the paper).",
            "",
            f"![Fig. 8 {ft.label}]({path.name})",
            "",
        ]
        rows = [
            [p["label"], format_genotype(p["genotype"]), num(p["score"]), pct(p["test_error"])]
            for p in sorted(points, key=lambda p: -p["score"])
        ]
        lines += md_table(["Label", "Genotype", "Search score", "Test error (%)"], rows) + [""]
    if not drawn:
        lines += [
            "Needs a fine-tune run with at least 2 architectures that have a search score (e.g. `finetune.top_k=10`).",
            "",
        ]
    return lines


def _inputs(runs: Runs) -> list[str]:
    lines = ["## Inputs", ""] + [f"- `{r.path}` (search{', linked' if r.linked_only else ''})" for r in runs.search]
    lines += [f"- `{r.path}` (fine-tune)" for r in runs.finetune]
    return lines + [f"- `{r.path}` (connection ablation)" for r in runs.ablation_only] + [""]
