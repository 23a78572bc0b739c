"""Is inherited knowledge worth having? Studies 1 and 3 of docs/cpu_cifar10_inheritance/README.md (issue 21).

    .venv/bin/python studies/cpu_cifar10_inheritance.py study1         # hours on 2 CPU cores; rerun to resume
    .venv/bin/python studies/cpu_cifar10_inheritance.py study1-report  # its tables, tests and figure from the rows
    .venv/bin/python studies/cpu_cifar10_inheritance.py study3         # minutes: rankings out of sample, NASWOT

`study1` builds the same-data study's knowledge base (experiment=cpu_cifar10_same_data, cached), fits
its least-squares stitches, then fine-tunes every arm of the protocol for seeds 0, 1, 2: the
selected hybrid (211) and the best original (111) from inherited weights at 6, 18 and 36 epochs,
and both from random initialisation (finetune.init=scratch) at 36. Each arm and seed is a saved
network (finetune/network.py) with its per-image test predictions under $OUT/<arm>-seed<k>/;
`rows.json` gains its row when it finishes, and a killed fine-tune continues from its last
epoch. Seeds go round first, so a partial run is balanced. `study1-report` writes `rows.json`,
the predictions, `study1.md` and `study1.png` into docs/cpu_cifar10_inheritance/.

`study3` reads the same-data study's committed rows (docs/cpu_cifar10_same_data: each fine-tuned
architecture's search terms and test errors, each seed once), fits Eq. 4's alpha and beta on one
connection's points and measures Spearman and Kendall on each other connection's, beside alpha =
beta = 25, err_val alone and NASWOT (evaluation/naswot.py) on the same knowledge base, and writes
`study3_points.json` and `study3.md`. The recipe is the protocol's, fixed before the first run;
nothing here chooses by the test split.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = Path(os.environ.get("OUT", ROOT.parent / "studies" / "cpu_cifar10_inheritance"))
DOCS = ROOT / "docs" / "cpu_cifar10_inheritance"
SEEDS = (0, 1, 2)
HYBRID, ORIGINAL = "211", "111"  # allconv+vgg+vgg (the same-data study's least_squares pick), vgg_cifar
# (arm, genotype, init, epochs), in the order they run within a seed
ARMS = [
    ("H-inh-36", HYBRID, "inherited", 36),
    ("H-scratch-36", HYBRID, "scratch", 36),
    ("O-inh-36", ORIGINAL, "inherited", 36),
    ("O-scratch-36", ORIGINAL, "scratch", 36),
    ("H-inh-18", HYBRID, "inherited", 18),
    ("O-inh-18", ORIGINAL, "inherited", 18),
    ("H-inh-6", HYBRID, "inherited", 6),
    ("O-inh-6", ORIGINAL, "inherited", 6),
]
# The protocol's questions: (A, B) asks whether A beats B, each by the win rule
QUESTIONS = [
    ("H-inh-36", "H-scratch-36", "inherited weights against the same hybrid from scratch"),
    ("O-inh-36", "O-scratch-36", "inherited weights against the same original from scratch"),
    ("H-inh-6", "O-inh-6", "the hybrid against the original at 6 epochs"),
    ("H-inh-18", "O-inh-18", "the hybrid against the original at 18 epochs"),
    ("H-inh-36", "O-inh-36", "the hybrid against the original at 36 epochs"),
]
RECIPE = {"lr": 0.02, "cutout": 16, "batch_size": 128, "augment": True}  # the same-data study's fine-tuning
OVERRIDES = [
    "experiment=cpu_cifar10_same_data",
    "connection=least_squares",
    "trainer.precision=32-true",  # so machines agree: float32 everywhere, the knowledge base included
    "trainer.accelerator=cpu",
    "progress=false",
    "logger=none",
]


def compose(extra: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from modulenet.app.config import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return hydra_compose(config_name="search_app", overrides=OVERRIDES + extra)


def study1(args) -> None:
    import torch

    from modulenet import rundir
    from modulenet.app.jobs import finetune_datamodule
    from modulenet.finetune.network import save_network
    from modulenet.finetune.settings import FinetuneSettings
    from modulenet.finetune.stage import finetune_architecture
    from modulenet.rundir import write_atomic

    torch.set_num_threads(args.threads or torch.get_num_threads())
    cfg, kb, _ = same_data_knowledge_base(args.overrides)
    ft = cfg.finetune.copy()
    ft.update(RECIPE)
    dataset_config, datamodule = finetune_datamodule(cfg.dataset, ft)
    OUT.mkdir(parents=True, exist_ok=True)
    rows_path = OUT / "rows.json"
    rows = json.loads(rows_path.read_text()) if rows_path.is_file() else []
    done = {(r["arm"], r["seed"]) for r in rows}
    for seed in SEEDS:
        for arm, genotype, init, epochs in ARMS:
            if (arm, seed) in done:
                continue
            folder = OUT / f"{arm}-seed{seed}"
            settings = FinetuneSettings(
                **RECIPE,
                epochs=args.epochs or epochs,
                hidden=list(cfg.evaluator.hidden),
                pool=cfg.evaluator.pool,
                connection="least_squares",
                resolution=cfg.connection.resolution,
                precision="32-true",
                accelerator="cpu",
                seed=seed,
                init=init,
            )
            print(f"{time.strftime('%H:%M:%S')} {arm} seed {seed}: {epochs} epochs", flush=True)
            start = time.perf_counter()
            code = kb.parse_genotype(genotype)
            network, description = finetune_architecture(
                kb, code, datamodule, settings, progress=False, checkpoints=folder / rundir.CHECKPOINTS
            )
            save_network(folder, network, kb, {**description, "label": arm, "dataset": dataset_config})
            shutil.rmtree(folder / rundir.CHECKPOINTS, ignore_errors=True)
            rows.append(
                {
                    "arm": arm,
                    "genotype": genotype,
                    "architecture": description["architecture"],
                    "init": init,
                    "epochs": settings.epochs,
                    "seed": seed,
                    "val_error": description["val_error"],
                    "test_error": description["test_error"],
                    "seconds": round(time.perf_counter() - start, 1),
                    "knowledge_base_sha256": kb.weight_hashes(),
                    "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
                    "torch": torch.__version__,
                }
            )
            write_atomic(rows_path, json.dumps(rows, indent=2))
            print(f"  val {description['val_error']:.4f} test {description['test_error']:.4f}", flush=True)


def study1_report(args) -> None:
    """Every number of study1.md from rows.json and the saved predictions."""
    from modulenet import rundir
    from modulenet.finetune.network import read_predictions
    from modulenet.report.paired import mcnemar_of_predictions, wins

    source = Path(args.rows_from) if args.rows_from else OUT
    rows = json.loads((source / "rows.json").read_text())
    DOCS.mkdir(parents=True, exist_ok=True)
    (DOCS / "predictions").mkdir(exist_ok=True)
    for row in rows:  # the committed copy of each arm's predictions
        name = f"{row['arm']}-seed{row['seed']}.npz"
        found = source / f"{row['arm']}-seed{row['seed']}" / rundir.NETWORK_PREDICTIONS
        if found.is_file():
            shutil.copyfile(found, DOCS / "predictions" / name)
    (DOCS / "rows.json").write_text(json.dumps(rows, indent=2) + "\n")

    by_arm: dict[str, dict[int, dict]] = {}
    for row in rows:
        by_arm.setdefault(row["arm"], {})[row["seed"]] = row

    def predictions(arm: str, seed: int):
        return read_predictions(DOCS / "predictions" / f"{arm}-seed{seed}.npz")

    def pct(values: list[float]) -> str:
        if len(values) == 1:
            return f"{100 * values[0]:.2f} (1 seed)"
        return f"{100 * statistics.fmean(values):.2f} ± {100 * statistics.stdev(values):.2f}"

    lines = [
        "# Study 1: inheritance against training from scratch, by budget (generated from rows.json)",
        "",
        "Test error (%) on the 1017 `x_test` images, mean ± sd over the seeds that finished; validation",
        "error on the 1000 held-out `x_train` images beside it.",
        "",
        "| arm | architecture | weights at the start | epochs | seeds | val error (%) | test error (%) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for arm, _, init, _ in ARMS:
        runs = by_arm.get(arm, {})
        if not runs:
            lines.append(f"| {arm} | | {init} | | none yet | | |")
            continue
        first = next(iter(runs.values()))
        lines.append(
            f"| {arm} | {first['architecture']} | {init} | {first['epochs']} | {','.join(map(str, sorted(runs)))} | "
            f"{pct([r['val_error'] for r in runs.values()])} | {pct([r['test_error'] for r in runs.values()])} |"
        )
    lines += [
        "",
        "Paired McNemar tests, seed k against seed k (exact binomial on the discordant images): "
        "`only A` / `only B` are the images one arm alone classifies correctly. A beats B when its mean "
        "test error is lower and p < 0.05 in at least 2 of 3 pairings (the protocol's rule).",
        "",
        "| question | A | B | per seed: only A / only B, p | mean test error A - B (points) | verdict |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for a, b, question in QUESTIONS:
        seeds = sorted(set(by_arm.get(a, {})) & set(by_arm.get(b, {})))
        if not seeds:
            lines.append(f"| {question} | {a} | {b} | not run yet | | |")
            continue
        tests = [mcnemar_of_predictions(predictions(a, s), predictions(b, s)) for s in seeds]
        errors_a = [by_arm[a][s]["test_error"] for s in seeds]
        errors_b = [by_arm[b][s]["test_error"] for s in seeds]
        cells = "; ".join(f"seed {s}: {t.only_a} / {t.only_b}, p = {t.p_value:.3g}" for s, t in zip(seeds, tests))
        gap = 100 * (statistics.fmean(errors_a) - statistics.fmean(errors_b))
        if len(seeds) < len(SEEDS):
            verdict = f"undecided: {len(seeds)} of {len(SEEDS)} seed pairings"
        elif wins(errors_a, errors_b, tests):
            verdict = "A wins"
        elif wins(errors_b, errors_a, tests):
            verdict = "B wins"
        else:
            verdict = "no difference shown"
        lines.append(f"| {question} | {a} | {b} | {cells} | {gap:+.2f} | {verdict} |")
    machines = sorted({r["machine"] for r in rows})
    bases = sorted({json.dumps(r["knowledge_base_sha256"], sort_keys=True) for r in rows})
    hours = sum(r["seconds"] for r in rows) / 3600
    lines += [
        "",
        f"Machines: {'; '.join(machines)}. Knowledge bases: {len(bases)} distinct (sha256 of the modules' "
        f"tensors). Fine-tuning time: {hours:.2f} h in all.",
    ]
    (DOCS / "study1.md").write_text("\n".join(lines) + "\n")
    _figure(by_arm, DOCS / "study1.png")
    print("\n".join(lines))


def same_data_knowledge_base(extra: list[str]):
    """The same-data study's knowledge base (cached: built once by whichever study runs first), its
    least-squares and aligned stitches fitted, and the search's datamodule."""
    from modulenet.app.builders import make_datamodule, make_search_knowledge_base

    cfg = compose(extra)
    datamodule = make_datamodule(cfg.dataset)
    return cfg, make_search_knowledge_base(cfg, datamodule), datamodule


SAME_DATA = ROOT / "docs" / "cpu_cifar10_same_data"
CONNECTIONS = ("channel_pool", "aligned", "least_squares")


def same_data_points() -> list[dict]:
    """The same-data study's fine-tuned architectures per connection: their search terms (report.md's
    calibration table, from each search's evaluations.csv) and test error averaged over their distinct
    seeds (finetune_<c>.json and fig8_finetune_<c>.json; a seed fine-tuned in both is counted once)."""
    table = (SAME_DATA / "report.md").read_text().split("Architectures used:")[1]
    points = []
    for line in table.splitlines():
        if not line.startswith("| search-"):
            continue
        run, label, genotype, err_val, l_rate, sim = (cell.strip() for cell in line.split("|")[1:7])
        connection = run.removeprefix("search-")
        errors: dict[int, float] = {}
        for name in (f"finetune_{connection}.json", f"fig8_finetune_{connection}.json"):
            for row in json.loads((SAME_DATA / name).read_text())["results"]:
                if "".join(map(str, row["genotype"])) == genotype:
                    errors.setdefault(int(row["seed"]), row["test_error"])
        points.append(
            {
                "connection": connection,
                "label": label,
                "genotype": genotype,
                "err_val": float(err_val) / 100,
                "l_rate": float(l_rate),
                "sim": float(sim),
                "test_error": statistics.fmean(errors.values()),
                "seeds": sorted(errors),
            }
        )
    return points


def study3(args) -> None:
    """Which ranking predicts fine-tuned error, out of sample (study 3 of the protocol)."""
    from types import SimpleNamespace

    import torch

    from modulenet.evaluation.naswot import naswot_score
    from modulenet.report.calibration import calibrate
    from modulenet.report.correlation import kendall, spearman
    from modulenet.search.score import search_score

    points = same_data_points()
    cfg, kb, datamodule = same_data_knowledge_base(args.overrides)
    images = datamodule.search_tensors()[0]
    batch = images[torch.randperm(len(images), generator=torch.Generator().manual_seed(0))[:128]]
    for point in points:
        trunk = kb.assemble(point["genotype"], connection=point["connection"], resolution=cfg.connection.resolution)
        point["naswot"] = naswot_score(trunk, batch)
    DOCS.mkdir(parents=True, exist_ok=True)
    (DOCS / "study3_points.json").write_text(json.dumps(points, indent=2) + "\n")

    def ranks(group: list[dict], scores: list[float]) -> tuple[float, float]:
        errors = [p["test_error"] for p in group]
        return spearman(scores, errors), kendall(scores, errors)

    def eq4(group, alpha, beta):
        return [search_score(p["err_val"], p["l_rate"], p["sim"], alpha, beta) for p in group]

    by_connection = {c: [p for p in points if p["connection"] == c] for c in CONNECTIONS}
    fitted = {}
    for c, group in by_connection.items():
        run = SimpleNamespace(label=c, alpha=25.0, beta=25.0)
        result = calibrate([{**p, "run": run} for p in group], maximum=50.0, step=1.0)
        fitted[c] = (result.best_alpha, result.best_beta, result.ties)

    def cell(values: tuple[float, float]) -> str:
        return f"{values[0]:+.3f} ({values[1]:+.3f})"

    lines = [
        "# Study 3: which ranking predicts fine-tuned error, out of sample (generated)",
        "",
        "Points: the same-data study's fine-tuned architectures per connection (`study3_points.json`: search",
        "terms from its report, test error averaged over each architecture's distinct seeds). Spearman",
        "(Kendall) between each ranking and the test error; positive means the ranking puts the better",
        "network first. NASWOT is negated (a higher NASWOT ranks first). Never pooled across connections.",
        "",
        "Alpha and beta fitted on one connection's points (grid 0..50 step 1, highest Spearman; ties by",
        "Kendall, then the centre of the tied region):",
        "",
        "| fitted on | points | alpha | beta | grid points tied at the best Spearman |",
        "| --- | --- | --- | --- | --- |",
    ]
    for c in CONNECTIONS:
        alpha, beta, ties = fitted[c]
        lines.append(f"| {c} | {len(by_connection[c])} | {alpha:g} | {beta:g} | {ties} |")
    lines += [
        "",
        "| scored on | points | err_val alone | Eq. 4 at 25, 25 | NASWOT | "
        + " | ".join(f"Eq. 4 fitted on {c}" for c in CONNECTIONS)
        + " |",
        "| --- " * (5 + len(CONNECTIONS)) + "|",
    ]
    for c, group in by_connection.items():
        cells = [
            cell(ranks(group, eq4(group, 0, 0))),
            cell(ranks(group, eq4(group, 25, 25))),
            cell(ranks(group, [-p["naswot"] for p in group])),
        ]
        for f in CONNECTIONS:
            alpha, beta, _ = fitted[f]
            value = cell(ranks(group, eq4(group, alpha, beta)))
            cells.append(f"{value} (in sample)" if f == c else value)
        lines.append(f"| {c} | {len(group)} | " + " | ".join(cells) + " |")
    naswot_ok = all(ranks(g, [-p["naswot"] for p in g])[0] >= ranks(g, eq4(g, 0, 0))[0] for g in by_connection.values())
    lines += [
        "",
        f"NASWOT ranks at least as well as err_val on every connection's points: {'yes' if naswot_ok else 'no'} "
        "(the protocol's condition for offering it as a search objective).",
        f"NASWOT over one mini-batch of 128 training images (seed 0) of the frozen trunk with its inherited "
        f"weights; knowledge base sha256 {json.dumps(kb.weight_hashes(), sort_keys=True)}.",
    ]
    (DOCS / "study3.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def _figure(by_arm: dict, path: Path) -> None:
    """Test error against the fine-tuning budget: inherited hybrid and original as lines (mean, each
    seed a dot), the 36-epoch scratch controls as open markers."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4), layout="constrained")
    FigureCanvasAgg(fig)
    axis = fig.subplots()
    for prefix, name, colour in (("H", "hybrid 211", "tab:red"), ("O", "original vgg_cifar 111", "tab:blue")):
        budgets = [b for b in (6, 18, 36) if by_arm.get(f"{prefix}-inh-{b}")]
        means = [100 * statistics.fmean(r["test_error"] for r in by_arm[f"{prefix}-inh-{b}"].values()) for b in budgets]
        axis.plot(budgets, means, "-o", color=colour, label=f"{name}, inherited")
        for b in budgets:
            errors = [100 * r["test_error"] for r in by_arm[f"{prefix}-inh-{b}"].values()]
            axis.scatter([b] * len(errors), errors, color=colour, s=10, alpha=0.5)
        scratch = by_arm.get(f"{prefix}-scratch-36", {})
        if scratch:
            errors = [100 * r["test_error"] for r in scratch.values()]
            axis.scatter([36] * len(errors), errors, facecolors="none", edgecolors=colour, s=40)
            axis.scatter([36], [statistics.fmean(errors)], marker="s", facecolors="none", edgecolors=colour,
                         s=80, label=f"{name}, from scratch")  # fmt: skip
    axis.set_xlabel("fine-tuning epochs")
    axis.set_ylabel("test error (%)")
    axis.set_xticks([6, 18, 36])
    axis.legend(fontsize=8)
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=list(STEPS))
    parser.add_argument("overrides", nargs="*", help="Hydra overrides (a smoke run: knowledge_base.train_epochs=1)")
    parser.add_argument("--epochs", type=int, default=0, help="every arm this many epochs (smoke runs only)")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--rows-from", default="", help="study1-report: the run folder (default $OUT)")
    args = parser.parse_args(argv)
    STEPS[args.step](args)


STEPS = {"study1": study1, "study1-report": study1_report, "study3": study3}

if __name__ == "__main__":
    sys.exit(main())
