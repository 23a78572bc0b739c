"""The report's markdown sections: runs, fine-tuning tables (Tables I-IV), Fig. 8, Fig. 10, sweeps."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from modulenet.genotype import format_genotype, search_space_size
from modulenet.report.correlation import kendall, spearman
from modulenet.report.figures import plot_connections, plot_heatmap
from modulenet.report.markdown import architecture_text, corr, file_stem, md_table, num, pct, short_number
from modulenet.report.paper import PaperRow, PaperTable, normalised_name, paper_table_for
from modulenet.report.runs import FinetuneRun, SearchRun, as_float, is_searched
from modulenet.search.records import WORST_SCORE


def runs_summary(runs: Sequence[SearchRun]) -> list[str]:
    header = [
        "Run",
        "Directory",
        "Dataset",
        "n",
        "c",
        "abs(Omega)",
        "α",
        "β",
        "gen × p_size",
        "Best genotype",
        "Best architecture",
        "Best score",
        "Best err_val (%)",
    ]
    rows = []
    for run in runs:
        best = run.best
        config = run.results.get("config") or {}
        p = config.get("population_size", run.search_cfg.get("population_size", "?"))
        n, c = run.num_archs, run.num_cells
        omega = run.results.get("search_space_size") or (search_space_size(n, c) if n else "?")
        rows.append(
            [
                run.label + (" (linked)" if run.linked_only else ""),
                str(run.path),
                run.dataset or "?",
                n or "?",
                c,
                omega,
                short_number(run.alpha),
                short_number(run.beta),
                f"{len(run.history)} × {p}",
                best.get("genotype_str") or format_genotype(best["genotype"]),
                architecture_text(best["genotype"], run.arch_names),
                num(best.get("score")),
                pct(best.get("err_val")),
            ]
        )
    return md_table(header, rows)


def _match_paper_rows(table: PaperTable, ft: FinetuneRun) -> dict[int, list[PaperRow]]:
    """measured row index -> the paper rows it stands beside."""
    results = ft.results
    matches: dict[int, list[PaperRow]] = {}
    arch_names = ft.arch_names

    def names_of(row) -> list[str]:
        code = row["genotype"]
        if arch_names and all(0 <= int(i) < len(arch_names) for i in code):
            return [normalised_name(arch_names[int(i)]) for i in code]
        return [normalised_name(part) for part in str(row.get("architecture", "")).split("+")]

    def best(pool: list[int]) -> list[int]:
        """The fine-tune's own `selected` row, else the lowest validation error; only files written
        before validation errors were recorded fall back to the test error."""
        selected = [k for k in pool if results[k].get("selected")]
        if selected:
            return selected[:1]
        key = "val_error" if all(math.isfinite(as_float(results[k].get("val_error"))) for k in pool) else "test_error"
        return [min(pool, key=lambda k: results[k][key])] if pool else []

    for paper in table.rows:
        chosen: list[int] = []
        if paper.kind == "best_original":
            pool = [
                k
                for k, r in enumerate(results)
                if not is_searched(r) and normalised_name(r["label"]).startswith(paper.names)
            ]
            chosen = best([k for k in pool if not results[k].get("selected")])
        elif paper.kind == "original":
            chosen = [
                k for k, r in enumerate(results) if not is_searched(r) and normalised_name(r["label"]) in paper.names
            ][:1]
        elif paper.kind == "best_searched":
            if paper.cutout is None or ft.cutout is None or paper.cutout == (ft.cutout > 0):
                chosen = best([k for k, r in enumerate(results) if is_searched(r)])
        elif paper.kind == "hybrid":
            first, rest = paper.names
            chosen = [
                k
                for k, r in enumerate(results)
                if (lambda ns: len(ns) > 1 and ns[0] == first and all(x == rest for x in ns[1:]))(names_of(r))
            ][:1]
        for k in chosen:
            matches.setdefault(k, []).append(paper)
    return matches


def finetune_section(ft: FinetuneRun) -> list[str]:
    """A table in the form of the paper's Tables I-IV: each measured row, and the paper's row beside it."""
    table = paper_table_for(ft.dataset, ft.arch_names)
    settings = [
        f"{ft.epochs} epochs" if ft.epochs is not None else "epochs unknown",
        f"cutout {ft.cutout}" if ft.cutout is not None else "cutout unknown",
    ]
    source = (
        f"search run `{ft.search.path}`"
        if ft.search
        else (f"search run `{ft.search_run_path}` (not found)" if ft.search_run_path else "search run unknown")
    )
    lines = [
        f"### Fine-tune run {ft.label}",
        "",
        f"`{ft.path}`: {source}, dataset {ft.dataset or 'unknown'}, {', '.join(settings)}, all weights trainable.",
        "",
    ]
    if table is None:
        lines += [
            f"No table of the paper matches this run (dataset {ft.dataset or 'unknown'}; the paper reports "
            "CIFAR-100, CIFAR-10 and ImageNet): measured numbers only.",
            "",
        ]
        lines += md_table(
            ["Method", "Architecture", "Search score", "Test error measured (%)"],
            [
                [r["label"], r.get("architecture", ""), num(r.get("search_score")), pct(r["test_error"])]
                for r in ft.results
            ],
        )
        return lines + [""]
    lines += [f"Paper: {table.caption}.", ""] + _beside_paper(ft, table) + [""]
    notes = _paper_notes(ft, table)
    if notes:
        lines += ["Notes: " + "; ".join(notes) + ".", ""]
    return lines


def _beside_paper(ft: FinetuneRun, table: PaperTable) -> list[str]:
    """Each measured row beside the paper's row it reproduces, then the paper's rows nothing measured."""
    matches = _match_paper_rows(table, ft)
    two = len(table.columns) > 1
    seeds = len({r.get("seed", 0) for r in ft.results}) > 1  # one row per architecture and seed
    header = [
        "Method",
        "Architecture",
        "Search score",
        "Test error measured (%)" + (" top1 / top5" if two else ""),
        "Paper row",
        "Paper test error (%)" + (" top1 / top5" if two else ""),
    ]
    rows, used = [], set()
    for k, r in enumerate(ft.results):
        papers = matches.get(k, [])
        used.update(p.method for p in papers)
        measured = pct(r["test_error"]) + (
            f" / {pct(r['test_error_top5'])}" if two and r.get("test_error_top5") is not None else ""
        )
        rows.append(
            [
                r["label"]
                + (f" (seed {r.get('seed', 0)})" if seeds else "")
                + (" (selected by validation error)" if r.get("selected") else ""),
                r.get("architecture", ""),
                num(r.get("search_score")),
                measured,
                "; ".join(p.method for p in papers) or "— (no paper row)",
                "; ".join(" / ".join(f"{e:g}" for e in p.errors) for p in papers) or "—",
            ]
        )
    for p in table.rows:
        if p.method not in used:
            rows.append(["(not measured)", "", "", "—", p.method, " / ".join(f"{e:g}" for e in p.errors)])
    return md_table(header, rows)


def _paper_notes(ft: FinetuneRun, table: PaperTable) -> list[str]:
    notes = [f"{p.method}: {p.note}" for p in table.rows if p.note]
    if any(r.get("validated_on") == "test" for r in ft.results):
        notes.append(
            "this run has no separate validation split (dataset.val_from=test, as the paper's Table III): "
            "the selection by validation error used the test set"
        )
    kb = set(normalised_name(a) for a in ft.arch_names)
    if table.knowledge_base and kb and kb != set(normalised_name(a) for a in table.knowledge_base):
        notes.append(
            f"this run's knowledge base ({', '.join(ft.arch_names)}) differs from the paper's "
            f"({', '.join(table.knowledge_base)}): the paper's numbers are a reference, not a replication"
        )
    return notes


def fig8_points(ft: FinetuneRun) -> list[dict]:
    """Fine-tuned architectures with a search score: finetune.json's, else the search run's evaluations.csv."""
    evaluations = ft.search.evaluation_by_genotype() if ft.search else {}
    points = []
    for r in ft.results:
        code = tuple(int(i) for i in r["genotype"])
        score = r.get("search_score")
        if score is None and code in evaluations:
            score = evaluations[code]["score"]
        score, error = as_float(score), as_float(r["test_error"])
        if math.isfinite(score) and score < WORST_SCORE and math.isfinite(error):
            points.append(
                {
                    "label": r["label"],
                    "genotype": code,
                    "score": score,
                    "test_error": error,
                    "architecture": r.get("architecture", ""),
                    "short": f"{r['label']} ({format_genotype(code)})",
                }
            )
    return points


def connections_section(run: SearchRun, out: Path, figures: list[Path]) -> list[str]:
    data = run.ablation or {}
    a = data.get("connection_a", "channel_pool")
    compared = list(data.get("compared") or [data.get("connection_b", "conv1x1")])
    keys = [f"val_acc_{a}", *(f"val_acc_{b}" for b in compared)]
    rows = [r for r in data.get("rows", []) if all(math.isfinite(as_float(r.get(k))) for k in keys)]
    lines = [f"### {run.label}", ""]
    if len(rows) < 2:
        return lines + [f"`{run.path / 'ablation_connections.json'}` has {len(rows)} usable rows; Fig. 10 needs 2.", ""]
    xa = [float(r[keys[0]]) for r in rows]
    others = []
    for b, key in zip(compared, keys[1:]):
        xb = [float(r[key]) for r in rows]
        others.append((key, f"val acc {b}", spearman(xa, xb), kendall(xa, xb)))
    path = out / f"fig10_{file_stem(run.label)}.png"
    plot_connections(rows, keys[0], others, f"val acc {a} (the search's)", f"Connections compared: {run.label}", path)
    figures.append(path)
    summary = "; ".join(
        f"with {b}: Spearman ρ = {corr(rho)}, Kendall τ = {corr(tau)}" for b, (_, _, rho, tau) in zip(compared, others)
    )
    lines += [
        f"{len(rows)} architectures; rank correlation of validation accuracy with {a} and {summary}. The "
        "paper (Fig. 10) shows parameter-free and 1x1 connections agree on the best and worst architectures.",
        "",
        f"![Fig. 10 {run.label}]({path.name})",
        "",
    ]
    top = sorted(rows, key=lambda r: -float(r[keys[0]]))
    lines += md_table(
        ["Genotype", *(f"val acc {name} (%)" for name in (a, *compared)), "Score"],
        [
            [
                r.get("genotype_str") or format_genotype(r.get("genotype", [])),
                *(pct(r[k], 2) for k in keys),
                num(r.get("score")),
            ]
            for r in top
        ],
    )
    return lines + [""]


def _best_finetuned(run: SearchRun, finetunes: Sequence[FinetuneRun]) -> float:
    errors = [float(r["test_error"]) for ft in finetunes if ft.search is run for r in ft.searched()]
    return min(errors) if errors else math.nan


def sweep_section(
    runs: Sequence[SearchRun], finetunes: Sequence[FinetuneRun], out: Path, figures: list[Path]
) -> list[str]:
    """Several search runs with different (alpha, beta): a table and a heat map of the best error per cell."""
    runs = [r for r in runs if r.alpha is not None and r.beta is not None and r.best]
    if len({(r.alpha, r.beta) for r in runs}) < 2:
        return []
    finetuned = {id(r): _best_finetuned(r, finetunes) for r in runs}
    use_ft = all(math.isfinite(finetuned[id(r)]) for r in runs)
    metric = (
        "best fine-tuned test error of the searched architectures (%)"
        if use_ft
        else "validation error err_val of the best-score genotype (%)"
    )
    alphas = sorted({r.alpha for r in runs})
    betas = sorted({r.beta for r in runs})
    grid = np.full((len(alphas), len(betas)), np.nan)
    for r in runs:
        value = 100 * (finetuned[id(r)] if use_ft else as_float(r.best.get("err_val")))
        i, j = alphas.index(r.alpha), betas.index(r.beta)
        grid[i, j] = value if not math.isfinite(grid[i, j]) else min(grid[i, j], value)
    path = out / "sweep_alpha_beta.png"
    short = "best fine-tuned test error (%)" if use_ft else "err_val of the best genotype (%)"
    plot_heatmap(alphas, betas, grid, short, f"α/β sweep: {short}", path)
    figures.append(path)
    best_cell = np.unravel_index(np.nanargmin(grid), grid.shape)
    lines = [
        "## α/β sweep",
        "",
        f"{len(runs)} search runs over α ∈ {{{', '.join(f'{a:g}' for a in alphas)}}}, "
        f"β ∈ {{{', '.join(f'{b:g}' for b in betas)}}}. Heat map: {metric}"
        + (" (several runs in one cell: the lowest)" if len(runs) > len({(r.alpha, r.beta) for r in runs}) else "")
        + f". Lowest at α = {alphas[best_cell[0]]:g}, β = {betas[best_cell[1]]:g}: {grid[best_cell]:.2f} %."
        + ("" if use_ft else " (Not every run has a fine-tune run, so the map uses validation error.)"),
        "",
        f"![α/β sweep]({path.name})",
        "",
    ]
    lines += _sweep_table(runs, finetuned)
    return lines + [""]


def _sweep_table(runs: Sequence[SearchRun], finetuned: dict[int, float]) -> list[str]:
    header = ["Run", "α", "β", "Best genotype", "Best architecture", "Best score", "Best err_val (%)"]
    rows = [
        [
            r.label,
            short_number(r.alpha),
            short_number(r.beta),
            r.best.get("genotype_str") or format_genotype(r.best["genotype"]),
            architecture_text(r.best["genotype"], r.arch_names),
            num(r.best.get("score")),
            pct(r.best.get("err_val")),
            pct(finetuned[id(r)]),
        ]
        for r in sorted(runs, key=lambda r: (r.alpha, r.beta, r.label))
    ]
    return md_table([*header, "Best fine-tuned test error (%)"], rows)
