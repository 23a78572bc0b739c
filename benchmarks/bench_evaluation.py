"""Evaluation cost of one generation, three modes measured side by side in one run.

Modes (same seed, same individuals, same data):
  plain   (a) a Lightning trainer per individual, the frozen trunk in every training step
  cached  (b) the trunk's features computed once per individual, the classifier trained on them
  fast    (c) (b) + module prefixes shared across the generation + all classifiers stacked into
              one batched model on resident features, in the precision `trainer.precision=auto`
              chooses here; where the device has bf16 units (c) runs in both precisions
              (fast-32, fast-bf16) and the table shows what auto's choice cost against float32

Data and knowledge are real: the CIFAR-10 images and the four pretrained CIFAR ResNets of
../shared (MODULENET_SHARED overrides the path). Each mode runs in its own process, so its
peak memory is its own. Then a scaling table: seconds per individual of (c) vs training-set
size and classifier width. Prints the tables and writes benchmarks/results.json.

Score rule: (b) equals (a) to float tolerance; (c) ranks the individuals as (a) does, with
|delta err_val| <= 0.01.
"""

from __future__ import annotations

import argparse
import itertools
import json
import multiprocessing as mp
import os
import random
import resource
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHARED = Path(os.environ.get("MODULENET_SHARED", HERE.parents[1] / "shared"))
MODES = {
    "plain": dict(cache_features=False, stack_individuals=1, share_prefixes=False),
    "cached": dict(cache_features=True, stack_individuals=1, share_prefixes=False),
    # stack: the whole generation; TF32 where a GPU has it
    "fast-32": dict(cache_features=True, share_prefixes=True, precision="32-true", float32_matmul_precision="high"),
    "fast-bf16": dict(
        cache_features=True, share_prefixes=True, precision="bf16-mixed", float32_matmul_precision="high"
    ),
}
FAST = {"32-true": "fast-32", "bf16-mixed": "fast-bf16"}


def matmul_peak(dtype_name: str, device: str, small: bool = False) -> float:
    """FLOP/s of a large square matrix product: the machine's physical limit the modes are held to.
    `small`: a 512 product on CPU, for a dtype the CPU may only emulate (bf16 on AVX2: ~1 GFLOP/s)."""
    import torch

    size, repeats = (8192, 20) if device == "cuda" else ((512, 2) if small else (2048, 10))
    dtype = getattr(torch, dtype_name)
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    for _ in range(3):
        a @ b
    _sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    _sync(device)
    return 2 * size**3 * repeats / (time.perf_counter() - start)


def copy_bandwidth(device: str) -> float:
    """Bytes/s of a large on-device copy (read + write): the memory roof of the optimizer's update."""
    import torch

    numel = (1 << 28) if device == "cuda" else (1 << 25)  # 1 GiB on a GPU, 128 MiB on a CPU
    a = torch.ones(numel, device=device)
    b = torch.empty_like(a)
    for _ in range(3):
        b.copy_(a)
    _sync(device)
    repeats = 20
    start = time.perf_counter()
    for _ in range(repeats):
        b.copy_(a)
    _sync(device)
    return 2 * a.nbytes * repeats / (time.perf_counter() - start)


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def load(train_images: int):
    from modulenet.data import NpzDataModule
    from modulenet.knowledge import build_knowledge_base

    weights = {
        f"resnet_cifar{d}": str(next((SHARED / "weights" / "resnet-cifar10").glob(f"resnet{d}-*.th")))
        for d in (20, 32, 44, 56)
    }
    kb = build_knowledge_base(list(weights), weights=weights, progress=False)
    dm = NpzDataModule(str(SHARED / "data" / "cifar10-partial.npz"), val_from="test", seed=0)
    dm.prepare_data()
    dm.setup("fit")
    x_train, y_train, x_val, y_val = dm.search_tensors()
    n = min(train_images, len(x_train))
    return kb, (x_train[:n], y_train[:n], x_val, y_val), dm.num_classes


def work_flops(kb, results, n_train: int, n_val: int, epochs: int, image_shape, trunk_every_epoch: bool) -> int:
    """The work a generation must do: the trunk's forward per pass over the images (every epoch
    when it runs in the training loop, once when its features are cached) and the head's
    training (6 x params per sample: forward, two backward products) and validation (2 x)."""
    from modulenet.evaluation.candidate import count_flops

    flops = 0
    for e in results:
        trunk = kb.assemble(e.genotype)
        head = e.params - sum(p.numel() for p in trunk.parameters())
        trunk_passes = (n_train * epochs + n_val) if trunk_every_epoch else (n_train + n_val)
        flops += count_flops(trunk, image_shape) * trunk_passes + 6 * head * n_train * epochs + 2 * head * n_val
    return flops


def run_mode(mode: str, args, genotypes, queue, width: int | None = None, train_images: int | None = None) -> None:
    """One mode in a fresh process: evaluates the generation, reports time, FLOPs and peak memory."""
    import torch

    from modulenet.evaluation.evaluator import Evaluator
    from modulenet.evaluation.settings import EvaluationSettings

    torch.set_num_threads(args.threads)
    width = width or args.width
    kb, data, num_classes = load(train_images or args.train_images)
    options = dict(MODES[mode])
    if mode.startswith("fast"):
        options["stack_individuals"] = len(genotypes)
    settings = EvaluationSettings(
        epochs=args.epochs,
        batch_size=args.batch_size,
        hidden=[width] * 2,
        pool=args.pool,
        accelerator="gpu" if args.device == "cuda" else "cpu",
        **options,
    )
    evaluator = Evaluator(kb, data, num_classes, settings, progress=False)
    if args.device == "cuda":  # start-up (context, kernels) is not evaluation cost
        Evaluator(kb, tuple(t[:256] for t in data), num_classes, settings, progress=False)(genotypes[:1])
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    results = evaluator(genotypes)
    seconds = time.perf_counter() - start
    flops = work_flops(
        kb, results, len(data[0]), len(data[2]), args.epochs, data[0].shape[1:], trunk_every_epoch=mode == "plain"
    )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    queue.put(
        {
            "seconds": seconds,
            "flops": flops,
            "peak_rss_mb": peak,
            **({"peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20} if args.device == "cuda" else {}),
            "results": [{"genotype": list(e.genotype), "score": e.score, "err_val": e.err_val} for e in results],
        }
    )


def in_process(*args, **kwargs) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=run_mode, args=(*args, queue), kwargs=kwargs)
    proc.start()
    out = queue.get()
    proc.join()
    return out


def meets_rule(mode: str, results: list[dict], base: list[dict]) -> bool:
    if mode in ("plain", "cached"):
        return all(
            abs(a["err_val"] - b["err_val"]) <= 1e-6 and abs(a["score"] - b["score"]) <= 1e-4
            for a, b in zip(results, base)
        )
    rank = lambda rows: sorted(range(len(rows)), key=lambda i: rows[i]["score"])
    return rank(results) == rank(base) and all(abs(a["err_val"] - b["err_val"]) <= 0.01 for a, b in zip(results, base))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--individuals", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=20, help="classifier epochs (paper: 20)")
    parser.add_argument("--width", type=int, default=4096, help="hidden width of the head (paper: 4096)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--pool", default="avg", choices=["avg", "flatten"])
    parser.add_argument("--train-images", type=int, default=2048)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--quick", action="store_true", help="4 individuals, 3 epochs, 1024 wide: a smoke run")
    parser.add_argument("--no-scaling", dest="scaling", action="store_false")
    parser.add_argument("--out", default=str(HERE / "results.json"))
    args = parser.parse_args()
    if args.quick:
        args.individuals, args.epochs, args.width, args.train_images = 4, 3, 1024, 1024
    space = list(itertools.product(range(4), repeat=3))
    genotypes = random.Random(0).sample(space, args.individuals)

    import torch

    from modulenet.evaluation.evaluator import measured_head
    from modulenet.evaluation.settings import EvaluationSettings
    from modulenet.runtime.precision import AUTO, choose_precision, device_model, has_bf16_units

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    bf16 = has_bf16_units(device)
    peak = {
        "float32": matmul_peak("float32", args.device),
        "bfloat16": matmul_peak("bfloat16", args.device, small=not bf16),
    }
    # What trainer.precision=auto chooses for this generation's stack (measured once, cached).
    fast_settings = EvaluationSettings(
        hidden=[args.width] * 2, batch_size=args.batch_size, pool=args.pool, stack_individuals=len(genotypes)
    )
    choice = choose_precision(AUTO, device, measured_head(fast_settings, 10))
    device_name = device_model(device) + ("" if args.device == "cuda" else f", {os.cpu_count()} CPU cores")
    run = ["plain", "cached", "fast-32"] + (["fast-bf16"] if bf16 else [])
    modes = {}
    for mode in run:
        modes[mode] = in_process(mode, args, genotypes)
        print(f"  {mode}: {modes[mode]['seconds']:.1f} s", flush=True)
    base = modes["plain"]
    for mode, m in modes.items():
        m["speedup"] = base["seconds"] / m["seconds"]
        m["gflops_per_s"] = m["flops"] / m["seconds"] / 1e9
        m["fraction_of_peak"] = m["flops"] / m["seconds"] / peak["bfloat16" if mode == "fast-bf16" else "float32"]
        m["scores_equal"] = meets_rule(mode, m["results"], base["results"])
        m["max_abs_delta_err_val"] = max(
            abs(a["err_val"] - b["err_val"]) for a, b in zip(m["results"], base["results"])
        )
    auto_mode = FAST[choice.precision]
    auto = {
        "precision": choice.precision,
        "reason": choice.reason,
        "mode": auto_mode,
        "speedup_over_plain": modes[auto_mode]["speedup"],
        "seconds_vs_float32": modes[auto_mode]["seconds"] / modes["fast-32"]["seconds"],
        "fast_seconds": {k: m["seconds"] for k, m in modes.items() if k.startswith("fast")},
    }

    scaling = []
    if args.scaling:  # cost growth of (c) in auto's precision: a generation of 4 individuals, 2 epochs
        small = argparse.Namespace(**{**vars(args), "epochs": 2})
        for width, images in itertools.product((1024, 4096), (512, 1024, 2048, 4096)):
            m = in_process(auto_mode, small, genotypes[:4], width=width, train_images=images)
            scaling.append({"width": width, "train_images": images, "seconds_per_individual": m["seconds"] / 4})

    report = {
        "machine": f"{device_name}, torch {torch.__version__}",
        "device": args.device,
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "matmul_peak_gflops_per_s": {k: v / 1e9 for k, v in peak.items()},
        "auto_precision": auto,
        "modes": {k: {kk: vv for kk, vv in v.items() if kk != "results"} for k, v in modes.items()},
        "individuals": {mode: m["results"] for mode, m in modes.items()},
        "scaling": scaling,
    }
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(
        f"\n{report['machine']}; {args.individuals} individuals, {args.epochs} epochs, head {args.width}-{args.width}, "
        f"{args.train_images} train images; matmul peak fp32 {peak['float32'] / 1e9:.0f} GFLOP/s, "
        f"bf16 {peak['bfloat16'] / 1e9:.0f} GFLOP/s"
    )
    print(
        f"{'mode':<9} {'seconds':>9} {'speedup':>8} {'GFLOP/s':>9} {'of peak':>8} {'peak RSS MB':>12} "
        f"{'max|d err|':>11} {'scores equal':>13}"
    )
    for mode, m in modes.items():
        print(
            f"{mode:<9} {m['seconds']:9.1f} {m['speedup']:8.2f} {m['gflops_per_s']:9.1f} "
            f"{100 * m['fraction_of_peak']:7.1f}% {m['peak_rss_mb']:12.0f} {m['max_abs_delta_err_val']:11.4f} "
            f"{str(m['scores_equal']):>13}"
        )
    print(
        f"\ntrainer.precision=auto chose {choice.precision} ({auto_mode}): {choice.reason}.\n"
        f"Its fast mode: {auto['speedup_over_plain']:.2f}x the plain way, "
        f"{auto['seconds_vs_float32']:.2f}x the float32 fast mode's time"
        + ("" if bf16 else f" (this {args.device} has no bf16 units: bf16 not run)")
    )
    if scaling:
        print(f"\n(c) in {choice.precision}: seconds per individual (4 individuals, 2 epochs)")
        images = sorted({row["train_images"] for row in scaling})
        print(f"{'width':>6} " + " ".join(f"{n:>9}" for n in images))
        for width in sorted({row["width"] for row in scaling}):
            cells = {row["train_images"]: row["seconds_per_individual"] for row in scaling if row["width"] == width}
            print(f"{width:>6} " + " ".join(f"{cells[n]:9.2f}" for n in images))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    sys.exit(main())
