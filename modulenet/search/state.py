"""The search's resumable state (population, evaluations, history, its own generator) and its
checkpoint `search_state.json`: written after every generation, read back by `resume`, refused in
one line when it is corrupt or its evaluation dependencies changed."""

from __future__ import annotations

import json
import logging
import math
import random
from dataclasses import asdict
from pathlib import Path

from deap import tools

from modulenet import rundir
from modulenet.errors import ModuleNetError, first_line
from modulenet.genotype import Genotype
from modulenet.rng import rng_from_json, rng_state_to_json
from modulenet.rundir import write_atomic
from modulenet.search.individual import individual_class
from modulenet.search.records import Evaluation
from modulenet.search.toolbox import SearchConfig

log = logging.getLogger(__name__)

STATE_FORMAT = "modulenet-search-state/2"  # 2: memo keys name every setting


class SearchState:
    """The mutable state of one search: what the checkpoint holds."""

    def __init__(self, config: SearchConfig, num_archs: int, num_cells: int, depends_on: dict | None = None):
        self.config = config
        self.depends_on = depends_on
        self.num_archs, self.num_cells = num_archs, num_cells
        self.rng = random.Random(config.seed)  # the search's own generator (rng.py)
        self.generation = 0
        self.population: list = []
        self.evaluations: dict[Genotype, Evaluation] = {}
        self.first_generation: dict[Genotype, int] = {}  # generation in which each genotype was evaluated
        self.populations: list[list[Genotype]] = []  # pop_i of every generation (Fig. 8 draws from all)
        self.logbook = tools.Logbook()
        self.logbook.header = ["generation", "evaluated", "new_survival", "min", "mean", "max", "best_score"]

    @property
    def history(self) -> list[dict]:
        return [dict(row) for row in self.logbook]

    def best(self) -> Evaluation:
        # min() keeps the first of equal scores, i.e. the earliest evaluated.
        return min(self.evaluations.values(), key=lambda e: e.score)


def save_state(run_dir: Path, run: SearchState) -> None:
    """Everything a resumed run needs to continue identically, written atomically."""
    state = {
        "format": STATE_FORMAT,
        "config": asdict(run.config),
        "num_archs": run.num_archs,
        "num_cells": run.num_cells,
        "generation": run.generation,
        # Order and crowding distances matter: the next tournament samples by position and
        # compares the distances selNSGA2 assigned over pop + offspring, not recomputable from pop.
        "population": [
            {
                "genotype": list(ind),
                "fitness": list(ind.fitness.values),
                "crowding_dist": float_out(getattr(ind.fitness, "crowding_dist", 0.0)),
            }
            for ind in run.population
        ],
        "evaluations": [
            {"generation": run.first_generation[code], **e.to_dict()} for code, e in run.evaluations.items()
        ],
        "history": run.history,
        "populations": [[list(code) for code in pop] for pop in run.populations],
        "rng": {"search": rng_state_to_json(run.rng)},
        "depends_on": run.depends_on,
    }
    write_atomic(run_dir / rundir.STATE, json.dumps(state, allow_nan=False))


def recorded_depends_on(run_dir: Path) -> dict:
    """What the run's evaluations depend on, as its checkpoint recorded it ({} where there is none
    readable: `load_state` says why when the search starts)."""
    try:
        state = json.loads((Path(run_dir) / rundir.STATE).read_text())
        recorded = state.get("depends_on") if isinstance(state, dict) else None
    except (OSError, ValueError):
        return {}
    return recorded if isinstance(recorded, dict) else {}


def load_state(
    run_dir: Path, config: SearchConfig, num_archs: int, num_cells: int, depends_on: dict | None = None
) -> SearchState:
    """The checkpoint of `run_dir`, the search's generator restored. Settings that change the
    meaning of the stored population (n, c, p_size, objectives) and what the stored evaluations
    depend on (`depends_on`) must match; generations may grow."""
    path = Path(run_dir) / rundir.STATE
    try:
        state = json.loads(path.read_text())
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise ValueError(f"format {state.get('format') if isinstance(state, dict) else None!r}")
    except (OSError, ValueError) as err:
        reason = "it has no search_state.json" if not path.is_file() else f"its search_state.json is unreadable ({err})"
        raise ModuleNetError(f"{run_dir} is not a search run: {reason}") from None
    try:
        run = _run_from_state(state, config, num_archs, num_cells, depends_on, run_dir)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as err:
        what = f"lacks {err}" if isinstance(err, KeyError) else f"has a bad value ({first_line(err)})"
        raise ModuleNetError(
            f"cannot resume {run_dir}: its {rundir.STATE} {what}; it was not written by this "
            f"modulenet ({STATE_FORMAT}) or was edited"
        ) from None
    if run.generation >= config.generations:
        log.info(
            "%s already reached generation %d (asked for %d): rewriting its outputs only",
            run_dir,
            run.generation,
            config.generations,
        )
    return run


def _run_from_state(
    state: dict, config: SearchConfig, num_archs: int, num_cells: int, depends_on: dict | None, run_dir: Path
) -> SearchState:
    stored = state["config"]
    for key, now, then in (
        ("num_archs", num_archs, state["num_archs"]),
        ("num_cells", num_cells, state["num_cells"]),
        ("population_size", config.population_size, stored["population_size"]),
        ("objectives", list(config.objectives), stored["objectives"]),
    ):
        if now != then:
            raise ModuleNetError(f"cannot resume {run_dir}: {key}={now} but the stored run has {key}={then}")
    _check_depends_on(run_dir, state.get("depends_on"), depends_on)
    run = SearchState(config, num_archs, num_cells, depends_on)
    run.generation = int(state["generation"])
    for row in state["evaluations"]:
        evaluation = Evaluation.from_dict(row)
        run.evaluations[evaluation.genotype] = evaluation
        run.first_generation[evaluation.genotype] = int(row["generation"])
    Individual = individual_class(len(config.objectives))
    for row in state["population"]:
        ind = Individual(int(g) for g in row["genotype"])
        ind.fitness.values = tuple(float(v) for v in row["fitness"])
        ind.fitness.crowding_dist = float(row["crowding_dist"])
        run.population.append(ind)
    for row in state["history"]:
        run.logbook.record(**row)
    run.populations = [[tuple(int(g) for g in code) for code in pop] for pop in state.get("populations", [])]
    run.rng = rng_from_json(state["rng"]["search"])
    return run


def _check_depends_on(run_dir: Path, stored: dict | None, now: dict | None) -> None:
    """Refuse to continue a run whose evaluations were made on something else, naming what differs."""
    if now is None:
        return
    now = json.loads(json.dumps(now, default=str))  # the stored form: lists, not tuples
    differing = _differences(stored or {}, now)
    if differing:
        more = f"; and {len(differing) - 5} more" if len(differing) > 5 else ""
        keys = ", ".join(sorted({d.split(":")[0].split(".")[0] for d in differing}))
        raise ModuleNetError(
            f"cannot resume {run_dir}: its evaluations were made with another {keys} "
            f"({'; '.join(differing[:5])}{more}); start a new run or resume with the same settings"
        )


def _differences(stored: dict, now: dict, prefix: str = "") -> list[str]:
    """Each differing value in full, `key: <now> now, <stored> in the run`; dictionaries (the
    knowledge base's weights by architecture, the dataset's settings) compared key by key."""
    found = []
    for key in sorted(set(stored) | set(now), key=str):
        a, b = now.get(key), stored.get(key)
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            found += _differences(b, a, f"{prefix}{key}.")
        else:
            found.append(f"{prefix}{key}: {json.dumps(a, default=str)} now, {json.dumps(b, default=str)} in the run")
    return found


def float_out(value: float):
    """Strict JSON has no Infinity; crowding distances of boundary points are infinite."""
    return value if math.isfinite(value) else str(value)
