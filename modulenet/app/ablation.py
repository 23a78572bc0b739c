"""Ablation of the parameter-free connections (Sec. V-C, Fig. 10).

The architectures of a finished search (all generations' populations, Algorithm 1's search
path) are evaluated again with other connections, everything else unchanged: the paper's
trainable 1x1 convolution between each module (`conv1x1`; `conv1x1_where_needed` only where
neighbouring modules disagree in channels) and, beyond the paper, the connections fitted from
data (`aligned`, `least_squares`). The search's own validation accuracy (ChP / ChDP) beside
each, and their rank correlations, show whether parameter-free connections keep the search's
power to tell architectures apart.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from modulenet import rundir
from modulenet.evaluation.evaluator import Evaluator
from modulenet.evaluation.settings import EvaluationSettings
from modulenet.genotype import format_genotype
from modulenet.knowledge.base import KnowledgeBase
from modulenet.report.correlation import kendall, spearman
from modulenet.rundir import read_evaluations, read_results, write_atomic
from modulenet.search.outputs import search_path

log = logging.getLogger(__name__)


def connection_ablation(
    kb: KnowledgeBase,
    datamodule,
    settings: EvaluationSettings,
    run_dir: Path,
    max_architectures: int = 40,
    progress: bool = True,
    compare: Sequence[str] = ("conv1x1",),
) -> dict:
    """Writes `ablation_connections.json` into the search run `run_dir` and returns it: for each
    architecture of the search path, its validation accuracy with the search's connection
    (`val_acc_<connection>`, from the search) and with each connection in `compare` (fitted ones
    need `kb.fit_connections` first), and each one's rank correlation with the search's. The
    evaluations are memoised in `ablation_evaluations.jsonl`, so a killed ablation resumes.
    `datamodule`: the search's (its search tensors and number of classes)."""
    run_dir = Path(run_dir)
    results = read_results(run_dir)
    evaluated = {row["genotype"]: row for row in read_evaluations(run_dir) if row["status"] == "ok"}
    codes = search_path(results, {code: row["score"] for code, row in evaluated.items()}, max_architectures)
    base = f"val_acc_{settings.connection}"
    rows = {
        code: {
            "genotype": list(code),
            "genotype_str": format_genotype(code),
            "score": evaluated[code]["score"],
            base: 1.0 - evaluated[code]["err_val"],
        }
        for code in codes
    }
    for connection in compare:
        log.info("connection ablation (Fig. 10): %d architectures with %s", len(codes), connection)
        evaluator = Evaluator(
            kb,
            datamodule.search_tensors(),
            datamodule.num_classes,
            replace(settings, connection=connection),
            memo_path=run_dir / "ablation_evaluations.jsonl",
            progress=progress,
        )
        for code, e in zip(codes, evaluator(codes)):
            if e.status == "ok":
                rows[code][f"val_acc_{connection}"] = 1.0 - e.err_val
    keys = [base, *(f"val_acc_{c}" for c in compare)]
    out_rows = [row for row in rows.values() if all(k in row for k in keys)]
    correlations = {c: _correlation(out_rows, settings.connection, c) for c in compare}
    first = compare[0]
    result = {
        "connection_a": settings.connection,
        "connection_b": first,
        "compared": list(compare),
        "rows": out_rows,
        "spearman": correlations[first]["spearman"],
        "kendall": correlations[first]["kendall"],
        "correlations": correlations,
    }
    write_atomic(run_dir / rundir.ABLATION, json.dumps(result, indent=2))
    return result


def _correlation(rows: list[dict], searched: str, other: str) -> dict:
    """Spearman and Kendall between the validation accuracies with the search's connection and `other`'s."""
    a, b = [r[f"val_acc_{searched}"] for r in rows], [r[f"val_acc_{other}"] for r in rows]
    enough = len(rows) >= 2
    found = {
        "spearman": spearman(a, b) if enough else float("nan"),
        "kendall": kendall(a, b) if enough else float("nan"),
    }
    log.info(
        "connection ablation: %s vs %s, Spearman %.3f, Kendall %.3f over %d architectures",
        searched,
        other,
        found["spearman"],
        found["kendall"],
        len(rows),
    )
    return found
