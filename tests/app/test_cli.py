"""The console scripts as users run them: real Hydra, real Lightning, real DEAP, W&B offline."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO, cifar_checkpoint

from modulenet.app.cli import search_main

BIN = Path(sys.executable).parent
TINY = [
    "dataset.num_train=1200",
    "dataset.num_val=300",
    "dataset.num_test=300",
    "knowledge_base.quickstart_epochs=2",
    "search.generations=2",
    "search.population_size=4",
    "search.epochs=3",
    "evaluator.hidden=[64,64]",
    "evaluator.lr=0.01",
    "progress=false",
]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("modulenet-cache")


def run_cli(script: str, args: list[str], cwd: Path, cache_dir: Path, timeout: int = 300):
    env = {**os.environ, "MODULENET_CACHE": str(cache_dir), "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    return subprocess.run([str(BIN / script), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow  # make test-all: three jobs through the command line (about 70 s on 2 cores)
def test_quickstart_search_resume_and_finetune_end_to_end(tmp_path, cache_dir):
    run = tmp_path / "run"
    proc = run_cli("modulenet-search", [*TINY, f"hydra.run.dir={run}"], tmp_path, cache_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((run / "results.json").read_text())
    assert set(results) >= {"best", "history", "population"}
    assert len(results["history"]) == 2 and len(results["population"]) == 4
    best = results["best"]
    assert {"genotype", "arch_names", "score", "err_val", "l_rate", "sim"} <= set(best)
    with (run / "evaluations.csv").open() as f:
        err_vals = [float(row["err_val"]) for row in csv.DictReader(f)]
    assert min(err_vals) < 0.7  # ten classes: chance is 0.9
    for name in (
        "evaluations.csv",
        "search_curves.png",
        "config_resolved.yaml",
        ".hydra/config.yaml",
        "evaluations.jsonl",
        "search_state.json",
    ):
        assert (run / name).is_file(), name
    assert list((run / "wandb").glob("offline-run-*")), "one offline W&B run per search"
    evaluated = len((run / "evaluations.jsonl").read_text().splitlines())

    # resume the finished run to a later generation: earlier evaluations are reused, not retrained
    proc = run_cli(
        "modulenet-search",
        [*TINY, f"resume={run}", "search.generations=3", "logger=none", f"hydra.run.dir={tmp_path / 'resumed'}"],
        tmp_path,
        cache_dir,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    resumed = json.loads((run / "results.json").read_text())
    assert len(resumed["history"]) == 3 and resumed["history"][:2] == results["history"]
    lines = (run / "evaluations.jsonl").read_text().splitlines()
    genotypes = [tuple(json.loads(line)["evaluation"]["genotype"]) for line in lines]
    assert len(genotypes) == len(set(genotypes)) >= evaluated

    # resumed with another knowledge base of the same n and c: refused before any work, naming what differs
    from modulenet.knowledge import build_knowledge_base

    build_knowledge_base(["resnet_cifar8", "vgg_cifar", "allconv_cifar"], progress=False).save(tmp_path / "other_kb")
    # (in this process: the command line's one-line errors are test_user_mistake_...'s)
    from conftest import compose_search

    from modulenet.app.jobs import search_job
    from modulenet.errors import ModuleNetError

    other = [f"knowledge_base.path={tmp_path / 'other_kb'}", "knowledge_base.allow_random=true"]
    cfg = compose_search([*TINY, f"resume={run}", "search.generations=4", "logger=none", *other])
    with pytest.raises(
        ModuleNetError, match=f"cannot resume {run}: its evaluations were made with another sources, weights"
    ):
        search_job(cfg, tmp_path / "refused")
    assert len((run / "evaluations.jsonl").read_text().splitlines()) == len(lines)

    # the evaluation stage: top-1 of the final population and the three originals, fine-tuned, with
    # the search run's own finetune settings (as a recipe saved them) under this command line's
    saved = (run / "config_resolved.yaml").read_text()
    assert saved.count("  momentum: 0.9\n") == 1  # the finetune group's
    (run / "config_resolved.yaml").write_text(saved.replace("  momentum: 0.9\n", "  momentum: 0.8\n"))
    ft = tmp_path / "ft"
    proc = run_cli(
        "modulenet-finetune",
        [
            f"search_run={run}",
            "finetune.epochs=1",
            "finetune.top_k=1",
            "logger=none",
            "progress=false",
            f"hydra.run.dir={ft}",
        ],
        tmp_path,
        cache_dir,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    settings = json.loads((ft / "finetune.json").read_text())["settings"]
    assert settings["momentum"] == 0.8 and settings["epochs"] == 1 and settings["top_k"] == 1
    finetuned = json.loads((ft / "finetune.json").read_text())["results"]
    assert [r["label"] for r in finetuned] == ["ModuleNet #1", "resnet_cifar8", "vgg_cifar", "allconv_cifar"]
    assert all(0.0 <= r["test_error"] <= 1.0 for r in finetuned)
    assert "| Method |" in (ft / "finetune.md").read_text()


@pytest.mark.slow  # make test-all: four end-to-end jobs (about 30 s); keeps make test under 5 minutes
def test_multirun_sweep_is_four_jobs_in_one_wandb_group(tmp_path, cache_dir):
    sweep = tmp_path / "sweep-7f3a9c"
    proc = run_cli(
        "modulenet-search",
        ["-m", "search.alpha=10,25", "search.beta=25,30", *TINY, "search.generations=1", f"hydra.sweep.dir={sweep}"],
        tmp_path,
        cache_dir,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit())
    assert len(jobs) == 4
    settings, run_ids = set(), set()
    for job in jobs:
        assert (job / "results.json").is_file() and (job / "config_resolved.yaml").is_file()
        runs = list((job / "wandb").glob("offline-run-*"))
        assert len(runs) == 1, "each job its own W&B run"
        record = next(runs[0].glob("run-*.wandb")).read_bytes()
        assert b"quickstart-sweep-7f3a9c" in record, "the sweep's group is in the W&B run itself"
        info = json.loads((job / "wandb_run.json").read_text())
        assert info["group"] == "quickstart-sweep-7f3a9c" and info["job_type"] == "search"
        run_ids.add(info["id"])
        config = (job / "config_resolved.yaml").read_text().splitlines()
        settings.add(tuple(line.strip() for line in config if line.strip().startswith(("alpha:", "beta:"))))
    assert len(run_ids) == 4
    assert settings == {
        ("alpha: 10.0", "beta: 25.0"),
        ("alpha: 10.0", "beta: 30.0"),
        ("alpha: 25.0", "beta: 25.0"),
        ("alpha: 25.0", "beta: 30.0"),
    }


def test_user_mistake_at_the_command_line_is_one_line_without_traceback(tmp_path, cache_dir):
    proc = run_cli(
        "modulenet-search",
        ["knowledge_base=craft", "knowledge_base.archs=[resnet35]", "logger=none", f"hydra.run.dir={tmp_path / 'r'}"],
        tmp_path,
        cache_dir,
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr + proc.stdout
    errors = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("error: unknown architecture 'resnet35'; valid names are [")


def bad_input(
    tmp_path, monkeypatch, capsys, overrides: list[str], main=search_main, run: str = "run", cache: Path | None = None
) -> str:
    """Run a real entry point (`modulenet-search` by default) in this process; return its one error line."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MODULENET_CACHE", str(cache or tmp_path / "cache"))
    monkeypatch.setattr(
        sys, "argv", [main.__name__, "logger=none", "progress=false", f"hydra.run.dir={tmp_path / run}", *overrides]
    )
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code not in (0, None)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (
            ["knowledge_base=craft", "knowledge_base.archs=[vgg16,resnet_cifar20]"],
            "every architecture must decompose into c = 5 cells",
        ),
        (
            [
                "knowledge_base=craft",
                "knowledge_base.archs=[resnet_cifar20]",
                "knowledge_base.num_cells=null",
                "knowledge_base.weights=/nowhere/r20.pt",
            ],
            "weights file not found: /nowhere/r20.pt",
        ),
        (["dataset=cifar10", "dataset.download=false", "dataset.root=ROOT/no-cifar"], "no-cifar"),
        (["search.initial_genotypes=[[0,7,0]]"], "genotype position 1 is 7; valid range is [0, 2]"),
        (["resume=ROOT"], "is not a search run"),
        (["search.population_size=-2"], "search.population_size=-2 must be >= 2"),
        (["evaluator.hidden=[0,16]"], "evaluator.hidden[0]=0 must be a positive integer"),
        (["search.epochs=0"], "search.epochs=0 must be a positive integer"),
        (["trainer.precision=garbage"], "trainer.precision='garbage': valid values are auto, 32-true, 32, 16-mixed"),
        (["trainer.accelerator=tpu"], "trainer.accelerator='tpu': valid values are cpu, gpu, cuda, mps, auto"),
        (
            ["connection.name=foo"],
            "connection.name='foo': valid connections are ['aligned', 'channel_pool', 'conv1x1', "
            "'conv1x1_where_needed', 'least_squares']",
        ),
        (
            ["knowledge_base.archs=[resnet_cifar20]"],
            "knowledge_base.archs=['resnet_cifar20'] cannot take effect: the knowledge base is the quickstart's",
        ),
        (["trainer.float32_matmul_precision=max"], "trainer.float32_matmul_precision='max': expected one of"),
        (
            ["evaluator._target_=mypkg.MyEvaluator"],
            "evaluator._target_='mypkg.MyEvaluator' cannot be imported",
        ),
        (
            ["search._target_=mypkg.MySearch"],
            "search._target_='mypkg.MySearch' cannot be imported (No module named 'mypkg'); the built-in ones "
            "are search=nsga2",
        ),
        (["connection._target_=mypkg.Stitch"], "connection._target_='mypkg.Stitch' cannot be imported"),
        (["trainer._target_=mypkg.Trainer"], "the built-in ones are trainer=cpu|gpu"),
        # Issue 25: a command-line _target_ is checked against its group's contract before any call
        (["logger._target_=os.remove"], "logger._target_='os.remove' is not a tracker class"),
        (
            ["logger=wandb", "+logger.notes=hello"],
            "logger.notes is not a W&B setting; logger=wandb takes project, entity, group, job_type, name, tags, mode",
        ),
        (["connection._target_=os.system"], "connection._target_='os.system' cannot be called as this group calls"),
        (["evaluator._target_=subprocess.Popen"], "evaluator._target_='subprocess.Popen' is not a subclass of"),
        (["search._target_=collections.OrderedDict"], "is not a subclass of modulenet.search.toolbox.SearchConfig"),
        (["trainer._target_=os.getcwd"], "is not a subclass of modulenet.runtime.settings.TrainerSettings"),
        (["dataset._target_=os.getcwd"], "is not a subclass of pytorch_lightning.core.datamodule.LightningDataModule"),
        (["knowledge_base._target_=os.getcwd"], "knowledge_base._target_='os.getcwd' cannot be called as this group"),
        (
            [
                "knowledge_base=craft",
                "knowledge_base.archs=[resnet_cifar20,resnet_cifar32]",
                "knowledge_base.num_cells=null",
                "knowledge_base.weights={resnet_cifar20: random,resnet_cifar32: /nowhere/r32.th}",
            ],
            "knowledge base architectures ['resnet_cifar20'] have no trained weights (random init): give each a "
            "checkpoint (knowledge_base.weights={resnet_cifar20: FILE})",
        ),
        (
            ["connection.resolution=bilinear"],
            "connection.resolution='bilinear': valid values are ['reduce', 'resample']",
        ),
        pytest.param(
            ["trainer.accelerator=gpu"],
            "trainer.accelerator=gpu but torch sees no CUDA GPU here",
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is here"),
        ),
    ],
)
def test_bad_input_is_one_clear_line(tmp_path, monkeypatch, capsys, overrides, expected, cache_dir):
    overrides = [o.replace("ROOT", str(tmp_path)) for o in overrides]
    tiny = (
        [o for o in TINY if not o.startswith("dataset.")] if any(o.startswith("dataset=") for o in overrides) else TINY
    )
    # the module's cache: a check made after the quickstart base is built reuses the one trained above
    line = bad_input(tmp_path, monkeypatch, capsys, [*tiny, *overrides], cache=cache_dir)
    assert line.startswith("error: ") and expected in line, line


def test_corrupt_and_unsafe_weight_files_are_one_clear_line(tmp_path, monkeypatch, capsys):
    (tmp_path / "corrupt.pt").write_bytes(b"\x00 not a checkpoint")
    torch.save(torch.nn.Linear(2, 2), tmp_path / "pickled.pt")  # a module, not a plain tensor file
    base = [*TINY, "knowledge_base=craft", "knowledge_base.archs=[resnet_cifar20]", "knowledge_base.num_cells=null"]
    line = bad_input(tmp_path, monkeypatch, capsys, [*base, f"knowledge_base.weights={tmp_path / 'corrupt.pt'}"])
    assert "corrupt or not a torch checkpoint" in line
    line = bad_input(tmp_path, monkeypatch, capsys, [*base, f"knowledge_base.weights={tmp_path / 'pickled.pt'}"])
    assert "not a plain tensor file" in line


def test_a_second_search_in_a_held_run_directory_is_one_line(tmp_path, monkeypatch, capsys):
    from conftest import HOLDER

    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path / "run")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        line = bad_input(tmp_path, monkeypatch, capsys, TINY)
        assert line.startswith(f"error: {tmp_path / 'run'} is in use by pid {holder.pid}"), line
        assert not (tmp_path / "run" / "config_resolved.yaml").exists()  # the holder's files are untouched
    finally:
        holder.kill()
        holder.wait()


def bad_finetune(tmp_path, monkeypatch, capsys, overrides: list[str]) -> str:
    from modulenet.app.cli import finetune_main

    return bad_input(tmp_path, monkeypatch, capsys, overrides, main=finetune_main, run="ft")


def test_a_run_directory_is_data_for_finetuning(tmp_path, monkeypatch, capsys):
    """Its saved config builds only modulenet's classes, and a knowledge base it names runs no code."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from modulenet.app.config import register_configs
    from modulenet.knowledge import build_knowledge_base

    register_configs()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="search_app", overrides=[*TINY, "logger=none"])
    run = tmp_path / "search"
    run.mkdir()
    (run / "results.json").write_text(json.dumps({"population": [{"genotype": [0, 1, 2], "score": 0.3}]}))
    marker = tmp_path / "pwned"
    crafted = OmegaConf.to_container(cfg, resolve=True)
    crafted["dataset"] = {"_target_": "os.system", "command": f"touch {marker}"}
    (run / "config_resolved.yaml").write_text(OmegaConf.to_yaml(crafted))
    line = bad_finetune(tmp_path, monkeypatch, capsys, [f"search_run={run}"])
    assert line.startswith("error: ") and "names dataset._target_='os.system', which is none of" in line, line
    assert not marker.exists()

    # Issue 25: a dotted name under modulenet. reaches whatever modulenet imports (torch.load here,
    # with a hostile pickle), nested at any depth: refused by name before anything is called.
    class Hostile:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save(Hostile(), tmp_path / "hostile.pt")
    crafted = OmegaConf.to_container(cfg, resolve=True)
    crafted["dataset"]["seed"] = {
        "_target_": "modulenet.finetune.stage.torch.load",
        "f": str(tmp_path / "hostile.pt"),
        "weights_only": False,
    }
    (run / "config_resolved.yaml").write_text(OmegaConf.to_yaml(crafted))
    line = bad_finetune(tmp_path, monkeypatch, capsys, [f"search_run={run}"])
    assert "names dataset.seed._target_='modulenet.finetune.stage.torch.load', which is none of" in line, line
    assert not marker.exists()

    kb = build_knowledge_base(["resnet_cifar8"], progress=False)
    kb.save(tmp_path / "kb")
    meta_path = tmp_path / "kb" / "knowledge_base.json"
    meta = json.loads(meta_path.read_text())
    meta["architectures"] = [
        {
            "family": "cut_points",
            "name": "resnet_cifar8",
            "model": "os:system",
            "cut_points": ["a"],
            "kwargs": {"command": f"touch {marker}"},
        }
    ]
    meta_path.write_text(json.dumps(meta))
    crafted = OmegaConf.to_container(cfg, resolve=True)
    crafted["knowledge_base"].update(path=str(tmp_path / "kb"), trust_code=True)  # the file cannot trust itself
    (run / "config_resolved.yaml").write_text(OmegaConf.to_yaml(crafted))
    line = bad_finetune(tmp_path, monkeypatch, capsys, [f"search_run={run}"])
    assert "names code to import and call (resnet_cifar8: 'os:system')" in line, line
    assert not marker.exists()


@pytest.mark.slow
def test_modulenet_search_with_no_arguments(tmp_path):
    """The README's first command: the embedded quickstart, offline, on CPU, well under 5 minutes."""
    env = {**os.environ, "MODULENET_CACHE": str(tmp_path / "cache"), "WANDB_MODE": "offline"}
    proc = subprocess.run(
        [str(BIN / "modulenet-search")], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = list((tmp_path / "outputs" / "quickstart").iterdir())
    best = json.loads((run / "results.json").read_text())["best"]
    assert best["err_val"] < 0.5  # ten classes: chance is 0.9


@pytest.mark.slow  # make test-all; make test covers kill and resume in tests/test_reliability.py (library level)
def test_killed_search_keeps_finished_evaluations_and_resumes(tmp_path, cache_dir):
    """kill -9 in the middle of a generation: the memo keeps what finished, `resume=` completes the run."""
    import signal
    import time

    run = tmp_path / "run"
    env = {**os.environ, "MODULENET_CACHE": str(cache_dir), "WANDB_MODE": "offline"}
    args = [str(BIN / "modulenet-search"), *TINY, "search.generations=3", "logger=none", f"hydra.run.dir={run}"]
    proc = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    memo = run / "evaluations.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if (run / "search_state.json").is_file():  # generation 1 is done: kill inside generation 2
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the search ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = memo.read_text().splitlines()
    assert before, "finished evaluations survive the kill"

    resumed = run_cli(
        "modulenet-search",
        [*TINY, "search.generations=3", "logger=none", f"resume={run}", f"hydra.run.dir={tmp_path / 'resumed'}"],
        tmp_path,
        cache_dir,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    after = memo.read_text().splitlines()
    assert after[: len(before)] == before
    genotypes = [tuple(json.loads(line)["evaluation"]["genotype"]) for line in after]
    assert len(genotypes) == len(set(genotypes)), "no genotype trained twice"
    assert len(json.loads((run / "results.json").read_text())["history"]) == 3


def test_modulenet_kb_builds_a_knowledge_base_that_a_search_loads(tmp_path, monkeypatch):
    from modulenet.app.cli import kb_main
    from modulenet.knowledge import load_knowledge_base

    cifar_checkpoint(20)  # skips without ../shared
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "kb"
    monkeypatch.setattr(
        sys,
        "argv",
        [
            "modulenet-kb",
            "knowledge_base=cifar_resnets_shared",
            f"output={out}",
            "progress=false",
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
    )
    kb_main()
    kb = load_knowledge_base(out)
    assert kb.arch_names == ["resnet_cifar20", "resnet_cifar32", "resnet_cifar44", "resnet_cifar56"]
    assert (tmp_path / "run" / "config_resolved.yaml").is_file()
