"""One registry style for every named choice (connections, architecture families, dispatchers,
search objectives): a name maps to what it builds, built-ins are registered where they are
defined, and your own is named by its dotted path where the registry allows it. Ours."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from modulenet.errors import ModuleNetError

T = TypeVar("T")


class Registry(Generic[T]):
    """Names to entries. `key` is the setting the name comes from (for one-line errors); `base`:
    a dotted path not registered is imported (modulenet.targets) and must be a subclass of it;
    `own`: how a dotted path becomes an entry (default: the imported class itself); None when the
    registry takes built-ins only."""

    def __init__(self, key: str, base: type | None = None, own: Callable[[str], T] | None = None, dotted: bool = True):
        self.key, self.base, self.own, self.dotted = key, base, own, dotted
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T | None = None):
        """Register `entry` under `name`; without an entry, a decorator that registers what it decorates."""
        if entry is None:
            return lambda decorated: self.register(name, decorated) or decorated
        if name in self._entries:
            raise ValueError(f"{self.key}: {name!r} is registered twice")
        self._entries[name] = entry
        return entry

    def get(self, name: str) -> T:
        """The entry registered as `name`, or your own at the dotted path `name`; one line otherwise."""
        if name in self._entries:
            return self._entries[name]
        if self.dotted and isinstance(name, str) and "." in name:
            if self.own is not None:
                return self.own(name)
            from modulenet.targets import target_class

            return target_class(self.key, name, self.choices(), base=self.base)
        extra = " or your own class's dotted path" if self.dotted else ""
        raise ModuleNetError(f"{self.key}={name!r}: valid values are {self.names()}{extra}")

    def names(self) -> list[str]:
        return list(self._entries)

    def choices(self) -> str:
        """The built-in names as a command line writes them (`key=a|b|c`)."""
        return f"{self.key}={'|'.join(self._entries)}"

    def items(self) -> Iterator[tuple[str, T]]:
        return iter(self._entries.items())

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)
