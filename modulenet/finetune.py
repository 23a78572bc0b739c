"""The evaluation stage (Sec. IV): the final population's architectures, and for comparison each
original architecture of the knowledge base, fine-tuned with every weight trainable (50 epochs
with cutout 16 in the paper). The paper fine-tunes the final population and determines the best
final architecture from it; here the searched candidate with the lowest **validation** error is
`selected`, and its **test** error is the ModuleNet row of Tables I-IV (top-1, and top-5 where
there are more than 5 classes). The test split never chooses anything."""

from __future__ import annotations

import json
import logging
import math
import statistics
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from modulenet import rundir
from modulenet.config import FinetuneRecipe, TrainerSettings
from modulenet.genotype import format_genotype
from modulenet.knowledge.base import KnowledgeBase
from modulenet.lit_module import IndividualModule, classifier_input_size
from modulenet.rng import seeded
from modulenet.rundir import hold, read_scores, write_atomic
from modulenet.runtime import accelerator_device, make_trainer, quiet_lightning, use_float32_matmul_precision
from modulenet.search_outputs import search_path, spread_over_ranking

log = logging.getLogger(__name__)


@dataclass
class FinetuneSettings(FinetuneRecipe, TrainerSettings):
    """The finetune group's recipe (FinetuneRecipe) and the trainer's settings (TrainerSettings),
    one definition each, plus what the search decided: its classifier's shape, connection and
    resolution rule; and the seed."""

    hidden: list[int] = field(default_factory=lambda: [4096, 4096])
    pool: str = "flatten"
    connection: str = "channel_pool"
    resolution: str = "reduce"
    seed: int = 0
    precision: str = "32-true"  # the Python API's default (the app's trainer group: auto)

    def __post_init__(self) -> None:
        FinetuneRecipe.__post_init__(self)
        TrainerSettings.__post_init__(self)


@dataclass
class FinetuneResult:
    label: str  # "ModuleNet #k" (k-th by search score) or the original architecture's name
    genotype: list[int]
    architecture: str
    test_error: float
    search_score: float | None
    epochs: int
    seconds: float
    val_error: float = math.nan
    test_error_top5: float | None = None  # where there are more than 5 classes (Table IV)
    seed: int = 0
    selected: bool = False  # the searched candidate chosen by validation error: the ModuleNet row
    validated_on: str = "val"  # "test" where the dataset has no separate validation split (Table III)


def select_candidates(
    results: dict, kb: KnowledgeBase, settings: FinetuneSettings, scores: dict[tuple, float] | None = None
) -> list[tuple[str, tuple]]:
    """Searched genotypes ranked by search score ("ModuleNet #1" best), then the originals [i] * c.

    `top_k`: the k best distinct genotypes of the final population. `every_generation`: the
    distinct genotypes of all generations' populations (`results["populations"]`, scores from
    `scores`); `evaluated`: every genotype the search evaluated (`scores`, from evaluations.csv),
    survivor or not. Beyond `max_candidates`, evenly spaced ranks, so the picks span good to bad."""
    scores = dict(scores or {})
    scores.update({tuple(row["genotype"]): row["score"] for row in results["population"]})
    if settings.candidates in ("top_k", "population"):
        finals = dict.fromkeys(tuple(row["genotype"]) for row in results["population"])
        limit = settings.top_k if settings.candidates == "top_k" else settings.max_candidates
        ranked = sorted(finals, key=lambda code: scores[code])[:limit]
    elif settings.candidates == "every_generation":
        ranked = search_path(results, scores, settings.max_candidates)
    else:
        ranked = spread_over_ranking(sorted(scores, key=lambda code: scores[code]), settings.max_candidates)
    chosen = [(f"ModuleNet #{rank}", code) for rank, code in enumerate(ranked, start=1)]
    if settings.include_originals:
        chosen += [(name, kb.original_genotype(i)) for i, name in enumerate(kb.arch_names)]
    return chosen


def finetune_architecture(
    kb: KnowledgeBase, genotype, datamodule, settings: FinetuneSettings, progress: bool = True
) -> dict[str, float | None]:
    """Fine-tune one architecture with all weights trainable on the training split; returns its
    `val_error` (validation split), `test_error` and `test_error_top5` (None with <= 5 classes)."""
    device = accelerator_device(settings.accelerator)
    use_float32_matmul_precision(device, settings.float32_matmul_precision)
    with seeded(settings.seed, device):
        return _finetune_architecture(kb, genotype, datamodule, settings, progress)


def _finetune_architecture(
    kb: KnowledgeBase, genotype, datamodule, settings: FinetuneSettings, progress: bool
) -> dict[str, float | None]:
    trunk = kb.assemble(genotype, connection=settings.connection, trainable=True, resolution=settings.resolution)
    size = trunk.output_size(datamodule.image_size)
    in_features = classifier_input_size(trunk.out_channels, size, settings.pool)
    s = settings

    def optimizer(params):
        opt = torch.optim.SGD(params, lr=s.lr, momentum=s.momentum, weight_decay=s.weight_decay, nesterov=True)
        return {"optimizer": opt, "lr_scheduler": torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, s.epochs))}

    model = IndividualModule(trunk, in_features, datamodule.num_classes, s.hidden, s.pool, optimizer=optimizer)
    with quiet_lightning():
        trainer = make_trainer(s.epochs, s.accelerator, s.precision, progress)
        trainer.fit(model, datamodule.train_dataloader())
        trainer.validate(model, datamodule.val_dataloader(), verbose=False)
        val_error = 1.0 - model.val_accuracy
        trainer.test(model, datamodule.test_dataloader(), verbose=False)
    top5 = model.val_accuracy_top5
    return {
        "val_error": val_error,
        "test_error": 1.0 - model.val_accuracy,
        "test_error_top5": None if top5 is None else 1.0 - top5,
    }


def run_finetune(
    kb: KnowledgeBase,
    results: dict,
    datamodule,
    settings: FinetuneSettings,
    out_dir: Path,
    tracker=None,
    progress: bool = True,
    search_run: Path | None = None,
) -> list[FinetuneResult]:
    """Fine-tune every candidate, writing `finetune.json` after each one (a crash keeps them) and
    `finetune.md`, a table in the form of the paper's Tables I-II. `out_dir` is held while it runs."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with hold(out_dir):
        return _run_finetune(kb, results, datamodule, settings, out_dir, tracker, progress, search_run)


def _run_finetune(kb, results, datamodule, settings, out_dir, tracker, progress, search_run) -> list[FinetuneResult]:
    json_path = out_dir / rundir.FINETUNE
    done = {}
    if json_path.is_file():  # resume: keep architectures already fine-tuned with these settings
        previous = json.loads(json_path.read_text())
        if previous.get("settings") == asdict(settings):
            done = {
                (r["label"], r["seed"]): FinetuneResult(**{k: v for k, v in r.items() if k != "score"})
                for r in previous["results"]
                if "val_error" in r
            }
    validated_on = "test" if getattr(datamodule, "val_from", "train") == "test" else "val"
    scores = read_scores(search_run) if search_run is not None else {}
    scores.update({tuple(r["genotype"]): r["score"] for r in results.get("population", [])})
    finished: list[FinetuneResult] = []
    runs = [
        (label, code, seed)
        for label, code in select_candidates(results, kb, settings, scores)
        for seed in settings.seeds or [settings.seed]
    ]
    for label, code, seed in runs:
        if (label, seed) in done and tuple(done[label, seed].genotype) == tuple(code):
            finished.append(done[label, seed])
            continue
        log.info("fine-tuning %s: %s (%s), seed %d", label, format_genotype(code), "+".join(kb.describe(code)), seed)
        start = time.perf_counter()
        errors = finetune_architecture(kb, code, datamodule, replace(settings, seed=seed), progress)
        result = FinetuneResult(
            label,
            list(code),
            "+".join(kb.describe(code)),
            errors["test_error"],
            scores.get(code),
            settings.epochs,
            time.perf_counter() - start,
            val_error=errors["val_error"],
            test_error_top5=errors["test_error_top5"],
            seed=seed,
            validated_on=validated_on,
        )
        finished.append(result)
        log.info("  validation error %.2f %%, test error %.2f %%", 100 * result.val_error, 100 * result.test_error)
        if tracker is not None:
            tracker.log_finetune(result)
        _write_finetune_json(json_path, settings, search_run, finished)
    select(finished)
    _write_finetune_json(json_path, settings, search_run, finished)
    write_atomic(out_dir / rundir.FINETUNE_TABLE, markdown_table(finished, settings))
    return finished


def select(results: list[FinetuneResult]) -> str | None:
    """Mark the searched candidate with the lowest validation error, averaged over its seeds (ties:
    the better search score), as `selected` (every seed's row): the best final architecture, chosen
    without the test split. Returns its label."""
    by_label: dict[str, list[FinetuneResult]] = {}
    for r in results:
        r.selected = False
        if r.label.startswith("ModuleNet"):
            by_label.setdefault(r.label, []).append(r)
    if not by_label:
        return None
    best = min(
        by_label,
        key=lambda label: (
            statistics.fmean(r.val_error for r in by_label[label]),
            by_label[label][0].search_score if by_label[label][0].search_score is not None else math.inf,
        ),
    )
    for r in by_label[best]:
        r.selected = True
    return best


def _write_finetune_json(path: Path, settings: FinetuneSettings, search_run, finished: list[FinetuneResult]) -> None:
    rows = [{**asdict(r), "score": r.search_score} for r in finished]  # `score`: the search score, by its name
    write_atomic(
        path, json.dumps({"settings": asdict(settings), "search_run": str(search_run or ""), "results": rows}, indent=2)
    )


def markdown_table(results: list[FinetuneResult], settings: FinetuneSettings) -> str:
    """The paper's table form, one row per architecture (mean and standard deviation over its
    seeds); the selected searched architecture (by validation error) is the ModuleNet row."""
    top5 = any(r.test_error_top5 is not None for r in results)
    header = "| Method | Architecture (cell 1 .. c) | Search score | Val Error (%) | Test Error (%) |" + (
        " Top-5 Test Error (%) |" if top5 else ""
    )
    seeds = settings.seeds or [settings.seed]
    lines = [
        f"Fine-tuned {settings.epochs} epochs, all weights trainable, seed{'s' if len(seeds) > 1 else ''} "
        f"{', '.join(map(str, seeds))}{' (mean ± sd over seeds)' if len(seeds) > 1 else ''}. The searched "
        "architecture with the lowest validation error is selected (**bold**); test errors choose nothing.",
        "",
        header,
        "| --- " * (header.count("|") - 1) + "|",
    ]
    by_label: dict[str, list[FinetuneResult]] = {}
    for r in results:
        by_label.setdefault(r.label, []).append(r)
    for label, rows in by_label.items():
        r = rows[0]
        name = f"**ModuleNet (selected: {label})**" if r.selected else label
        if r.validated_on == "test":
            name += " (no separate validation split: validated on the test set, as the paper's Table III)"
        score = "" if r.search_score is None else f"{r.search_score:.3f}"
        row = (
            f"| {name} | {r.architecture} | {score} | {_pct([x.val_error for x in rows])} | "
            f"{_pct([x.test_error for x in rows])} |"
        )
        lines.append(row + (f" {_pct([x.test_error_top5 for x in rows])} |" if top5 else ""))
    return "\n".join(lines) + "\n"


def _pct(values: list[float | None]) -> str:
    """A percentage, or mean ± sd where there are several."""
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return ""
    if len(values) == 1:
        return f"{100 * values[0]:.2f}"
    return f"{100 * statistics.fmean(values):.2f} ± {100 * statistics.stdev(values):.2f}"
