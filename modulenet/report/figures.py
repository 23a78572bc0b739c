"""The report's figures (Figs. 5-10, score curves, sweeps): matplotlib Figure + Agg canvas, no pyplot."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from modulenet.report.markdown import corr, short_number
from modulenet.report.runs import SearchRun, as_float
from modulenet.search.records import WORST_SCORE


def _figure(width: float, height: float):
    """A matplotlib Figure on an Agg canvas: no pyplot, no global backend, no GUI."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _colours(k: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if k <= 10 else "tab20"]
    if k <= cmap.N:
        return [cmap(i) for i in range(k)]
    return [colormaps["hsv"](i / k) for i in range(k)]


def _series(values: Sequence[float]) -> list[float]:
    return [v if math.isfinite(as_float(v)) and as_float(v) < WORST_SCORE else math.nan for v in map(as_float, values)]


def plot_score_curves(runs: Sequence[SearchRun], path: Path) -> None:
    """Population min and mean score (left) and best score so far (right) per generation, a colour per run."""
    fig = _figure(11, 4.2)
    population, best = fig.subplots(1, 2)
    for run, colour in zip(runs, _colours(len(runs))):
        generations = [row["generation"] for row in run.history]
        label = f"{run.label} (α={short_number(run.alpha)}, β={short_number(run.beta)})"
        for key, style in (("mean", {"marker": "."}), ("min", {"linestyle": ":"})):
            series = _series(row.get(key) for row in run.history)
            population.plot(generations, series, color=colour, label=f"{label} {key}", **style)
        best.plot(
            generations, _series(row.get("best_score") for row in run.history), color=colour, marker=".", label=label
        )
    population.set(
        xlabel="generation",
        ylabel="score (Eq. 4, lower is better)",
        title="Population score: mean (solid), min (dotted)",
    )
    best.set(xlabel="generation", ylabel="best score so far", title="Best score so far")
    best.legend(fontsize="small")
    for axis in (population.xaxis, best.xaxis):
        axis.get_major_locator().set_params(integer=True)
    fig.savefig(path, dpi=100)


def plot_new_survival(runs: Sequence[SearchRun], path: Path) -> None:
    """Fig. 9: new survival per generation, every run in one plot."""
    fig = _figure(7, 4.2)
    ax = fig.subplots()
    for run, colour in zip(runs, _colours(len(runs))):
        points = run.new_survival()
        ax.plot(
            [g for g, _ in points],
            [s for _, s in points],
            marker="o",
            color=colour,
            label=f"{run.label} (α={short_number(run.alpha)}, β={short_number(run.beta)})",
        )
    ax.set(
        xlabel="generation i",
        ylabel="genotypes of pop_i not in pop_{i-1}",
        title="New survival between generations (Fig. 9)",
    )
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.legend(fontsize="small")
    fig.savefig(path, dpi=100)


def plot_architecture(code: Sequence[int], arch_names: Sequence[str], title: str, path: Path) -> None:
    """Figs. 5-7: the genotype as c boxes from input to classifier, coloured by source architecture."""
    from matplotlib.patches import FancyArrowPatch, Patch, Rectangle

    colours = _colours(max(1, len(arch_names)))
    c = len(code)
    fig = _figure(max(5.0, 1.5 * c + 2.5), 2.8)
    ax = fig.subplots()
    width, gap = 1.0, 0.45
    x = 0.0
    ax.text(x - 0.15, 0.5, "input", ha="right", va="center")
    for j, i in enumerate(code):
        colour = colours[i % len(colours)] if arch_names else (0.7, 0.7, 0.7, 1.0)
        ax.add_patch(Rectangle((x, 0.0), width, 1.0, facecolor=colour, edgecolor="black", linewidth=1.2))
        luminance = 0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2]
        name = arch_names[i] if 0 <= i < len(arch_names) else str(i)
        ax.text(
            x + width / 2,
            0.5,
            f"cell {j + 1}\n{name}",
            ha="center",
            va="center",
            fontsize=8,
            color="white" if luminance < 0.5 else "black",
            wrap=True,
        )
        if j < c - 1:
            ax.add_patch(FancyArrowPatch((x + width, 0.5), (x + width + gap, 0.5), arrowstyle="-|>", mutation_scale=10))
        x += width + gap
    ax.add_patch(FancyArrowPatch((x - gap, 0.5), (x, 0.5), arrowstyle="-|>", mutation_scale=10))
    ax.text(x + 0.05, 0.5, "classifier", ha="left", va="center")
    ax.set_xlim(-1.0, x + 1.3)
    ax.set_ylim(-0.1, 1.1)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title(title, fontsize=9)
    handles = [Patch(facecolor=colours[k], edgecolor="black", label=name) for k, name in enumerate(arch_names)]
    if handles:
        fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 4), fontsize=8)
    fig.savefig(path, dpi=100)


def plot_score_vs_error(rows: Sequence[dict], rho: float, tau: float, title: str, path: Path) -> None:
    """Fig. 8: architectures sorted by search score (descending), score and fine-tuned test error beside."""
    rows = sorted(rows, key=lambda r: -r["score"])
    xs = np.arange(1, len(rows) + 1)
    fig = _figure(max(6.0, 0.45 * len(rows) + 3), 4.2)
    ax = fig.subplots()
    ax.plot(xs, [r["score"] for r in rows], marker="o", color="tab:blue", label="search score")
    ax.set(xlabel="architectures, sorted by search score (descending)", ylabel="search score (Eq. 4)")
    ax.tick_params(axis="y", colors="tab:blue")
    twin = ax.twinx()
    twin.plot(xs, [100 * r["test_error"] for r in rows], marker="s", color="tab:red", label="test error")
    twin.set_ylabel("fine-tuned test error (%)")
    twin.tick_params(axis="y", colors="tab:red")
    ax.set_xticks(xs, [r["short"] for r in rows], rotation=60, ha="right", fontsize=7)
    ax.set_title(f"{title}\nSpearman ρ = {corr(rho)}, Kendall τ = {corr(tau)} (n = {len(rows)})", fontsize=9)
    handles = ax.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
    ax.legend(handles=handles, fontsize="small")
    fig.savefig(path, dpi=100)


def plot_connections(
    rows: Sequence[dict],
    key_a: str,
    others: Sequence[tuple[str, str, float, float]],
    label_a: str,
    title: str,
    path: Path,
) -> None:
    """Fig. 10: validation accuracy with each connection, architectures sorted by the search's.
    `others`: (key, label, Spearman, Kendall) of each compared connection."""
    rows = sorted(rows, key=lambda r: -r[key_a])
    xs = np.arange(1, len(rows) + 1)
    fig = _figure(max(6.0, 0.3 * len(rows) + 3), 4.2)
    ax = fig.subplots()
    ax.plot(xs, [100 * r[key_a] for r in rows], marker="o", label=label_a)
    for (key, label, rho, tau), marker in zip(others, "s^vDP*"):
        ax.plot(xs, [100 * r[key] for r in rows], marker=marker, label=f"{label} (ρ = {corr(rho)}, τ = {corr(tau)})")
    ax.set(xlabel=f"architectures, sorted by {label_a} (descending)", ylabel="validation accuracy (%)")
    ax.set_title(f"{title} (n = {len(rows)})", fontsize=9)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.legend()
    fig.savefig(path, dpi=100)


def plot_heatmap(
    alphas: Sequence[float], betas: Sequence[float], values: np.ndarray, label: str, title: str, path: Path
) -> None:
    """values[i, j] at (alphas[i], betas[j]), each cell written in; nan cells stay blank."""
    fig = _figure(max(4.5, 0.9 * len(betas) + 2.5), max(3.5, 0.7 * len(alphas) + 1.8))
    ax = fig.subplots()
    masked = np.ma.masked_invalid(np.asarray(values, dtype=float))
    image = ax.imshow(masked, cmap="viridis_r", origin="lower", aspect="auto")
    ax.set_xticks(range(len(betas)), [f"{b:g}" for b in betas])
    ax.set_yticks(range(len(alphas)), [f"{a:g}" for a in alphas])
    for i in range(len(alphas)):
        for j in range(len(betas)):
            if not np.ma.is_masked(masked[i, j]):
                ax.text(
                    j,
                    i,
                    f"{masked[i, j]:.2f}",
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white",
                    bbox=dict(facecolor="black", alpha=0.35, linewidth=0, pad=1),
                )
    _finish_alpha_beta(fig, ax, image, label, title, path)


def plot_alpha_beta_surface(
    alphas: Sequence[float],
    betas: Sequence[float],
    values: np.ndarray,
    marks: Sequence[tuple[float, float, str]],
    title: str,
    path: Path,
) -> None:
    """A fine (alpha, beta) grid of Spearman rho drawn as a surface; `marks`: (alpha, beta, text) points."""
    fig = _figure(6.5, 5.2)
    ax = fig.subplots()
    half_a = (alphas[1] - alphas[0]) / 2 if len(alphas) > 1 else 0.5
    half_b = (betas[1] - betas[0]) / 2 if len(betas) > 1 else 0.5
    image = ax.imshow(
        np.ma.masked_invalid(np.asarray(values, dtype=float)),
        cmap="viridis",
        origin="lower",
        aspect="auto",
        extent=(betas[0] - half_b, betas[-1] + half_b, alphas[0] - half_a, alphas[-1] + half_a),
    )
    for alpha, beta, text in marks:
        ax.plot(
            [beta],
            [alpha],
            marker="x" if text.startswith("best") else "o",
            color="red",
            markerfacecolor="none",
            markersize=9,
        )
        ax.annotate(text, (beta, alpha), xytext=(5, 5), textcoords="offset points", color="red", fontsize=8)
    _finish_alpha_beta(fig, ax, image, "Spearman ρ(score, test error)", title, path)


def _finish_alpha_beta(fig, ax, image, label: str, title: str, path: Path) -> None:
    ax.set(xlabel="β (weight of sim)", ylabel="α (weight of l_rate)", title=title)
    fig.colorbar(image, ax=ax, label=label)
    fig.savefig(path, dpi=100)
