"""The evaluation stage (Sec. IV): the final population's architectures, and for comparison each
original architecture of the knowledge base, fine-tuned with every weight trainable (50 epochs
with cutout 16 in the paper). The paper fine-tunes the final population and determines the best
final architecture from it; here the searched candidate with the lowest **validation** error is
`selected`, and its **test** error is the ModuleNet row of Tables I-IV (top-1, and top-5 where
there are more than 5 classes). The test split never chooses anything."""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterator
from dataclasses import asdict, replace
from pathlib import Path

import torch

from modulenet import rundir
from modulenet.errors import first_line
from modulenet.finetune.candidates import select_candidates
from modulenet.finetune.network import export_network, load_network
from modulenet.finetune.results import FinetuneResult, markdown_table, select, selected_network
from modulenet.finetune.settings import FinetuneSettings
from modulenet.finetune.training import Candidate, StageContext, candidate_worker
from modulenet.genotype import format_genotype
from modulenet.knowledge.base import KnowledgeBase
from modulenet.rundir import hold, read_scores, write_atomic
from modulenet.runtime.dispatch import Dispatcher, LocalDispatcher
from modulenet.runtime.trainer import accelerator_device
from modulenet.runtime.workers import WorkerDied

log = logging.getLogger(__name__)


class FinetuneStage:
    """The evaluation stage, built once: a knowledge base, the data (with the fine-tuning
    augmentation), the settings, where candidates are fine-tuned (`dispatch`: this process, or
    the search's dispatchers, runtime/workers.py) and the tracker that sees each result."""

    def __init__(
        self,
        kb: KnowledgeBase,
        datamodule,
        settings: FinetuneSettings,
        dispatcher: Dispatcher | None = None,
        tracker=None,
        progress: bool = True,
    ):
        if settings.threads is None and accelerator_device(settings.accelerator).type == "cpu":
            # fixed here, before any dispatch: a worker given fewer threads would round differently
            settings = replace(settings, threads=torch.get_num_threads())
        self.kb, self.datamodule, self.settings = kb, datamodule, settings
        self.dispatcher, self.tracker, self.progress = dispatcher or LocalDispatcher(), tracker, progress

    def run(
        self, results: dict, out_dir: Path, search_run: Path | None = None, dataset_config: dict | None = None
    ) -> list[FinetuneResult]:
        """Fine-tune every candidate of the search's `results` (and the originals), writing
        `finetune.json` as each finishes (a crash keeps them; this process is its one writer),
        `finetune.md`, a table in the form of the paper's Tables I-II, and each network under
        `networks/` (network.py; `dataset_config`, the dataset group it was fine-tuned on, is
        recorded with it for `modulenet-evaluate`). A rerun continues: rows finished with these
        settings are kept. `out_dir` is held while it runs."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        with hold(out_dir):
            json_path = out_dir / rundir.FINETUNE
            done = _finished_before(out_dir, self.settings)
            # the settings first: a killed first architecture's checkpoint is continued only under them
            _write_finetune_json(json_path, self.settings, search_run, list(done.values()))
            scores = read_scores(search_run) if search_run is not None else {}
            scores.update({tuple(r["genotype"]): r["score"] for r in results.get("population", [])})
            candidates = [
                Candidate(label, tuple(code), seed)
                for label, code in select_candidates(results, self.kb, self.settings, scores)
                for seed in self.settings.seeds or [self.settings.seed]
            ]
            finished = {c: done[c.label, c.seed] for c in candidates if _same(done.get((c.label, c.seed)), c)}
            curves = self.tracker is not None and hasattr(self.tracker, "log_finetune_epoch")
            context = StageContext(self.kb, self.datamodule, self.settings, out_dir, scores, dataset_config, curves)
            for candidate, result in self._fine_tune(context, [c for c in candidates if c not in finished]):
                finished[candidate] = result
                log.info(
                    "  %s, seed %d: validation error %.2f %%, test error %.2f %%",
                    result.label,
                    result.seed,
                    100 * result.val_error,
                    100 * result.test_error,
                )
                if self.tracker is not None:
                    self.tracker.log_finetune(result)
                rows = [finished[c] for c in candidates if c in finished]
                _write_finetune_json(json_path, self.settings, search_run, rows)
            return self._finish([finished[c] for c in candidates if c in finished], out_dir, search_run)

    def _fine_tune(self, context: StageContext, todo: list[Candidate]) -> Iterator[tuple[Candidate, FinetuneResult]]:
        """Each candidate's row as it finishes: here, one after another, or from the workers."""
        for candidate in todo:
            code = candidate.genotype
            log.info(
                "fine-tuning %s: %s (%s), seed %d",
                candidate.label,
                format_genotype(code),
                "+".join(self.kb.describe(code)),
                candidate.seed,
            )
        if not todo:
            return
        # In this process a fine-tune shows its progress bar and reports its curves as they come;
        # a worker sends them back with its row.
        live = self.dispatcher.in_process
        curves = self.tracker.log_finetune_epoch if live and context.curves else None
        self.dispatcher.start(candidate_worker, (context, self.progress and live, curves))
        try:
            for candidate, answer in self.dispatcher.map(todo, lambda c: f"{c.label} seed {c.seed}"):
                if isinstance(answer, WorkerDied):  # left unfinished: a rerun continues it
                    log.error("%s, seed %d not fine-tuned: %s", candidate.label, candidate.seed, answer.reason)
                    continue
                result, epochs = answer
                for row in epochs:  # the curves the worker measured, in its order
                    self.tracker.log_finetune_epoch(candidate.label, candidate.seed, row)
                yield candidate, result
        finally:
            self.dispatcher.close()

    def _finish(self, finished: list[FinetuneResult], out_dir: Path, search_run) -> list[FinetuneResult]:
        """The selection by validation error, the selected network exported, the table."""
        select(finished)
        selected = selected_network(finished)
        if selected is not None:
            _export(out_dir / selected.network)
            log.info("selected network (%s, seed %d): %s", selected.label, selected.seed, out_dir / selected.network)
            if self.tracker is not None and hasattr(self.tracker, "log_selected_network"):
                self.tracker.log_selected_network(selected, out_dir / selected.network)
        _write_finetune_json(out_dir / rundir.FINETUNE, self.settings, search_run, finished)
        write_atomic(out_dir / rundir.FINETUNE_TABLE, markdown_table(finished, self.settings))
        return finished


def _finished_before(out_dir: Path, settings: FinetuneSettings) -> dict[tuple[str, int], FinetuneResult]:
    """The rows an earlier run of these settings finished, by (label, seed). Under other settings
    nothing is kept, and their checkpoints go: they must not be continued."""
    json_path = out_dir / rundir.FINETUNE
    if not json_path.is_file():
        return {}
    previous = json.loads(json_path.read_text())
    if previous.get("settings") != asdict(settings):
        for stale in (out_dir / rundir.NETWORKS).glob(f"*/{rundir.CHECKPOINTS}"):
            shutil.rmtree(stale, ignore_errors=True)
        return {}
    return {
        (r["label"], r["seed"]): FinetuneResult(**{k: v for k, v in r.items() if k != "score"})
        for r in previous["results"]
        if "val_error" in r
    }


def _same(row: FinetuneResult | None, candidate: Candidate) -> bool:
    return row is not None and tuple(row.genotype) == tuple(candidate.genotype)


def _export(folder: Path) -> None:
    """The selected network as a torch.export program beside its weights. A network that
    torch.export cannot trace keeps its weights and description: a warning, not a failure."""
    try:
        export_network(load_network(folder, trust_code=True), folder / rundir.NETWORK_EXPORT)  # our own run
    except Exception as err:  # torch.export's failures have no common type
        log.warning("could not export %s with torch.export: %s", folder, first_line(err))


def _write_finetune_json(path: Path, settings: FinetuneSettings, search_run, finished: list[FinetuneResult]) -> None:
    rows = [{**asdict(r), "score": r.search_score} for r in finished]  # `score`: the search score, by its name
    selected = selected_network(finished)
    document = {
        "settings": asdict(settings),
        "search_run": str(search_run or ""),
        "selected_network": selected.network if selected is not None else None,
        "results": rows,
    }
    write_atomic(path, json.dumps(document, indent=2))
