"""What a finished (or checkpointed) search writes besides its state: results.json, evaluations.csv,
search_curves.png, front.png (a multi-objective search); and the search path that Figs. 8 and 10
draw architectures from."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict
from pathlib import Path

from modulenet import rundir
from modulenet.genotype import format_genotype, read_genotype_text, search_space_size
from modulenet.rundir import write_atomic
from modulenet.search.records import TABLE_COLUMNS, WORST_SCORE, Evaluation, table_row
from modulenet.search.state import SearchState


def _describe(evaluation: Evaluation, arch_names: list[str] | None) -> dict:
    row = {"genotype": list(evaluation.genotype), "genotype_str": format_genotype(evaluation.genotype)}
    if arch_names:
        row["arch_names"] = [arch_names[i] for i in evaluation.genotype]
    row.update({k: v for k, v in evaluation.to_dict().items() if k != "genotype"})
    return row


def write_results(run_dir: Path, run: SearchState, arch_names: list[str] | None) -> None:
    """results.json: best, history, final population with metrics, config, |Omega|."""
    results = {
        "best": _describe(run.best(), arch_names),
        "history": run.history,
        "population": [_describe(run.evaluations[tuple(ind)], arch_names) for ind in run.population],
        "populations": [[format_genotype(code) for code in pop] for pop in run.populations],
        "config": asdict(run.config),
        "generation": run.generation,
        "num_archs": run.num_archs,
        "num_cells": run.num_cells,
        "arch_names": list(arch_names) if arch_names else None,
        "search_space_size": search_space_size(run.num_archs, run.num_cells),
    }
    write_atomic(Path(run_dir) / rundir.RESULTS, json.dumps(results, indent=2, allow_nan=False))


def write_evaluations_csv(run_dir: Path, run: SearchState, arch_names: list[str] | None) -> None:
    """evaluations.csv: one row per evaluated individual, in evaluation order."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(TABLE_COLUMNS)
    for code, e in run.evaluations.items():
        architecture = "+".join(arch_names[i] for i in code) if arch_names else ""
        writer.writerow(table_row(e, run.first_generation[code], format_genotype(code), architecture))
    write_atomic(Path(run_dir) / rundir.EVALUATIONS, buffer.getvalue())


def search_path(results: dict, scores: dict[tuple, float], limit: int) -> list[tuple]:
    """The distinct genotypes of every generation's population (`results["populations"]`, else the
    final one) that have a score, best first; beyond `limit`, evenly spaced ranks so the picks
    span good to bad (Figs. 8 and 10 draw architectures from the whole search path)."""
    populations = results.get("populations") or [[row["genotype"] for row in results["population"]]]
    codes = dict.fromkeys(
        read_genotype_text(code, results.get("num_cells")) if isinstance(code, str) else tuple(code)
        for pop in populations
        for code in pop
    )
    return spread_over_ranking(sorted((code for code in codes if code in scores), key=lambda code: scores[code]), limit)


def spread_over_ranking(ranked: list[tuple], limit: int) -> list[tuple]:
    """All of `ranked` (best first), or `limit` of them at evenly spaced ranks from best to worst."""
    if len(ranked) > limit:
        ranked = [ranked[round(i * (len(ranked) - 1) / max(1, limit - 1))] for i in range(limit)]
    return ranked


def plot_search_curves(history: list[dict], path: Path) -> None:
    """search_curves.png: score (min/mean/max, best so far) and new survival (Fig. 9) per generation."""
    # Figure + Agg canvas instead of pyplot: no global backend switch, no GUI, safe in workers.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    generations = [row["generation"] for row in history]

    def series(key):  # an all-failed generation has no meaningful score to draw
        return [row[key] if row[key] < WORST_SCORE else float("nan") for row in history]

    fig = Figure(figsize=(10, 4), layout="constrained")
    FigureCanvasAgg(fig)
    scores, survival = fig.subplots(1, 2)
    scores.fill_between(generations, series("min"), series("max"), alpha=0.2, label="population min-max")
    scores.plot(generations, series("mean"), marker=".", label="population mean")
    scores.plot(generations, series("min"), marker=".", label="population min")
    scores.plot(generations, series("best_score"), linestyle="--", label="best so far")
    scores.set(xlabel="generation", ylabel="score (Eq. 4, lower is better)", title="Search score")
    scores.legend()
    survival.bar(generations, [row["new_survival"] for row in history])
    survival.set(xlabel="generation", ylabel="new genotypes vs previous generation", title="New survival (Sec. V-B)")
    for axis in (scores.xaxis, survival.xaxis, survival.yaxis):
        axis.get_major_locator().set_params(integer=True)
    fig.savefig(path, dpi=100)


def dominates(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    """Point a dominates point b (all objectives minimised): no worse in every one, better in one."""
    return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))


def non_dominated(points: list[tuple[float, ...]]) -> list[int]:
    """Indices of the points no other point `dominates`; equal points all stay."""
    return [i for i, p in enumerate(points) if not any(dominates(q, p) for q in points)]


def plot_front(population: list[Evaluation], objectives: list[str], path: Path) -> None:
    """front.png: the final population of a multi-objective search, the score against each other
    objective (params, FLOPs), its non-dominated front marked."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    ok = [e for e in population if e.status == "ok"]
    others = [name for name in objectives if name != "score"]
    if not ok or not others:
        return
    front = set(non_dominated([tuple(float(getattr(e, name)) for name in objectives) for e in ok]))
    fig = Figure(figsize=(5 * len(others), 4), layout="constrained")
    FigureCanvasAgg(fig)
    for axis, name in zip(fig.subplots(1, len(others), squeeze=False)[0], others):
        x, y = [float(getattr(e, name)) for e in ok], [e.score for e in ok]
        axis.scatter(x, y, c=["tab:red" if i in front else "tab:gray" for i in range(len(ok))])
        for i in front:
            axis.annotate(format_genotype(ok[i].genotype), (x[i], y[i]), fontsize=7)
        axis.set(xlabel=name, ylabel="score (Eq. 4)", title=f"Final population: score vs {name} (front in red)")
    fig.savefig(path, dpi=100)
