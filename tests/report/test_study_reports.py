"""The inheritance study's committed reports follow from their committed rows: `study1-report` and
`study2-report`, run on a copy of docs/cpu_cifar10_inheritance with no run folders, write every file
back byte for byte (tables, tests, minimal detectable differences, figures, indexed predictions)."""

from __future__ import annotations

import filecmp
import os
import shutil
import subprocess
import sys

import pytest
from conftest import CIFAR_NPZ, REPO, SHARED

DOCS = REPO / "docs" / "cpu_cifar10_inheritance"


@pytest.mark.slow
def test_study_reports_regenerate_from_committed_rows(tmp_path):
    if not CIFAR_NPZ.is_file():
        pytest.skip(f"shared CIFAR-10 arrays not found at {CIFAR_NPZ}")
    copy, runs = tmp_path / "docs", tmp_path / "no-runs"
    shutil.copytree(DOCS, copy)
    runs.mkdir()
    env = {**os.environ, "DOCS": str(copy), "OUT": str(runs), "MODULENET_SHARED": str(SHARED)}
    for report in ("study1-report", "study2-report"):
        subprocess.run(
            [sys.executable, "studies/cpu_cifar10_inheritance.py", report],
            cwd=REPO,
            env=env,
            check=True,
            capture_output=True,
        )
    files = sorted(p.relative_to(DOCS) for p in DOCS.rglob("*") if p.is_file())
    _, differ, missing = filecmp.cmpfiles(DOCS, copy, [str(f) for f in files], shallow=False)
    assert (differ, missing) == ([], [])
    assert sorted(p.relative_to(copy) for p in copy.rglob("*") if p.is_file()) == files
