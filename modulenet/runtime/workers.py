"""Workers that each own one device and run tasks sent to them: the machinery under the search's
dispatchers (runtime/dispatch.py), for the search and the evaluation stage alike. Ours; the
paper runs one process.

A worker is built in its own process (or Ray actor) by `make_handler(*args, device)`, a picklable
top-level function that returns the callable which runs one task; only tasks and their results
cross between processes. Tasks go to whichever worker frees up first, and results come back as
they finish, each with its task. A worker that dies mid-task (killed, segfault, lost node) is
replaced and its task sent once more; a second death yields `WorkerDied` for that task.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import wait

import torch
import torch.multiprocessing as tmp

from modulenet.errors import ModuleNetError, first_line

log = logging.getLogger(__name__)


@dataclass
class WorkerDied:
    """What a task yields when its worker died with it twice."""

    reason: str


def _send_again(task, deaths: dict, queue: deque) -> bool:
    """Put a task whose worker died back at the queue's head once; a second death gives up on it."""
    key = repr(task)
    deaths[key] = deaths.get(key, 0) + 1
    if deaths[key] > 1:
        return False
    queue.appendleft(task)
    return True


def cpu_workers(num_workers: int | None, key: str = "evaluator.num_workers") -> int:
    """How many CPU workers: `num_workers`, default half the cores (at least one)."""
    count = num_workers if num_workers is not None else max(1, (os.cpu_count() or 1) // 2)
    if not isinstance(count, int) or count < 1:
        raise ModuleNetError(f"{key}={num_workers} must be a positive integer")
    return count


def _worker_main(conn, make_handler: Callable, args: tuple, device: int | None, threads: int) -> None:
    """A worker process: owns one device, runs the tasks it is sent until told to stop."""
    if device is not None:  # before CUDA initialises: this worker sees its GPU as cuda:0
        os.environ["CUDA_VISIBLE_DEVICES"] = str(device)
    torch.set_num_threads(max(1, threads))
    handle = make_handler(*args, device)
    while True:
        task = conn.recv()
        if task is None:
            break
        conn.send(handle(task))


@dataclass
class _Worker:
    process: tmp.Process
    conn: object  # the parent's end of the pipe
    device: int | None
    task: object | None = None


class WorkerPool:
    """One worker process per slot: a GPU index (the worker sees it as cuda:0) or None (a CPU
    worker). The cores are shared out among the workers. Workers start at the first `map` and
    live until `close`."""

    def __init__(self, make_handler: Callable, args: tuple, slots: list[int | None]):
        self.make_handler, self.args, self.slots = make_handler, args, list(slots)
        self.threads = max(1, (os.cpu_count() or 1) // len(self.slots))
        self.workers: list[_Worker] = []
        self.requeued = 0  # tasks sent again after their worker died

    def _start(self, device: int | None) -> _Worker:
        ctx = tmp.get_context("spawn")  # CUDA cannot be forked
        parent, child = ctx.Pipe()
        process = ctx.Process(
            target=_worker_main, daemon=True, args=(child, self.make_handler, self.args, device, self.threads)
        )
        process.start()
        child.close()
        return _Worker(process, parent, device)

    def map(self, tasks: Iterable, describe: Callable[[object], str] = str) -> Iterator[tuple[object, object]]:
        """(task, result) as each task finishes; result is a `WorkerDied` after a second death."""
        queue, deaths = deque(tasks), {}
        if queue and not self.workers:
            self.workers = [self._start(device) for device in self.slots]
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
                    result = worker.conn.recv()
                except (EOFError, OSError):  # the worker died with the task
                    worker.process.join(timeout=5)
                    code = worker.process.exitcode
                    log.warning(
                        "worker %d (pid %s) died running %s (exit code %s); starting another",
                        i,
                        worker.process.pid,
                        describe(task),
                        code,
                    )
                    self.workers[i] = self._start(worker.device)
                    if _send_again(task, deaths, queue):
                        self.requeued += 1
                        continue
                    result = WorkerDied(f"worker died twice (exit code {code})")
                else:
                    worker.task = None
                yield task, result

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


class _RayWorker:
    """A Ray actor around one handler (its arguments sent once, through Ray's object store)."""

    def __init__(self, make_handler: Callable, gpu: bool, *args):
        torch.set_num_threads(1)
        self.handle = make_handler(*args, 0 if gpu else None)

    def where(self) -> tuple[str, int]:
        """The node this actor runs on and its process id: its answer says it is ready."""
        import ray

        return ray.get_runtime_context().get_node_id(), os.getpid()

    def run(self, task):
        return self.handle(task)


class RayPool:
    """`count` Ray actors (one CPU each, and one GPU each with `gpus_per_worker=1`) on the Ray this
    process is connected to. A task goes to whichever actor frees up first, once that actor has
    started (built its handler).

    An actor that dies (its process killed, its node lost) is replaced by a new actor, which Ray
    places on any node with the resources free, and its task is queued once more for whichever
    actor frees first; a second death yields `WorkerDied` for that task. Ray's own restarts and task
    retries are off: Ray retries a task on the same actor only, and on a lost node that actor's
    restart waits for resources a smaller cluster may never have, so the survivors would sit idle
    (and a retry that finds the actor still unreachable fails at once). A replacement that cannot
    be placed simply waits, taking no task; `start_timeout` seconds with no actor running at all
    yield `WorkerDied` for every task left."""

    start_timeout = 600.0  # seconds with no live actor (a cluster without room for one) before giving up

    def __init__(self, ray, make_handler: Callable, args: tuple, count: int, gpus_per_worker: float = 0):
        self.ray, self.gpus_per_worker = ray, gpus_per_worker
        self._class = ray.remote(num_cpus=1, num_gpus=gpus_per_worker, max_restarts=0, max_task_retries=0)(_RayWorker)
        self._make = (make_handler, gpus_per_worker > 0, *[ray.put(a) for a in args])  # replacements reuse them
        self.actors: list = []  # every actor of the pool, started or not
        self.starting: dict = {}  # ObjectRef of an actor's `where` -> the actor, until it answers
        self.idle: list = []  # started actors without a task
        self.running: dict = {}  # ObjectRef of a task's result -> (actor, task)
        self.where: dict = {}  # actor -> (node id, pid), once started
        self.requeued = 0  # tasks sent again after their actor died
        self.start_deaths = 0  # actors lost before they started, since one last started
        for _ in range(count):
            self._spawn()

    def _spawn(self) -> None:
        actor = self._class.remote(*self._make)
        self.actors.append(actor)
        self.starting[actor.where.remote()] = actor

    def map(self, tasks: Iterable, describe: Callable[[object], str] = str) -> Iterator[tuple[object, object]]:
        """(task, result) as each task finishes; result is a `WorkerDied` after a second death."""
        queue, deaths, stalled = deque(tasks), {}, None
        while queue or self.running:
            while queue and self.idle:
                actor, task = self.idle.pop(0), queue.popleft()
                self.running[actor.run.remote(task)] = (actor, task)
            if not self.running and not self.starting:
                reason = "no Ray worker left: each replacement died before it started"
                yield from ((task, WorkerDied(reason)) for task in queue)
                return
            waited = time.monotonic()
            done, _ = self.ray.wait(
                [*self.running, *self.starting], num_returns=1, timeout=min(30.0, self.start_timeout)
            )
            if not done:
                if self.running:
                    continue
                stalled = stalled or self._stalled(queue, since=waited)
                if time.monotonic() - stalled < self.start_timeout:
                    continue
                reason = f"no Ray worker started in {self.start_timeout:.0f} s (no node with room for one)"
                yield from ((task, WorkerDied(reason)) for task in queue)
                return
            stalled = None
            ref = done[0]
            if ref in self.starting:
                self._started(ref)
                continue
            actor, task = self.running.pop(ref)
            try:
                result = self.ray.get(ref)
            except (self.ray.exceptions.RayActorError, self.ray.exceptions.ObjectLostError) as err:
                self._replace(actor, f"died running {describe(task)}", err)
                if _send_again(task, deaths, queue):
                    self.requeued += 1
                    continue
                result = WorkerDied(f"Ray worker died twice ({first_line(err)})")
            else:
                self.idle.append(actor)
            yield task, result

    def _stalled(self, queue: deque, since: float) -> float:
        """When the wait with no actor running began (`since`), after saying why the tasks wait."""
        log.warning(
            "%d task(s) wait for a Ray worker: none is running and %d waiting for a node with a free CPU%s",
            len(queue),
            len(self.starting),
            f" and {self.gpus_per_worker} GPU" if self.gpus_per_worker else "",
        )
        return since

    def _started(self, ref) -> None:
        """An actor answered `where` (it is ready), or died before it could."""
        actor = self.starting.pop(ref)
        try:
            self.where[actor] = self.ray.get(ref)
        except self.ray.exceptions.RayActorError as err:
            if getattr(err, "actor_init_failed", False):  # its handler raised: every replacement would too
                self.close()
                raise ModuleNetError(f"a Ray worker could not start: {_last_line(err)}") from None
            self.start_deaths += 1  # lost before it started (its node died, its process was killed)
            if self.start_deaths <= len(self.actors):
                self._replace(actor, "died before it started", err)
            else:  # replacements keep dying unstarted: stop making them
                log.warning("Ray worker died before it started: %s; not replaced", first_line(err))
                self.ray.kill(actor, no_restart=True)
                self.actors.remove(actor)
            return
        self.start_deaths = 0
        self.idle.append(actor)

    def _replace(self, actor, what: str, err: BaseException) -> None:
        node, pid = self.where.pop(actor, ("?", "?"))
        log.warning("Ray worker (node %s, pid %s) %s: %s; starting another", node[:8], pid, what, first_line(err))
        self.ray.kill(actor, no_restart=True)  # unreachable is not always dead: free its resources
        self.actors.remove(actor)
        self._spawn()

    def close(self) -> None:
        for actor in self.actors:
            self.ray.kill(actor, no_restart=True)
        self.actors, self.starting, self.idle, self.running, self.where = [], {}, [], {}, {}


def _last_line(err: BaseException) -> str:
    """The last line of a remote error: the exception that ended its traceback."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[-1] if lines else type(err).__name__


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
            # a cluster that refuses this process's token (or lack of one) is a ConnectionError too
            auth = "; with token authentication also RAY_AUTH_MODE=token and the cluster's token"
            raise ModuleNetError(
                f"evaluator=ray cannot connect to evaluator.address={address!r} ({first}); {_RAY_HINT}"
                f"{auth if isinstance(err, ConnectionError) else ''}"
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
