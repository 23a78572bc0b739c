"""`modulenet-report`: the paper's tables and figures (Sec. IV-V) filled with this project's numbers.

Inputs are finished run directories: search runs (`results.json`, `evaluations.csv`,
`config_resolved.yaml`, optionally `ablation_connections.json`), fine-tune runs
(`finetune.json`), or multirun sweep directories whose numbered subdirectories are runs.
Outputs, in one directory: `report.md` and its PNG figures

- `score_curves.png`: population min / mean and best-so-far score per generation, one colour per run;
- `new_survival.png`: new survival per generation, every run in one plot (Fig. 9);
- `architecture_<run>.png`: the best genotype as c coloured modules (Figs. 5-7);
- `fig8_<finetune run>.png`: search score vs fine-tuned test error, Spearman and Kendall (Fig. 8);
- `fig10_<run>.png`: parameter-free vs 1x1-conv connections, validation accuracy (Fig. 10);
- `sweep_alpha_beta.png`: best fine-tuned (else validation) error per (alpha, beta) of a sweep;
- `calibration_rho.png` (`calibrate=true`): Spearman(score, test error) over an (alpha, beta) grid.

The paper's own numbers (Tables I-IV) are data here (`PAPER_TABLES`), printed beside the
measured ones; a row without a paper counterpart says so. No torch: plain JSON/CSV/YAML,
numpy and matplotlib (Figure + Agg canvas, no pyplot).
"""

from modulenet.report.calibration import Calibration, calibrate
from modulenet.report.job import log_report_to_wandb, report_job
from modulenet.report.paper import PAPER_TABLES, PaperRow, PaperTable, dataset_key, paper_table_for
from modulenet.report.runs import FinetuneRun, Runs, SearchRun, load_runs
from modulenet.report.sections import finetune_section
from modulenet.report.write import REPORT_FILE, Report, write_report

__all__ = [
    "PAPER_TABLES",
    "PaperRow",
    "PaperTable",
    "dataset_key",
    "paper_table_for",
    "FinetuneRun",
    "Runs",
    "SearchRun",
    "load_runs",
    "finetune_section",
    "Calibration",
    "calibrate",
    "REPORT_FILE",
    "Report",
    "write_report",
    "log_report_to_wandb",
    "report_job",
]
