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
from collections import deque
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from multiprocessing.connection import wait

import torch
import torch.multiprocessing as tmp

from modulenet.errors import ModuleNetError, first_line
from modulenet.evaluation.evaluator import Evaluator
from modulenet.evaluation.settings import EvaluationSettings
from modulenet.genotype import Genotype, format_genotype
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


# --------------------------------------------------------------------------- gpus: worker processes


def _worker_main(
    conn, kb, data, num_classes: int, settings: EvaluationSettings, device: int | None, threads: int
) -> None:
    """A worker process: owns one device, evaluates the tasks it is sent until told to stop."""
    if device is not None:  # before CUDA initialises: this worker sees its GPU as cuda:0
        os.environ["CUDA_VISIBLE_DEVICES"] = str(device)
    torch.set_num_threads(max(1, threads))
    evaluator = Evaluator(kb, data, num_classes, _worker_settings(settings, device), progress=False)
    while True:
        task = conn.recv()
        if task is None:
            break
        conn.send([evaluation.to_dict() for evaluation in evaluator.evaluate_task(task)])


@dataclass
class _Worker:
    process: tmp.Process
    conn: object  # the parent's end of the pipe
    device: int | None
    task: list[Genotype] | None = None


class WorkerPoolEvaluator(Evaluator):
    """`evaluator=gpus`: a worker process per GPU (`devices`, default every visible one), or
    `num_workers` CPU workers when there is no GPU. Workers start on the first generation and
    live for the whole search."""

    def __init__(self, *args, devices: list[int] | None = None, num_workers: int | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        if devices is None and self.device.type == "cuda":
            devices = list(range(torch.cuda.device_count()))
        if devices:
            self.slots: list[int | None] = list(devices)
        else:
            count = num_workers if num_workers is not None else max(1, (os.cpu_count() or 1) // 2)
            if count < 1:
                raise ModuleNetError(f"evaluator.num_workers={num_workers} must be a positive integer")
            self.slots = [None] * count
        self.threads = max(1, (os.cpu_count() or 1) // len(self.slots))
        self.workers: list[_Worker] = []
        self.requeued = 0  # individuals sent again after their worker died

    def _start(self, device: int | None) -> _Worker:
        ctx = tmp.get_context("spawn")  # CUDA cannot be forked
        parent, child = ctx.Pipe()
        data = (self.x_train, self.y_train, self.x_val, self.y_val)
        process = ctx.Process(
            target=_worker_main,
            daemon=True,
            args=(child, self.kb, data, self.num_classes, self.settings, device, self.threads),
        )
        process.start()
        child.close()
        return _Worker(process, parent, device)

    def _evaluate_pending(self, pending: list[Genotype]) -> Iterator[Evaluation]:
        if not pending:
            return
        if not self.workers:
            self.workers = [self._start(device) for device in self.slots]
        queue, deaths = deque(self.tasks(pending, len(self.workers))), {}
        while queue or any(w.task is not None for w in self.workers):
            for worker in self.workers:
                if worker.task is None and queue:
                    worker.task = queue.popleft()
                    worker.conn.send(worker.task)
            busy = [w for w in self.workers if w.task is not None]
            ready = wait([w.conn for w in busy] + [w.process.sentinel for w in busy])
            for i, worker in enumerate(self.workers):
                if worker.task is None or (worker.conn not in ready and worker.process.sentinel not in ready):
                    continue
                task = worker.task
                try:
                    evaluations = [Evaluation.from_dict(row) for row in worker.conn.recv()]
                except (EOFError, OSError):  # the worker died with the task
                    worker.process.join(timeout=5)
                    log.warning(
                        "worker %d (pid %s) died evaluating %s (exit code %s); starting another",
                        i,
                        worker.process.pid,
                        " ".join(format_genotype(code) for code in task),
                        worker.process.exitcode,
                    )
                    self.workers[i] = self._start(worker.device)
                    key = tuple(task)
                    deaths[key] = deaths.get(key, 0) + 1
                    if deaths[key] == 1:
                        self.requeued += 1
                        queue.appendleft(task)
                        continue
                    error = f"worker died twice (exit code {worker.process.exitcode})"
                    evaluations = [Evaluation.failed(code, error) for code in task]
                else:
                    worker.task = None
                yield from evaluations

    def close(self) -> None:
        for worker in self.workers:
            try:
                worker.conn.send(None)
            except (BrokenPipeError, OSError):
                pass
        for worker in self.workers:
            worker.process.join(timeout=10)
            if worker.process.is_alive():
                worker.process.kill()
        self.workers = []


# --------------------------------------------------------------------------- ray: actors


class _RayWorker:
    """A Ray actor holding a knowledge base and the data (sent once, through Ray's object store)."""

    def __init__(self, kb, data, num_classes: int, settings: EvaluationSettings, gpu: bool):
        torch.set_num_threads(1)
        self.evaluator = Evaluator(
            kb, data, num_classes, _worker_settings(settings, 0 if gpu else None), progress=False
        )

    def pid(self) -> int:
        return os.getpid()

    def evaluate(self, task: list[Genotype]) -> list[dict]:
        return [evaluation.to_dict() for evaluation in self.evaluator.evaluate_task(task)]


class RayEvaluator(Evaluator):
    """`evaluator=ray`: `num_workers` Ray actors (one GPU each with `gpus_per_worker=1`) on the
    cluster at `address` (None: a local Ray). Ray restarts a dead actor once and retries its
    task once; after that the individual is recorded as failed."""

    def __init__(
        self, *args, address: str | None = None, num_workers: int | None = None, gpus_per_worker: float = 0, **kwargs
    ):
        super().__init__(*args, **kwargs)
        try:
            import ray
        except ImportError:
            raise ModuleNetError("evaluator=ray needs Ray: pip install 'modulenet[ray]' (or evaluator=gpus)") from None
        self.ray = ray
        if not ray.is_initialized():
            _ray_init(ray, address, num_workers)
        count = num_workers if num_workers is not None else max(1, int(ray.available_resources().get("CPU", 1)))
        if count < 1:
            raise ModuleNetError(f"evaluator.num_workers={num_workers} must be a positive integer")
        actor = ray.remote(num_cpus=1, num_gpus=gpus_per_worker, max_restarts=1, max_task_retries=1)(_RayWorker)
        kb_ref = ray.put(self.kb)
        data_ref = ray.put((self.x_train, self.y_train, self.x_val, self.y_val))
        self._refs = (kb_ref, data_ref)  # actor restarts need them alive
        self.actors = [
            actor.remote(kb_ref, data_ref, self.num_classes, self.settings, gpus_per_worker > 0) for _ in range(count)
        ]

    def _evaluate_pending(self, pending: list[Genotype]) -> Iterator[Evaluation]:
        ray = self.ray
        queue, idle, running = deque(self.tasks(pending, len(self.actors))), list(self.actors), {}
        while queue or running:
            while queue and idle:
                actor, task = idle.pop(), queue.popleft()
                running[actor.evaluate.remote(task)] = (actor, task)
            (ref,), _ = ray.wait(list(running), num_returns=1)
            actor, task = running.pop(ref)
            idle.append(actor)
            try:
                evaluations = [Evaluation.from_dict(row) for row in ray.get(ref)]
            except ray.exceptions.RayActorError as err:  # died again after its one restart
                names = " ".join(format_genotype(code) for code in task)
                log.warning("Ray worker died evaluating %s: %s", names, first_line(err))
                evaluations = [Evaluation.failed(code, "Ray worker died twice") for code in task]
            yield from evaluations

    def close(self) -> None:
        for actor in self.actors:
            self.ray.kill(actor)
        self.actors = []


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
