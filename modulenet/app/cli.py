"""Thin Hydra entry points: compose, run the job, report. User mistakes print one line, no traceback."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from modulenet import rundir, targets
from modulenet.app.config import register_configs
from modulenet.errors import ModuleNetError
from modulenet.rundir import hold, write_atomic

CONF_DIR = str(targets.CONF_DIR)
log = logging.getLogger("modulenet")
register_configs()

for noisy in ("pytorch_lightning", "lightning", "lightning.pytorch", "lightning_fabric"):
    logging.getLogger(noisy).setLevel(logging.WARNING)


def _run_dir_and_group(cfg: DictConfig) -> tuple[Path, str | None]:
    """The job's run directory, and in a multirun the W&B group shared by all its jobs."""
    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    group = f"{cfg.get('name', 'modulenet')}-{Path(hc.sweep.dir).name}" if hc.mode == RunMode.MULTIRUN else None
    return run_dir, group


def _save_resolved(cfg: DictConfig, run_dir: Path) -> None:
    """The resolved config beside the run's outputs (Hydra's .hydra/config.yaml keeps interpolations)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(run_dir / rundir.CONFIG, OmegaConf.to_yaml(cfg, resolve=True))


def command_line_keys() -> set[str]:
    """The config keys this command line set (Hydra's task overrides, `+`/`++`/`~` stripped);
    empty outside a Hydra job."""
    if not HydraConfig.initialized():
        return set()
    return {override.split("=", 1)[0].lstrip("+~") for override in HydraConfig.get().overrides.task}


def _guard(job, cfg: DictConfig):
    run_dir, group = _run_dir_and_group(cfg)
    try:
        with hold(run_dir):  # before its config is written: a second process must not overwrite it
            _save_resolved(cfg, run_dir)
            log.info("run directory: %s", run_dir)
            return job(cfg, run_dir, group) if group is not None else job(cfg, run_dir)
    except ModuleNetError as err:
        log.debug("user error: %s", err)
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print(f"interrupted: finished work is kept in {run_dir}", file=sys.stderr)
        sys.exit(130)


@hydra.main(config_path=CONF_DIR, config_name="search_app", version_base="1.3")
def _search(cfg: DictConfig):
    from modulenet.app.jobs import search_job

    return _guard(search_job, cfg)


@hydra.main(config_path=CONF_DIR, config_name="kb_app", version_base="1.3")
def _kb(cfg: DictConfig):
    from modulenet.app.jobs import kb_job

    return _guard(lambda c, d, *_: kb_job(c, d), cfg)


@hydra.main(config_path=CONF_DIR, config_name="finetune_app", version_base="1.3")
def _finetune(cfg: DictConfig):
    from modulenet.app.jobs import finetune_job

    return _guard(lambda c, d, g=None: finetune_job(c, d, g, given=command_line_keys()), cfg)


@hydra.main(config_path=CONF_DIR, config_name="report_app", version_base="1.3")
def _report(cfg: DictConfig):
    from modulenet.report import report_job

    def job(c, d, *_):
        path = report_job(c, d)
        print(path)
        return path

    return _guard(job, cfg)


@hydra.main(config_path=CONF_DIR, config_name="evaluate_app", version_base="1.3")
def _evaluate(cfg: DictConfig):
    from modulenet.app.jobs import evaluate_job

    return _guard(lambda c, d, *_: evaluate_job(c, d), cfg)


# Launchers whose Hydra plugin is a separate package: {launcher name prefix: (plugin module, what to install)}
LAUNCHER_PLUGINS = {
    "slurm": ("hydra_plugins.hydra_submitit_launcher", "pip install 'modulenet[slurm]'"),
    "submitit": ("hydra_plugins.hydra_submitit_launcher", "pip install 'modulenet[slurm]'"),
}


def check_launcher(argv: list[str]) -> None:
    """A `hydra/launcher=` choice whose plugin is not installed: one line before Hydra composes
    (Hydra's own refusal is a paragraph about a missing config group option)."""
    import importlib.util

    for arg in argv:
        name = arg.split("=", 1)[1] if arg.lstrip("+").startswith("hydra/launcher=") else ""
        prefix = next((p for p in LAUNCHER_PLUGINS if name.startswith(p)), None)
        if prefix is None:
            continue
        module, install = LAUNCHER_PLUGINS[prefix]
        if importlib.util.find_spec(module.split(".")[0]) is None or importlib.util.find_spec(module) is None:
            print(
                f"error: hydra/launcher={name} needs the submitit launcher ({module}), which is not installed: "
                f"{install}",
                file=sys.stderr,
            )
            sys.exit(1)


def _main(hydra_main) -> None:
    check_launcher(sys.argv[1:])
    hydra_main()


def evaluate_main() -> None:
    """modulenet-evaluate"""
    _main(_evaluate)


def finetune_main() -> None:
    """modulenet-finetune"""
    _main(_finetune)


def search_main() -> None:
    """modulenet-search"""
    _main(_search)


def kb_main() -> None:
    """modulenet-kb"""
    _main(_kb)


def report_main() -> None:
    """modulenet-report"""
    _main(_report)
