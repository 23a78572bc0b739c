"""Bad inputs a user can give, each one clear line (a ModuleNetError), never a traceback.

Real components throughout: real genotype parsing, real checkpoint files (the shared pretrained
CIFAR ResNets where present), real npz files, a real Ray, the real results.json reader and the
real `modulenet-finetune` console script.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import time
import warnings
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, cifar_checkpoint
from omegaconf import OmegaConf
from torch import nn

from modulenet.errors import DataError, GenotypeError, ModuleNetError, WeightsError
from modulenet.genotype import parse_genotype
from modulenet.knowledge import build_knowledge_base
from modulenet.knowledge.cifar_resnet import CifarResNet
from modulenet.knowledge.weights import load_checkpoint

BIN = Path(sys.executable).parent


def one_line(excinfo, *fragments: str) -> str:
    """The error is a ModuleNetError of one line that contains every fragment."""
    message = str(excinfo.value)
    assert isinstance(excinfo.value, ModuleNetError), type(excinfo.value)
    assert "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, message
    return message


# -- 1. genotype strings with a stray character ---------------------------------------------------

CIFAR_NAMES = ["resnet_cifar20", "resnet_cifar32", "resnet_cifar56"]


def test_genotype_string_with_a_stray_character_names_it():
    with pytest.raises(GenotypeError) as excinfo:
        parse_genotype("0a1", CIFAR_NAMES, 3)
    one_line(
        excinfo,
        "genotype '0a1': position 1 is 'a'; valid values are integers in [0, 2] or names in "
        "['resnet_cifar20', 'resnet_cifar32', 'resnet_cifar56']",
    )
    with pytest.raises(GenotypeError) as excinfo:
        parse_genotype("21x11", 3, 5)  # n only: no names to offer
    one_line(excinfo, "genotype '21x11': position 2 is 'x'; valid values are integers in [0, 2]")
    assert "names" not in str(excinfo.value)
    with pytest.raises(GenotypeError) as excinfo:
        parse_genotype(" 01. ", CIFAR_NAMES, 3)
    one_line(excinfo, "position 2 is '.'")

    # the accepted forms are unchanged
    for value in (
        "021",
        " 021 ",
        "0,2,1",
        "0 2 1",
        [0, 2, 1],
        ["resnet_cifar20", "resnet_cifar56", "1"],
        "resnet_cifar20,resnet_cifar56,resnet_cifar32",
    ):
        assert parse_genotype(value, CIFAR_NAMES, 3) == (0, 2, 1), value
    assert parse_genotype("resnet_cifar56", CIFAR_NAMES, 1) == (2,)
    assert parse_genotype("11,0,3", 12, 3) == (11, 0, 3)
    # a name-like token keeps its own messages: a wrong count, an unknown name
    with pytest.raises(GenotypeError, match="has 1 positions; the knowledge base has c = 3 cells"):
        parse_genotype("resnet20", CIFAR_NAMES, 3)
    with pytest.raises(GenotypeError, match=r"position 0 is 'vgg99'; valid values are integers in \[0, 2\]"):
        parse_genotype("vgg99", CIFAR_NAMES, 1)
    with pytest.raises(GenotypeError, match=r"position 0 is -1; valid range is \[0, 2\]"):
        parse_genotype("-1", CIFAR_NAMES, 1)


# -- 2. unsafe pickles: refused, and torch's advice to load them unsafely never shown -------------


class CustomRecord:
    """A user's own class: pickling it makes a file that needs this code to load."""

    def __init__(self):
        self.weights = torch.zeros(3)


def _module(path):
    torch.save(CifarResNet(20), path)


def _custom_in_dict(path):
    torch.save({"state_dict": CifarResNet(20).state_dict(), "record": CustomRecord()}, path)


def _raw_pickle_of_custom(path):
    with open(path, "wb") as f:
        pickle.dump(CustomRecord(), f)


def _raw_pickle_of_module(path):
    with open(path, "wb") as f:
        pickle.dump(nn.Linear(2, 2), f)


def _raw_pickle_of_state_dict(path):
    with open(path, "wb") as f:
        pickle.dump(CifarResNet(20).state_dict(), f)


@pytest.mark.parametrize(
    "write", [_module, _custom_in_dict, _raw_pickle_of_custom, _raw_pickle_of_module, _raw_pickle_of_state_dict]
)
def test_pickles_that_need_code_are_refused_without_unsafe_advice(tmp_path, write):
    path = tmp_path / "checkpoint.pt"
    write(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch's "Detected pickle protocol 4" warning is not shown either
        with pytest.raises(WeightsError) as excinfo:
            load_checkpoint(path)
    message = one_line(
        excinfo,
        f"refused to load {path}",
        "not a safe checkpoint",
        "needs code to load",
        "torch.save(model.state_dict(), path)",
    )
    assert "weights_only" not in message and "trust" not in message, message

    with pytest.raises(WeightsError) as excinfo:  # the same through the knowledge base
        build_knowledge_base(["resnet_cifar20"], weights=str(path), progress=False)
    assert "weights_only" not in one_line(excinfo, "not a safe checkpoint")


def test_refusal_names_the_class_that_would_run(tmp_path):
    path = tmp_path / "module.pt"
    torch.save(nn.Linear(2, 2), path)
    with pytest.raises(WeightsError) as excinfo:
        load_checkpoint(path)
    one_line(excinfo, "it pickles torch.nn.modules.linear.Linear, which needs code to load")


@pytest.mark.parametrize(
    "content", [b"\x00 not a checkpoint", b"this is not a checkpoint", b"", bytes(range(7, 256)) * 2, "truncated"]
)
def test_damaged_files_are_corrupt_without_unsafe_advice(tmp_path, content):
    path = tmp_path / "damaged.pt"
    if content == "truncated":
        torch.save(CifarResNet(20).state_dict(), path)
        path.write_bytes(path.read_bytes()[:300])
    else:
        path.write_bytes(content)
    with pytest.raises(WeightsError) as excinfo:
        load_checkpoint(path)
    message = one_line(excinfo, f"cannot read weights file {path}: corrupt or not a torch checkpoint")
    assert "weights_only" not in message and "Weights only" not in message, message


# -- 3. a checkpoint of a deeper network is not silently cut down ----------------------------------


def test_resnet56_checkpoint_given_for_resnet_cifar20_is_refused():
    path = cifar_checkpoint(56)
    with pytest.raises(WeightsError) as excinfo:
        build_knowledge_base(["resnet_cifar20"], weights={"resnet_cifar20": str(path)}, progress=False)
    message = one_line(
        excinfo,
        f"{path} has ",
        " trunk tensors resnet_cifar20 does not have (layer1.3.conv1.weight, ",
        "...): is it a checkpoint of resnet_cifar20?",
    )
    extra = [
        k
        for k in load_checkpoint(path)
        if k.split(".")[1:2] and k.split(".")[0].startswith("layer") and int(k.split(".")[1]) >= 3
    ]
    assert f"has {len(extra)} trunk tensors" in message, message  # every block beyond the third of a stage
    assert message.count(", ") == 5  # five names shown, then "..."


def test_matching_checkpoint_and_classifier_or_head_keys_still_load(tmp_path):
    path = cifar_checkpoint(20)
    kb = build_knowledge_base(["resnet_cifar20"], weights={"resnet_cifar20": str(path)}, progress=False)
    state = load_checkpoint(path)
    assert torch.equal(kb.modules[1][0][2].conv2.weight, state["layer2.2.conv2.weight"])

    # a 100-class classifier, a head of another structure under `linear.`, a DARTS-style auxiliary head
    other = dict(state)
    other["linear.weight"], other["linear.bias"] = torch.randn(100, 64), torch.randn(100)
    other["linear.3.weight"] = torch.randn(10, 100)
    other["auxiliary_head.classifier.weight"] = torch.randn(10, 768)
    torch.save({"state_dict": {f"module.{k}": v for k, v in other.items()}}, tmp_path / "heads.pt")
    kb = build_knowledge_base(["resnet_cifar20"], weights=str(tmp_path / "heads.pt"), progress=False)
    assert torch.equal(kb.modules[2][0][2].conv2.weight, state["layer3.2.conv2.weight"])

    # a tensor of no part of resnet_cifar20 is refused, named
    other["layer3.2.conv3.weight"] = torch.randn(64, 64, 1, 1)
    torch.save(other, tmp_path / "extra.pt")
    with pytest.raises(WeightsError) as excinfo:
        build_knowledge_base(["resnet_cifar20"], weights=str(tmp_path / "extra.pt"), progress=False)
    one_line(excinfo, "has 1 trunk tensor resnet_cifar20 does not have (layer3.2.conv3.weight)")


# -- 4. npz labels outside [0, num_classes) --------------------------------------------------------


def write_npz(path: Path, y_train, y_test, **extra) -> Path:
    rng = np.random.default_rng(0)
    np.savez(
        path,
        x_train=rng.integers(0, 256, (len(y_train), 8, 8, 3), dtype=np.uint8),
        y_train=np.asarray(y_train, dtype=np.int64),
        x_test=rng.integers(0, 256, (len(y_test), 8, 8, 3), dtype=np.uint8),
        y_test=np.asarray(y_test, dtype=np.int64),
        **extra,
    )
    return path


def npz_module(path, **kwargs):
    from modulenet.data import NpzDataModule

    dm = NpzDataModule(str(path), val_size=2, **kwargs)
    dm.setup("fit")
    return dm


def test_npz_num_classes_is_inferred_only_from_complete_labels(tmp_path):
    dm = npz_module(write_npz(tmp_path / "full.npz", [0, 1, 2, 2, 1, 0], [2, 0]))
    assert dm.num_classes == 3 and dm.class_names == ["0", "1", "2"]

    gappy = write_npz(tmp_path / "gappy.npz", [0, 1, 3, 3, 6, 0], [0, 1])
    with pytest.raises(DataError) as excinfo:
        npz_module(gappy)
    one_line(
        excinfo,
        "gappy.npz",
        "labels 2, 4, 5 (3 of 0..6) are absent from y_train",
        "dataset.num_classes=",
        "classes array",
    )
    assert npz_module(gappy, num_classes=7).num_classes == 7
    assert npz_module(gappy, num_classes=10).class_names == [str(i) for i in range(10)]


def test_npz_labels_beyond_num_classes_name_label_split_and_num_classes(tmp_path):
    path = write_npz(tmp_path / "d.npz", [0, 1, 2, 3, 1, 0], [0, 5])
    with pytest.raises(DataError) as excinfo:
        npz_module(path, num_classes=4)
    one_line(excinfo, "d.npz", "y_test has label 5", "num_classes is 4 (given as dataset.num_classes)", "[0, 3]")
    with pytest.raises(DataError) as excinfo:
        npz_module(path, num_classes=3)
    one_line(excinfo, "y_train has label 3", "num_classes is 3")
    inferred = write_npz(tmp_path / "inferred.npz", [0, 1, 2, 1, 0, 2], [0, 3])
    with pytest.raises(DataError) as excinfo:
        npz_module(inferred)
    one_line(excinfo, "y_test has label 3", "num_classes is 3 (inferred from y_train)")


def test_npz_classes_array_wins_and_must_agree_with_num_classes(tmp_path):
    named = write_npz(tmp_path / "named.npz", [0, 1, 0, 1, 0, 1], [1, 0], classes=np.array(["ant", "bee", "cat"]))
    dm = npz_module(named)
    assert dm.num_classes == 3 and dm.class_names == ["ant", "bee", "cat"]
    assert npz_module(named, num_classes=3).num_classes == 3
    with pytest.raises(DataError) as excinfo:
        npz_module(named, num_classes=5)
    one_line(excinfo, "dataset.num_classes=5", "classes array has 3 names")
    beyond = write_npz(tmp_path / "beyond.npz", [0, 1, 2, 3, 0, 1], [1, 0], classes=np.array(["ant", "bee", "cat"]))
    with pytest.raises(DataError) as excinfo:
        npz_module(beyond)
    one_line(excinfo, "y_train has label 3", "num_classes is 3 (the classes array has 3 names)")
    with pytest.raises(DataError) as excinfo:
        npz_module(named, num_classes=0)
    one_line(excinfo, "dataset.num_classes=0 must be an integer >= 1")


def test_npz_num_classes_through_the_dataset_config(tmp_path):
    from modulenet.app.builders import make_datamodule

    cfg = OmegaConf.load(REPO / "conf" / "dataset" / "npz.yaml")
    assert "num_classes" in cfg and cfg.num_classes is None
    gappy = write_npz(tmp_path / "gappy.npz", [0, 2, 2, 0, 2, 0], [0, 2])
    cfg.path, cfg.seed, cfg.val_size = str(gappy), 0, 2
    with pytest.raises(DataError) as excinfo:
        make_datamodule(cfg)
    one_line(excinfo, "labels 1 (1 of 0..2) are absent from y_train")
    cfg.num_classes = 3
    assert make_datamodule(cfg).num_classes == 3


# -- 5. evaluator=ray with an address that cannot work ---------------------------------------------


@pytest.fixture
def ray_evaluator_args():
    """Real knowledge base and search tensors for a RayEvaluator; no Ray left initialised or running."""
    ray = pytest.importorskip("ray")
    from modulenet.evaluation.settings import EvaluationSettings

    ray.shutdown()
    kb = build_knowledge_base(["resnet_cifar8"], progress=False)
    g = torch.Generator().manual_seed(0)
    data = (
        torch.randn(8, 3, 32, 32, generator=g),
        torch.randint(0, 2, (8,), generator=g),
        torch.randn(4, 3, 32, 32, generator=g),
        torch.randint(0, 2, (4,), generator=g),
    )
    before = descendants()
    yield ray, (kb, data, 2, EvaluationSettings(epochs=1))
    ray.shutdown()
    assert not ray.is_initialized()
    started = {pid: name for pid, name in descendants().items() if pid not in before}
    assert not started, f"processes left running: {started}"


def descendants() -> dict[int, str]:
    """{pid: name} of this process's living descendants, from /proc (empty where there is none)."""
    parents, names = {}, {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # ended meanwhile
            continue
        name_end = text.rindex(")")
        fields = text[name_end + 2 :].split()
        if fields[0] != "Z":  # a zombie is not running
            pid = int(stat.parent.name)
            parents[pid], names[pid] = int(fields[1]), text[text.index("(") + 1 : name_end]
    found, frontier = {}, {os.getpid()}
    while frontier:
        frontier = {pid for pid, ppid in parents.items() if ppid in frontier and pid not in found}
        found.update({pid: names[pid] for pid in frontier})
    return found


def make_ray(args, address):
    from modulenet.evaluation.evaluator import make_evaluator

    return make_evaluator("ray", *args, address=address, num_workers=1, progress=False)


def test_unreachable_ray_address_is_one_line_and_fast(ray_evaluator_args):
    ray, args = ray_evaluator_args
    start = time.perf_counter()
    with pytest.raises(ModuleNetError) as excinfo:
        make_ray(args, "127.0.0.1:1")  # nothing listens on port 1
    assert time.perf_counter() - start < 20
    one_line(
        excinfo,
        "evaluator.address='127.0.0.1:1'",
        "no Ray cluster answers there",
        "Connection refused",
        "check evaluator.address",
        "evaluator=gpus",
    )
    assert not ray.is_initialized()


@pytest.mark.parametrize(
    "address, reason",
    [
        ("127.0.0.1", "Invalid address format"),
        ("localhost:port", "Unable to parse port number"),
        ("http://127.0.0.1:8265", "Invalid Ray address"),
    ],
)
def test_malformed_ray_address_is_one_line_with_rays_reason(ray_evaluator_args, address, reason):
    ray, args = ray_evaluator_args
    with pytest.raises(ModuleNetError) as excinfo:
        make_ray(args, address)
    one_line(
        excinfo,
        f"evaluator=ray cannot connect to evaluator.address={address!r} ({reason}",
        "check evaluator.address",
        "evaluator=gpus",
    )
    assert not ray.is_initialized()


@pytest.mark.skipif(find_spec("grpc") is not None, reason="ray[client] is installed: ray:// would connect")
def test_ray_client_address_without_the_client_extra_is_one_line(ray_evaluator_args):
    ray, args = ray_evaluator_args
    with pytest.raises(ModuleNetError) as excinfo:
        make_ray(args, "ray://127.0.0.1:10001")
    one_line(
        excinfo,
        "evaluator.address='ray://127.0.0.1:10001'",
        "needs Ray's client extra: pip install 'ray[client]'",
        "evaluator.address=auto",
    )
    assert not ray.is_initialized()


# -- 6. a corrupt results.json given to fine-tuning ------------------------------------------------

VALID_RESULTS = {
    "population": [
        {"genotype": [0, 1, 2], "score": 0.41, "err_val": 0.3},
        {"genotype": [1, 1, 1], "score": 0.52, "err_val": 0.4},
    ],
    "populations": [["012", "111"]],
    "num_cells": 3,
}


@pytest.mark.parametrize(
    "content, problem",
    [
        ("", "results.json is empty: truncated or corrupt"),
        (
            json.dumps(VALID_RESULTS)[:40],
            "results.json is not valid JSON (Expecting property name enclosed in double quotes at line 1 column 41)",
        ),
        ("not json at all", "results.json is not valid JSON (Expecting value at line 1 column 1)"),
        ("[1, 2, 3]", "results.json holds a JSON array, not a search's results object"),
        (
            json.dumps({"best": {}}),
            "results.json has no 'population': expected a list of rows with 'genotype' and 'score'",
        ),
        (json.dumps({"population": {"genotype": [0]}}), "has a 'population' that is a JSON object"),
        (
            json.dumps({"population": [{"genotype": [0, 1, 2], "score": 1.0}, {"score": 2.0}]}),
            "population[1] has no 'genotype'",
        ),
        (json.dumps({"population": [{"genotype": [0, 1, 2]}]}), "population[0] has no 'score'"),
        (json.dumps({"population": ["012"]}), "population[0] is a JSON string, not an object"),
        (
            json.dumps({"population": [{"genotype": "012", "score": 1.0}]}),
            'population[0] has genotype "012", not a list of non-negative integers',
        ),
        (
            json.dumps({"population": [{"genotype": [0, 1, 2], "score": "low"}]}),
            'population[0] has score "low", not a finite number',
        ),
    ],
)
def test_corrupt_results_json_is_one_line_naming_file_and_problem(tmp_path, content, problem):
    from modulenet.rundir import read_results

    (tmp_path / "results.json").write_text(content)
    with pytest.raises(ModuleNetError) as excinfo:
        read_results(tmp_path)
    one_line(excinfo, str(tmp_path / "results.json"), problem, f"modulenet-search resume={tmp_path}")


def test_valid_results_json_reads_as_before(tmp_path):
    from modulenet.rundir import read_results

    (tmp_path / "results.json").write_text(json.dumps(VALID_RESULTS, indent=2))
    assert read_results(tmp_path) == VALID_RESULTS
    with pytest.raises(ModuleNetError, match="is not a search run: it has no results.json"):
        read_results(tmp_path / "nowhere")


def test_modulenet_finetune_with_a_truncated_results_json_is_one_error_line(tmp_path):
    run = tmp_path / "search-run"
    run.mkdir()
    (run / "results.json").write_text(json.dumps(VALID_RESULTS, indent=2)[:100])  # cut mid-write
    (run / "config_resolved.yaml").write_text("seed: 0\ndataset:\n  _target_: modulenet.data.QuickstartDataModule\n")
    env = {**os.environ, "MODULENET_CACHE": str(tmp_path / "cache"), "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    proc = subprocess.run(
        [
            str(BIN / "modulenet-finetune"),
            f"search_run={run}",
            "logger=none",
            "progress=false",
            f"hydra.run.dir={tmp_path / 'ft'}",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr + proc.stdout
    last = [line for line in proc.stderr.splitlines() if line.strip()][-1]
    assert last.startswith(f"error: {run / 'results.json'} is not valid JSON ("), last
    assert "truncated or corrupt" in last


def test_training_from_scratch_on_more_than_ten_classes_is_one_line(tmp_path):
    from modulenet.data import NpzDataModule
    from modulenet.knowledge.quickstart import SourceRecipe, quickstart_knowledge_base

    rng = np.random.default_rng(0)
    np.savez(
        tmp_path / "d.npz",
        x_train=rng.integers(0, 255, (24, 8, 8, 3), dtype=np.uint8),
        y_train=np.arange(24) % 12,
        x_test=rng.integers(0, 255, (12, 8, 8, 3), dtype=np.uint8),
        y_test=np.arange(12) % 12,
    )
    with pytest.raises(
        ModuleNetError,
        match=r"uses each network's own 10-class head, but the dataset has 12 "
        r"classes",
    ) as info:
        quickstart_knowledge_base(
            NpzDataModule(str(tmp_path / "d.npz"), val_size=4), tmp_path, SourceRecipe(("vgg_cifar",), epochs=1)
        )
    assert "\n" not in str(info.value)


@pytest.mark.skipif(find_spec("grpc") is not None, reason="ray[client] is installed: ray:// would connect")
def test_a_ray_client_address_is_checked_before_any_knowledge_base_is_built(tmp_path, monkeypatch, capsys):
    """Issue 25: the client extra is missing: one line at start (it took 4.7 minutes of knowledge-base
    training before), and nothing of the knowledge base was built."""
    from conftest import compose_search

    from modulenet.app.jobs import search_job

    cfg = compose_search(["evaluator=ray", "evaluator.address=ray://127.0.0.1:1", "logger=none", "progress=false"])
    monkeypatch.setenv("MODULENET_CACHE", str(tmp_path / "cache"))
    with pytest.raises(ModuleNetError, match=r"is a Ray client address, which needs Ray's client extra") as info:
        search_job(cfg, tmp_path / "run")
    assert "\n" not in str(info.value)
    assert not (tmp_path / "cache").exists()  # the quickstart base was not trained


LAUNCHER_WITHOUT_PLUGIN = """
import sys
sys.modules["hydra_plugins.hydra_submitit_launcher"] = None  # as if hydra-submitit-launcher were not installed
sys.argv = ["modulenet-search", "-m", sys.argv[1], "search.alpha=10,25"]
from modulenet.app.cli import search_main
search_main()
"""


@pytest.mark.parametrize("launcher", ["hydra/launcher=slurm", "hydra/launcher=submitit_slurm"])
def test_a_launcher_whose_plugin_is_missing_is_one_line_before_hydra_composes(tmp_path, launcher):
    """Issue 25: Hydra's own refusal is a paragraph about a missing config group option."""
    done = subprocess.run(
        [sys.executable, "-c", LAUNCHER_WITHOUT_PLUGIN, launcher], cwd=tmp_path, capture_output=True, text=True
    )
    assert done.returncode == 1 and not (tmp_path / "multirun").exists()
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(f"error: {launcher} needs the submitit launcher") and "modulenet[slurm]" in line
