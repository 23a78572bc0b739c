"""Dispatchers: where tasks run (the `evaluator.dispatcher` setting; DEAP's `toolbox.map` pattern,
archai's evaluator / async evaluator split). Ours; the paper runs one process.

A dispatcher is held, not inherited: the search's `Evaluator` and the evaluation stage's
`FinetuneStage` each hand it a handler factory, `make_handler(*args, device)`, a picklable
top-level function that returns the callable running one task, and map their tasks over it.
Every dispatcher builds that handler where the tasks run, so a task is trained by the same
code whether it runs here, in a worker process or in a Ray actor:

* `local` (`LocalDispatcher`): in this process, one task after another.
* `gpus` (`WorkerPoolDispatcher`): one worker process per GPU, or `num_workers` CPU workers where
  there is none; a task goes to whichever worker frees up first (runtime/workers.py).
* `ray` (`RayDispatcher`): `num_workers` Ray actors on the cluster at `address` (a local Ray when None).

Your own: a subclass of `Dispatcher` named by its dotted path (`evaluator.dispatcher=mypkg.MyDispatcher`),
built with those of `devices`, `num_workers`, `address`, `gpus_per_worker`, `accelerator` its constructor names.
"""

from __future__ import annotations

import importlib.util
import inspect
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator

from modulenet.errors import ModuleNetError
from modulenet.registry import Registry

# The `device` a handler built by `LocalDispatcher` is given: train where the settings say.
IN_PROCESS = "in-process"


def worker_accelerator(device, accelerator: str) -> str:
    """The accelerator a handler trains on: the settings' own in this process, else the worker's
    device (a GPU it sees as cuda:0, or the CPU)."""
    if device == IN_PROCESS:
        return accelerator
    return "gpu" if device is not None else "cpu"


class Dispatcher(ABC):
    """Runs tasks with handlers built by `make_handler(*args, device)`; `start` once, `map` any
    number of times, `close` at the end. `map` yields (task, result) as tasks finish, in any order;
    a result is `runtime.workers.WorkerDied` where the task's worker died twice."""

    in_process = False  # whether handlers run in this process (live callbacks may be given to them)

    @property
    @abstractmethod
    def workers(self) -> int:
        """How many tasks run at once (the planner cuts a generation into at least this many)."""

    @abstractmethod
    def start(self, make_handler: Callable, args: tuple) -> None:
        """Set up the handlers (each worker's is built where it runs)."""

    @abstractmethod
    def map(self, tasks: Iterable, describe: Callable[[object], str] = str) -> Iterator[tuple[object, object]]:
        """(task, result) for every task."""

    def close(self) -> None:  # noqa: B027 (a dispatcher without workers has nothing to release)
        """Release the workers."""


class LocalDispatcher(Dispatcher):
    """`local`: every task in this process, one after another."""

    in_process = True

    def __init__(self, **_ignored):
        self.handle: Callable | None = None

    @property
    def workers(self) -> int:
        return 1

    def start(self, make_handler: Callable, args: tuple) -> None:
        self.handle = make_handler(*args, IN_PROCESS)

    def map(self, tasks: Iterable, describe: Callable[[object], str] = str) -> Iterator[tuple[object, object]]:
        for task in tasks:
            yield task, self.handle(task)

    def close(self) -> None:
        self.handle = None


class PoolDispatcher(Dispatcher):
    """A dispatcher whose workers are a pool (runtime/workers.py) made by `start`."""

    pool = None

    def map(self, tasks: Iterable, describe: Callable[[object], str] = str) -> Iterator[tuple[object, object]]:
        return self.pool.map(tasks, describe)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()
            self.pool = None


class WorkerPoolDispatcher(PoolDispatcher):
    """`gpus`: a worker process per GPU (`devices`, default every visible one when `accelerator`
    is a GPU), else `num_workers` CPU workers (default half the cores). Workers start with `start`
    and live until `close`; a worker that dies is replaced and its task sent once more."""

    def __init__(
        self, devices: list[int] | None = None, num_workers: int | None = None, accelerator: str = "cpu", **_ignored
    ):
        import torch

        from modulenet.runtime.workers import cpu_workers

        if devices is None and accelerator in ("gpu", "cuda") and torch.cuda.is_available():
            devices = list(range(torch.cuda.device_count()))
        self.slots = list(devices) if devices else [None] * cpu_workers(num_workers)

    @property
    def workers(self) -> int:
        return len(self.slots)

    def start(self, make_handler: Callable, args: tuple) -> None:
        from modulenet.runtime.workers import WorkerPool

        self.pool = WorkerPool(make_handler, args, self.slots)


class RayDispatcher(PoolDispatcher):
    """`ray`: `num_workers` Ray actors (default Ray's CPUs; one GPU each with `gpus_per_worker=1`)
    on the cluster at `address` (None: a local Ray). Connects when built, so a cluster that does not
    answer is one line before any work; the actors start with `start`. A dead actor (its process or
    its node lost) is replaced wherever Ray finds room and its task re-queued once for whichever
    actor frees first; a second death records the task's individuals as failed (workers.py RayPool)."""

    def __init__(
        self, address: str | None = None, num_workers: int | None = None, gpus_per_worker: float = 0, **_ignored
    ):
        from modulenet.runtime.workers import connect_ray, cpu_workers

        self.check(address)
        self.ray = connect_ray(address, num_workers)
        self.count = cpu_workers(num_workers or max(1, int(self.ray.available_resources().get("CPU", 1))))
        self.gpus_per_worker = gpus_per_worker

    @property
    def workers(self) -> int:
        return self.count

    def start(self, make_handler: Callable, args: tuple) -> None:
        from modulenet.runtime.workers import RayPool

        self.pool = RayPool(self.ray, make_handler, args, self.count, self.gpus_per_worker)

    @staticmethod
    def check(address: str | None) -> None:
        """Ray's client extra (grpc) for a `ray://` address, before Ray is asked to connect: one
        line instead of Ray's late failure (Ray itself: `connect_ray`)."""
        if str(address or "").startswith("ray://") and importlib.util.find_spec("grpc") is None:
            raise ModuleNetError(
                f"evaluator.address={address!r} is a Ray client address, which needs Ray's client extra: "
                "pip install 'ray[client]' (or run on a node of the cluster with evaluator.address=auto)"
            )


DISPATCHERS = Registry("evaluator.dispatcher", base=Dispatcher)
DISPATCHERS.register("local", LocalDispatcher)
DISPATCHERS.register("gpus", WorkerPoolDispatcher)
DISPATCHERS.register("ray", RayDispatcher)

# What a dispatcher may be built with (the evaluator group's settings of these names).
DISPATCH_ARGUMENTS = ("devices", "num_workers", "address", "gpus_per_worker", "accelerator")


def dispatcher_class(name: str) -> type[Dispatcher]:
    """The class `name` chooses: a built-in (`local`, `gpus`, `ray`) or your own `Dispatcher`
    subclass by its dotted path. One line when it is neither."""
    return DISPATCHERS.get(name)


def make_dispatcher(name: str, **arguments) -> Dispatcher:
    """The dispatcher `name` chooses, built with those of `arguments` its constructor names; a
    bad count is one line, before any work."""
    workers = arguments.get("num_workers")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers <= 0):
        raise ModuleNetError(f"evaluator.num_workers={workers} must be a positive integer")
    cls = dispatcher_class(name)
    accepted = inspect.signature(cls).parameters
    takes_all = any(p.kind is p.VAR_KEYWORD for p in accepted.values())
    return cls(**{k: v for k, v in arguments.items() if takes_all or k in accepted})
