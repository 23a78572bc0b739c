"""W&B runs offline in a temp dir (real wandb), the CSV logger, and no secret in any output."""

from __future__ import annotations

import pytest
from test_search import NAMES, HiddenTarget

from modulenet.search import SearchConfig, run_search
from modulenet.tracking import CSVTracker, WandbTracker, make_tracker, resolve_wandb_mode

SECRET = "local-test-key-0123456789abcdef0123456789abcdef"


def test_wandb_offline_run_is_written_without_the_key(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_API_KEY", SECRET)  # present, yet forced offline below
    tracker = WandbTracker(
        tmp_path,
        {"search": {"alpha": 25}},
        project="modulenet-test",
        group="sweep-1",
        job_type="search",
        mode="offline",
        arch_names=NAMES,
    )
    assert tracker.mode == "offline"
    result = run_search(
        4,
        5,
        HiddenTarget(),
        SearchConfig(generations=3, population_size=8, seed=1),
        tmp_path,
        arch_names=NAMES,
        callbacks=[tracker],
        progress=False,
    )
    tracker.finish()
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("run-*.wandb")), "an offline run to `wandb sync` later"
    for path in tmp_path.rglob("*"):
        if path.is_file() and path.stat().st_size < 5_000_000:
            assert SECRET.encode() not in path.read_bytes(), f"secret written to {path}"
    assert result.best.score <= result.history[0]["min"]


def test_auto_mode_is_offline_without_credentials(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    monkeypatch.setenv("NETRC", str(tmp_path / "none"))
    assert resolve_wandb_mode("auto") == "offline"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert resolve_wandb_mode("auto") == "disabled"


def test_csv_logger_writes_one_row_per_generation(tmp_path):
    tracker = make_tracker({"_target_": "modulenet.tracking.CSVTracker", "project": "p"}, tmp_path, {}, job_type="x")
    assert isinstance(tracker, CSVTracker)
    run_search(
        4,
        5,
        HiddenTarget(),
        SearchConfig(generations=3, population_size=8),
        tmp_path,
        callbacks=[tracker],
        progress=False,
    )
    rows = (tmp_path / "generations.csv").read_text().splitlines()
    assert rows[0].startswith("generation,score/min") and len(rows) == 4


class OwnTracker:
    """A user's tracker: it declares only what it wants."""

    def __init__(self, run_dir, job_type: str, tags: list):
        self.run_dir, self.job_type, self.tags = run_dir, job_type, tags


def test_logger_none_own_and_unknown():
    assert make_tracker({"_target_": None}, ".", {}) is None
    own = make_tracker(
        {"_target_": f"{__name__}.OwnTracker", "tags": ["a"], "mode": "auto"}, ".", {}, job_type="search"
    )
    assert isinstance(own, OwnTracker) and (own.job_type, own.tags) == ("search", ["a"])
    from modulenet.errors import ModuleNetError

    with pytest.raises(ModuleNetError, match=r"logger._target_='tensorboard.Logger' cannot be imported .*logger=wandb"):
        make_tracker({"_target_": "tensorboard.Logger"}, ".", {})
