"""Evaluation cost of one generation, measured side by side in one run (issue: speed and scale).

Modes (same seed, same individuals, same data):
  plain   a Lightning trainer per individual with the frozen trunk in every training step
  cached  the trunk's features computed once per individual, the classifier trained on them

Data and knowledge are real: the CIFAR-10 images and the four pretrained CIFAR ResNets of
../shared. Each mode runs in its own process so its peak memory is its own. Prints a table
and writes benchmarks/results.json. Sizes are arguments; the defaults finish in minutes on
2 CPU cores, `--paper` uses the paper's 20 epochs and 4096-4096 head.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import random
import resource
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHARED = Path(os.environ.get("MODULENET_SHARED", HERE.parents[1] / "shared"))


def matmul_peak(dtype_name: str, size: int = 2048, repeats: int = 10) -> float:
    """FLOP/s of a square matrix product on this machine: the physical limit the modes are held to."""
    import torch

    dtype = getattr(torch, dtype_name)
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * size**3 * repeats / (time.perf_counter() - start)


def load(args):
    import numpy as np
    import torch

    from modulenet.data import NpzDataModule
    from modulenet.knowledge import build_knowledge_base

    weights = {f"resnet_cifar{d}": str(next((SHARED / "weights" / "resnet-cifar10").glob(f"resnet{d}-*.th")))
               for d in (20, 32, 44, 56)}
    kb = build_knowledge_base(list(weights), weights=weights, progress=False)
    dm = NpzDataModule(str(SHARED / "data" / "cifar10-partial.npz"), val_from="test", seed=0)
    dm.prepare_data()
    dm.setup("fit")
    x_train, y_train, x_val, y_val = dm.search_tensors()
    n = min(args.train_images, len(x_train))
    return kb, (x_train[:n], y_train[:n], x_val, y_val), dm.num_classes


def run_mode(mode: str, args, genotypes, queue) -> None:
    import torch

    from modulenet.evaluate import EvaluationSettings, Evaluator, count_flops

    torch.set_num_threads(args.threads)
    kb, data, num_classes = load(args)
    settings = EvaluationSettings(epochs=args.epochs, batch_size=args.batch_size, hidden=[args.width] * 2,
                                  pool="avg", cache_features=(mode == "cached"))
    evaluator = Evaluator(kb, data, num_classes, settings, progress=False)
    start = time.perf_counter()
    results = evaluator(genotypes)
    seconds = time.perf_counter() - start
    n_train, n_val = len(data[0]), len(data[2])
    flops = 0
    for e in results:
        trunk = count_flops(kb.assemble(e.genotype), data[0].shape[1:])
        head = e.params - sum(p.numel() for p in kb.assemble(e.genotype).parameters())
        trunk_passes = (n_train * args.epochs + n_val) if mode == "plain" else (n_train + n_val)
        flops += trunk * trunk_passes + 6 * head * n_train * args.epochs + 2 * head * n_val
    queue.put({"seconds": seconds, "flops": flops,
               "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
               "results": [{"genotype": list(e.genotype), "score": e.score, "err_val": e.err_val} for e in results]})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--individuals", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--train-images", type=int, default=5085)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--paper", action="store_true", help="16 individuals, 20 epochs, 4096-4096 (slow on CPU)")
    parser.add_argument("--out", default=str(HERE / "results.json"))
    args = parser.parse_args()
    if args.paper:
        args.individuals, args.epochs, args.width = 16, 20, 4096
    import itertools

    space = list(itertools.product(range(4), repeat=3))
    genotypes = random.Random(0).sample(space, args.individuals)

    import torch

    torch.set_num_threads(args.threads)
    peak = {"float32": matmul_peak("float32"), "bfloat16": matmul_peak("bfloat16")}
    ctx = mp.get_context("spawn")
    modes = {}
    for mode in ("plain", "cached"):
        queue = ctx.Queue()
        proc = ctx.Process(target=run_mode, args=(mode, args, genotypes, queue))
        proc.start()
        modes[mode] = queue.get()
        proc.join()
    base = modes["plain"]
    for mode, m in modes.items():
        m["speedup"] = base["seconds"] / m["seconds"]
        m["gflops_per_s"] = m["flops"] / m["seconds"] / 1e9
        m["fraction_of_fp32_peak"] = m["flops"] / m["seconds"] / peak["float32"]
        m["scores_equal"] = all(abs(a["err_val"] - b["err_val"]) <= 1e-6 and abs(a["score"] - b["score"]) <= 1e-4
                                for a, b in zip(m["results"], base["results"]))
    report = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}",
        "device": "cpu",
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "matmul_peak_gflops_per_s": {k: v / 1e9 for k, v in peak.items()},
        "modes": {k: {kk: vv for kk, vv in v.items() if kk != "results"} for k, v in modes.items()},
        "individuals": modes["plain"]["results"],
    }
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"{args.individuals} individuals, {args.epochs} epochs, head {args.width}-{args.width}, "
          f"{args.train_images} train images; matmul peak fp32 {peak['float32'] / 1e9:.0f} GFLOP/s, "
          f"bf16 {peak['bfloat16'] / 1e9:.0f} GFLOP/s")
    print(f"{'mode':<8} {'seconds':>9} {'speedup':>8} {'GFLOP/s':>8} {'of peak':>8} {'peak RSS MB':>12} {'scores equal':>13}")
    for mode, m in modes.items():
        print(f"{mode:<8} {m['seconds']:9.1f} {m['speedup']:8.2f} {m['gflops_per_s']:8.1f} "
              f"{100 * m['fraction_of_fp32_peak']:7.1f}% {m['peak_rss_mb']:12.0f} {str(m['scores_equal']):>13}")


if __name__ == "__main__":
    sys.exit(main())
