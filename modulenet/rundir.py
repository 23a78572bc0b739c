"""Safe writes into a run directory: one holder at a time, whole files or nothing, clean appends.

* `hold(run_dir)`: a run directory is held by one process (an advisory `fcntl` lock on
  `run.lock`, which names the holder's pid). A second search there stops with one line. The
  kernel drops the lock when its holder dies, so a lock left by a killed process is taken over.
* `write_atomic(path, text)`: a temporary file unique to this writer, then `os.replace`: a
  reader or a kill sees the old file or the new one, never half of one, and two writers never
  share a temporary file.
* `append_line(path, line)`: appends to a JSON-lines file; a torn last line (a kill mid-write)
  is first set aside in `<name>.torn`, so the new line is never joined to it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

from modulenet.errors import ModuleNetError

LOCK_FILE = "run.lock"

_held: dict[Path, list] = {}  # run dir -> [open lock file, depth]: re-entrant within this process
_held_guard = threading.Lock()


@contextlib.contextmanager
def hold(run_dir: str | os.PathLike) -> Iterator[None]:
    """Hold `run_dir` for this process while the block runs (re-entrant); another holder is an error."""
    run_dir = Path(run_dir).resolve()
    with _held_guard:
        if run_dir in _held:
            _held[run_dir][1] += 1
        else:
            run_dir.mkdir(parents=True, exist_ok=True)
            f = open(run_dir / LOCK_FILE, "a+")
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                f.seek(0)
                holder = f.read().strip() or "another process"
                f.close()
                raise ModuleNetError(
                    f"{run_dir} is in use by {holder}: one search per run directory "
                    f"(wait for it, or give another directory)"
                ) from None
            f.seek(0)
            f.truncate()
            f.write(f"pid {os.getpid()} on {os.uname().nodename}\n")
            f.flush()
            _held[run_dir] = [f, 1]
    try:
        yield
    finally:
        with _held_guard:
            entry = _held[run_dir]
            entry[1] -= 1
            if entry[1] == 0:
                del _held[run_dir]
                entry[0].close()  # releases the lock; the file stays (removing it would race a waiter)


def write_atomic(path: str | os.PathLike, text: str) -> None:
    """Write `text` to `path` whole: a unique temporary file beside it, fsynced, then renamed."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def append_line(path: str | os.PathLike, line: str) -> None:
    """Append one line (no newline inside) to a JSON-lines file, fsynced, after setting aside a torn tail."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    set_aside_torn_tail(path)
    with path.open("a", encoding="utf-8") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


def set_aside_torn_tail(path: Path) -> None:
    """If `path` does not end with a newline, move its unfinished last line to `<name>.torn`."""
    if not path.is_file():
        return
    with path.open("rb+") as f:
        size = f.seek(0, os.SEEK_END)
        if size == 0:
            return
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return
        f.seek(0)
        data = f.read()
        keep = data.rfind(b"\n") + 1  # 0 when the whole file is one torn line
        with open(path.with_name(path.name + ".torn"), "ab") as torn:
            torn.write(data[keep:] + b"\n")
        f.truncate(keep)
        f.flush()
        os.fsync(f.fileno())
