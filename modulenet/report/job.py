"""The report logged to W&B, and the `modulenet-report` Hydra job."""

from __future__ import annotations

import logging
from pathlib import Path

from modulenet.errors import first_line
from modulenet.report.write import Report, write_report

log = logging.getLogger(__name__)


def log_report_to_wandb(report: Report, logger_cfg, out_dir: Path) -> str | None:
    """The figures (and calibration result) in a W&B run of job_type "report". `logger.mode=auto` logs only
    when one of the given runs was online and W&B has credentials now; offline logs into `out_dir`.
    Returns the mode used, or None when nothing was logged. Never writes keys anywhere."""
    from hydra.utils import get_class

    from modulenet.tracking import WandbTracker, resolve_wandb_mode

    target = (logger_cfg or {}).get("_target_")
    try:
        if not target or not issubclass(get_class(target), WandbTracker):
            return None
    except Exception:  # not importable: the job checked it already; here it only means "not W&B"
        return None
    infos = [r.wandb for r in [*report.runs.search, *report.runs.finetune] if r.wandb]
    online = [info for info in infos if info.get("mode") == "online"]
    mode = resolve_wandb_mode(logger_cfg.get("mode", "auto"))
    if logger_cfg.get("mode", "auto") == "auto" and (not online or mode != "online"):
        return None
    if mode not in ("online", "offline"):
        return None
    ref = (online or infos or [{}])[0]
    try:
        import wandb

        run = wandb.init(
            project=logger_cfg.get("project") or ref.get("project") or "modulenet",
            entity=logger_cfg.get("entity") or ref.get("entity"),
            group=logger_cfg.get("group") or ref.get("group"),
            job_type="report",
            tags=list(logger_cfg.get("tags") or []),
            dir=str(out_dir),
            mode=mode,
            config={"runs": [str(r.path) for r in report.runs.search + report.runs.finetune]},
            reinit="finish_previous",
            settings=wandb.Settings(silent=True, console="off", x_disable_stats=True, save_code=False),
        )
        run.log({f"report/{p.stem}": wandb.Image(str(p)) for p in report.figures})
        if report.calibration is not None:
            c = report.calibration
            run.summary.update(
                {
                    "calibration/alpha": c.best_alpha,
                    "calibration/beta": c.best_beta,
                    "calibration/spearman": c.best_rho,
                    "calibration/kendall": c.best_kendall,
                }
            )
        run.finish()
    except Exception as err:  # the report is written; tracking is a bonus
        log.warning("W&B logging of the report failed: %s", first_line(err))
        return None
    return mode


def report_job(cfg, run_dir: Path) -> Path:
    """modulenet-report: `cfg` is a ReportAppConf; returns the path of report.md."""
    from omegaconf import OmegaConf

    out = Path(cfg.output) if cfg.get("output") else Path(run_dir)
    runs = [cfg.runs] if isinstance(cfg.runs, str) else list(cfg.runs)  # runs=DIR as well as runs=[DIR,...]
    report = write_report(
        runs, out, bool(cfg.calibrate), cfg.title, float(cfg.calibration_max), float(cfg.calibration_step)
    )
    logger_cfg = OmegaConf.to_container(cfg.logger, resolve=True) if cfg.get("logger") is not None else None
    mode = log_report_to_wandb(report, logger_cfg, out)
    if mode:
        log.info("report figures logged to W&B (%s)", mode)
    log.info("report: %s (%d figures)", report.path, len(report.figures))
    return report.path
