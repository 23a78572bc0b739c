"""Every weight trainable means BatchNorm learns too: the evaluation stage (Sec. IV) and the
fine-tuning of source networks before the search (Sec. IV-B1).

Lightning (>= 2.2) trains modules in the mode it finds them in, and an assembled trunk or a saved
knowledge base's modules start in eval mode: fine-tuning then ran on frozen running statistics, and
a learning rate that suits a BatchNorm network wrecked it (docs/cpu_cifar10_same_data/README.md)."""

from __future__ import annotations

from contextlib import contextmanager
from types import SimpleNamespace

import pytest
import torch
from conftest import finetune_inputs
from torch import nn
from torch.nn.modules.module import register_module_forward_pre_hook

from modulenet import rundir
from modulenet.errors import ModuleNetError
from modulenet.finetune.network import load_network, measure_network, save_network
from modulenet.finetune.settings import FinetuneSettings
from modulenet.finetune.training import finetune_architecture
from modulenet.knowledge.training import finetune_sources
from modulenet.stitching.fitted import fitted_state


@contextmanager
def batchnorm_modes():
    """The `training` flag of every BatchNorm forward pass that records gradients (a training step,
    not a BatchNorm recalibration or an evaluation pass), in any module, while the block runs."""
    modes: list[bool] = []

    def record(module, args):
        if isinstance(module, nn.BatchNorm2d) and torch.is_grad_enabled():
            modes.append(module.training)

    handle = register_module_forward_pre_hook(record)
    try:
        yield modes
    finally:
        handle.remove()


@pytest.fixture(scope="module")
def kb_and_data():
    return finetune_inputs()


def test_fine_tuning_an_architecture_trains_batchnorm_in_train_mode(kb_and_data):
    kb, dm = kb_and_data
    assert not kb.assemble((0, 1, 1), trainable=True).training  # where it starts
    with batchnorm_modes() as modes:
        finetune_architecture(kb, (0, 1, 1), dm, FinetuneSettings(epochs=1, hidden=[16], pool="avg"), progress=False)
    assert modes and all(modes)


def test_fine_tuning_the_sources_trains_batchnorm_in_train_mode(kb_and_data):
    kb, dm = kb_and_data
    with batchnorm_modes() as modes:
        finetune_sources(kb, dm, epochs=1, progress=False)
    assert modes and all(modes)


def test_fig8_candidates_span_the_evaluated_genotypes_or_the_populations():
    """`evaluated` takes every genotype the search scored, survivor or not; `every_generation` only
    the populations'; beyond max_candidates, evenly spaced ranks from best to worst."""
    from modulenet.finetune.candidates import select_candidates

    results = {"population": [{"genotype": [0, 0, 0], "score": 1.0}], "populations": [[[0, 0, 0]]]}
    scores = {(0, 1, 1): 0.5, (1, 1, 0): 2.0, (0, 0, 0): 1.0, (1, 0, 1): 3.0}

    def codes(candidates, limit=10):
        settings = FinetuneSettings(candidates=candidates, max_candidates=limit, include_originals=False)
        return [code for _, code in select_candidates(results, None, settings, scores)]

    assert codes("every_generation") == [(0, 0, 0)]
    assert codes("evaluated") == [(0, 1, 1), (0, 0, 0), (1, 1, 0), (1, 0, 1)]
    assert codes("evaluated", limit=2) == [(0, 1, 1), (1, 0, 1)]


def test_the_front_candidates_are_the_final_populations_non_dominated_genotypes():
    """A hand example in (score, flops): A (0.30, 100) and B (0.20, 200) are the front; C (0.35, 150)
    is dominated by A, D (0.20, 250) by B; a failed individual never counts; best score first."""
    from modulenet.finetune.candidates import final_front, select_candidates

    def row(code, score, flops, status="ok"):
        return {"genotype": list(code), "score": score, "flops": flops, "status": status}

    a, b, c, d, failed = (0, 0, 0), (1, 0, 0), (0, 1, 0), (1, 0, 1), (1, 1, 0)  # a: an original
    population = [row(a, 0.30, 100), row(b, 0.20, 200), row(c, 0.35, 150), row(d, 0.20, 250), row(a, 0.30, 100)]
    population.append(row(failed, 0.10, 10, "error"))
    results = {"population": population, "config": {"objectives": ["score", "flops"]}}
    assert sorted(final_front(results)) == [a, b]
    settings = FinetuneSettings(candidates="front", include_originals=False)
    assert select_candidates(results, None, settings) == [("ModuleNet #1", b), ("ModuleNet #2", a)]
    # with the originals fine-tuned anyway, an original on the front is fine-tuned once, under its name
    kb = SimpleNamespace(arch_names=["p", "q"], original_genotype=lambda i: (i, i, i))
    with_originals = FinetuneSettings(candidates="front", include_originals=True)
    assert select_candidates(results, kb, with_originals) == [("ModuleNet #1", b), ("p", a), ("q", (1, 1, 1))]
    # one objective: the front is the best score (ties all stay)
    assert sorted(final_front({**results, "config": {"objectives": ["score"]}})) == [b, d]


FINETUNE_SCRIPT = """
import logging, os, signal, sys
from pathlib import Path

import torch

from modulenet import rundir
from modulenet.data import QuickstartDataModule
from modulenet.errors import ModuleNetError
from modulenet.evaluation.lit_module import IndividualModule
from modulenet.finetune.settings import FinetuneSettings
from modulenet.finetune.stage import FinetuneStage
from modulenet.knowledge import build_knowledge_base

logging.basicConfig(level=logging.INFO)
out, kill_at, keep = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "keep"
if kill_at >= 0:  # SIGKILL mid-epoch, at this training step: nothing of the process survives it
    step = IndividualModule.training_step

    def killing(self, batch, i):
        if self.trainer.global_step == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return step(self, batch, i)

    IndividualModule.training_step = killing
torch.manual_seed(0)
kb = build_knowledge_base(["resnet_cifar8", "vgg_cifar"], progress=False)
dm = QuickstartDataModule(num_train=96, num_val=32, num_test=32, batch_size=16, seed=0, augment=True, cutout=4)
dm.setup("fit")
settings = FinetuneSettings(
    epochs=3, hidden=[16], pool="avg", batch_size=16, include_originals=False, keep_checkpoints=keep
)
FinetuneStage(kb, dm, settings, progress=False).run({"population": [{"genotype": [0, 1, 1], "score": 1.0}]}, out)
"""


def _finetune_process(out, kill_at: int = -1, keep: bool = False):
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "-c", FINETUNE_SCRIPT, str(out), str(kill_at), "keep" if keep else "drop"],
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow  # make test-all: three fine-tunes in subprocesses, one killed (about 20 s)
def test_a_finetune_killed_mid_epoch_continues_from_its_last_epoch_to_the_same_network(tmp_path):
    """Issue 22: SIGKILL in the second of three epochs (6 steps each), then the same command again:
    it continues from the first epoch's checkpoint (model, optimiser, scheduler, loops and the
    generators that shuffle and augment) and ends with the uninterrupted run's weights, bit for bit."""
    import json

    from modulenet import rundir

    whole = _finetune_process(tmp_path / "whole")
    assert whole.returncode == 0, whole.stderr[-3000:]
    killed = _finetune_process(tmp_path / "resumed", kill_at=9, keep=False)
    assert killed.returncode == -9  # SIGKILL
    folder = tmp_path / "resumed" / rundir.NETWORKS / "modulenet-1-seed0"
    assert (folder / rundir.CHECKPOINTS / "last.ckpt").is_file() and not (folder / rundir.NETWORK_DESCRIPTION).exists()
    resumed = _finetune_process(tmp_path / "resumed")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "continuing from" in resumed.stderr and "(epoch 1 of 3)" in resumed.stderr

    rows = [json.loads((tmp_path / run / rundir.FINETUNE).read_text())["results"] for run in ("whole", "resumed")]
    assert [(r["val_error"], r["test_error"]) for r in rows[0]] == [(r["val_error"], r["test_error"]) for r in rows[1]]
    weights = [
        torch.load(tmp_path / run / rundir.NETWORKS / "modulenet-1-seed0" / rundir.NETWORK_WEIGHTS, weights_only=True)
        for run in ("whole", "resumed")
    ]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert not (folder / rundir.CHECKPOINTS).exists()  # finished: only the deliverable stays


@pytest.mark.slow  # make test-all: a fine-tune in a subprocess (about 7 s)
def test_checkpoints_are_kept_when_asked(tmp_path):
    from modulenet import rundir

    done = _finetune_process(tmp_path, keep=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / rundir.NETWORKS / "modulenet-1-seed0" / rundir.CHECKPOINTS / "last.ckpt").is_file()


def test_the_scratch_control_is_the_same_architecture_with_none_of_the_knowledge(kb_and_data, tmp_path):
    kb, dm = kb_and_data
    kb.fit_connections(torch.randn(64, 3, 32, 32), progress=False)
    before = torch.get_rng_state()
    scratch = kb.reinitialized(seed=3)
    assert torch.equal(torch.get_rng_state(), before)  # the process's generator is not drawn from
    assert scratch.specs == kb.specs and scratch.sources == ["random init"] * 2
    assert kb.reinitialized(seed=3).weight_hashes() == scratch.weight_hashes()
    assert kb.reinitialized(seed=4).weight_hashes() != scratch.weight_hashes()
    for inherited, fresh in zip(kb.iter_modules(), scratch.iter_modules()):
        inherited_state, fresh_state = inherited.state_dict(), fresh.state_dict()
        assert inherited_state.keys() == fresh_state.keys()
        for key, tensor in fresh_state.items():
            if key.endswith("weight") and tensor.dim() > 1:  # every convolution drawn anew
                assert not torch.equal(tensor, inherited_state[key]), key
    # the least-squares stitch becomes a freshly initialised 1x1 convolution of the same shape
    fitted, fresh = (b.fitted["reduce"][(1, 0, 1)]["least_squares"]["weight"] for b in (kb, scratch))
    assert fresh.shape == fitted.shape and not torch.allclose(fresh, fitted)
    assert "aligned" not in scratch.fitted["reduce"][(1, 0, 1)]

    settings = FinetuneSettings(epochs=1, hidden=[16], pool="avg", connection="least_squares", init="scratch")
    network, description = finetune_architecture(kb, (0, 1, 1), dm, settings, progress=False)
    assert description["init"] == "scratch" and description["knowledge_base"]["sources"] == ["random init"] * 2
    assert description["knowledge_base_sha256"] == kb.reinitialized(seed=0).weight_hashes()
    assert len(network.test_predictions) == 32
    # saved with its own fresh stitches, not the inherited ones: reloaded, it measures what it measured
    folder = save_network(tmp_path / "scratch", network, description)
    saved = torch.load(folder / rundir.NETWORK_CONNECTIONS, weights_only=True)
    key = next(k for k in saved if k.endswith("least_squares/weight"))
    assert torch.equal(saved[key], fitted_state(kb.reinitialized(seed=0))[key])
    assert measure_network(load_network(folder), dm.test_dataloader())["error"] == description["test_error"]

    with pytest.raises(ModuleNetError, match="finetune.init=scratch with connection=aligned"):
        finetune_architecture(kb, (0, 1, 1), dm, FinetuneSettings(connection="aligned", init="scratch"), progress=False)
    with pytest.raises(ModuleNetError, match=r"finetune.init='random'; valid values are \['inherited', 'scratch'\]"):
        FinetuneSettings(init="random")
