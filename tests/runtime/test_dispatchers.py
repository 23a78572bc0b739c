"""Dispatchers (runtime/dispatch.py): one interface for `local`, `gpus`, `ray` and yours, held by
the search's Evaluator and the evaluation stage alike (issue 32)."""

from __future__ import annotations

import pytest

from modulenet.errors import ModuleNetError
from modulenet.runtime.dispatch import (
    DISPATCHERS,
    IN_PROCESS,
    Dispatcher,
    LocalDispatcher,
    WorkerPoolDispatcher,
    make_dispatcher,
    worker_accelerator,
)


class Reversed(Dispatcher):
    """A dispatcher of one's own: in this process, tasks in reverse order (any order is allowed)."""

    in_process = True

    def __init__(self, num_workers: int | None = None):
        self.count, self.handle = num_workers or 1, None

    @property
    def workers(self) -> int:
        return self.count

    def start(self, make_handler, args):
        self.handle = make_handler(*args, IN_PROCESS)

    def map(self, tasks, describe=str):
        for task in reversed(list(tasks)):
            yield task, self.handle(task)


class NotADispatcher:
    pass


def scaled(factor: int, device):
    """A handler factory as the dispatchers call it: `make_handler(*args, device)`."""
    return lambda task: (factor * task, device)


def test_the_built_in_dispatchers_and_their_names():
    assert DISPATCHERS.names() == ["local", "gpus", "ray"]
    assert isinstance(make_dispatcher("local"), LocalDispatcher)
    gpus = make_dispatcher("gpus", num_workers=3, accelerator="cpu", address="ignored")
    assert isinstance(gpus, WorkerPoolDispatcher) and gpus.workers == 3 and gpus.slots == [None] * 3


def test_a_dispatcher_of_your_own_by_its_dotted_path_runs_the_same_handlers():
    own = make_dispatcher(f"{__name__}.Reversed", num_workers=2, accelerator="cpu")  # takes what it names
    own.start(scaled, (10,))
    assert own.workers == 2 and dict(own.map([1, 2, 3])) == {
        1: (10, IN_PROCESS),
        2: (20, IN_PROCESS),
        3: (30, IN_PROCESS),
    }
    local = make_dispatcher("local")
    local.start(scaled, (10,))
    assert list(local.map([1, 2])) == [(1, (10, IN_PROCESS)), (2, (20, IN_PROCESS))]


@pytest.mark.parametrize(
    "name, message",
    [
        ("threads", r"evaluator.dispatcher='threads': valid values are \['local', 'gpus', 'ray'\] or your own"),
        (f"{__name__}.NotADispatcher", "is not a subclass of modulenet.runtime.dispatch.Dispatcher"),
        ("mypkg.Missing", r"evaluator.dispatcher='mypkg.Missing' cannot be imported"),
    ],
)
def test_a_bad_dispatcher_is_one_line(name, message):
    with pytest.raises(ModuleNetError, match=message):
        make_dispatcher(name)


def test_workers_train_where_the_dispatcher_puts_them():
    assert worker_accelerator(IN_PROCESS, "gpu") == "gpu"  # in this process: the settings' own
    assert worker_accelerator(0, "cpu") == "gpu" and worker_accelerator(None, "gpu") == "cpu"
