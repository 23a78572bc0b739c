"""On a GPU (skipped without one): the CUDA paths of evaluation give the CPU's results.

Channels-last trunks, pinned images, fused Adam, bf16 autocast and a `gpus` worker on a real
device. Run on a lent GPU with `pytest tests/test_gpu.py`; CI machines have none.
"""

from __future__ import annotations

import pytest
import torch
from conftest import GENERATION, evaluator_settings

from modulenet.evaluation.evaluator import Evaluator, make_evaluator
from modulenet.knowledge import build_knowledge_base

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def assert_close(results, reference, tol_err):
    assert [r.genotype for r in results] == [r.genotype for r in reference]
    for a, b in zip(results, reference):
        assert a.status == b.status == "ok", a.error
        assert a.err_val == pytest.approx(b.err_val, abs=tol_err)
        assert a.epoch_losses[-1] < a.epoch_losses[0]  # it learned


@pytest.fixture(scope="module")
def cpu_results(kb, data):
    return Evaluator(kb, data, 4, evaluator_settings(stack_individuals=4), progress=False)(GENERATION)


@pytest.fixture(scope="module")
def gpu_fp32(kb, data):
    return Evaluator(kb, data, 4, evaluator_settings(stack_individuals=4, accelerator="gpu"), progress=False)(
        GENERATION
    )


def test_gpu_float32_matches_cpu(gpu_fp32, cpu_results):
    assert_close(gpu_fp32, cpu_results, tol_err=0.02)  # float rounding differs between devices


def test_gpu_plain_way_matches_batched(kb, data, gpu_fp32):
    plain = Evaluator(kb, data, 4, evaluator_settings(cache_features=False, accelerator="gpu"), progress=False)(
        GENERATION
    )
    assert_close(plain, gpu_fp32, tol_err=0.02)


def test_gpu_bf16_and_tf32_rank_alike(kb, data, gpu_fp32):
    fast = Evaluator(
        kb,
        data,
        4,
        evaluator_settings(
            stack_individuals=6, accelerator="gpu", precision="bf16-mixed", float32_matmul_precision="high"
        ),
        progress=False,
    )(GENERATION)
    assert_close(fast, gpu_fp32, tol_err=0.05)


def test_gpus_evaluator_worker_on_the_device_gives_local_results(kb, data, gpu_fp32):
    evaluator = make_evaluator(
        "gpus", kb, data, 4, evaluator_settings(stack_individuals=4, accelerator="gpu"), progress=False
    )
    try:
        assert evaluator.dispatcher.slots == list(range(torch.cuda.device_count()))
        assert_close(evaluator(GENERATION), gpu_fp32, tol_err=0.02)
    finally:
        evaluator.close()


def test_generations_after_a_first_one_find_the_whole_knowledge_base_on_the_device(data):
    """Frozen trunks share the knowledge base's modules: a later generation's new modules must
    be on the GPU too (the first run of the paper-scale benchmark failed on exactly this)."""
    torch.manual_seed(0)
    fresh = build_knowledge_base(["resnet_cifar8", "vgg_cifar", "allconv_cifar"], progress=False)
    evaluator = Evaluator(
        fresh, data, 4, evaluator_settings(stack_individuals=4, accelerator="gpu", epochs=1), progress=False
    )
    evaluator(GENERATION[:1])
    assert all(e.status == "ok" for e in evaluator(GENERATION))
    assert {p.device.type for m in fresh.iter_modules() for p in m.parameters()} == {"cuda"}


@pytest.mark.parametrize("batch_size", [64, 48])  # 256 images: whole batches only, and a shorter last one
def test_gpu_graph_step_gives_the_eager_step_results(kb, data, batch_size):
    """The stacked step captured as a CUDA graph and replayed equals the same step run eagerly."""
    graphed, eager = (
        Evaluator(
            kb,
            data,
            4,
            evaluator_settings(stack_individuals=6, batch_size=batch_size, accelerator="gpu", graph_step=graph),
            progress=False,
        )(GENERATION)
        for graph in (True, False)
    )
    assert_close(graphed, eager, tol_err=0.01)
    for a, b in zip(graphed, eager):
        assert a.epoch_losses == pytest.approx(b.epoch_losses, rel=1e-3)
    assert sorted(range(6), key=lambda i: graphed[i].score) == sorted(range(6), key=lambda i: eager[i].score)
