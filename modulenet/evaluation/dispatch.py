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
import os
import socket
from collections.abc import Callable, Iterator
from dataclasses import asdict

import torch

from modulenet.errors import ModuleNetError
from modulenet.evaluation.evaluator import Evaluator
from modulenet.evaluation.settings import EvaluationSettings
from modulenet.genotype import Genotype, format_genotype
from modulenet.runtime.workers import RayPool, WorkerDied, WorkerPool, cpu_workers
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


def connect_ray(address: str | None, num_workers: int | None):
    """Ray, connected to the cluster at `address` (None: a local Ray) unless it already is."""
    try:
        import ray
    except ImportError:
        raise ModuleNetError("evaluator=ray needs Ray: pip install 'modulenet[ray]' (or evaluator=gpus)") from None
    if not ray.is_initialized():
        _ray_init(ray, address, num_workers)
    return ray


_RAY_HINT = (
    "check evaluator.address (HOST:6379 of the head node, 'auto' on a node of the cluster, or "
    "ray://HOST:10001 with pip install 'ray[client]'), or use evaluator=gpus"
)


def _ray_init(ray, address: str | None, num_workers: int | None) -> None:
    """`ray.init` on the cluster at `address` (None: a local Ray); any failure is one line.

    A HOST:PORT address is first probed with one TCP connection: with nothing listening there,
    Ray itself retries for many minutes before it gives up."""
    if address:
        address = str(address)
        reason = _unreachable(address)
        if reason:
            raise ModuleNetError(f"evaluator.address={address!r}: no Ray cluster answers there ({reason}); {_RAY_HINT}")
    try:
        ray.init(
            address=address,
            include_dashboard=False,
            log_to_driver=False,
            **({} if address else {"num_cpus": num_workers or os.cpu_count()}),
        )
    except Exception as err:  # ConnectionError, RuntimeError, ValueError, TimeoutError, Ray's own types
        try:
            ray.shutdown()  # whatever the failed init left behind
        except Exception:
            pass
        first = next((line.strip() for line in str(err).splitlines() if line.strip()), type(err).__name__)
        if address:
            raise ModuleNetError(
                f"evaluator=ray cannot connect to evaluator.address={address!r} ({first}); {_RAY_HINT}"
            ) from None
        raise ModuleNetError(
            f"evaluator=ray cannot start a local Ray ({first}); set evaluator.address to a "
            f"running cluster or use evaluator=gpus"
        ) from None


def _unreachable(address: str) -> str | None:
    """Why nothing accepts a TCP connection at the HOST:PORT `address`, or None (reachable, or
    another form such as 'auto' or 'ray://...', which ray.init judges itself)."""
    if "://" in address or address in ("auto", "local"):
        return None
    target = address
    try:  # where Ray will connect: it replaces localhost by this node's IP
        from ray._private.services import canonicalize_bootstrap_address

        target = canonicalize_bootstrap_address(address) or address
    except Exception:  # a malformed address: ray.init says what is wrong with it
        return None
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit() or not host:
        return None
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=10).close()
    except OSError as err:
        why = err.strerror or str(err) or type(err).__name__
        return f"{target}: {why}" if target != address else why
    return None


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
