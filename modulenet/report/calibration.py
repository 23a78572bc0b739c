"""Calibrating Eq. 4's alpha and beta against fine-tuned test error (Fig. 8's data)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from modulenet.genotype import format_genotype
from modulenet.report.correlation import kendall, spearman, spearman_rows
from modulenet.report.figures import plot_alpha_beta_surface
from modulenet.report.markdown import corr, md_table, num, pct
from modulenet.report.runs import FinetuneRun, as_float
from modulenet.search.score import search_score

MIN_CALIBRATION_POINTS = 3


@dataclass
class Calibration:
    points: list[dict]  # label, genotype, err_val, l_rate, sim, test_error, run
    alphas: np.ndarray
    betas: np.ndarray
    rho: np.ndarray  # Spearman over the grid, [alpha, beta]
    best_alpha: float
    best_beta: float
    best_rho: float
    best_kendall: float
    ties: int  # grid points reaching best_rho
    tied_alpha: tuple[float, float]  # the range of alpha over those points
    tied_beta: tuple[float, float]
    own: list[tuple[str, float, float, float]]  # (run label, alpha, beta, rho) at each run's own weights


def calibration_points(finetunes: Sequence[FinetuneRun]) -> list[dict]:
    """Fine-tuned architectures matched by genotype to their search run's evaluations (search terms known),
    each with its test error averaged over its distinct fine-tuning seeds (each seed counted once)."""
    merged: dict[tuple, dict] = {}
    for ft in finetunes:
        if ft.search is None:
            continue
        evaluations = ft.search.evaluation_by_genotype()
        for r in ft.results:
            code = tuple(int(i) for i in r["genotype"])
            e = evaluations.get(code)
            error = as_float(r["test_error"])
            if (
                e is None
                or not math.isfinite(error)
                or not all(math.isfinite(e[k]) for k in ("err_val", "l_rate", "sim"))
            ):
                continue
            key = (id(ft.search), code)
            point = merged.setdefault(
                key,
                {
                    "label": r["label"],
                    "genotype": code,
                    "err_val": e["err_val"],
                    "l_rate": e["l_rate"],
                    "sim": e["sim"],
                    "errors": {},
                    "run": ft.search,
                },
            )
            # one fine-tune per seed: a genotype fine-tuned again with a seed already counted (a Fig. 8 run
            # beside the population's) is the same network, so it would count twice in the mean
            point["errors"].setdefault(int(r.get("seed", 0)), error)
    points = []
    for point in merged.values():
        point["test_error"] = float(np.mean(list(point.pop("errors").values())))  # over its seeds
        points.append(point)
    return points


def calibrate(points: Sequence[dict], maximum: float = 50.0, step: float = 1.0) -> Calibration:
    """Grid search of Eq. 4's weights: alpha, beta in {0, step, ..., maximum} maximising Spearman's rho
    between score = err_val - alpha * l_rate + beta * sim and the fine-tuned test error (both lower is
    better, so a useful score correlates positively). Ties at the best rho: the highest Kendall tau,
    then the point nearest the centre of the tied points, then grid order."""
    if len(points) < MIN_CALIBRATION_POINTS:
        raise ValueError(f"calibration needs at least {MIN_CALIBRATION_POINTS} architectures, got {len(points)}")
    grid = np.round(np.arange(0.0, maximum + step / 2, step), 10)
    err = np.array([p["err_val"] for p in points], dtype=float)
    l_rate = np.array([p["l_rate"] for p in points], dtype=float)
    sim = np.array([p["sim"] for p in points], dtype=float)
    test = np.array([p["test_error"] for p in points], dtype=float)
    rho = np.full((grid.size, grid.size), np.nan)
    for i, alpha in enumerate(grid):
        # Eq. 4 over beta (rows) and the architectures (columns)
        scores = search_score(err[None, :], l_rate[None, :], sim[None, :], alpha, grid[:, None])
        rho[i] = spearman_rows(scores, test)
    if not np.isfinite(rho).any():
        best_rho, candidates = math.nan, [(0, 0)]
    else:
        best_rho = float(np.nanmax(rho))
        candidates = [tuple(ix) for ix in np.argwhere(rho >= best_rho - 1e-12)]

    def scores_at(alpha, beta):
        return [search_score(p["err_val"], p["l_rate"], p["sim"], alpha, beta) for p in points]

    taus = {ix: kendall(scores_at(grid[ix[0]], grid[ix[1]]), test) for ix in candidates}
    top_tau = max((t for t in taus.values() if math.isfinite(t)), default=math.nan)
    finalists = [ix for ix in candidates if not math.isfinite(top_tau) or taus[ix] >= top_tau - 1e-12]
    centre = np.mean([[grid[i], grid[j]] for i, j in finalists], axis=0)
    i, j = min(finalists, key=lambda ix: (float(np.hypot(grid[ix[0]] - centre[0], grid[ix[1]] - centre[1])), ix))
    alpha, beta = float(grid[i]), float(grid[j])
    best_rho = spearman(scores_at(alpha, beta), test)  # recomputed with search_score itself
    own, seen = [], set()
    for p in points:
        run = p["run"]
        if run.alpha is None or run.beta is None or id(run) in seen:
            continue
        seen.add(id(run))
        own.append((run.label, run.alpha, run.beta, spearman(scores_at(run.alpha, run.beta), test)))
    tied_a = [float(grid[ix[0]]) for ix in candidates]
    tied_b = [float(grid[ix[1]]) for ix in candidates]
    return Calibration(
        list(points),
        grid,
        grid,
        rho,
        alpha,
        beta,
        best_rho,
        as_float(taus.get((i, j))),
        len(candidates),
        (min(tied_a), max(tied_a)),
        (min(tied_b), max(tied_b)),
        own,
    )


def calibration_section(
    finetunes: Sequence[FinetuneRun], maximum: float, step: float, out: Path, figures: list[Path]
) -> tuple[list[str], Calibration | None]:
    points = calibration_points(finetunes)
    lines = [
        "## Calibration of α, β (beyond the paper)",
        "",
        'The paper sets α, β "through experiments" (25/25 for CIFAR-100, 10/30 for the NAS knowledge base). '
        f"Here: a grid search over α, β ∈ {{0, {step:g}, ..., {maximum:g}}} for the highest Spearman ρ between "
        "score = err_val − α·l_rate + β·sim (Eq. 4, from evaluations.csv) and the fine-tuned test error of the "
        "same architectures (matched by genotype to the fine-tune run's search run). Ties: highest Kendall τ, "
        "then the centre of the tied region.",
        "",
    ]
    if len(points) < MIN_CALIBRATION_POINTS:
        return lines + [
            f"Calibration needs at least {MIN_CALIBRATION_POINTS} fine-tuned architectures whose search "
            f"terms are known; the given runs have {len(points)}. Fine-tune more of them "
            "(`modulenet-finetune finetune.top_k=...`) and run the report again.",
            "",
        ], None
    result = calibrate(points, maximum, step)
    marks = [(result.best_alpha, result.best_beta, "best")]
    marks += [(a, b, label) for label, a, b, _ in result.own if 0 <= a <= maximum and 0 <= b <= maximum]
    path = out / "calibration_rho.png"
    plot_alpha_beta_surface(
        list(result.alphas),
        list(result.betas),
        result.rho,
        marks,
        f"Calibration over {len(points)} architectures",
        path,
    )
    figures.append(path)
    lines += _calibration_summary(result)
    lines += ["", f"![calibration]({path.name})", "", "Architectures used:", ""]
    lines += _calibration_points(result)
    return lines + [""], result


def _calibration_summary(result: Calibration) -> list[str]:
    """The best (alpha, beta), the region that ties with it, and each run's own weights beside it."""
    tied = (
        f", α ∈ [{result.tied_alpha[0]:g}, {result.tied_alpha[1]:g}], "
        f"β ∈ [{result.tied_beta[0]:g}, {result.tied_beta[1]:g}]"
        if result.ties > 1
        else ""
    )
    lines = [
        f"**Best: α = {result.best_alpha:g}, β = {result.best_beta:g}, Spearman ρ = {corr(result.best_rho)}, "
        f"Kendall τ = {corr(result.best_kendall)}** over {len(result.points)} architectures "
        f"({result.ties} of {result.rho.size} grid points reach this ρ{tied}).",
        "",
    ]
    return lines + md_table(
        ["Weights", "α", "β", "Spearman ρ"],
        [["calibrated", f"{result.best_alpha:g}", f"{result.best_beta:g}", corr(result.best_rho)]]
        + [[f"run {label} (its own)", f"{a:g}", f"{b:g}", corr(r)] for label, a, b, r in result.own],
    )


def _calibration_points(result: Calibration) -> list[str]:
    return md_table(
        ["Run", "Label", "Genotype", "err_val (%)", "l_rate", "sim", "Test error (%)", "Score at calibrated α, β"],
        [
            [
                p["run"].label,
                p["label"],
                format_genotype(p["genotype"]),
                pct(p["err_val"]),
                num(p["l_rate"]),
                num(p["sim"], 2),
                pct(p["test_error"]),
                num(search_score(p["err_val"], p["l_rate"], p["sim"], result.best_alpha, result.best_beta)),
            ]
            for p in result.points
        ],
    )
