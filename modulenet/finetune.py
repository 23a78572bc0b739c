"""The evaluation stage (Sec. IV): the final population's best architectures, and for comparison
each original architecture of the knowledge base, fine-tuned with every weight trainable
(50 epochs with cutout 16 in the paper), then scored by test error (Tables I-III)."""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pytorch_lightning as pl
import torch

from modulenet.errors import ModuleNetError
from modulenet.evaluate import accelerator_device, quiet_lightning, use_float32_matmul_precision
from modulenet.genotype import format_genotype
from modulenet.knowledge.base import KnowledgeBase
from modulenet.lit_module import IndividualModule, classifier_input_size
from modulenet.rng import seeded
from modulenet.rundir import hold, write_atomic
from modulenet.search import read_evaluations_csv, search_path

log = logging.getLogger(__name__)


CANDIDATES = ("top_k", "every_generation")


@dataclass
class FinetuneSettings:
    top_k: int = 1
    include_originals: bool = True
    # top_k: the final population's best (Sec. IV). every_generation: distinct genotypes of every
    # generation's population, at most max_candidates spread over the score ranking (Fig. 8).
    candidates: str = "top_k"
    max_candidates: int = 40
    epochs: int = 50
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    hidden: list[int] = field(default_factory=lambda: [4096, 4096])
    pool: str = "flatten"
    connection: str = "channel_pool"
    accelerator: str = "cpu"
    precision: str = "32-true"
    float32_matmul_precision: str = "highest"
    seed: int = 0


@dataclass
class FinetuneResult:
    label: str  # "searched #1" or the original architecture's name
    genotype: list[int]
    architecture: str
    test_error: float
    search_score: float | None
    epochs: int
    seconds: float


def select_candidates(results: dict, kb: KnowledgeBase, settings: FinetuneSettings,
                      scores: dict[tuple, float] | None = None) -> list[tuple[str, tuple]]:
    """Searched genotypes ranked by search score ("ModuleNet #1" best), then the originals [i] * c.

    `top_k`: the k best distinct genotypes of the final population. `every_generation`: the
    distinct genotypes of all generations' populations (`results["populations"]`, scores from
    `scores`); beyond `max_candidates`, evenly spaced ranks, so the picks span good to bad."""
    if settings.candidates not in CANDIDATES:
        raise ModuleNetError(f"finetune.candidates={settings.candidates!r}; valid values are {list(CANDIDATES)}")
    scores = dict(scores or {})
    scores.update({tuple(row["genotype"]): row["score"] for row in results["population"]})
    if settings.candidates == "top_k":
        finals = dict.fromkeys(tuple(row["genotype"]) for row in results["population"])
        ranked = sorted(finals, key=lambda code: scores[code])[:settings.top_k]
    else:
        ranked = search_path(results, scores, settings.max_candidates)
    chosen = [(f"ModuleNet #{rank}", code) for rank, code in enumerate(ranked, start=1)]
    if settings.include_originals:
        chosen += [(name, kb.original_genotype(i)) for i, name in enumerate(kb.arch_names)]
    return chosen


def finetune_architecture(kb: KnowledgeBase, genotype, datamodule, settings: FinetuneSettings,
                          progress: bool = True) -> float:
    """Fine-tune one architecture with all weights trainable; returns its test error."""
    device = accelerator_device(settings.accelerator)
    use_float32_matmul_precision(device, settings.float32_matmul_precision)
    with seeded(settings.seed, device):
        return _finetune_architecture(kb, genotype, datamodule, settings, progress)


def _finetune_architecture(kb: KnowledgeBase, genotype, datamodule, settings: FinetuneSettings,
                           progress: bool) -> float:
    trunk = kb.assemble(genotype, connection=settings.connection, trainable=True)
    size = trunk.output_size(datamodule.image_size)
    in_features = classifier_input_size(trunk.out_channels, size, settings.pool)
    s = settings

    def optimizer(params):
        opt = torch.optim.SGD(params, lr=s.lr, momentum=s.momentum, weight_decay=s.weight_decay, nesterov=True)
        return {"optimizer": opt, "lr_scheduler": torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, s.epochs))}

    model = IndividualModule(trunk, in_features, datamodule.num_classes, s.hidden, s.pool, optimizer=optimizer)
    with quiet_lightning():
        trainer = pl.Trainer(max_epochs=s.epochs, accelerator=s.accelerator, devices=1, precision=s.precision,
                             logger=False, enable_checkpointing=False, enable_model_summary=False,
                             enable_progress_bar=progress, num_sanity_val_steps=0)
        trainer.fit(model, datamodule.train_dataloader())
        trainer.test(model, datamodule.test_dataloader(), verbose=False)
    return 1.0 - model.val_accuracy


def run_finetune(kb: KnowledgeBase, results: dict, datamodule, settings: FinetuneSettings, out_dir: Path,
                 tracker=None, progress: bool = True, search_run: Path | None = None) -> list[FinetuneResult]:
    """Fine-tune every candidate, writing `finetune.json` after each one (a crash keeps them) and
    `finetune.md`, a table in the form of the paper's Tables I-II. `out_dir` is held while it runs."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with hold(out_dir):
        return _run_finetune(kb, results, datamodule, settings, out_dir, tracker, progress, search_run)


def _run_finetune(kb, results, datamodule, settings, out_dir, tracker, progress, search_run) -> list[FinetuneResult]:
    json_path = out_dir / "finetune.json"
    done = {}
    if json_path.is_file():  # resume: keep architectures already fine-tuned with these settings
        previous = json.loads(json_path.read_text())
        if previous.get("settings") == asdict(settings):
            done = {r["label"]: FinetuneResult(**r) for r in previous["results"]}
    scores = read_search_scores(search_run) if search_run is not None else {}
    scores.update({tuple(r["genotype"]): r["score"] for r in results.get("population", [])})
    finished: list[FinetuneResult] = []
    for label, code in select_candidates(results, kb, settings, scores):
        if label in done and tuple(done[label].genotype) == tuple(code):
            finished.append(done[label])
            continue
        log.info("fine-tuning %s: %s (%s)", label, format_genotype(code), "+".join(kb.describe(code)))
        start = time.perf_counter()
        test_error = finetune_architecture(kb, code, datamodule, settings, progress)
        result = FinetuneResult(label, list(code), "+".join(kb.describe(code)), test_error, scores.get(code),
                                settings.epochs, time.perf_counter() - start)
        finished.append(result)
        log.info("  test error %.2f %%", 100 * test_error)
        if tracker is not None:
            tracker.log_finetune(result)
        write_atomic(json_path, json.dumps({"settings": asdict(settings), "search_run": str(search_run or ""),
                                            "results": [asdict(r) for r in finished]}, indent=2))
    write_atomic(out_dir / "finetune.md", markdown_table(finished, settings))
    return finished


def markdown_table(results: list[FinetuneResult], settings: FinetuneSettings) -> str:
    lines = [f"Fine-tuned {settings.epochs} epochs, all weights trainable.", "",
             "| Method | Architecture (cell 1 .. c) | Search score | Test Error (%) |", "| --- | --- | --- | --- |"]
    best = min((r.test_error for r in results), default=math.nan)
    for r in results:
        error = f"{100 * r.test_error:.2f}"
        error = f"**{error}**" if r.test_error == best else error
        score = "" if r.search_score is None else f"{r.search_score:.3f}"
        lines.append(f"| {r.label} | {r.architecture} | {score} | {error} |")
    return "\n".join(lines) + "\n"


def read_search_results(search_run: Path) -> dict:
    """The search run's results.json, checked: a JSON object whose `population` is a list of rows
    with a `genotype` (list of integers) and a numeric `score`. A file that is not is one line."""
    path = Path(search_run) / "results.json"
    if not path.is_file():
        raise ModuleNetError(f"search_run={search_run} is not a search run: it has no results.json")
    rerun = f"resuming the search (modulenet-search resume={search_run}, same settings) rewrites it"
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ModuleNetError(f"cannot read {path} ({err}); {rerun}") from None
    try:
        results = json.loads(text)
    except json.JSONDecodeError as err:
        what = ("is empty" if not text.strip()
                else f"is not valid JSON ({err.msg} at line {err.lineno} column {err.colno})")
        raise ModuleNetError(f"{path} {what}: truncated or corrupt; {rerun}") from None
    if not isinstance(results, dict):
        raise ModuleNetError(f"{path} holds a JSON {_json_type(results)}, not a search's results object; {rerun}")
    population = results.get("population")
    if not isinstance(population, list):
        found = "has no 'population'" if "population" not in results else \
            f"has a 'population' that is a JSON {_json_type(population)}"
        raise ModuleNetError(f"{path} {found}: expected a list of rows with 'genotype' and 'score'; {rerun}")
    for i, row in enumerate(population):
        problem = _population_row_problem(row)
        if problem:
            raise ModuleNetError(f"{path}: population[{i}] {problem}; expected {{'genotype': [integers], "
                                 f"'score': number, ...}}; {rerun}")
    return results


def _population_row_problem(row) -> str | None:
    if not isinstance(row, dict):
        return f"is a JSON {_json_type(row)}, not an object"
    missing = [key for key in ("genotype", "score") if key not in row]
    if missing:
        return f"has no {' and no '.join(repr(k) for k in missing)}"
    genotype, score = row["genotype"], row["score"]
    if not isinstance(genotype, list) or not genotype or \
            not all(isinstance(g, int) and not isinstance(g, bool) and g >= 0 for g in genotype):
        return f"has genotype {json.dumps(genotype)[:60]}, not a list of non-negative integers"
    if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
        return f"has score {json.dumps(score)[:60]}, not a finite number"
    return None


def _json_type(value) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", int: "number", float: "number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)



def read_search_scores(search_run: Path) -> dict[tuple, float]:
    """Search score of every successfully evaluated genotype (the run's evaluations.csv)."""
    return {row["genotype"]: row["score"] for row in read_evaluations_csv(Path(search_run) / "evaluations.csv")
            if row["status"] == "ok"}
