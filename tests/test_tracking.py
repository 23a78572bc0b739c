"""W&B runs offline in a temp dir (real wandb), the CSV logger, and no secret in any output."""

from __future__ import annotations

import pytest
from conftest import NAMES, HiddenTarget

from modulenet.search import SearchConfig, SearchSpace, run_search
from modulenet.tracking import CSVTracker, Tracker, WandbTracker, make_tracker, resolve_wandb_mode

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
        SearchSpace(4, 5, NAMES),
        HiddenTarget(),
        SearchConfig(generations=3, population_size=8, seed=1),
        tmp_path,
        callbacks=[tracker],
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
        SearchSpace(4, 5), HiddenTarget(), SearchConfig(generations=3, population_size=8), tmp_path, callbacks=[tracker]
    )
    rows = (tmp_path / "generations.csv").read_text().splitlines()
    assert rows[0].startswith("generation,score/min") and len(rows) == 4


class OwnTracker(Tracker):
    """A user's tracker: the hooks it wants (Tracker's do nothing), and only the arguments it declares."""

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
    with pytest.raises(ModuleNetError, match=r"logger._target_='os.remove' is not a tracker class"):
        make_tracker({"_target_": "os.remove"}, ".", {})


def test_the_search_run_logs_convergence_per_cell_and_the_front_against_generation(tmp_path):
    """Issue 22, read back from the offline run: `generation` is the x-axis of every per-generation
    metric; each cell's shares of source architectures sum to one; a multi-objective search logs its front."""
    from conftest import read_wandb_run

    tracker = WandbTracker(tmp_path, {}, project="modulenet-test", job_type="search", mode="offline", arch_names=NAMES)
    run_search(
        SearchSpace(4, 5, NAMES),
        HiddenTarget(),
        SearchConfig(generations=3, population_size=8, seed=1, objectives=["score", "params"]),
        tmp_path,
        callbacks=[tracker],
    )
    tracker.finish()
    run = read_wandb_run(tmp_path)
    assert run["metrics"]["score/*"] == "generation" and run["metrics"]["population/*"] == "generation"
    rows = [row for row in run["history"] if "generation" in row]
    assert [row["generation"] for row in rows] == [1, 2, 3]
    for row in rows:
        for cell in range(1, 6):
            shares = [row[f"population/cell{cell}/{name}"] for name in NAMES]
            assert abs(sum(shares) - 1.0) < 1e-9
    assert (tmp_path / "front.png").is_file()
    assert any(row.get("front/_type") == "image-file" for row in run["history"])


def test_a_finetune_run_logs_epoch_curves_the_selected_network_and_its_artifact(tmp_path):
    """Issue 22: per-epoch training loss, validation error and learning rate of each architecture
    against `finetune/epoch`; the selected network under fixed `selected/*` keys; the network as a
    model artifact (offline, synced later)."""
    from conftest import finetune_inputs, read_wandb_run

    from modulenet.finetune.settings import FinetuneSettings
    from modulenet.finetune.stage import FinetuneStage

    kb, dm = finetune_inputs()
    tracker = WandbTracker(tmp_path, {}, project="modulenet-test", job_type="finetune", mode="offline")
    settings = FinetuneSettings(epochs=2, hidden=[16], pool="avg", batch_size=32)
    results = {"population": [{"genotype": [0, 1, 1], "score": 1.0}]}
    (ours, *originals) = FinetuneStage(kb, dm, settings, tracker=tracker, progress=False).run(results, tmp_path / "ft")
    tracker.finish()
    run = read_wandb_run(tmp_path)
    assert run["metrics"]["finetune/*"] == "finetune/epoch"
    curve = [row for row in run["history"] if "finetune/ModuleNet #1-seed0/train_loss" in row]
    assert [row["finetune/epoch"] for row in curve] == [1, 2]
    assert all(0 <= row["finetune/ModuleNet #1-seed0/val_error"] <= 1 for row in curve)
    lrs = [row["finetune/ModuleNet #1-seed0/lr"] for row in curve]
    assert lrs[0] == settings.lr and lrs[1] < lrs[0]  # cosine decay
    assert ours.selected and run["summary"]["selected/test_error"] == ours.test_error
    assert run["summary"]["selected/val_error"] == ours.val_error and run["summary"]["selected/genotype"] == "011"
    assert list(run["artifacts"].values()) == ["model"]
