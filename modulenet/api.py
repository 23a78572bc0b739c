"""The public Python API: the config tree composed as the console scripts compose it, and the
objects a job builds from it, for notebooks, studies and scripts (none of them need `app/`).

    from modulenet import api

    cfg = api.compose("search", ["experiment=cpu_cifar10_same_data", "connection=least_squares"])
    bundle = api.resolve(cfg)                    # every group built once, and so checked
    datamodule = api.dataset(cfg.dataset)        # set up, checked against the dataset contract
    kb = api.knowledge_base(cfg, datamodule, bundle)
    evaluator = api.evaluator(bundle, kb, datamodule)
    evaluator(["012", "111"])                    # one Evaluation each (Sec. III-E)

Each function is the one the jobs use (app/jobs.py), so a study measures what a user runs.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

APPS = ("search", "finetune", "evaluate", "kb", "report")


def compose(app: str = "search", overrides: list[str] = ()) -> DictConfig:
    """The config `modulenet-<app>` composes from `overrides` (Hydra's compose API; no run directory)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from modulenet.app.config import register_configs
    from modulenet.errors import ModuleNetError
    from modulenet.targets import CONF_DIR

    if app not in APPS:
        raise ModuleNetError(f"app={app!r}: valid values are {list(APPS)}")
    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose(config_name=f"{app}_app", overrides=list(overrides))


def resolve(cfg: DictConfig):
    """A search config's `SearchBundle` (app/bundle.py): trainer, search, evaluation settings,
    evaluator class and dispatcher, each built once."""
    from modulenet.app.bundle import SearchBundle

    return SearchBundle.resolve(cfg)


def dataset(dataset_cfg):
    """The dataset group's datamodule, prepared, set up and checked (data/contract.py)."""
    from modulenet.app.builders import make_datamodule

    return make_datamodule(dataset_cfg)


def finetune_dataset(dataset_cfg, finetune_cfg) -> tuple[dict, object]:
    """The search's dataset with the finetune group's augmentation and batch size: its config (as a
    saved network records it) and its datamodule."""
    from modulenet.app.jobs import finetune_datamodule

    return finetune_datamodule(dataset_cfg, finetune_cfg)


def knowledge_base(cfg: DictConfig, datamodule, bundle=None):
    """The search's knowledge base (refused if untrained unless allowed; fitted connections fitted
    or loaded from the cache); `bundle`: the resolved config (None: resolved here)."""
    from modulenet.app.builders import make_search_knowledge_base

    bundle = bundle if bundle is not None else resolve(cfg)
    return make_search_knowledge_base(cfg, datamodule, bundle.trainer, bundle.settings.connection)


def evaluator(bundle, kb, datamodule, memo_path: str | Path | None = None, progress: bool = False):
    """The bundle's evaluator over its dispatcher, on the datamodule's search split (precision
    `auto` decided once, for this data)."""
    settings = bundle.for_data(datamodule.num_classes)
    return bundle.evaluator(
        kb,
        datamodule.search_tensors(),
        datamodule.num_classes,
        settings,
        memo_path=memo_path,
        progress=progress,
        dispatcher=bundle.dispatcher,
    )


def shared_dir() -> str:
    """Where the shared data and weights are: $MODULENET_SHARED or the checkout's ../shared."""
    from modulenet.app.config import shared_dir as configured

    return configured()
