"""Hydra composition: every experiment composes, and structured configs reject wrong types and keys."""

from __future__ import annotations

import pytest
from conftest import REPO, compose_search
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, ValidationError

from modulenet.app.config import register_configs

CONF = str(REPO / "conf")
EXPERIMENTS = sorted(p.stem for p in (REPO / "conf" / "experiment").glob("*.yaml"))


def test_default_is_the_quickstart():
    cfg = compose_search()
    assert cfg.name == "quickstart"
    assert cfg.dataset._target_ == "modulenet.data.QuickstartDataModule"
    assert cfg.knowledge_base.quickstart is True
    assert cfg.logger._target_ == "modulenet.tracking.WandbTracker"


OBJECT_GROUPS = ("dataset", "knowledge_base", "evaluator", "logger", "connection", "search", "trainer")


@pytest.mark.parametrize(
    "group, choices",
    [(group, sorted(p.stem for p in (REPO / "conf" / group).glob("*.yaml"))) for group in OBJECT_GROUPS],
)
def test_every_choice_of_an_object_group_names_its_class(group, choices):
    """Issue 14: each group whose choice is an object has a `_target_` a user can swap."""
    from hydra.utils import get_object

    for choice in choices:
        if (group, choice) == ("trainer", "gpu"):  # composes anywhere; builds only where CUDA is
            cfg = compose_search([f"{group}={choice}"])
            assert cfg.trainer._target_ == "modulenet.runtime.settings.TrainerSettings"
            continue
        cfg = compose_search([f"{group}={choice}"])
        target = cfg[group]._target_
        if (group, choice) == ("logger", "none"):
            assert target is None
            continue
        assert callable(get_object(target)), f"{group}={choice}"


def test_search_and_trainer_groups_build_their_settings():
    from modulenet.app.bundle import SearchBundle
    from modulenet.runtime.settings import TrainerSettings
    from modulenet.search import SearchConfig

    cfg = compose_search(["seed=3", "search.alpha=10", "trainer.precision=32-true"])
    bundle = SearchBundle.resolve(cfg)
    search, trainer = bundle.search, bundle.trainer
    assert type(search) is SearchConfig and (search.seed, search.alpha, search.generations) == (3, 10, 5)
    assert trainer == TrainerSettings(accelerator="cpu", precision="32-true")


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_and_resolves(experiment, monkeypatch, tmp_path):
    monkeypatch.setenv("MODULENET_CACHE", str(tmp_path))
    cfg = compose_search([f"experiment={experiment}"])
    OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    assert cfg.search.generations >= 1 and cfg.search.population_size >= 2


def test_paper_settings_are_the_defaults_of_the_search_group():
    cfg = compose_search(["experiment=quickstart", "search=nsga2"])
    register_configs()
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        nsga2 = compose(config_name="search_app", overrides=["~experiment"])
    assert (nsga2.search.generations, nsga2.search.population_size, nsga2.search.epochs) == (30, 40, 20)
    assert list(nsga2.evaluator.hidden) == [4096, 4096]
    assert cfg.search.alpha == 25 and cfg.search.beta == 25


@pytest.mark.parametrize(
    "override, error",
    [
        ("search.generations=many", ValidationError),  # wrong type
        ("search.generation=3", ConfigKeyError),  # unknown key (a typo) in a structured group
        ("evaluator.hidden=[a,b]", ValidationError),
    ],
)
def test_wrong_type_or_unknown_key_fails_at_composition(override, error):
    with pytest.raises((error, ConfigCompositionException)):
        compose_search([override])


def test_a_typo_in_an_experiment_file_fails_at_composition(tmp_path):
    import shutil

    conf = tmp_path / "conf"
    shutil.copytree(CONF, conf)
    (conf / "experiment" / "typo.yaml").write_text("# @package _global_\nsearch:\n  generation: 3\n")
    register_configs()
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        with pytest.raises((ConfigKeyError, ConfigCompositionException), match="generation"):
            compose(config_name="search_app", overrides=["experiment=typo"])


def test_slurm_launcher_preset_composes():
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    register_configs()
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose(
            config_name="search_app",
            overrides=["hydra/launcher=slurm", "hydra.launcher.partition=gpu"],
            return_hydra_config=True,
        )
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert launcher.gpus_per_node == 1 and launcher.partition == "gpu"


def test_finetune_inherits_the_search_runs_group_under_the_command_line():
    from omegaconf import OmegaConf

    from modulenet.app.builders import inherited_finetune

    here = OmegaConf.create({"epochs": 50, "lr": 0.01, "candidates": "top_k", "cutout": 16})
    run = OmegaConf.create({"finetune": {"epochs": 6, "lr": 0.02, "after_search": True}})  # saved before candidates
    merged = inherited_finetune(here, run, {"finetune.lr", "logger"})
    assert OmegaConf.to_container(merged) == {"epochs": 6, "lr": 0.01, "candidates": "top_k", "cutout": 16}
    assert inherited_finetune(here, run, {"finetune"}) is here  # the whole group given on the command line
    assert inherited_finetune(here, OmegaConf.create({}), set()) is here  # a run without one


@pytest.mark.parametrize(
    "change, message",
    [
        ({"batch_size": 0}, "evaluator.batch_size=0 must be a positive integer"),
        ({"hidden": [64, -1]}, r"evaluator.hidden\[1\]=-1 must be a positive integer"),
        ({"stack_individuals": 0}, "evaluator.stack_individuals=0 must be a positive integer"),
        ({"feature_memory_gb": 0.0}, "evaluator.feature_memory_gb=0.0 must be positive"),
        ({"pool": "max"}, "evaluator.pool='max'; valid values are 'flatten' and 'avg'"),
        ({"precision": "garbage"}, "trainer.precision='garbage': valid values are auto, 32-true"),  # TrainerSettings'
    ],
)
def test_evaluation_settings_check_their_values_when_built(change, message):
    """Issue 14: the evaluator group's checks live with its dataclass (Python API and app alike)."""
    from modulenet.errors import ModuleNetError
    from modulenet.evaluation.settings import EvaluationSettings

    with pytest.raises(ModuleNetError, match=message):
        EvaluationSettings(**change)


def test_a_bad_finetune_recipe_fails_before_the_search():
    """The evaluation stage's recipe is checked when a search that ends with it starts, not after."""
    from modulenet.app.bundle import SearchBundle
    from modulenet.errors import ModuleNetError
    from modulenet.finetune.settings import FinetuneSettings

    SearchBundle.resolve(compose_search(["finetune.candidates=best"]))  # not run: not checked
    with pytest.raises(ModuleNetError, match=r"finetune.candidates='best'; valid values are \['population', "):
        SearchBundle.resolve(compose_search(["finetune.after_search=true", "finetune.candidates=best"]))
    with pytest.raises(ModuleNetError, match="finetune.epochs=0 must be a positive integer"):
        FinetuneSettings(epochs=0)
