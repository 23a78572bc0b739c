"""The paper-reproduction recipes (conf/experiment/): the paper's numbers, and each one run end to
end on tiny settings (real models, real trainers, generated data; nothing mocked)."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import SMALL_CRAFT, TINY_DATA, TINY_SEARCH, cifar_checkpoint, compose_search

from modulenet.app.jobs import search_job

PAPER = {  # experiment: (dataset target, archs, alpha, beta, gen, pop, search epochs, finetune epochs, cutout)
    "paper_cifar100_craft": (
        "CIFAR100DataModule",
        ["resnet34", "resnet50", "resnet101", "vgg13", "vgg16", "vgg13_bn", "vgg16_bn"],
        25,
        25,
        30,
        40,
        20,
        50,
        16,
    ),
    "paper_cifar10_craft": (
        "CIFAR10DataModule",
        ["resnet34", "resnet50", "resnet101", "vgg13", "vgg16", "vgg13_bn", "vgg16_bn"],
        25,
        25,
        30,
        40,
        20,
        50,
        16,
    ),
    "paper_cifar10_nas": (
        "CIFAR10DataModule",
        ["darts_v2", "pdarts", "pc_darts_cifar", "pc_darts_image"],
        10,
        30,
        30,
        40,
        20,
        50,
        16,
    ),
    "ablation_score_vs_test_error": (
        "CIFAR10DataModule",
        ["resnet34", "resnet50", "resnet101", "vgg13", "vgg16", "vgg13_bn", "vgg16_bn"],
        25,
        25,
        30,
        40,
        20,
        50,
        16,
    ),
    "ablation_connections": (
        "CIFAR10DataModule",
        ["resnet34", "resnet50", "resnet101", "vgg13", "vgg16", "vgg13_bn", "vgg16_bn"],
        25,
        25,
        30,
        40,
        20,
        50,
        16,
    ),
}


@pytest.mark.parametrize("experiment", sorted(PAPER))
def test_experiment_carries_the_papers_settings(experiment, monkeypatch, tmp_path):
    monkeypatch.setenv("MODULENET_CACHE", str(tmp_path))
    target, archs, alpha, beta, gen, pop, epochs, ft_epochs, cutout = PAPER[experiment]
    cfg = compose_search([f"experiment={experiment}"])
    assert cfg.dataset._target_.endswith(target)
    assert list(cfg.knowledge_base.archs) == archs and cfg.knowledge_base.num_cells == 5
    assert (cfg.search.alpha, cfg.search.beta) == (alpha, beta)
    assert (cfg.search.generations, cfg.search.population_size, cfg.search.epochs) == (gen, pop, epochs)
    assert list(cfg.evaluator.hidden) == [4096, 4096]
    assert (cfg.finetune.epochs, cfg.finetune.cutout) == (ft_epochs, cutout)


def test_paper_specific_choices(monkeypatch, tmp_path):
    monkeypatch.setenv("MODULENET_CACHE", str(tmp_path))
    craft = compose_search(["experiment=paper_cifar100_craft"])
    assert craft.knowledge_base.weights == "IMAGENET1K_V1" and craft.knowledge_base.cifar_stem  # v0.3.0's, no pool
    assert craft.knowledge_base.source_finetune_epochs > 0  # fine-tuned on the target first
    assert craft.dataset.val_size == 10000  # 40K / 10K
    assert compose_search(["experiment=paper_cifar10_nas"]).dataset.val_from == "test"  # all 50K, test validates
    fig8 = compose_search(["experiment=ablation_score_vs_test_error"])
    assert fig8.finetune.candidates == "every_generation" and fig8.finetune.after_search
    assert compose_search(["experiment=ablation_connections"]).ablation.connections
    imagenet = compose_search(["experiment=paper_imagenet_transfer"])
    assert list(imagenet.knowledge_base.archs) == ["vgg13_bn", "resnet50", "resnet101"]
    assert list(imagenet.search.initial_genotypes) == ["01111", "02222", "00000", "11111", "22222"]
    assert imagenet.dataset.image_size == 224 and not imagenet.knowledge_base.cifar_stem
    real = compose_search(["experiment=cpu_cifar10_real"])
    assert real.knowledge_base.archs[0] == "resnet_cifar20" and real.finetune.after_search


TINY = {  # the recipe, made small: fewer/smaller networks, generated data, short training
    "paper_cifar100_craft": [*SMALL_CRAFT, "knowledge_base.source_finetune_epochs=1"],
    "paper_cifar10_craft": SMALL_CRAFT,
    "paper_cifar10_nas": [
        "knowledge_base.archs=[darts_v2,pdarts]",
        "~dataset.val_from",
        "search.generations=1",
        "search.population_size=2",
        "finetune.after_search=false",
    ],
    "paper_imagenet_transfer": [
        "knowledge_base.archs=[vgg11_bn,resnet18,resnet34]",
        "knowledge_base.image_size=32",
        "dataset.image_size=32",
        "knowledge_base.weights=null",
        "finetune.after_search=true",
        "search.generations=1",
        "search.population_size=5",
    ],
    "ablation_score_vs_test_error": [*SMALL_CRAFT, "finetune.max_candidates=3"],
    "ablation_connections": [*SMALL_CRAFT, "ablation.max_architectures=3"],
    "cpu_cifar10_real": ["search.generations=1", "search.population_size=2"],  # the shared CIFAR ResNets
    "cpu_cifar10_same_data": [
        "~dataset.val_from",
        "~dataset.val_size",
        "knowledge_base.train_epochs=1",
        "knowledge_base.archs=[resnet_cifar8,mobilenet_cifar]",
        "search.generations=1",
        "search.population_size=3",
        "finetune.max_candidates=2",
        "finetune.seeds=[0,1]",
    ],
}


# make test-all only: DARTS networks (test_darts covers them), torchvision networks at 224 px, the shared
# checkpoints, and recipes whose stages the fast recipes run too (paper_cifar100_craft is the craft recipe
# and fine-tunes after its search; cpu_cifar10_same_data's fine-tune seeds are tests/finetune's)
SLOW_RECIPES = {
    "paper_cifar10_nas",
    "paper_imagenet_transfer",
    "cpu_cifar10_real",
    "paper_cifar10_craft",
    "cpu_cifar10_same_data",
    "ablation_score_vs_test_error",
}


@pytest.mark.parametrize(
    "experiment", [pytest.param(e, marks=[pytest.mark.slow] if e in SLOW_RECIPES else []) for e in sorted(TINY)]
)
def test_experiment_runs_end_to_end_on_tiny_settings(experiment, monkeypatch, tmp_path):
    monkeypatch.setenv("MODULENET_CACHE", str(tmp_path / "cache"))
    if experiment == "cpu_cifar10_real":
        monkeypatch.setenv("MODULENET_SHARED", str(cifar_checkpoint(20).parents[2]))  # skips without ../shared
    torch.set_num_threads(2)
    cfg = compose_search([f"experiment={experiment}", *TINY_DATA, *TINY_SEARCH, *TINY[experiment]])
    run = tmp_path / "run"
    search_job(cfg, run)
    results = json.loads((run / "results.json").read_text())
    assert len(results["history"]) == cfg.search.generations
    assert len(results["populations"]) == cfg.search.generations
    if cfg.finetune.after_search:
        finetune = json.loads((run / "finetune" / "finetune.json").read_text())
        assert finetune["search_run"] == str(run)
        rows = finetune["results"]
        for r in rows:
            assert {"genotype", "score", "val_error", "test_error", "test_error_top5", "seed", "selected"} <= set(r)
            assert 0.0 <= r["test_error"] <= 1.0 and 0.0 <= r["val_error"] <= 1.0
            assert r["seed"] in (list(cfg.finetune.seeds) or [cfg.seed])
            assert r["test_error_top5"] is not None and r["test_error_top5"] <= r["test_error"]  # 10 classes
        searched = [r for r in rows if r["label"].startswith("ModuleNet")]
        seeds = list(cfg.finetune.seeds) or [cfg.seed]
        assert len(rows) % len(seeds) == 0 and {r["seed"] for r in rows} == set(seeds)  # every one, every seed
        selected = [r for r in rows if r["selected"]]  # one architecture (each seed's row), by validation error
        assert len(selected) == len(seeds) and len({r["label"] for r in selected}) == 1 and selected[0] in searched
        mean_val = {
            label: sum(r["val_error"] for r in searched if r["label"] == label) / len(seeds)
            for label in {r["label"] for r in searched}
        }
        assert mean_val[selected[0]["label"]] == min(mean_val.values())
        if cfg.finetune.candidates == "population":  # every distinct genotype of the final population
            assert {tuple(r["genotype"]) for r in searched} == {tuple(p["genotype"]) for p in results["population"]}
        if cfg.finetune.include_originals:
            assert {r["label"] for r in rows} >= set(results["arch_names"])
        assert all(r["validated_on"] == ("test" if cfg.dataset.get("val_from") == "test" else "val") for r in rows)
    if experiment == "paper_imagenet_transfer":
        assert {e["genotype_str"] for e in results["population"]} == {"01111", "02222", "00000", "11111", "22222"}
        assert len(finetune["results"]) == 5
    if experiment == "ablation_score_vs_test_error":
        assert len([r for r in finetune["results"] if r["label"].startswith("ModuleNet")]) >= 2
    if experiment == "ablation_connections":
        ablation = json.loads((run / "ablation_connections.json").read_text())
        assert 2 <= len(ablation["rows"]) <= 3
        assert ablation["compared"] == ["conv1x1", "aligned", "least_squares"]  # Fig. 10 side by side
        assert all(
            0.0 <= r[f"val_acc_{c}"] <= 1.0 for r in ablation["rows"] for c in ["channel_pool", *ablation["compared"]]
        )
        assert set(ablation["correlations"]) == set(ablation["compared"])
    if experiment == "paper_cifar100_craft":
        cached = list((tmp_path / "cache").glob("finetuned-kb-*/"))
        assert len(cached) == 1  # the fine-tuned knowledge base, reused by the fine-tuning stage
