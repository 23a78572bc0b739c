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
from dataclasses import dataclass, fields
from pathlib import Path

from modulenet import rundir
from modulenet.errors import ModuleNetError
from modulenet.genotype import cell_shares, format_genotype
from modulenet.search.nsga2 import SearchCallback
from modulenet.search.records import TABLE_COLUMNS, table_row

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


class Tracker(SearchCallback):
    """What the jobs tell a tracker: the search's callbacks and the evaluation stage's hooks; each
    does nothing unless a tracker overrides it."""

    def log_finetune(self, result) -> None:
        """One architecture fine-tuned (finetune.FinetuneResult)."""

    def log_finetune_epoch(self, label: str, seed: int, metrics: dict) -> None:
        """One epoch of one architecture's fine-tuning: epoch, train_loss, val_error, lr."""

    def log_selected_network(self, result, folder: Path) -> None:
        """The selected network (its FinetuneResult) and the folder it is saved in."""

    def finish(self) -> None:
        pass


class CSVTracker(Tracker):
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


@dataclass(frozen=True)
class WandbRun:
    """Where a W&B run goes (`wandb.init`'s keywords of the same names); `mode=auto` is online with
    credentials, offline without (`resolve_wandb_mode`)."""

    project: str = "modulenet"
    entity: str | None = None
    group: str | None = None
    job_type: str = "search"
    name: str | None = None
    tags: list[str] | None = None
    mode: str = "auto"

    @classmethod
    def checked(cls, settings: dict) -> WandbRun:
        """One line naming a setting that is not one of these."""
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(settings) - set(names))
        if unknown:
            raise ModuleNetError(f"logger.{unknown[0]} is not a W&B setting; logger=wandb takes {', '.join(names)}")
        return cls(**settings)


class WandbTracker(Tracker):
    """`logger=wandb`. A search: config, per-generation metrics against `generation` (the score,
    new survival, and the population's convergence: at each cell the share of each source
    architecture), a table of evaluated individuals, the curves, the front of a multi-objective
    search, the best genotype in the summary. A fine-tune: each architecture's per-epoch curves
    against `finetune/epoch`, the selected network in the summary under `selected/*` (fixed keys,
    so a sweep's runs compare in one panel) and as a model artifact."""

    def __init__(self, run_dir: str | os.PathLike, config: dict, arch_names: list[str] | None = None, **where):
        """`where`: the `WandbRun` settings (the logger group's and the job's: project, entity,
        group, job_type, name, tags, mode); anything else is one line naming it."""
        import wandb

        run = WandbRun.checked(where)
        self.wandb = wandb
        self.run_dir = Path(run_dir)
        self.arch_names = arch_names
        self.mode = resolve_wandb_mode(run.mode)
        self.run = wandb.init(
            project=run.project,
            entity=run.entity,
            group=run.group,
            job_type=run.job_type,
            name=run.name,
            tags=list(run.tags or []),
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
                    "project": run.project,
                    "entity": run.entity,
                    "group": run.group,
                    "job_type": run.job_type,
                    "name": self.run.name,
                    "mode": self.mode,
                    "dir": str(Path(self.run.dir).parent),
                },
                indent=2,
            )
        )

        if run.job_type == "search":
            self.run.define_metric("generation")
            for key in ("score/*", "new_survival", "evaluated", "population/*"):
                self.run.define_metric(key, step_metric="generation")
        else:
            self.run.define_metric("finetune/epoch")
            self.run.define_metric("finetune/*", step_metric="finetune/epoch")

    def on_generation_end(self, generation, record, population, evaluations) -> None:
        metrics = generation_metrics(record)
        if self.arch_names and population:
            for j, shares in enumerate(cell_shares(population, len(self.arch_names)), start=1):
                metrics.update({f"population/cell{j}/{name}": s for name, s in zip(self.arch_names, shares)})
        self.run.log(metrics)

    def on_search_end(self, result) -> None:
        table = self.wandb.Table(columns=list(TABLE_COLUMNS[1:]))  # evaluations.csv's, the generation aside
        for e in result.evaluations:
            names = "+".join(self.arch_names[i] for i in e.genotype) if self.arch_names else ""
            table.add_data(*table_row(e, None, format_genotype(e.genotype), names)[1:])
        payload = {"evaluations": table}
        for key, name in (("search_curves", rundir.CURVES), ("front", rundir.FRONT)):
            if (self.run_dir / name).is_file():
                payload[key] = self.wandb.Image(str(self.run_dir / name))
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

    def log_finetune_epoch(self, label: str, seed: int, metrics: dict) -> None:
        prefix = f"finetune/{label}-seed{seed}"
        row = {f"{prefix}/{k}": v for k, v in metrics.items() if k != "epoch" and v is not None}
        self.run.log({"finetune/epoch": metrics["epoch"], **row})

    def log_selected_network(self, result, folder: Path) -> None:
        self.run.summary.update(
            {
                "selected/label": result.label,
                "selected/architecture": result.architecture,
                "selected/genotype": format_genotype(result.genotype),
                "selected/val_error": result.val_error,
                "selected/test_error": result.test_error,
                "selected/test_error_top5": result.test_error_top5,
                "selected/seed": result.seed,
            }
        )
        description = json.loads((Path(folder) / rundir.NETWORK_DESCRIPTION).read_text())
        metadata = {k: v for k, v in description.items() if k not in ("knowledge_base", "dataset")}
        artifact = self.wandb.Artifact(f"network-{self.run.id}", type="model", metadata=metadata)
        for path in sorted(Path(folder).iterdir()):
            if path.is_file():
                artifact.add_file(str(path))
        self.run.log_artifact(artifact, aliases=["selected"])

    def finish(self) -> None:
        self.run.finish()


def tracker_class(target: str | None) -> type | None:
    """The class `logger._target_` names (None: no tracker); one line when it cannot be imported."""
    from modulenet.targets import target_class

    if not target:
        return None
    cls = target_class("logger._target_", target, "logger=wandb|csv|none")
    if not isinstance(cls, type) or not callable(getattr(cls, "finish", None)):
        raise ModuleNetError(
            f"logger._target_={target!r} is not a tracker class (it needs the hooks of modulenet.tracking.Tracker: "
            "on_generation_end, on_search_end, finish, ...); the built-in ones are logger=wandb|csv|none"
        )
    return cls


def check_tracker(logger_cfg) -> None:
    """The logger group, checked before any work: its class, and W&B's settings by name."""
    cls = tracker_class(logger_cfg.get("_target_"))
    if cls is not None and issubclass(cls, WandbTracker):
        WandbRun.checked({k: v for k, v in logger_cfg.items() if k != "_target_"})


def make_tracker(logger_cfg, run_dir, config: dict, **context):
    """The tracker class `logger._target_` names (None for `logger=none`), built with `run_dir` and
    those of `config`, the logger group's settings and `context` (group, job_type, name, arch_names)
    that its constructor names: a tracker of your own takes only what it declares (all of them
    with `**kwargs`)."""
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
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values()):
        return cls(run_dir, **arguments)  # it takes every keyword (WandbTracker: checks them itself)
    return cls(run_dir, **{k: v for k, v in arguments.items() if k in accepted})
