"""modulenet-report: run directories written by the real writers, the report read back.

Search runs come from `run_search` with a deterministic pure-Python `evaluate` (this tests the
report, not evaluation); finetune.json and ablation_connections.json are written by hand in
their documented formats. Rank correlations are checked against hand-computed values.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from modulenet.app.cli import report_main
from modulenet.errors import ModuleNetError
from modulenet.report import PAPER_TABLES, calibrate, dataset_key, load_runs, paper_table_for, write_report
from modulenet.report.calibration import calibration_points
from modulenet.report.correlation import kendall, spearman, spearman_rows
from modulenet.rundir import read_evaluations
from modulenet.search import SearchConfig, SearchSpace, run_search
from modulenet.search.records import Evaluation
from modulenet.search.score import search_score, similarity

BIN = Path(sys.executable).parent
ARCHS = ["resnet34", "vgg16_bn", "resnet50"]
N, C = len(ARCHS), 4
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# --------------------------------------------------------------------------- correlations


def test_spearman_and_kendall_match_hand_computed_values():
    # one swap in each half: d = (-1, 1, -1, 1, 0), rho = 1 - 6*4/(5*24) = 0.8; 8 concordant, 2 discordant
    assert spearman([1, 2, 3, 4, 5], [2, 1, 4, 3, 5]) == pytest.approx(0.8)
    assert kendall([1, 2, 3, 4, 5], [2, 1, 4, 3, 5]) == pytest.approx(0.6)
    # ties in x: ranks (1, 2.5, 2.5, 4) vs (1, 3, 2, 4): rho = 4.5 / sqrt(4.5 * 5) = 3 / sqrt(10);
    # 5 concordant pairs, 0 discordant, 1 pair tied in x: tau_b = 5 / sqrt(5 * 6)
    assert spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(3 / math.sqrt(10))
    assert kendall([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(5 / math.sqrt(30))
    # reversed order, monotone but not linear
    assert spearman([1, 2, 3, 4], [16, 9, 4, 1]) == pytest.approx(-1.0)
    assert kendall([1, 2, 3, 4], [16, 9, 4, 1]) == pytest.approx(-1.0)
    rows = [[1, 2, 3, 4], [16, 9, 4, 1], [1, 2, 2, 3], [5, 5, 5, 5]]
    rho = spearman_rows(rows, [1, 3, 2, 4])  # the calibration grid's vectorised form agrees
    assert rho[:3] == pytest.approx([spearman(r, [1, 3, 2, 4]) for r in rows[:3]]) and math.isnan(rho[3])
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3])) and math.isnan(kendall([1, 1, 1], [1, 2, 3]))
    with pytest.raises(ValueError):
        spearman([1, 2], [1, 2, 3])
    with pytest.raises(ValueError):
        kendall([1], [1])


# --------------------------------------------------------------------------- fake runs


def formula(code) -> tuple[float, float, float]:
    """err_val, l_rate, sim of a genotype: deterministic, varied, no ties by construction."""
    rng = np.random.default_rng(1000 + int("".join(map(str, code)), N))  # the genotype read in base n
    err = 0.15 + 0.5 * float(rng.random())
    l_rate = 0.2 + 0.7 * float(rng.random())
    return err, l_rate, similarity(code)


def make_evaluate(alpha: float, beta: float):
    def evaluate(codes):
        out = []
        for code in codes:
            err, l_rate, sim = formula(code)
            out.append(
                Evaluation(
                    code,
                    search_score(err, l_rate, sim, alpha, beta),
                    err,
                    l_rate,
                    sim,
                    epoch_losses=[1.0, 1.0 - l_rate],
                    params=1000 + sum(code),
                    flops=10 * sum(code),
                    seconds=0.01,
                )
            )
        return out

    return evaluate


def write_config(
    run_dir: Path,
    alpha: float,
    beta: float,
    name: str = "craft_cifar100",
    target: str = "modulenet.data.CIFAR100DataModule",
) -> None:
    (run_dir / "config_resolved.yaml").write_text(
        f"name: {name}\ndataset:\n  _target_: {target}\n  root: data\nknowledge_base:\n  archs: {json.dumps(ARCHS)}\n"
        f"connection:\n  name: channel_pool\nsearch:\n  alpha: {alpha}\n  beta: {beta}\n  generations: 4\n"
        "  population_size: 6\nseed: 0\n"
    )


def make_search(run_dir: Path, alpha: float, beta: float, seed: int) -> None:
    config = SearchConfig(
        generations=4, population_size=6, seed=seed, initial_genotypes=[(i,) * C for i in range(N)]
    )  # the originals, as the README's recipe
    run_search(SearchSpace(N, C, ARCHS), make_evaluate(alpha, beta), config, run_dir)
    write_config(run_dir, alpha, beta)


def write_finetune(ft_dir: Path, search_dir: Path, rows: list[dict], cutout: int = 16) -> None:
    ft_dir.mkdir(parents=True)
    payload = {
        "settings": {"top_k": 3, "include_originals": True, "epochs": 50, "seed": 0},
        "search_run": str(search_dir),
        "results": rows,
    }
    (ft_dir / "finetune.json").write_text(json.dumps(payload, indent=2))
    (ft_dir / "config_resolved.yaml").write_text(
        f"search_run: {search_dir}\nfinetune:\n  epochs: 50\n  cutout: {cutout}\nname: finetune\n"
    )


def row(label, code, test_error, search_score_=None):
    return {
        "label": label,
        "genotype": list(code),
        "architecture": "+".join(ARCHS[i] for i in code),
        "test_error": test_error,
        "search_score": search_score_,
        "epochs": 50,
        "seconds": 1.0,
    }


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    sweep = root / "multirun" / "craft_cifar100" / "2024-01-01_00-00-00-000000"
    make_search(sweep / "0", 25.0, 25.0, seed=0)
    make_search(sweep / "1", 10.0, 30.0, seed=1)
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    evaluations = read_evaluations(sweep / "0", C)
    top = sorted(
        ((e["genotype"], e["score"]) for e in evaluations if len(set(e["genotype"])) > 1), key=lambda kv: kv[1]
    )[:3]  # the final population may have converged to one genotype
    searched = [
        row(f"ModuleNet #{k + 1}", code, [0.1750, 0.1890, 0.2050][k], score) for k, (code, score) in enumerate(top)
    ]
    originals = [
        row("resnet34", (0,) * C, 0.2410),
        row("vgg16_bn", (1,) * C, 0.3012),
        row("resnet50", (2,) * C, 0.2350),
    ]
    ft = root / "outputs" / "finetune" / "ft0"
    write_finetune(ft, sweep / "0", searched + originals)
    # Fig. 10: both connections' validation accuracy for the evaluated architectures
    acc_a = [0.91, 0.88, 0.86, 0.80, 0.77, 0.75]
    acc_b = [0.90, 0.85, 0.87, 0.79, 0.70, 0.74]
    ablation = {
        "connection_a": "channel_pool",
        "connection_b": "conv1x1",
        "rows": [
            {
                "genotype": list(e["genotype"]),
                "genotype_str": "".join(map(str, e["genotype"])),
                "val_acc_channel_pool": a,
                "val_acc_conv1x1": b,
                "score": e["score"],
            }
            for e, a, b in zip(evaluations, acc_a, acc_b)
        ],
        "spearman": spearman(acc_a, acc_b),
        "kendall": kendall(acc_a, acc_b),
    }
    (sweep / "0" / "ablation_connections.json").write_text(json.dumps(ablation))
    return SimpleNamespace(root=root, sweep=sweep, ft=ft, searched=searched, originals=originals, acc=(acc_a, acc_b))


def assert_png(path: Path) -> None:
    from matplotlib.image import imread

    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 2000, path
    image = imread(path)
    assert image.shape[0] > 50 and image.shape[1] > 50 and image.std() > 0, path


# --------------------------------------------------------------------------- the report


def test_report_fills_the_papers_tables_and_draws_every_figure(runs, tmp_path):
    report = write_report([runs.sweep, runs.ft], tmp_path / "report")
    text = report.path.read_text()
    names = {p.name for p in report.figures}
    assert names == {
        "score_curves.png",
        "new_survival.png",
        "architecture_craft_cifar100_0.png",
        "architecture_craft_cifar100_1.png",
        "fig8_ft0.png",
        "fig10_craft_cifar100_0.png",
        "sweep_alpha_beta.png",
    }
    for path in report.figures:
        assert path.parent == tmp_path / "report"
        assert_png(path)
        assert f"]({path.name})" in text, f"{path.name} is linked from report.md"

    # runs summary: both sweep jobs with their alpha / beta and n, c, |Omega|
    summary = [line for line in text.splitlines() if line.startswith("| craft_cifar100#")]
    assert len(summary) >= 2
    assert "| 25 | 25 |" in summary[0] and "| 10 | 30 |" in text
    assert f"| cifar100 | {N} | {C} | {N**C} |" in summary[0]

    # Table I (CIFAR-100): the measured number next to the paper's, row by row
    assert PAPER_TABLES["I"].caption in text
    lines = text.splitlines()
    best_searched = next(line for line in lines if line.startswith("| ModuleNet #1 |"))
    assert "| 17.50 |" in best_searched and "ModuleNet (Ours) + cutout | 15.87 |" in best_searched
    assert "| 23.50 | Best for ResNets + cutout | 22.97 |" in next(
        line for line in lines if line.startswith("| resnet50 |")
    )
    assert "| 30.12 | Best for VGGs + cutout | 28.27 |" in next(
        line for line in lines if line.startswith("| vgg16_bn |")
    )
    assert "| 24.10 | — (no paper row) | — |" in next(line for line in lines if line.startswith("| resnet34 |"))
    assert "| ModuleNet #2 |" in text and "| 18.90 | — (no paper row) |" in text

    # Fig. 8: every fine-tuned architecture has a score (originals from evaluations.csv): rank correlation
    evaluations = {e["genotype"]: e["score"] for e in read_evaluations(runs.sweep / "0", C)}
    rows = runs.searched + runs.originals
    scores = [r["search_score"] if r["search_score"] is not None else evaluations[tuple(r["genotype"])] for r in rows]
    errors = [r["test_error"] for r in rows]
    assert f"Spearman ρ = {spearman(scores, errors):.3f}, Kendall τ = {kendall(scores, errors):.3f}" in text
    assert "6 fine-tuned architectures with a search score" in text

    # Fig. 10: the ablation's rank correlation
    acc_a, acc_b = runs.acc
    assert f"Spearman ρ = {spearman(acc_a, acc_b):.3f}, Kendall τ = {kendall(acc_a, acc_b):.3f}" in text

    # alpha/beta sweep: one run without a fine-tune run, so the map falls back to err_val
    assert "## α/β sweep" in text and "validation error err_val of the best-score genotype" in text
    assert "| 17.50 |" in next(line for line in lines if line.startswith("| craft_cifar100#0 | 25 | 25 |"))

    # Fig. 9: new survival of generation 1 is the whole distinct initial population
    history = json.loads((runs.sweep / "0" / "results.json").read_text())["history"]
    assert ", ".join(str(r["new_survival"]) for r in history) in text
    assert "Calibration" not in text  # only with calibrate=true


def test_populations_key_and_table_selection(runs, tmp_path):
    import shutil

    run = tmp_path / "search"
    shutil.copytree(runs.sweep / "1", run)
    results = json.loads((run / "results.json").read_text())
    results["populations"] = [["0000", "1111", "0000"], ["0000", "2222"], ["2222", "0120"]]
    (run / "results.json").write_text(json.dumps(results))
    write_config(run, 10, 30, name="quick", target="modulenet.data.QuickstartDataModule")
    ft = tmp_path / "ft"
    write_finetune(ft, run, [row("ModuleNet #1", (0, 1, 2, 0), 0.3), row("resnet34", (0,) * C, 0.4)])
    report = write_report([ft], tmp_path / "out")  # the search run is found through the fine-tune run
    text = report.path.read_text()
    assert "| search | 2, 1, 1 |" in text  # populations: {0000,1111}, +2222, +0120
    assert "No table of the paper matches this run (dataset quickstart" in text
    assert "22.97" not in text and "| 30.00 |" in text

    assert dataset_key({"_target_": "modulenet.data.NpzDataModule", "path": "/s/data/cifar10-partial.npz"}) == "cifar10"
    assert dataset_key({"_target_": "modulenet.data.CIFAR100DataModule"}) == "cifar100"
    assert dataset_key({"_target_": "modulenet.data.ImageFolderDataModule", "root": "data/imagenet"}) == "imagenet"
    assert paper_table_for("cifar10", ARCHS).key == "II"
    assert paper_table_for("cifar10", ["darts_v2", "pdarts", "pc_darts_cifar"]).key == "III"
    assert paper_table_for("imagenet", ["vgg13_bn", "resnet50"]).key == "IV"
    assert paper_table_for("quickstart", ARCHS) is None


def test_table_two_and_four_rows(tmp_path):
    """CIFAR-10 picks Table II's cutout row; ImageNet matches the hybrid VGG13bn+ResNet-50 row."""
    from modulenet.report import FinetuneRun, SearchRun, finetune_section

    def search(target, archs, **dataset):
        return SearchRun(
            tmp_path,
            {
                "best": {"genotype": [0] * 5},
                "history": [],
                "arch_names": archs,
                "num_archs": len(archs),
                "num_cells": 5,
            },
            [],
            {"dataset": {"_target_": target, **dataset}},
        )

    cifar = FinetuneRun(
        tmp_path,
        {"epochs": 50},
        [row("ModuleNet #1", (1, 0, 0, 0), 0.0590)],
        {"finetune": {"cutout": 16}},
        search=search("modulenet.data.CIFAR10DataModule", ARCHS),
    )
    text = "\n".join(finetune_section(cifar))
    assert (
        "| 5.90 | ModuleNet (Ours) + cutout | 4.64 |" in text
        and "| (not measured) |  |  | — | ModuleNet (Ours) | 5.81 |" in text
    )
    seeds = [{**row("ModuleNet #1", (1, 0, 0, 0), e), "seed": k} for k, e in enumerate((0.0590, 0.0610))]
    cifar.results = seeds  # two fine-tuning seeds: one row each, told apart
    text = "\n".join(finetune_section(cifar))
    assert "| ModuleNet #1 (seed 0) |" in text and "| ModuleNet #1 (seed 1) |" in text

    darts = ["darts_v2", "pdarts", "pc_darts_cifar", "pc_darts_image"]
    rows = [
        {"label": "ModuleNet #1", "genotype": [0, 1, 1, 2, 3], "architecture": "", "test_error": 0.0281},
        {"label": "darts_v2", "genotype": [0] * 5, "architecture": "", "test_error": 0.0295},
        {"label": "pc_darts_image", "genotype": [3] * 5, "architecture": "", "test_error": 0.0302},
    ]
    nas = FinetuneRun(tmp_path, {}, rows, {}, search=search("modulenet.data.CIFAR10DataModule", darts))
    text = "\n".join(finetune_section(nas))
    assert "Table III" in text and "| 2.81 | ModuleNet (Ours) + cutout | 2.77 |" in text
    assert "| 2.95 | DARTSv2 + cutout | 2.86 |" in text and "| 3.02 | PC-DARTS-image + cutout | 2.8 |" in text
    assert "| (not measured) |  |  | — | PDARTS + cutout | 2.91 |" in text and "differs from the paper" not in text

    archs = ["vgg13_bn", "resnet50", "resnet101"]
    rows = [
        {
            "label": "ModuleNet #1",
            "genotype": [0, 1, 1, 1, 1],
            "architecture": "",
            "test_error": 0.2301,
            "test_error_top5": 0.065,
        },
        {"label": "resnet50", "genotype": [1] * 5, "architecture": "", "test_error": 0.2410, "test_error_top5": 0.071},
    ]
    imagenet = FinetuneRun(
        tmp_path, {}, rows, {}, search=search("modulenet.data.ImageFolderDataModule", archs, root="data/imagenet")
    )
    text = "\n".join(finetune_section(imagenet))
    assert "| 23.01 / 6.50 | VGG13bn+ResNet-50 | 22.744 / 6.396 |" in text
    assert "| 24.10 / 7.10 | ResNet-50 | 23.85 / 7.13 |" in text

    # The ModuleNet row is the one selected by validation error, never the lowest test error.
    rows = [
        {
            "label": "ModuleNet #1",
            "genotype": [1, 0, 0, 0],
            "architecture": "",
            "test_error": 0.0590,
            "val_error": 0.061,
            "selected": True,
            "validated_on": "val",
        },
        {
            "label": "ModuleNet #2",
            "genotype": [2, 0, 0, 0],
            "architecture": "",
            "test_error": 0.0500,
            "val_error": 0.070,
            "selected": False,
            "validated_on": "val",
        },
    ]
    chosen = FinetuneRun(
        tmp_path,
        {"epochs": 50},
        rows,
        {"finetune": {"cutout": 16}},
        search=search("modulenet.data.CIFAR10DataModule", ARCHS),
    )
    text = "\n".join(finetune_section(chosen))
    assert "| ModuleNet #1 (selected by validation error) |" in text
    assert "| 5.90 | ModuleNet (Ours) + cutout | 4.64 |" in text and "| 5.00 | — (no paper row) |" in text
    for r in rows:
        del r["selected"]
    assert "| 5.90 | ModuleNet (Ours) + cutout |" in "\n".join(finetune_section(chosen))  # by val_error alone
    for r in rows:
        r["validated_on"] = "test"
    assert "no separate validation split" in "\n".join(finetune_section(chosen))


# --------------------------------------------------------------------------- calibration


def synthetic_points(n: int = 40, alpha: float = 10.0, beta: float = 30.0):
    """Test error a monotone (non-linear) function of Eq. 4's score at (alpha, beta)."""
    rng = np.random.default_rng(7)
    run = SimpleNamespace(label="synthetic", alpha=25.0, beta=25.0)
    points = []
    for k in range(n):
        code = tuple(int(i) for i in rng.integers(0, N, C))
        err, l_rate = 0.1 + 0.6 * float(rng.random()), float(rng.random())
        sim = similarity(code)
        score = search_score(err, l_rate, sim, alpha, beta)
        points.append(
            {
                "label": f"#{k}",
                "genotype": code,
                "err_val": err,
                "l_rate": l_rate,
                "sim": sim,
                "test_error": 0.02 + 0.5 / (1 + math.exp(-score / 10)),
                "run": run,
            }
        )
    return points


def test_calibration_recovers_the_weights_that_made_the_test_error():
    points = synthetic_points()
    result = calibrate(points, maximum=50, step=1)
    assert (result.best_alpha, result.best_beta) == (10.0, 30.0)
    assert result.best_rho == pytest.approx(1.0) and result.best_kendall == pytest.approx(1.0)
    assert result.rho.shape == (51, 51) and result.rho[10, 30] == pytest.approx(1.0)
    assert result.ties == 1, "the synthetic data pin the weights down to one grid point"
    ((label, a, b, rho),) = result.own
    assert (label, a, b) == ("synthetic", 25.0, 25.0) and rho < 1.0
    with pytest.raises(ValueError, match="at least 3"):
        calibrate(points[:2])


def test_calibrate_true_in_the_report(runs, tmp_path):
    """Fine-tuned test error built monotone in the score at the run's own (10, 30): rho = 1 there and at the
    calibrated point; with fewer than 3 matched architectures the report says so instead."""
    search = runs.sweep / "1"
    evaluations = read_evaluations(search, C)
    rows = [row(f"ModuleNet #{k + 1}", e["genotype"], 0.05 + 0.01 * e["score"]) for k, e in enumerate(evaluations)]
    ft = tmp_path / "ft_all"
    write_finetune(ft, search, rows)
    report = write_report([ft], tmp_path / "out", calibrate_weights=True)
    text = report.path.read_text()
    c = report.calibration
    assert c is not None and len(c.points) == len(evaluations) >= 8
    assert c.best_rho == pytest.approx(1.0)
    ((label, a, b, rho),) = c.own
    assert (a, b) == (10.0, 30.0) and rho == pytest.approx(1.0)
    assert c.rho[10, 30] == pytest.approx(1.0)
    assert f"**Best: α = {c.best_alpha:g}, β = {c.best_beta:g}, Spearman ρ = 1.000" in text
    assert "| run craft_cifar100#1 (its own) | 10 | 30 | 1.000 |" in text
    assert_png(tmp_path / "out" / "calibration_rho.png")

    few = tmp_path / "ft_few"
    write_finetune(few, search, rows[:2])
    text = write_report([few], tmp_path / "out_few", calibrate_weights=True).path.read_text()
    assert "Calibration needs at least 3 fine-tuned architectures" in text
    assert not (tmp_path / "out_few" / "calibration_rho.png").exists()


# --------------------------------------------------------------------------- bad input and the console script


def test_bad_input_is_a_module_net_error(runs, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModuleNetError, match="no runs"):
        write_report([], tmp_path / "out")
    with pytest.raises(ModuleNetError, match="does not exist"):
        write_report([tmp_path / "nowhere"], tmp_path / "out")
    with pytest.raises(ModuleNetError, match="is not a run: it has no results.json"):
        write_report([tmp_path / "empty"], tmp_path / "out")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "results.json").write_text("{not json")
    with pytest.raises(ModuleNetError, match="unreadable"):
        write_report([tmp_path / "broken"], tmp_path / "out")


@pytest.mark.parametrize("runs_arg", ["runs=[{}]", "runs={}"])  # a list, or one run without brackets
def test_bad_path_at_the_command_line_is_one_line_without_traceback(runs_arg, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(
        sys,
        "argv",
        ["modulenet-report", runs_arg.format(tmp_path / "nowhere"), "logger=none", f"hydra.run.dir={tmp_path / 'r'}"],
    )
    with pytest.raises(SystemExit) as exit_info:
        report_main()
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines == [f"error: run {tmp_path / 'nowhere'} does not exist"]


def test_console_script_writes_the_report(runs, tmp_path):
    out = tmp_path / "report"
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    proc = subprocess.run(
        [
            str(BIN / "modulenet-report"),
            f"runs=[{runs.sweep},{runs.ft}]",
            f"output={out}",
            "calibrate=true",
            "title=Sweep report",
            f"hydra.run.dir={tmp_path / 'hydra'}",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == str(out / "report.md")
    text = (out / "report.md").read_text()
    assert text.startswith("# Sweep report") and "15.87" in text and "| 17.50 |" in text
    assert "## Calibration of α, β" in text and (out / "calibration_rho.png").is_file()
    assert not (out / "wandb").exists(), "logger.mode=auto logs nothing when no given run was online"


def test_figures_go_to_an_offline_wandb_run_when_asked(runs, tmp_path):
    from modulenet.report import log_report_to_wandb

    report = write_report([runs.ft], tmp_path / "out")
    assert (
        log_report_to_wandb(report, {"_target_": "modulenet.tracking.WandbTracker", "mode": "auto"}, tmp_path / "out")
        is None
    )
    assert log_report_to_wandb(report, {"name": "none", "mode": "offline"}, tmp_path / "out") is None
    assert (
        log_report_to_wandb(
            report, {"_target_": "modulenet.tracking.WandbTracker", "mode": "offline"}, tmp_path / "out"
        )
        == "offline"
    )
    (offline,) = (tmp_path / "out" / "wandb").glob("offline-run-*")
    import re

    logged = {re.sub(r"_\d+_[0-9a-f]+$", "", p.stem) for p in offline.rglob("*.png")}  # <key>_<step>_<hash>.png
    assert logged == {p.stem for p in report.figures}


def test_a_damaged_evaluations_csv_or_finetune_json_is_reported_row_by_row(runs, tmp_path, caplog):
    """Issue 25: a run's evaluations.csv cut mid-line (a kill) and finetune.json rows without their
    numbers: the report is written from what can be read, and a warning names each skipped row."""
    import shutil

    search = tmp_path / "search"
    shutil.copytree(runs.sweep / "0", search)
    csv_path = search / "evaluations.csv"
    lines = csv_path.read_text().splitlines()
    csv_path.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][: len(lines[-1]) // 3])  # the last row cut short
    ft = tmp_path / "ft"
    shutil.copytree(runs.ft, ft)
    data = json.loads((ft / "finetune.json").read_text())
    data["search_run"] = str(search)
    del data["results"][1]["test_error"]
    data["results"][2]["test_error"] = "n/a"
    (ft / "finetune.json").write_text(json.dumps(data))
    with caplog.at_level("WARNING"):
        report = write_report([search, ft], tmp_path / "report")
    assert report.path.is_file()
    assert f"{csv_path}: skipped 1 damaged row(s): line {len(lines)} (cut short" in caplog.text
    assert "skipped 2 damaged result(s): result 2 (no test_error); result 3 (test_error 'n/a' is not a number)" in (
        caplog.text
    )


def test_a_genotype_fine_tuned_twice_with_one_seed_counts_that_seed_once(runs, tmp_path):
    """The population's fine-tune (seeds 0 and 1) and a Fig. 8 run (seed 0) of one search: seed 0 is
    the same network twice, so the point's test error is the mean over seeds {0, 1}, not {0, 1, 0}."""
    search = runs.sweep / "1"
    code = read_evaluations(search, C)[0]["genotype"]
    population, fig8 = tmp_path / "population", tmp_path / "fig8"
    write_finetune(population, search, [{**row("ModuleNet #1", code, 0.30), "seed": 0},
                                         {**row("ModuleNet #1", code, 0.40), "seed": 1}])  # fmt: skip
    write_finetune(fig8, search, [{**row("ModuleNet #1", code, 0.30), "seed": 0}])
    (point,) = calibration_points(load_runs([population, fig8]).finetune)
    assert point["test_error"] == pytest.approx(0.35)
