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
import csv
import fcntl
import json
import logging
import math
import os
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

from modulenet.errors import ModuleNetError
from modulenet.genotype import read_genotype_text

log = logging.getLogger(__name__)

# Every file of a run directory (docs/cli.md, "What a run writes"), named here once.
CONFIG = "config_resolved.yaml"  # the composed config, written before anything else
LOCK = "run.lock"  # names the holder's pid (`hold`)
STATE = "search_state.json"  # the search's checkpoint: population, generators, history
MEMO = "evaluations.jsonl"  # one evaluated genotype per line (the memo a resumed search reads)
RESULTS = "results.json"  # the search's outcome: best genotype, final population, history
EVALUATIONS = "evaluations.csv"  # every evaluation, one row each
GENERATIONS = "generations.csv"  # per-generation statistics (the csv logger)
CURVES = "search_curves.png"
FRONT = "front.png"  # a multi-objective search's final population and its front
ABLATION = "ablation_connections.json"  # Fig. 10
FINETUNE = "finetune.json"  # the evaluation stage: one row per architecture and seed
FINETUNE_TABLE = "finetune.md"
FINETUNE_DIR = "finetune"  # <search run>/finetune/ with finetune.after_search=true
NETWORKS = "networks"  # under a fine-tune directory: one saved network per architecture and seed
CHECKPOINTS = "checkpoints"  # in a network's folder while it trains: Lightning's last.ckpt
NETWORK_WEIGHTS = "weights.pt"  # a saved network: its state dict (weights_only)
NETWORK_DESCRIPTION = "network.json"  # what rebuilds it and what it measured; written last
NETWORK_CONNECTIONS = "connections.pt"  # its fitted connections, where there are any
NETWORK_EXPORT = "network.pt2"  # the selected network as a torch.export program
NETWORK_PREDICTIONS = "test_predictions.npz"  # each test image's label and predicted class (paired tests)
EVALUATION = "evaluation.json"  # modulenet-evaluate: a saved network measured again

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
            f = open(run_dir / LOCK, "a+")
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


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A unique temporary path beside `path` for the block to write; renamed onto `path` when the
    block ends, removed if it fails: readers see the old file or the whole new one, never a part."""
    path = Path(path)
    # The real suffix last: torch.export.save warns about a name not ending in .pt2.
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_atomic(path: str | os.PathLike, text: str) -> None:
    """Write `text` to `path` whole (`atomic_path`), fsynced before the rename."""
    with atomic_path(path) as tmp, tmp.open("w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


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


def read_results(search_run: str | os.PathLike) -> dict:
    """The search run's results.json, checked: a JSON object whose `population` is a list of rows
    with a `genotype` (list of integers) and a numeric `score`. A file that is not is one line."""
    path = Path(search_run) / RESULTS
    if not path.is_file():
        raise ModuleNetError(f"search_run={search_run} is not a search run: it has no results.json")
    rerun = f"resuming the search (modulenet-search resume={search_run}, same settings) rewrites it"
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ModuleNetError(f"cannot read {path} ({err}); {rerun}") from None
    try:
        results = json.loads(text)
    except json.JSONDecodeError as err:
        what = (
            "is empty" if not text.strip() else f"is not valid JSON ({err.msg} at line {err.lineno} column {err.colno})"
        )
        raise ModuleNetError(f"{path} {what}: truncated or corrupt; {rerun}") from None
    if not isinstance(results, dict):
        raise ModuleNetError(f"{path} holds a JSON {_json_type(results)}, not a search's results object; {rerun}")
    population = results.get("population")
    if not isinstance(population, list):
        found = (
            "has no 'population'"
            if "population" not in results
            else f"has a 'population' that is a JSON {_json_type(population)}"
        )
        raise ModuleNetError(f"{path} {found}: expected a list of rows with 'genotype' and 'score'; {rerun}")
    for i, row in enumerate(population):
        problem = _population_row_problem(row)
        if problem:
            raise ModuleNetError(
                f"{path}: population[{i}] {problem}; expected {{'genotype': [integers], 'score': number, ...}}; {rerun}"
            )
    return results


def _population_row_problem(row) -> str | None:
    if not isinstance(row, dict):
        return f"is a JSON {_json_type(row)}, not an object"
    missing = [key for key in ("genotype", "score") if key not in row]
    if missing:
        return f"has no {' and no '.join(repr(k) for k in missing)}"
    genotype, score = row["genotype"], row["score"]
    if (
        not isinstance(genotype, list)
        or not genotype
        or not all(isinstance(g, int) and not isinstance(g, bool) and g >= 0 for g in genotype)
    ):
        return f"has genotype {json.dumps(genotype)[:60]}, not a list of non-negative integers"
    if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
        return f"has score {json.dumps(score)[:60]}, not a finite number"
    return None


def _json_type(value) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", int: "number", float: "number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def read_scores(search_run: str | os.PathLike) -> dict[tuple, float]:
    """Search score of every successfully evaluated genotype (the run's evaluations.csv)."""
    return {row["genotype"]: row["score"] for row in read_evaluations(search_run) if row["status"] == "ok"}


TEXT_COLUMNS = (
    "genotype",
    "architecture",
    "status",
    "error",
    "generation",
)  # evaluations.csv's columns that are no number


def read_evaluations(run_dir: str | os.PathLike, num_cells: int | None = None) -> list[dict]:
    """A run's evaluations.csv as rows with typed values (genotype a tuple; [] when the file is
    missing). A damaged row (cut short by a kill, an unreadable genotype, a score that is no
    number) is skipped, and a warning says which and why."""
    path = Path(run_dir) / EVALUATIONS
    if not path.is_file():
        return []
    rows, skipped = [], []
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        for number, row in enumerate(reader, start=2):  # line 1 is the header
            problem = _damage(row, len(reader.fieldnames or []))
            if problem is None:
                try:
                    code = read_genotype_text(row["genotype"], num_cells)
                except (KeyError, ValueError, AttributeError, TypeError):
                    problem = f"unreadable genotype {row.get('genotype')!r}"
            if problem is not None:
                skipped.append(f"line {number} ({problem})")
                continue
            parsed = {
                "genotype": code,
                "architecture": row.get("architecture", ""),
                "status": row.get("status", "ok"),
                "generation": int(_float_or_nan(row.get("generation"), 0)),
            }
            for key, value in row.items():  # every other column is a number (search/records.py)
                if key not in parsed and key not in TEXT_COLUMNS:
                    parsed[key] = _float_or_nan(value)
            rows.append(parsed)
    if skipped:
        log.warning("%s: skipped %d damaged row(s): %s", path, len(skipped), "; ".join(skipped))
    return rows


def _damage(row: dict, fields: int) -> str | None:
    """Why a row of evaluations.csv cannot be read, or None."""
    if None in row:
        return "more fields than the header"
    present = sum(value is not None for value in row.values())
    if present < fields:
        return f"cut short: {present} of {fields} fields"
    if row.get("status", "ok") == "ok" and "score" in row and math.isnan(_float_or_nan(row["score"])):
        return f"score {row['score']!r} is not a number"
    return None


def _float_or_nan(value, default: float = math.nan) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return default
