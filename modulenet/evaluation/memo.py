"""The memo of finished evaluations (Algorithm 1 never trains a genotype twice; ours: it also
survives a kill). Read and written in the process that runs the search, never by workers."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from modulenet.genotype import Genotype
from modulenet.rundir import append_line
from modulenet.search.records import Evaluation


class EvaluationMemo:
    """Append-only JSON-lines file of finished evaluations, keyed by the settings' fingerprint: a
    killed run keeps every evaluation that finished (a torn last line is ignored when read and set
    aside before the next append)."""

    def __init__(self, path: str | os.PathLike, fingerprint: str):
        self.path = Path(path)
        self.fingerprint = fingerprint
        self._done: dict[Genotype, Evaluation] = {}
        if self.path.is_file():
            for line in self.path.read_text().splitlines():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a write cut short by a kill
                if row.get("fingerprint") == fingerprint:
                    evaluation = Evaluation.from_dict(row["evaluation"])
                    self._done[tuple(evaluation.genotype)] = evaluation

    def get(self, genotype: Sequence[int]) -> Evaluation | None:
        return self._done.get(tuple(genotype))

    def put(self, evaluation: Evaluation) -> None:
        self._done[tuple(evaluation.genotype)] = evaluation
        append_line(self.path, json.dumps({"fingerprint": self.fingerprint, "evaluation": evaluation.to_dict()}))

    def __len__(self) -> int:
        return len(self._done)
