"""Ray as a real cluster (issue 33): a head node and a worker node started with `ray start` on this
machine, each its own processes, ports and temp dir, one CPU each, so the two actors of
`evaluator.num_workers=2` cannot share a node. The search and the fine-tune run through the console
scripts with `evaluator=ray evaluator.address=127.0.0.1:PORT`, as a user points them at a cluster.

The fault, made deterministic: another driver holds the head node's CPU, so the worker node's actor
takes the first tasks; once one has come back and the next one runs, the actor is frozen mid-task
(SIGSTOP: a frozen task cannot send its result), then the node's raylet and the actor are killed, as
when the machine itself goes, and the head is let go. Killing the raylet alone is no node loss for a
short task: its worker finishes and answers its driver directly before it notices the raylet gone.
The lost task must be re-queued on the head node, and each run must end with the local evaluator's
results: the same populations, every genotype in the memo once and none failed, the same
finetune.json and the same networks.

The cluster is stopped by signalling its own `ray start --block` processes and killing whatever is
left in their sessions, never with `ray stop`, which stops every Ray on the machine."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch
from conftest import TINY_DATA, TINY_SEARCH

from modulenet import rundir

BIN = Path(sys.executable).parent
pytest.importorskip("ray")

pytestmark = pytest.mark.slow  # make test-all: two Ray nodes and five console-script runs (a few minutes)

# One individual per stacked training, so where an individual trains cannot change its numbers, and
# float32 chosen here: `auto` times float32 against bf16 in each run, and a loaded machine may tip it.
PINNED = ["trainer.precision=32-true", "trainer.memory_format=contiguous"]
SEARCH = [*TINY_DATA, *TINY_SEARCH, "evaluator.stack_individuals=1", *PINNED]
# Two searched candidates and no originals: one fine-tune for each node.
FINETUNE = [
    "finetune.epochs=1",
    "finetune.batch_size=32",
    "finetune.top_k=2",
    "finetune.include_originals=false",
    "logger=none",
    "progress=false",
    "trainer.accelerator=cpu",
    *PINNED,
]
TASK_TITLE = "ray::_RayWorker.run"  # an actor's process title while it runs a task (RayPool's actor class)


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:  # gone
        return ""


def _processes() -> dict[int, tuple[int, int, str]]:
    """pid -> (parent pid, session id, command line) of every process on this machine."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:  # gone meanwhile
            continue
        fields = stat.rsplit(")", 1)[1].split()
        found[int(entry)] = (int(fields[1]), int(fields[3]), _command_line(int(entry)))
    return found


class Node:
    """One Ray node: a `ray start --block` process (its own session) and the processes it starts."""

    def __init__(self, name: str, root: Path, env: dict, args: list[str]):
        self.name, self.temp_dir = name, root / name
        self.temp_dir.mkdir(parents=True)
        manager, objects, agent, agent_grpc, runtime_env, metrics, low = _free_ports(7)
        self.manager_port = manager
        command = [
            str(BIN / "ray"),
            "start",
            "--block",
            "--node-ip-address=127.0.0.1",
            f"--temp-dir={self.temp_dir}",
            "--num-cpus=1",
            "--num-gpus=0",
            "--object-store-memory=100000000",
            f"--node-manager-port={manager}",
            f"--object-manager-port={objects}",
            f"--dashboard-agent-listen-port={agent}",
            f"--dashboard-agent-grpc-port={agent_grpc}",
            f"--runtime-env-agent-port={runtime_env}",
            f"--metrics-export-port={metrics}",
            f"--min-worker-port={low}",  # workers of both nodes take ports from one machine
            f"--max-worker-port={low + 50}",
            "--disable-usage-stats",
            *args,
        ]
        self.log = root / f"{name}.log"
        with self.log.open("w") as out:
            self.process = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )

    def descendants(self) -> dict[int, str]:
        processes, found, todo = _processes(), {}, [self.process.pid]
        while todo:
            parent = todo.pop()
            for pid, (ppid, _, cmdline) in processes.items():
                if ppid == parent and pid not in found:
                    found[pid] = cmdline
                    todo.append(pid)
        return found

    def freeze_a_running_task(self) -> int | None:
        """The pid of an actor frozen (SIGSTOP) while it runs a task, or None if none runs. Ray sets
        the title back before a task's result leaves its process, so a process frozen with the
        task's title has not sent it."""
        for pid, cmdline in self.descendants().items():
            if cmdline.startswith(TASK_TITLE):
                os.kill(pid, signal.SIGSTOP)
                if _command_line(pid).startswith(TASK_TITLE):
                    return pid
                os.kill(pid, signal.SIGCONT)  # it finished between the two looks
        return None

    def die(self, frozen: int) -> None:
        """The node lost: its raylet killed, and the frozen actor with it."""
        (raylet,) = [pid for pid, cmdline in self.descendants().items() if "/raylet/raylet " in cmdline]
        os.kill(raylet, signal.SIGKILL)
        os.kill(frozen, signal.SIGKILL)

    def stop(self) -> None:
        """SIGTERM to `ray start --block` (it stops its node's processes), then SIGKILL to anything
        left in its session (workers outlive a killed raylet for a moment)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            left = [pid for pid, (_, session, _) in _processes().items() if session == self.process.pid]
            if not left:
                return
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.2)


# Waits, as a driver of its own, until the node with this node-manager port is alive in the cluster.
WAIT_FOR_NODE = """
import sys, time, ray
ray.init(address=sys.argv[1], log_to_driver=False, include_dashboard=False)
port, deadline = int(sys.argv[2]), time.monotonic() + 240
while not any(n["Alive"] and n["NodeManagerPort"] == port for n in ray.nodes()):
    assert time.monotonic() < deadline, "the worker node did not join in 240 s"
    time.sleep(0.2)
"""


class Cluster:
    """A head node and one worker node on 127.0.0.1. This process is no driver of it (it would
    keep Ray's state for the rest of the session): drivers are the console scripts."""

    def __init__(self, root: Path, env: dict):
        self.root, self.env, self.workers = root, env, 0
        self.port = _free_ports(1)[0]
        self.address = f"127.0.0.1:{self.port}"
        dashboard = _free_ports(1)[0]  # the head runs its dashboard process even without the UI
        head = ["--head", f"--port={self.port}", "--include-dashboard=false", f"--dashboard-port={dashboard}"]
        self.head = Node("head", root, env, head)
        self.worker: Node | None = None

    def wait_for_head(self) -> None:
        deadline = time.monotonic() + 120
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                assert self.head.process.poll() is None, self.head.log.read_text()[-3000:]
                assert time.monotonic() < deadline, "the head node's GCS did not start in 120 s"
                time.sleep(0.2)

    def start_worker(self) -> Node:
        """A fresh worker node (the last one is gone, or never was), once the head knows it is alive."""
        self.workers += 1
        self.worker = node = Node(f"worker{self.workers}", self.root, self.env, [f"--address={self.address}"])
        joined = subprocess.run(
            [sys.executable, "-c", WAIT_FOR_NODE, self.address, str(node.manager_port)],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert joined.returncode == 0, joined.stderr[-3000:] + node.log.read_text()[-3000:]
        return node

    def stop(self) -> None:
        for node in (self.worker, self.head):
            if node is not None:
                node.stop()


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """The console scripts' and the nodes' environment: a cache of the module's own (the local run
    trains the quickstart sources once, every run reads them), W&B offline, one thread, no Ray
    address, and the cluster's own token: Ray's token authentication, as `ray start --head` turns
    it on wherever a ~/.ray/auth_token exists, with a token that is the test's, not the user's."""
    cache = tmp_path_factory.mktemp("cache")
    env = {**os.environ, "MODULENET_CACHE": str(cache), "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32))
    # One CPU thread in every process, as each Ray actor has: CPU kernels split their sums by thread,
    # and a fine-tune computes with the thread count of the command that starts it, wherever it runs.
    env["OMP_NUM_THREADS"] = "1"
    for name in ("RAY_ADDRESS", "RAY_AUTH_TOKEN_PATH"):
        env.pop(name, None)
    return env


@pytest.fixture(scope="module")
def cluster(env):
    # short: Ray's Unix sockets live under the temp dir, and a socket path has at most 107 bytes
    root = Path(tempfile.mkdtemp(prefix="mn-ray-"))
    cluster = None
    try:
        cluster = Cluster(root, env)
        cluster.wait_for_head()
        cluster.start_worker()
        yield cluster
    finally:
        if cluster is not None:
            cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


def _cli(script: str, args: list[str], cwd: Path, env: dict) -> subprocess.Popen:
    out = (cwd / f"{script}.out").open("w")
    return subprocess.Popen([str(BIN / script), *args], cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)


def _finish(proc: subprocess.Popen, cwd: Path, script: str, timeout: float = 600) -> str:
    try:
        proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    output = (cwd / f"{script}.out").read_text()
    assert proc.returncode == 0, output[-4000:]
    return output


@pytest.fixture(scope="module")
def local(tmp_path_factory, env):
    """The reference: the same search and fine-tune with the local evaluator, in a run directory of
    their own."""
    cwd = tmp_path_factory.mktemp("local")
    _finish(_cli("modulenet-search", [*SEARCH, f"hydra.run.dir={cwd / 'search'}"], cwd, env), cwd, "modulenet-search")
    ft = [f"search_run={cwd / 'search'}", *FINETUNE, f"hydra.run.dir={cwd / 'finetune'}"]
    _finish(_cli("modulenet-finetune", ft, cwd, env), cwd, "modulenet-finetune")
    return cwd


# A driver of its own that holds the head node's one CPU with an actor until its stdin closes.
HOLD_THE_HEAD = """
import sys, ray
ray.init(address=sys.argv[1], log_to_driver=False, include_dashboard=False)
class Holder:
    def ready(self):
        return 1
holder = ray.remote(num_cpus=1, resources={"node:__internal_head__": 0.01})(Holder).remote()
ray.get(holder.ready.remote())
print("held", flush=True)
sys.stdin.read()
"""


@contextlib.contextmanager
def _head_held(cluster: Cluster):
    """While held, the head node has no free CPU: every task goes to the worker node's actor."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_THE_HEAD, cluster.address],
        env=cluster.env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        yield
    finally:
        holder.stdin.close()  # the holder's driver ends, and with it its actor: the CPU is free again
        try:
            holder.wait(timeout=60)
        except subprocess.TimeoutExpired:
            holder.kill()
            holder.wait()


def _wait_for(condition, proc: subprocess.Popen, cwd: Path, script: str, what: str) -> None:
    deadline = time.monotonic() + 300
    while not condition():
        assert proc.poll() is None, f"{script} ended before {what}:\n" + (cwd / f"{script}.out").read_text()[-4000:]
        assert time.monotonic() < deadline, f"not {what} in 300 s"
        time.sleep(0.02)


def _the_worker_node_dies_mid_task(cluster: Cluster, proc, cwd: Path, script: str, finished) -> None:
    """With the head node held, the worker node's actor runs the tasks; once `finished()` says one
    came back and the actor runs the next, the actor is frozen mid-task and the node dies, and the
    head is let go, so the lost task and the rest are left to the head node."""
    _wait_for(lambda: finished() >= 1, proc, cwd, script, "the worker node finished a task")
    frozen = []
    _wait_for(
        lambda: frozen.append(cluster.worker.freeze_a_running_task()) or frozen[-1] is not None,
        proc,
        cwd,
        script,
        "the worker node ran a second task",
    )
    cluster.worker.die(frozen[-1])


def _timeless(row: dict) -> dict:
    """A result without its wall-clock time, the one field a rerun may change."""
    return {k: v for k, v in row.items() if k != "seconds"}


def _memo(run: Path) -> list[dict]:
    return [_timeless(json.loads(line)["evaluation"]) for line in (run / "evaluations.jsonl").read_text().splitlines()]


def _finetuned(run: Path) -> list[dict]:
    return [_timeless(row) for row in json.loads((run / "finetune.json").read_text())["results"]]


def _rows(run: Path) -> int:
    """How many fine-tunes finetune.json holds (this process reads it while another writes it)."""
    try:
        return len(json.loads((run / "finetune.json").read_text())["results"])
    except (OSError, ValueError, KeyError):  # not written yet (it is replaced whole, never torn)
        return 0


def _ray(cluster: Cluster) -> list[str]:
    return ["evaluator=ray", f"evaluator.address={cluster.address}", "evaluator.num_workers=2"]


def test_a_search_on_the_cluster_survives_its_worker_node(local, cluster, tmp_path, env):
    if cluster.worker.process.poll() is not None:
        cluster.start_worker()
    run = tmp_path / "search"
    with _head_held(cluster):
        proc = _cli("modulenet-search", [*SEARCH, *_ray(cluster), f"hydra.run.dir={run}"], tmp_path, env)
        memo = run / "evaluations.jsonl"
        lines = lambda: len(memo.read_text().splitlines()) if memo.is_file() else 0  # noqa: E731
        _the_worker_node_dies_mid_task(cluster, proc, tmp_path, "modulenet-search", lines)
    output = _finish(proc, tmp_path, "modulenet-search")
    assert "died running" in output and "starting another" in output  # the lost task, sent again

    mine, theirs = (
        json.loads((run / "results.json").read_text()),
        json.loads((local / "search" / "results.json").read_text()),
    )
    assert mine["populations"] == theirs["populations"]
    assert _timeless(mine["best"]) == _timeless(theirs["best"])
    memo, reference = _memo(run), _memo(local / "search")
    genotypes = [tuple(row["genotype"]) for row in memo]
    assert len(genotypes) == len(set(genotypes)), "a genotype evaluated twice"
    assert all(row["status"] == "ok" for row in memo), "an individual recorded as failed"
    key = lambda row: tuple(row["genotype"])  # noqa: E731 (workers finish in any order)
    assert sorted(memo, key=key) == sorted(reference, key=key)


def test_a_fine_tune_on_the_cluster_survives_its_worker_node(local, cluster, tmp_path, env):
    if cluster.worker.process.poll() is not None:  # the search test took it down
        cluster.start_worker()
    run = tmp_path / "finetune"
    args = [f"search_run={local / 'search'}", *FINETUNE, *_ray(cluster), f"hydra.run.dir={run}"]
    with _head_held(cluster):
        proc = _cli("modulenet-finetune", args, tmp_path, env)
        _the_worker_node_dies_mid_task(cluster, proc, tmp_path, "modulenet-finetune", lambda: _rows(run))
    output = _finish(proc, tmp_path, "modulenet-finetune")
    assert "died running" in output and "starting another" in output
    mine, reference = _finetuned(run), _finetuned(local / "finetune")
    assert len(reference) == 2 and mine == reference
    for row in mine:  # and the networks themselves, weight for weight
        ours, theirs = (
            torch.load(r / row["network"] / rundir.NETWORK_WEIGHTS, weights_only=True)
            for r in (run, local / "finetune")
        )
        assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_a_command_without_the_cluster_s_token_is_one_line(cluster, tmp_path, env):
    """A cluster with token authentication refuses a command that lacks its token: Ray retries, then
    the command ends with one line that names the address and what a token cluster needs."""
    no_token = {k: v for k, v in env.items() if k not in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN")}
    no_token["HOME"] = str(tmp_path)  # nor a ~/.ray/auth_token of the user's
    args = [*SEARCH, *_ray(cluster), f"hydra.run.dir={tmp_path / 'run'}"]
    proc = subprocess.run(
        [str(BIN / "modulenet-search"), *args], cwd=tmp_path, env=no_token, capture_output=True, text=True, timeout=300
    )
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 1 and len(errors) == 1, proc.stderr[-3000:]
    assert errors[0].startswith(f"error: evaluator=ray cannot connect to evaluator.address='{cluster.address}' (")
    assert "RAY_AUTH_MODE=token" in errors[0] and "Traceback" not in proc.stderr


# A driver whose actors cannot build their handler: int("not a number", None) raises in each actor.
CANNOT_START = """
import sys, ray
from modulenet.errors import ModuleNetError
from modulenet.runtime.workers import RayPool
ray.init(address=sys.argv[1], log_to_driver=False, include_dashboard=False)
pool = RayPool(ray, int, ("not a number",), 1)
try:
    list(pool.map([1]))
except ModuleNetError as err:
    print(f"error: {err}", flush=True)
assert not pool.actors
"""


def test_a_handler_that_cannot_be_built_on_the_cluster_is_one_line(cluster, env):
    """Not a dead node to work around: every replacement would fail the same way, so the pool stops
    with the actor's own error in one line instead of re-queueing."""
    proc = subprocess.run(
        [sys.executable, "-c", CANNOT_START, cluster.address], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines() == [
        "error: a Ray worker could not start: TypeError: 'NoneType' object cannot be interpreted as an integer"
    ]


# A driver asking for actors with a GPU on a cluster without one, and waiting 2 s for them.
NO_ROOM = """
import sys, ray
from modulenet.runtime.workers import RayPool
ray.init(address=sys.argv[1], log_to_driver=False, include_dashboard=False)
pool = RayPool(ray, int, ("7",), 2, gpus_per_worker=1)
pool.start_timeout = 2.0
print(list(pool.map([10, 16])), flush=True)
pool.close()
"""


def test_tasks_no_node_has_room_for_are_given_up_with_a_reason(cluster, env):
    """An actor no node can host (here: a GPU on a CPU cluster) is no hang: after `start_timeout`
    with no actor running, each task left yields `WorkerDied` with the reason, after a warning."""
    proc = subprocess.run(
        [sys.executable, "-c", NO_ROOM, cluster.address], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    reason = "no Ray worker started in 2 s (no node with room for one)"
    assert proc.stdout.strip() == f"[(10, WorkerDied(reason='{reason}')), (16, WorkerDied(reason='{reason}'))]"
    assert "2 task(s) wait for a Ray worker: none is running and 2 waiting for a node with a free CPU and 1 GPU" in (
        proc.stderr
    )
