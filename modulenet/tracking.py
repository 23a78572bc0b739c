"""Experiment tracking: one W&B run per search (or a local CSV), fed by the search's callbacks.

Without an API key W&B runs offline into the run directory (`wandb sync <dir>/wandb/offline-run-*`
uploads it later). Keys are never written into configs or outputs: W&B reads them from its own
login (`wandb login`, ~/.netrc) or `WANDB_API_KEY`. Lightning trainers of individuals open no
runs of their own (their `logger=False`).
"""

from __future__ import annotations

import csv
import inspect
import json
import netrc
import os
from pathlib import Path

from modulenet import rundir
from modulenet.genotype import format_genotype

SECRET_KEYS = ("WANDB_API_KEY",)


def has_wandb_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        hosts = netrc.netrc().hosts
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False
    return any("wandb" in host for host in hosts)


def resolve_wandb_mode(mode: str) -> str:
    """`auto` is online with credentials, offline without; `WANDB_MODE` in the environment wins."""
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    if mode == "auto":
        return "online" if has_wandb_credentials() else "offline"
    return mode


def generation_metrics(record: dict) -> dict:
    return {
        "generation": record["generation"],
        "score/min": record["min"],
        "score/mean": record["mean"],
        "score/max": record["max"],
        "score/best_so_far": record.get("best_score"),
        "new_survival": record["new_survival"],
        "evaluated": record.get("evaluated", 0),
    }


class CSVTracker:
    """`logger=csv`: per-generation metrics appended to `<run_dir>/generations.csv`."""

    def __init__(self, run_dir: str | os.PathLike):
        self.path = Path(run_dir) / rundir.GENERATIONS

    def on_generation_end(self, generation, record, population, evaluations) -> None:
        row = generation_metrics(record)
        new = not self.path.exists()
        with self.path.open("a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(row))
            if new:
                writer.writeheader()
            writer.writerow(row)

    def on_search_end(self, result) -> None:
        pass

    def log_finetune(self, result) -> None:
        pass

    def finish(self) -> None:
        pass


class WandbTracker:
    """`logger=wandb`: config, per-generation metrics, a table of evaluated individuals, the
    score and new-survival curves, and the best genotype in the summary."""

    def __init__(
        self,
        run_dir: str | os.PathLike,
        config: dict,
        project: str = "modulenet",
        group: str | None = None,
        job_type: str = "search",
        name: str | None = None,
        tags: list[str] | None = None,
        entity: str | None = None,
        mode: str = "auto",
        arch_names: list[str] | None = None,
    ):
        import wandb

        self.wandb = wandb
        self.run_dir = Path(run_dir)
        self.arch_names = arch_names
        self.mode = resolve_wandb_mode(mode)
        self.run = wandb.init(
            project=project,
            entity=entity,
            group=group,
            job_type=job_type,
            name=name,
            tags=list(tags or []),
            config=config,
            dir=str(self.run_dir),
            mode=self.mode,
            reinit="finish_previous",
            settings=wandb.Settings(silent=True, console="off", x_disable_stats=True, save_code=False),
        )
        # where to find this run in W&B (no credentials in it)
        (self.run_dir / "wandb_run.json").write_text(
            json.dumps(
                {
                    "id": self.run.id,
                    "project": project,
                    "entity": entity,
                    "group": group,
                    "job_type": job_type,
                    "name": self.run.name,
                    "mode": self.mode,
                    "dir": str(Path(self.run.dir).parent),
                },
                indent=2,
            )
        )

    def on_generation_end(self, generation, record, population, evaluations) -> None:
        self.run.log(generation_metrics(record), step=int(generation))

    def on_search_end(self, result) -> None:
        columns = ["genotype", "architecture", "score", "err_val", "l_rate", "sim", "params", "flops", "status"]
        table = self.wandb.Table(columns=columns)
        for e in result.evaluations:
            names = "+".join(self.arch_names[i] for i in e.genotype) if self.arch_names else ""
            table.add_data(
                format_genotype(e.genotype), names, e.score, e.err_val, e.l_rate, e.sim, e.params, e.flops, e.status
            )
        payload = {"evaluations": table}
        curves = self.run_dir / rundir.CURVES
        if curves.is_file():
            payload["search_curves"] = self.wandb.Image(str(curves))
        self.run.log(payload)
        best = result.best
        self.run.summary.update(
            {
                "best/genotype": format_genotype(best.genotype),
                "best/score": best.score,
                "best/err_val": best.err_val,
                "best/l_rate": best.l_rate,
                "best/sim": best.sim,
                **(
                    {"best/architecture": "+".join(self.arch_names[i] for i in best.genotype)}
                    if self.arch_names
                    else {}
                ),
            }
        )

    def log_finetune(self, result) -> None:
        self.run.log(
            {
                f"finetune/test_error/{result.label}": result.test_error,
                f"finetune/val_error/{result.label}": result.val_error,
            }
        )
        self.run.summary[f"finetune/{result.label}"] = {
            "architecture": result.architecture,
            "val_error": result.val_error,
            "test_error": result.test_error,
        }

    def finish(self) -> None:
        self.run.finish()


def tracker_class(target: str | None) -> type | None:
    """The class `logger._target_` names (None: no tracker); one line when it cannot be imported."""
    from modulenet.targets import target_class

    return target_class("logger._target_", target, "logger=wandb|csv|none") if target else None


def make_tracker(logger_cfg, run_dir, config: dict, **context):
    """The tracker class `logger._target_` names (None for `logger=none`), built with `run_dir` and
    those of `config`, the logger group's settings and `context` (group, job_type, name, arch_names)
    that its constructor names: a tracker of your own takes only what it declares."""
    from omegaconf import DictConfig, OmegaConf

    settings = (
        OmegaConf.to_container(logger_cfg, resolve=True) if isinstance(logger_cfg, DictConfig) else dict(logger_cfg)
    )
    cls = tracker_class(settings.pop("_target_", None))
    if cls is None:
        return None
    settings["group"] = settings.get("group") or context.pop("group", None)
    arguments = {"config": config, **context, **settings}
    accepted = inspect.signature(cls).parameters
    return cls(run_dir, **{k: v for k, v in arguments.items() if k in accepted})
