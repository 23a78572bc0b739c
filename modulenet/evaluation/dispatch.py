"""How a generation's individuals are dispatched (`evaluator=` group; DEAP's `toolbox.map` pattern).

The search hands each generation's new genotypes to one callable, which maps them over
workers and returns one `Evaluation` each, in order:

* `local` (`Evaluator`, evaluation/evaluator.py): in this process, the generation batched.
* `gpus` (`WorkerPoolEvaluator`): one worker process per visible GPU (or `num_workers` CPU
  workers where there is none); a task goes to whichever worker frees up first.
* `ray` (`RayEvaluator`): one Ray actor per worker, on a cluster (`address=`) or a local Ray.

A task is what `Evaluator.tasks` cuts a generation into: a group trained together (shared module
prefixes, stacked classifiers) where evaluation is batched, so workers keep the single process's
speed-ups; the largest groups are halved until every worker has one. Every individual is trained
from the same seed, so where it runs does not change its result: all three give what `local`
gives (to float rounding where a stack is split differently). The memo and the progress bar are
`Evaluator.__call__`'s, in this process. A worker that dies mid-task (killed, segfault, lost
node) is replaced and its task re-queued once; a second death records its individuals as failed
and the search goes on.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Iterator
from dataclasses import asdict

import torch

from modulenet.errors import ModuleNetError
from modulenet.evaluation.evaluator import Evaluator
from modulenet.evaluation.settings import EvaluationSettings
from modulenet.genotype import Genotype, format_genotype
from modulenet.runtime.workers import Dispatch, RayPool, WorkerDied, WorkerPool, connect_ray, cpu_workers
from modulenet.search.records import Evaluation
from modulenet.targets import target_class

log = logging.getLogger(__name__)

# evaluator=<name>: the class each built-in choice names as its `_target_`
EVALUATORS = {
    "local": "modulenet.evaluation.evaluator.Evaluator",
    "gpus": "modulenet.evaluation.dispatch.WorkerPoolEvaluator",
    "ray": "modulenet.evaluation.dispatch.RayEvaluator",
}
DISPATCH_ARGUMENTS = ("devices", "num_workers", "address", "gpus_per_worker")


def _worker_settings(settings: EvaluationSettings, device: int | None) -> EvaluationSettings:
    """A worker evaluates its tasks on its own device (the precision was chosen by the dispatcher)."""
    return EvaluationSettings(**{**asdict(settings), "accelerator": "gpu" if device is not None else "cpu"})


def _evaluation_worker(kb, data, num_classes: int, settings: EvaluationSettings, device: int | None) -> Callable:
    """Built in a worker: an `Evaluator` on the worker's device, run one task at a time."""
    evaluator = Evaluator(kb, data, num_classes, _worker_settings(settings, device), progress=False)
    return lambda task: [evaluation.to_dict() for evaluation in evaluator.evaluate_task(task)]


def _evaluations(task: list[Genotype], result) -> list[Evaluation]:
    if isinstance(result, WorkerDied):
        return [Evaluation.failed(code, result.reason) for code in task]
    return [Evaluation.from_dict(row) for row in result]


def _names(task: list[Genotype]) -> str:
    return " ".join(format_genotype(code) for code in task)


class WorkerPoolEvaluator(Evaluator):
    """`evaluator=gpus`: a worker process per GPU (`devices`, default every visible one), or
    `num_workers` CPU workers when there is no GPU (runtime/workers.py). Workers start on the
    first generation and live for the whole search."""

    def __init__(self, *args, devices: list[int] | None = None, num_workers: int | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        if devices is None and self.device.type == "cuda":
            devices = list(range(torch.cuda.device_count()))
        slots = list(devices) if devices else [None] * cpu_workers(num_workers)
        data = (self.x_train, self.y_train, self.x_val, self.y_val)
        self.pool = WorkerPool(_evaluation_worker, (self.kb, data, self.num_classes, self.settings), slots)

    def _evaluate_pending(self, pending: list[Genotype]) -> Iterator[Evaluation]:
        for task, result in self.pool.map(self.tasks(pending, len(self.pool.slots)), _names):
            yield from _evaluations(task, result)

    def close(self) -> None:
        self.pool.close()


class RayEvaluator(Evaluator):
    """`evaluator=ray`: `num_workers` Ray actors (one GPU each with `gpus_per_worker=1`) on the
    cluster at `address` (None: a local Ray). Ray restarts a dead actor once and retries its
    task once; after that the individual is recorded as failed."""

    def __init__(
        self, *args, address: str | None = None, num_workers: int | None = None, gpus_per_worker: float = 0, **kwargs
    ):
        super().__init__(*args, **kwargs)
        ray = connect_ray(address, num_workers)
        count = num_workers if num_workers is not None else max(1, int(ray.available_resources().get("CPU", 1)))
        data = (self.x_train, self.y_train, self.x_val, self.y_val)
        args = (self.kb, data, self.num_classes, self.settings)
        self.pool = RayPool(ray, _evaluation_worker, args, cpu_workers(count), gpus_per_worker)

    def _evaluate_pending(self, pending: list[Genotype]) -> Iterator[Evaluation]:
        for task, result in self.pool.map(self.tasks(pending, len(self.pool.actors)), _names):
            yield from _evaluations(task, result)

    def close(self) -> None:
        self.pool.close()


def evaluator_class(target: str) -> type:
    """The class `evaluator._target_` names; one line when it cannot be imported."""
    return target_class("evaluator._target_", target, f"evaluator={'|'.join(EVALUATORS)}", base=Evaluator)


def build_evaluator(target: str, *args, dispatch: dict | None = None, **kwargs) -> Evaluator:
    """The evaluator class `target` names, built with `args` and `kwargs` (knowledge base, data,
    classes, EvaluationSettings, memo, ...) and those of the `dispatch` arguments (DISPATCH_ARGUMENTS)
    that its constructor names: a class of your own takes only what it declares."""
    cls = evaluator_class(target)
    accepted = inspect.signature(cls).parameters
    return cls(*args, **{k: v for k, v in (dispatch or {}).items() if k in accepted}, **kwargs)


def check_dispatch(target: str, address: str | None) -> None:
    """What dispatching needs, checked before any knowledge base is built: Ray for `evaluator=ray`,
    and Ray's client extra (grpc) for a `ray://` address. A one-line error instead of a late one."""
    import importlib.util

    cls = evaluator_class(target)
    if not issubclass(cls, RayEvaluator):
        return
    if importlib.util.find_spec("ray") is None:
        raise ModuleNetError("evaluator=ray needs Ray: pip install 'modulenet[ray]' (or evaluator=gpus)")
    if str(address or "").startswith("ray://") and importlib.util.find_spec("grpc") is None:
        raise ModuleNetError(
            f"evaluator.address={address!r} is a Ray client address, which needs Ray's client extra: "
            "pip install 'ray[client]' (or run on a node of the cluster with evaluator.address=auto)"
        )


def make_evaluator(name: str, *args, **kwargs) -> Evaluator:
    """The built-in evaluator called `name` (`local`, `gpus` or `ray`); dispatch arguments as keywords."""
    if name not in EVALUATORS:
        raise ModuleNetError(f"unknown evaluator {name!r}; valid evaluators are {list(EVALUATORS)}")
    dispatch = {k: kwargs.pop(k) for k in DISPATCH_ARGUMENTS if k in kwargs}
    return build_evaluator(EVALUATORS[name], *args, dispatch=dispatch, **kwargs)


def dispatch_of(target: str, arguments: dict) -> Dispatch:
    """How the evaluation stage spreads its fine-tunes for the `evaluator` group `target` names: over
    the same workers as the search (a gpus or ray evaluator, or a subclass of one), else in this
    process; `arguments`: the group's DISPATCH_ARGUMENTS."""
    cls = evaluator_class(target)
    kind = "ray" if issubclass(cls, RayEvaluator) else "gpus" if issubclass(cls, WorkerPoolEvaluator) else "local"
    given = {k: arguments[k] for k in DISPATCH_ARGUMENTS if arguments.get(k) is not None}
    return Dispatch(kind, **given)
