"""The search's `evaluate` (Algorithm 1 lines 11 and 16; DEAP's `toolbox.map(toolbox.evaluate, ...)`):
a generation's genotypes parsed once, answered from the memo where it can, the rest cut into
tasks by the `Planner` and mapped over the `Dispatcher` it holds (runtime/dispatch.py: here, a
worker per GPU, or Ray actors), each task trained where it runs by `EvaluationWorker`
(evaluation/training.py). Ours: the paper trains every individual in one process, anew."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import replace

from tqdm.auto import tqdm

from modulenet.evaluation.memo import EvaluationMemo
from modulenet.evaluation.planner import Planner
from modulenet.evaluation.settings import EvaluationSettings
from modulenet.evaluation.stacked import HeadShape
from modulenet.evaluation.training import EvaluationWorker, SearchData
from modulenet.genotype import Genotype, format_genotype
from modulenet.knowledge.base import KnowledgeBase
from modulenet.runtime.dispatch import DISPATCH_ARGUMENTS, Dispatcher, LocalDispatcher, make_dispatcher
from modulenet.runtime.precision import AUTO
from modulenet.runtime.workers import WorkerDied
from modulenet.search.records import Evaluation

log = logging.getLogger(__name__)


def measured_head(settings: EvaluationSettings, num_classes: int) -> HeadShape | None:
    """What `trainer.precision=auto` times: the classifiers as an evaluator with `settings` trains
    them (the input width varies by genotype: the first hidden width stands in for it). None where
    the frozen trunk runs in every training step, which makes it a whole network's precision."""
    s = settings
    if not s.features_cached:
        return None
    copies = min(8, max(1, s.stack_individuals))  # the timing's cost stays bounded
    return HeadShape(s.hidden[0] if s.hidden else 64, tuple(s.hidden), num_classes, copies, s.batch_size)


def resolved_settings(settings: EvaluationSettings, num_classes: int) -> EvaluationSettings:
    """The settings with `precision=auto` replaced by the precision measured for the search's
    classifiers on the settings' device (runtime/precision.py, cached per machine)."""
    if settings.precision != AUTO:
        return settings
    choice = settings.trainer().choose_precision(measured_head(settings, num_classes))
    log.info("trainer.precision=auto chose %s: %s", choice.precision, choice.reason)
    return replace(settings, precision=choice.precision)


class Evaluator:
    """Evaluates genotypes on one knowledge base and the search data (x_train, y_train, x_val,
    y_val): call it with a generation's genotypes, get one `Evaluation` each, in order.

    Its parts each do one job: the memo (`memo_path`, keyed by the settings and `context`), the
    `Planner`, the `dispatcher` (default: this process) and, where the tasks run, `EvaluationWorker`.
    `settings.precision=auto` is measured once, here, and the workers train in the choice.
    """

    def __init__(
        self,
        kb: KnowledgeBase,
        data: SearchData,
        num_classes: int,
        settings: EvaluationSettings,
        memo_path: str | os.PathLike | None = None,
        context: dict | None = None,
        progress: bool = True,
        dispatcher: Dispatcher | None = None,
    ):
        self.kb, self.data, self.num_classes, self.progress = kb, tuple(data), num_classes, progress
        self.settings = resolved_settings(settings, num_classes)
        self.dispatcher = dispatcher if dispatcher is not None else LocalDispatcher()
        x_train, _, x_val, _ = self.data
        self.planner = Planner(kb, self.settings, x_train.shape[1:], len(x_train) + len(x_val))
        self.memo = EvaluationMemo(memo_path, self.settings.fingerprint(context)) if memo_path else None
        self._started = False

    def __call__(self, genotypes: Sequence[Sequence[int]]) -> list[Evaluation]:
        """Every genotype's evaluation, in order: from the memo where one exists, else trained by
        the dispatcher's workers and written to the memo, here only."""
        codes = [self.kb.parse_genotype(g) for g in genotypes]  # the one parse of each genotype
        done = {code: memo for code in codes if self.memo is not None and (memo := self.memo.get(code)) is not None}
        pending = list(dict.fromkeys(c for c in codes if c not in done))
        bar = tqdm(total=len(codes), desc="individuals", unit="ind", leave=False, disable=not self.progress)
        bar.update(len(codes) - len(pending))
        try:
            for evaluation in self._train(pending):
                if self.memo is not None:
                    self.memo.put(evaluation)
                done[evaluation.genotype] = evaluation
                bar.set_postfix_str(format_genotype(evaluation.genotype))
                bar.update(1)
        finally:
            bar.close()
        return [done[code] for code in codes]

    def evaluate(self, genotype: Sequence[int]) -> Evaluation:
        """One individual, memoised."""
        return self([genotype])[0]

    def _train(self, pending: list[Genotype]):
        if not pending:
            return
        if not self._started:
            self.dispatcher.start(EvaluationWorker, (self.kb, self.data, self.num_classes, self.settings))
            self._started = True
        tasks = self.planner.tasks(pending, self.dispatcher.workers)
        for task, result in self.dispatcher.map(tasks, lambda t: " ".join(format_genotype(c) for c in t)):
            if isinstance(result, WorkerDied):
                yield from (Evaluation.failed(code, result.reason) for code in task)
            else:
                yield from result

    def close(self) -> None:
        """Release the dispatcher's workers."""
        self.dispatcher.close()
        self._started = False


def make_evaluator(dispatcher: str, kb, data, num_classes: int, settings: EvaluationSettings, **kwargs) -> Evaluator:
    """An `Evaluator` whose dispatcher is the one `dispatcher` names (`local`, `gpus`, `ray` or your
    own class's dotted path), built with the dispatch keywords among `kwargs` (devices, num_workers,
    address, gpus_per_worker); the others go to the `Evaluator` (memo_path, context, progress)."""
    dispatch = {k: kwargs.pop(k) for k in DISPATCH_ARGUMENTS if k in kwargs}
    held = make_dispatcher(dispatcher, **{"accelerator": settings.accelerator, **dispatch})
    return Evaluator(kb, data, num_classes, settings, dispatcher=held, **kwargs)
