"""Issue 32: a job resolves its config once. Each group's object is built once per search (the
bundle), and the whole job, the evaluation stage after it included, takes its settings from it."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from conftest import SMALL_CRAFT, TINY_DATA, TINY_SEARCH, compose_search

from modulenet.app import builders, bundle, jobs
from modulenet.runtime import dispatch
from modulenet.runtime.settings import TrainerSettings


@pytest.fixture
def counted(monkeypatch):
    """How often each group becomes an object: the trainer settings, the connection, the evaluator
    class, the dispatcher and the bundle itself."""
    calls = Counter()

    def counting(module, name, key):
        original = getattr(module, name)

        def wrapper(*args, **kwargs):
            calls[key] += 1
            return original(*args, **kwargs)

        monkeypatch.setattr(module, name, wrapper)

    post_init = TrainerSettings.__post_init__

    def trainer_post_init(self):
        if type(self) is TrainerSettings:
            calls["TrainerSettings"] += 1
        post_init(self)

    monkeypatch.setattr(TrainerSettings, "__post_init__", trainer_post_init)
    counting(bundle, "connection_of", "connection_of")
    counting(jobs, "connection_of", "connection_of")
    counting(builders, "connection_of", "connection_of")
    counting(bundle, "evaluator_class", "evaluator_class")
    counting(dispatch, "dispatcher_class", "dispatcher_class")
    resolve = bundle.SearchBundle.resolve.__func__
    monkeypatch.setattr(
        bundle.SearchBundle, "resolve", classmethod(lambda cls, cfg: calls.update(["resolve"]) or resolve(cls, cfg))
    )
    return calls


def test_a_search_and_its_fine_tune_build_each_group_once(counted, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    cfg = compose_search(
        [
            *TINY_DATA,
            *TINY_SEARCH,
            "knowledge_base=craft",
            *SMALL_CRAFT,
            "search.generations=1",
            "search.population_size=2",
            "finetune.after_search=true",
            "finetune.candidates=top_k",
            "finetune.top_k=1",
            "finetune.include_originals=false",
            f"knowledge_base.cache_dir={tmp_path / 'cache'}",
            "trainer.precision=32-true",
        ]
    )
    run = tmp_path / "run"
    run.mkdir()
    jobs.search_job(cfg, run)
    assert (run / "finetune" / "finetune.json").is_file()  # the evaluation stage ran in the same job
    assert counted == Counter(resolve=1, TrainerSettings=1, connection_of=1, evaluator_class=1, dispatcher_class=1), (
        counted
    )


def test_the_bundle_is_what_the_checks_build(counted):
    """Checking a config is building its bundle: nothing is built a second time to check it."""
    from modulenet.app.bundle import SearchBundle

    built = SearchBundle.resolve(compose_search(["evaluator=gpus", "evaluator.num_workers=2", "search.alpha=10"]))
    assert built.settings.alpha == built.search.alpha == 10 and built.dispatcher.slots == [None, None]
    assert built.settings.accelerator == built.trainer.accelerator  # handed down, not read again
    assert counted == Counter(resolve=1, TrainerSettings=1, connection_of=1, evaluator_class=1, dispatcher_class=1)


def test_the_python_api_builds_what_the_search_builds(monkeypatch, tmp_path):
    """modulenet.api (the README's Python example): the same objects as the search job, so a
    study or a notebook measures what a user runs; studies/ imports no app module."""
    from modulenet import api
    from modulenet.evaluation.evaluator import Evaluator

    monkeypatch.chdir(tmp_path)
    overrides = [*TINY_DATA, *TINY_SEARCH, "knowledge_base=craft", *SMALL_CRAFT, "trainer.precision=32-true"]
    cfg = api.compose("search", overrides)
    bundle = api.resolve(cfg)
    datamodule = api.dataset(cfg.dataset)
    evaluator = api.evaluator(bundle, api.knowledge_base(cfg, datamodule, bundle), datamodule)
    assert type(evaluator) is Evaluator and evaluator.dispatcher is bundle.dispatcher
    first, second = evaluator(["000", "011"])
    assert first.status == second.status == "ok" and first.genotype == (0, 0, 0)
    studies = (Path(__file__).resolve().parents[2] / "studies").glob("*.py")
    assert not [p.name for p in studies if "modulenet.app" in p.read_text()]
