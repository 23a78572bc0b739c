"""Reading finished run directories (search, fine-tune, multirun sweeps) for the report."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import KW_ONLY, dataclass, field
from pathlib import Path

from modulenet import rundir
from modulenet.errors import ModuleNetError, first_line
from modulenet.genotype import parse_genotype
from modulenet.report.paper import dataset_key
from modulenet.rundir import read_evaluations
from modulenet.search.score import new_survival

log = logging.getLogger(__name__)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ModuleNetError(f"{path} is unreadable: {first_line(err)}") from None


def _read_config(run_dir: Path) -> dict:
    path = run_dir / rundir.CONFIG
    if not path.is_file():
        return {}
    from omegaconf import OmegaConf

    try:
        return OmegaConf.to_container(OmegaConf.load(path), resolve=False) or {}
    except Exception as err:  # a YAML or OmegaConf error: the report goes on without the config
        log.warning("cannot read %s: %s", path, first_line(err))
        return {}


def as_float(value, default=math.nan) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


def _run_label(path: Path, name: str | None) -> str:
    """`<dir>`, or `<config name>#<job>` for a multirun job (its directory is just a number)."""
    if path.name.isdigit():
        return f"{name or path.parent.name}#{path.name}"
    return path.name


@dataclass
class RunDirectory:
    """What every run read from a directory has beside its own results: the directory, the W&B run
    it logged to (`wandb_run.json`, if any) and its label (keywords only, after each kind's own
    fields)."""

    path: Path
    _: KW_ONLY
    wandb: dict | None = None
    label: str = ""

    def read_beside(self, name: str | None) -> None:
        """Its W&B run and its label (`name`: its config's) from its directory."""
        if (self.path / "wandb_run.json").is_file():
            self.wandb = _read_json(self.path / "wandb_run.json")
        self.label = _run_label(self.path, name)


@dataclass
class SearchRun(RunDirectory):
    results: dict
    evaluations: list[dict]
    config: dict
    ablation: dict | None = None
    linked_only: bool = False  # not given, found through a fine-tune run's search_run

    @property
    def search_cfg(self) -> dict:
        return self.config.get("search") or {}

    @property
    def alpha(self) -> float | None:
        value = self.search_cfg.get("alpha")
        return None if value is None else float(value)

    @property
    def beta(self) -> float | None:
        value = self.search_cfg.get("beta")
        return None if value is None else float(value)

    @property
    def name(self) -> str:
        return str(self.config.get("name") or self.path.name)

    @property
    def dataset(self) -> str | None:
        return dataset_key(self.config.get("dataset"))

    @property
    def arch_names(self) -> list[str]:
        names = self.results.get("arch_names")
        if names:
            return list(names)
        archs = (self.config.get("knowledge_base") or {}).get("archs") or []
        if len(archs) == self.num_archs:
            return [str(a) for a in archs]
        return [f"arch {i}" for i in range(self.num_archs)]

    @property
    def num_archs(self) -> int:
        return int(self.results.get("num_archs") or 0)

    @property
    def num_cells(self) -> int:
        return int(self.results.get("num_cells") or len(self.results["best"]["genotype"]))

    @property
    def history(self) -> list[dict]:
        return list(self.results.get("history") or [])

    @property
    def best(self) -> dict:
        return self.results["best"]

    def new_survival(self) -> list[tuple[int, int]]:
        """(generation, new survival) per generation: from `populations` when results.json has it
        (Sec. V-B: distinct genotypes of pop_i not in pop_{i-1}), else from the history."""
        populations = self.populations()
        if populations:
            previous = [[]] + populations[:-1]
            return [
                (generation, new_survival(before, now))
                for generation, (before, now) in enumerate(zip(previous, populations), start=1)
            ]
        return [(int(row["generation"]), int(row["new_survival"])) for row in self.history]

    def populations(self) -> list[list[tuple[int, ...]]]:
        raw = self.results.get("populations")
        if not raw:
            return []
        out = []
        for population in raw:
            out.append(
                [
                    parse_genotype(g, self.num_archs, self.num_cells)
                    if not isinstance(g, (list, tuple))
                    else tuple(int(i) for i in g)
                    for g in population
                ]
            )
        return out

    def evaluation_by_genotype(self) -> dict[tuple[int, ...], dict]:
        out = {}
        for row in self.evaluations:
            if row.get("status", "ok") == "ok":
                out[row["genotype"]] = row
        return out


@dataclass
class FinetuneRun(RunDirectory):
    settings: dict
    results: list[dict]
    config: dict
    search_run_path: Path | None = None
    search: SearchRun | None = None

    @property
    def cutout(self) -> int | None:
        value = (self.config.get("finetune") or {}).get("cutout", self.settings.get("cutout"))
        return None if value is None else int(value)

    @property
    def epochs(self) -> int | None:
        value = self.settings.get("epochs", (self.config.get("finetune") or {}).get("epochs"))
        return None if value is None else int(value)

    @property
    def dataset(self) -> str | None:
        return self.search.dataset if self.search else None

    @property
    def arch_names(self) -> list[str]:
        if self.search:
            return self.search.arch_names
        return [r["label"] for r in self.results if not is_searched(r)]

    def searched(self) -> list[dict]:
        return [r for r in self.results if is_searched(r)]


def is_searched(row: dict) -> bool:
    """A fine-tune row of a searched architecture ("ModuleNet #k"), not an original of the knowledge base."""
    return str(row.get("label", "")).startswith(("ModuleNet", "searched"))


@dataclass
class Runs:
    search: list[SearchRun] = field(default_factory=list)
    finetune: list[FinetuneRun] = field(default_factory=list)
    ablation_only: list[SearchRun] = field(default_factory=list)  # a directory with ablation_connections.json only


def _is_run_dir(path: Path) -> bool:
    return any((path / name).is_file() for name in (rundir.RESULTS, rundir.FINETUNE, rundir.ABLATION))


def expand_runs(paths: Sequence[str | Path]) -> list[Path]:
    """Run directories: each path itself, or for a sweep directory its numbered job subdirectories."""
    if not paths:
        raise ModuleNetError("no runs to report on: give runs=[<search run>,<finetune run>,<sweep dir>,...]")
    out: list[Path] = []
    for raw in paths:
        path = Path(str(raw)).expanduser()
        if not path.is_dir():
            raise ModuleNetError(f"run {raw} is not a directory" if path.exists() else f"run {raw} does not exist")
        if _is_run_dir(path):
            out.append(path)
            continue
        jobs = sorted(
            (p for p in path.iterdir() if p.is_dir() and p.name.isdigit() and _is_run_dir(p)), key=lambda p: int(p.name)
        )
        if not jobs:
            raise ModuleNetError(
                f"{raw} is not a run: it has no results.json (search), finetune.json (fine-tune) "
                "or numbered run subdirectories (a multirun sweep)"
            )
        out.extend(jobs)
    unique = list(dict.fromkeys(p.resolve() for p in out))
    return [Path(p) for p in unique]


def read_search_run(path: Path) -> SearchRun:
    results = _read_json(path / rundir.RESULTS)
    for key in ("best", "history"):
        if key not in results:
            raise ModuleNetError(f"{path / 'results.json'} is not a search's results: it has no {key!r}")
    run = SearchRun(path, results, read_evaluations(path, results.get("num_cells")), _read_config(path))
    if (path / rundir.ABLATION).is_file():
        run.ablation = _read_json(path / rundir.ABLATION)
    run.read_beside(run.config.get("name"))
    return run


def read_finetune_run(path: Path) -> FinetuneRun:
    data = _read_json(path / rundir.FINETUNE)
    if not isinstance(data, dict) or not isinstance(data.get("results"), list):
        raise ModuleNetError(f"{path / 'finetune.json'} is not a fine-tune's results: it has no 'results' list")
    results, skipped = [], []
    for number, row in enumerate(data["results"], start=1):
        missing = [key for key in ("label", "genotype", "test_error") if not isinstance(row, dict) or key not in row]
        if missing:
            skipped.append(f"result {number} (no {', '.join(missing)})")
        elif not isinstance(row["test_error"], (int, float)) or isinstance(row["test_error"], bool):
            skipped.append(f"result {number} (test_error {row['test_error']!r} is not a number)")
        else:
            results.append(row)
    if skipped:
        log.warning("%s: skipped %d damaged result(s): %s", path / rundir.FINETUNE, len(skipped), "; ".join(skipped))
    config = _read_config(path)
    if not config and (path.parent / rundir.RESULTS).is_file():  # <search run>/finetune/: the search's config
        config = {"finetune": _read_config(path.parent).get("finetune") or {}}
    search_run = data.get("search_run") or config.get("search_run")
    run = FinetuneRun(path, dict(data.get("settings") or {}), results, config, Path(search_run) if search_run else None)
    run.read_beside(config.get("name"))
    return run


def load_runs(paths: Sequence[str | Path]) -> Runs:
    """Read every run; a fine-tune run's search run is read too when it was not given but exists."""
    runs = Runs()
    for path in expand_runs(paths):
        if (path / rundir.RESULTS).is_file():
            runs.search.append(read_search_run(path))
        elif (path / rundir.ABLATION).is_file():
            ablation = _read_json(path / rundir.ABLATION)
            runs.ablation_only.append(
                SearchRun(
                    path,
                    {"best": {}, "history": []},
                    [],
                    _read_config(path),
                    ablation=ablation,
                    label=_run_label(path, None),
                )
            )
        if (path / rundir.FINETUNE).is_file():
            runs.finetune.append(read_finetune_run(path))
        if (path / rundir.FINETUNE_DIR / rundir.FINETUNE).is_file():  # modulenet-search finetune.after_search=true
            runs.finetune.append(read_finetune_run(path / "finetune"))
    by_path = {run.path.resolve(): run for run in runs.search}
    for ft in runs.finetune:
        if ft.search_run_path is None:
            if len(runs.search) == 1:  # the only search given
                ft.search = runs.search[0]
            continue
        candidates = [ft.search_run_path, ft.path / ft.search_run_path]
        for candidate in candidates:
            key = candidate.resolve() if candidate.exists() else None
            if key in by_path:
                ft.search = by_path[key]
                break
            if key is not None and (candidate / rundir.RESULTS).is_file():
                linked = read_search_run(candidate)
                linked.linked_only = True
                runs.search.append(linked)
                by_path[key] = linked
                ft.search = linked
                break
        else:
            log.warning(
                "%s: its search run %s was not found; its dataset and search terms are unknown",
                ft.path,
                ft.search_run_path,
            )
    _unique_labels([*runs.search, *runs.ablation_only])
    _unique_labels(runs.finetune)
    return runs


def _unique_labels(runs: list) -> None:
    seen: dict[str, int] = {}
    for run in runs:
        base = run.label or run.path.name
        seen[base] = seen.get(base, 0) + 1
        run.label = base if seen[base] == 1 else f"{base}~{seen[base]}"
