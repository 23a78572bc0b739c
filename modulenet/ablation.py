"""Ablation of the parameter-free connections (Sec. V-C, Fig. 10).

The architectures of a finished search (all generations' populations, Algorithm 1's search
path) are evaluated again with a trainable 1x1 convolution between each module (the paper's
reading; `connection="conv1x1_where_needed"`: only where neighbouring modules disagree in
channels), everything else unchanged. The search's own validation accuracy (ChP /
ChDP) beside the 1x1 one, and their rank correlation, show whether parameter-free connections
keep the search's power to tell architectures apart.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

from modulenet.correlation import kendall, spearman
from modulenet.evaluate import EvaluationSettings, Evaluator
from modulenet.genotype import format_genotype
from modulenet.knowledge.base import KnowledgeBase
from modulenet.search import read_evaluations_csv, search_path

log = logging.getLogger(__name__)

ABLATION_FILE = "ablation_connections.json"


def connection_ablation(kb: KnowledgeBase, data, num_classes: int, settings: EvaluationSettings, run_dir: Path,
                        max_architectures: int = 40, progress: bool = True, connection: str = "conv1x1") -> dict:
    """Writes `ablation_connections.json` into the search run `run_dir` and returns it. The 1x1
    evaluations are memoised in `ablation_evaluations.jsonl`, so a killed ablation resumes."""
    run_dir = Path(run_dir)
    results = json.loads((run_dir / "results.json").read_text())
    evaluated = {row["genotype"]: row for row in read_evaluations_csv(run_dir / "evaluations.csv")
                 if row["status"] == "ok"}
    codes = search_path(results, {code: row["score"] for code, row in evaluated.items()}, max_architectures)
    rows = [evaluated[code] for code in codes]
    log.info("connection ablation (Fig. 10): %d architectures with 1x1 convolutions", len(codes))
    conv = Evaluator(kb, data, num_classes, replace(settings, connection=connection),
                     memo_path=run_dir / "ablation_evaluations.jsonl", progress=progress)
    with_params = conv(codes)
    out_rows = [{"genotype": list(code), "genotype_str": format_genotype(code),
                 "val_acc_channel_pool": 1.0 - row["err_val"], "val_acc_conv1x1": 1.0 - e.err_val,
                 "score": row["score"]}
                for code, row, e in zip(codes, rows, with_params) if e.status == "ok"]
    a = [r["val_acc_channel_pool"] for r in out_rows]
    b = [r["val_acc_conv1x1"] for r in out_rows]
    result = {"connection_a": settings.connection, "connection_b": connection, "rows": out_rows,
              "spearman": spearman(a, b) if len(out_rows) >= 2 else float("nan"),
              "kendall": kendall(a, b) if len(out_rows) >= 2 else float("nan")}
    (run_dir / ABLATION_FILE).write_text(json.dumps(result, indent=2))
    log.info("connection ablation: Spearman %.3f, Kendall %.3f over %d architectures",
             result["spearman"], result["kendall"], len(out_rows))
    return result
