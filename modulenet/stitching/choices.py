"""The connection group's choices (Sec. III-D, V-C; ours): each is one `Connection` that says
what it builds and what it implies, so no other code keeps a list of names. The name is what
settings, memo keys, workers and results carry; your own class is named by its dotted path."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from modulenet.errors import ModuleNetError
from modulenet.registry import Registry
from modulenet.stitching.connections import Conv1x1Connection, parameter_free_connection


@dataclass(frozen=True)
class Connection:
    name: str  # built-in: its config name; yours: the class's dotted path
    target: str  # what the group's `_target_` names
    build: Callable[[int, int], nn.Module] | None  # (in_channels, out_channels); None: built from what was fitted
    every_boundary: bool = False  # between every pair of modules, not only where channel counts differ
    trains: bool = False  # has parameters trained with the classifier (the frozen trunk's features are not cached)
    fitted: Fitted | None = None  # fitted from training images before the search (KnowledgeBase.fit_connections)

    def between(self, in_channels: int, out_channels: int) -> nn.Module:
        """The channel connection between modules of these channel counts: the identity where they
        agree, unless it is placed at every boundary."""
        if self.build is None:
            raise ModuleNetError(f"connection {self.name!r} is fitted from data: build it with KnowledgeBase.assemble")
        if in_channels == out_channels and not self.every_boundary:
            return nn.Identity()
        return self.build(in_channels, out_channels)


@dataclass(frozen=True)
class Fitted:
    """What a connection fitted from data declares (stitching/fitted.py registers the built-in ones):
    `solve` its tensors from a boundary's statistics, their `shapes` for (in, out) channels, the
    `link` built from them, and `scratch`, the same tensors as a random initialisation would hold
    them (finetune.init=scratch; None: it has no random counterpart)."""

    solve: Callable[[object], dict]
    shapes: Callable[[int, int], dict[str, tuple[int, ...]]]
    link: Callable[[dict, int, int], nn.Module]
    scratch: Callable[[dict], dict] | None = None


def own_connection_choice(name: str) -> Connection:
    """Your own class or function at the dotted path `name`: built from `(in_channels, out_channels)`,
    placed where channel counts differ (everywhere if it declares `every_boundary = True`), trained
    with the classifier unless it declares `parameter_free = True`."""
    factory = own_connection(name)
    return Connection(
        name,
        name,
        factory,
        every_boundary=bool(getattr(factory, "every_boundary", False)),
        trains=not getattr(factory, "parameter_free", False),
    )


CONNECTIONS: Registry[Connection] = Registry("connection.name", own=own_connection_choice)
_HERE = "modulenet.stitching"
# the paper's: ChP where channels fall, ChDP where they rise (Sec. III-D)
CONNECTIONS.register(
    "channel_pool",
    Connection("channel_pool", f"{_HERE}.connections.parameter_free_connection", parameter_free_connection),
)
# the paper's ablation (Sec. V-C): a 1x1 convolution between each module
CONNECTIONS.register(
    "conv1x1", Connection("conv1x1", f"{_HERE}.connections.Conv1x1Connection", Conv1x1Connection, True, trains=True)
)
# ours: a 1x1 convolution only where channel counts differ
CONNECTIONS.register(
    "conv1x1_where_needed",
    Connection("conv1x1_where_needed", f"{_HERE}.connections.Conv1x1Connection", Conv1x1Connection, trains=True),
)
# ours, fitted from data: aligned, least_squares (registered by stitching/fitted.py)


def get_connection(name: str) -> Connection:
    """The connection registered as `name`, or your own class or function at the dotted path `name`."""
    return CONNECTIONS.get(name)


def connection_id(name: str, target: str | None = None) -> str:
    """What names the connection group's choice downstream: a built-in's `name`, or the dotted
    path of your own class when `target` (`connection._target_`) is none of the built-ins'."""
    if target is not None and target not in {c.target for _, c in CONNECTIONS.items()}:
        own_connection(target)  # importable, callable: a one-line error before any work
        return target
    if name not in CONNECTIONS:
        raise ModuleNetError(
            f"connection.name={name!r}: valid connections are {sorted(CONNECTIONS)} "
            "(or your own class as connection._target_=mypkg.MyConnection)"
        )
    if target is not None and target != CONNECTIONS.get(name).target:
        raise ModuleNetError(
            f"connection._target_={target!r} is not connection.name={name!r}'s class ({CONNECTIONS.get(name).target}): "
            f"choose a built-in by its group (connection={name})"
        )
    return name


def own_connection(connection: str):
    """Your own connection class or function (`connection._target_=mypkg.MyConnection`), imported."""
    from modulenet.targets import group_choices, target_class

    if "." not in connection:
        raise ModuleNetError(
            f"unknown connection {connection!r}; valid connections are {sorted(CONNECTIONS)} "
            "or your own class's dotted path"
        )
    # built from (in_channels, out_channels): anything that cannot take them is refused before a call
    return target_class("connection._target_", connection, group_choices("connection"), called_with=((1, 2), {}))
