"""What a paper-scale search costs, estimated from the measured cost of one generation.

Paper settings (Sec. IV, Table I): CIFAR-100 (40K train / 10K validation, 32x32), knowledge
base ResNet34/50/101 + VGG13/16/13bn/16bn (n = 7, c = 5), classifier input-4096-4096-100 on
the flattened last map, 20 epochs, gen = 30, p_size = 40.

One generation of `--individuals` random genotypes is evaluated the fast way (shared prefixes,
stacked classifiers, bf16) on data of CIFAR-100's shape. Only time is measured, so the images
are random normal tensors (cost does not depend on pixel values) and the modules keep random
weights: no download. The estimate multiplies the measured seconds per individual by the most
evaluations a search can need, p_size * gen = 1200 (the memo makes the real count lower).

Beside the measured time it prints a roofline: the fastest a step of a stacked head could be on
this device, the larger of its products at the measured matmul peak (6 x params x batch FLOPs)
and its memory traffic at the measured copy bandwidth (STEP_BYTES per parameter: fused Adam
reads parameter, gradient and both moments and writes three of them, 28 bytes; the backward
writes the gradient and forward and backward read the weights, 8 more), times the steps an
individual takes (epochs x batches). The fraction reached is that limit over the measured time.

The evaluation stage (Sec. IV), the larger bill: every distinct genotype of the final population
(at most p_size) and the n originals fine-tuned `--finetune-epochs` (50) on the training images,
all weights trainable. Each original and `--finetune-hybrids` genotypes of the generation have
their own SGD step timed (runtime/precision.NetworkStep: float32 and, with bf16 units, bf16; the
faster counts) at batch `--finetune-batch` with the paper's head on the flattened map; seconds
per epoch = steps per epoch x step; the stage's estimate = p_size x the hybrids' mean epoch + each original's, x
epochs. Beside it, the data path's share: images/s of today's per-image path (one CPU thread)
against the step's, from bench_finetune.py's measurement on ../shared's CIFAR-10 where present.

Meant for a GPU (`--device cuda`); on CPU use small `--individuals/--epochs/--train-images` and
`--finetune-batch`.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
STEP_BYTES = 36  # per head parameter per training step (float32 master weights, fused Adam)
ARCHS = ["resnet34", "resnet50", "resnet101", "vgg13", "vgg16", "vgg13_bn", "vgg16_bn"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", choices=["cpu", "cuda"])
    parser.add_argument("--individuals", type=int, default=40)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--width", type=int, default=4096)
    parser.add_argument("--train-images", type=int, default=40_000)
    parser.add_argument("--val-images", type=int, default=10_000)
    parser.add_argument("--stack", type=int, default=16, help="classifiers trained together")
    parser.add_argument("--feature-memory-gb", type=float, default=24.0)
    parser.add_argument("--precision", default="auto", help="auto: measured on the device (runtime/precision.py)")
    parser.add_argument("--eager", action="store_true", help="the stacked step without CUDA graph capture")
    parser.add_argument("--generations", type=int, default=30)
    parser.add_argument("--population", type=int, default=40)
    parser.add_argument("--out", default=str(HERE / "results_paper_scale.json"))
    parser.add_argument("--memo", default=None, help="evaluations.jsonl: each finished group kept, even if killed")
    parser.add_argument("--finetune-epochs", type=int, default=50)
    parser.add_argument("--finetune-batch", type=int, default=128)
    parser.add_argument("--finetune-hybrids", type=int, default=3, help="hybrid genotypes whose step is timed")
    parser.add_argument("--data-rates", default=str(HERE / "results_finetune.json"), help="bench_finetune.py's output")
    args = parser.parse_args()

    import torch
    from bench_evaluation import copy_bandwidth, matmul_peak, work_flops

    from modulenet.evaluation.evaluator import Evaluator
    from modulenet.evaluation.settings import EvaluationSettings
    from modulenet.knowledge import build_knowledge_base

    kb = build_knowledge_base(ARCHS, num_cells=5, cifar_stem=True, image_size=32, progress=False)
    g = torch.Generator().manual_seed(0)
    data = (
        torch.randn(args.train_images, 3, 32, 32, generator=g),
        torch.randint(0, 100, (args.train_images,), generator=g),
        torch.randn(args.val_images, 3, 32, 32, generator=g),
        torch.randint(0, 100, (args.val_images,), generator=g),
    )
    rng = random.Random(0)
    genotypes = list({tuple(rng.randrange(len(ARCHS)) for _ in range(5)) for _ in range(args.individuals * 2)})
    genotypes = genotypes[: args.individuals]
    settings = EvaluationSettings(
        epochs=args.epochs,
        batch_size=256,
        hidden=[args.width] * 2,
        pool="flatten",
        cache_features=True,
        share_prefixes=True,
        stack_individuals=args.stack,
        feature_memory_gb=args.feature_memory_gb,
        precision=args.precision,
        float32_matmul_precision="high",
        accelerator="gpu" if args.device == "cuda" else "cpu",
        feature_batch_size=1024,
        graph_step=not args.eager,
    )
    # warm-up on a sliver: CUDA context, cuDNN autotuning, kernels
    Evaluator(kb, tuple(t[:512] for t in data), 100, settings, progress=False)(genotypes[:2])
    if args.device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    evaluator = Evaluator(kb, data, 100, settings, memo_path=args.memo, progress=True)
    results = evaluator(genotypes)
    seconds = time.perf_counter() - start
    peak_gpu_gb = torch.cuda.max_memory_allocated() / 2**30 if args.device == "cuda" else None
    per_individual = seconds / len(genotypes)
    evaluations = args.generations * args.population
    flops = work_flops(
        kb, results, args.train_images, args.val_images, args.epochs, (3, 32, 32), trunk_every_epoch=False
    )
    peak = matmul_peak("bfloat16" if evaluator.settings.precision.startswith("bf16") else "float32", args.device)
    bandwidth = copy_bandwidth(args.device)
    steps = args.epochs * -(-args.train_images // settings.batch_size)
    by_head = {}  # seconds per individual by classifier size (a group's time shared by its members)
    for e in results:
        head_params = e.params - sum(p.numel() for p in kb.assemble(e.genotype).parameters())
        by_head.setdefault(head_params, []).append(e.seconds)
    roofline = {
        params: steps * max(6 * params * settings.batch_size / peak, STEP_BYTES * params / bandwidth)
        for params in by_head
    }
    limit = sum(roofline[p] * len(v) for p, v in by_head.items()) / len(results)
    report = {
        "device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
        "torch": torch.__version__,
        "settings": vars(args),
        "generation_seconds": seconds,
        "seconds_per_individual": per_individual,
        "max_evaluations": evaluations,
        "estimated_search_hours": per_individual * evaluations / 3600,
        "work_tflop": flops / 1e12,
        "achieved_tflop_per_s": flops / seconds / 1e12,
        "matmul_peak_tflop_per_s": peak / 1e12,
        "copy_bandwidth_tb_per_s": bandwidth / 1e12,
        "steps_per_individual": steps,
        "roofline_seconds_per_individual": limit,
        "fraction_of_roofline": limit / per_individual,
        "roofline_seconds_by_head_params": {str(k): v for k, v in sorted(roofline.items())},
        "peak_gpu_gb": peak_gpu_gb,
        "seconds_per_individual_by_head_params": {str(k): sum(v) / len(v) for k, v in sorted(by_head.items())},
        "individuals": [
            {"genotype": list(e.genotype), "seconds": e.seconds, "err_val": e.err_val, "status": e.status}
            for e in results
        ],
        "failed": sum(e.status != "ok" for e in results),
    }
    report["evaluation_stage"] = evaluation_stage(kb, genotypes, args)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(
        f"{report['device']}: {len(genotypes)} individuals of a paper-scale generation in {seconds:.1f} s "
        f"({per_individual:.2f} s each, {report['failed']} failed, peak GPU memory {peak_gpu_gb or 0:.1f} GiB); "
        f"{flops / 1e12:.0f} TFLOP of work at {flops / seconds / 1e12:.1f} TFLOP/s "
        f"({100 * flops / seconds / peak:.0f}% of a measured {peak / 1e12:.0f} TFLOP/s matmul peak)"
    )
    print(
        f"roofline: {steps} steps per individual, matmul peak {peak / 1e12:.0f} TFLOP/s, copy bandwidth "
        f"{bandwidth / 1e12:.2f} TB/s, {STEP_BYTES} bytes per parameter per step"
    )
    for params, values in sorted(by_head.items()):
        print(
            f"  head of {params / 1e6:6.1f} M params: {len(values):3d} individuals, "
            f"{sum(values) / len(values):6.2f} s each; roofline {roofline[params]:6.2f} s"
        )
    print(
        f"measured {per_individual:.2f} s per individual against a roofline of {limit:.2f} s: "
        f"{100 * limit / per_individual:.0f}% of the way ({per_individual / limit:.1f}x above it)"
    )
    print(
        f"a {args.generations} x {args.population} search needs at most {evaluations} evaluations: "
        f"about {report['estimated_search_hours']:.2f} GPU-hours"
    )
    stage = report["evaluation_stage"]
    for row in stage["networks"]:
        print(f"  fine-tune {row['architecture']:<40} {row['seconds_per_epoch']:8.1f} s per epoch ({row['precision']})")
    print(
        f"the evaluation stage ({args.population} genotypes + {len(ARCHS)} originals x {args.finetune_epochs} "
        f"epochs x {args.train_images} images): about {stage['estimated_hours']:.2f} hours, against the search's "
        f"{report['estimated_search_hours']:.2f}"
    )
    if stage.get("per_image_path_images_per_s"):
        print(
            f"data: today's per-image path prepares {stage['per_image_path_images_per_s']:.3g} images/s, the steps "
            f"train {stage['step_images_per_s']:.3g} images/s: that path alone would take "
            f"{100 * stage['per_image_path_share']:.0f}% of the stage's time"
        )


def evaluation_stage(kb, genotypes, args) -> dict:
    """Seconds per fine-tuning epoch of each original and a few hybrids, and the stage's estimate."""
    import torch

    from modulenet.evaluation.lit_module import Classifier, classifier_input_size
    from modulenet.finetune.network import Network
    from modulenet.runtime.precision import BF16, FLOAT32, NetworkStep, has_bf16_units

    device = torch.device(args.device)
    precisions = (FLOAT32, BF16) if has_bf16_units(device) else (FLOAT32,)  # emulated bf16 is never chosen
    hybrids = [code for code in genotypes if len(set(code)) > 1][: args.finetune_hybrids]
    originals = [kb.original_genotype(i) for i in range(kb.num_archs)]
    steps = -(-args.train_images // args.finetune_batch)
    rows = []
    for code in originals + hybrids:
        trunk = kb.assemble(code, trainable=True)
        features = classifier_input_size(trunk.out_channels, trunk.output_size(32), "flatten")
        network = Network(trunk, Classifier(features, 100, [args.width] * 2), "flatten")
        name = "+".join(kb.describe(code))
        seconds = NetworkStep(network, name, 32, args.finetune_batch, 100).seconds(device, precisions)
        precision = min(seconds, key=seconds.get)
        rows.append(
            {
                "architecture": name,
                "original": len(set(code)) == 1,
                "seconds_per_step": seconds,
                "precision": precision,
                "seconds_per_epoch": steps * seconds[precision],
            }
        )
    hybrid_epochs = [r["seconds_per_epoch"] for r in rows if not r["original"]] or [0.0]
    total = args.finetune_epochs * (
        args.population * sum(hybrid_epochs) / len(hybrid_epochs)
        + sum(r["seconds_per_epoch"] for r in rows if r["original"])
    )
    stage = {"networks": rows, "epochs": args.finetune_epochs, "estimated_hours": total / 3600}
    measured = Path(args.data_rates)  # bench_finetune.py: the per-image path on this project's data
    if measured.is_file():
        document = json.loads(measured.read_text())
        per_image = document.get("data_path_images_per_s", {}).get("per_image")
        if per_image:
            step_rate = args.finetune_batch * len(rows) / sum(r["seconds_per_epoch"] / steps for r in rows)
            stage.update(
                per_image_path_images_per_s=per_image,
                per_image_path_measured_on=document.get("machine"),
                step_images_per_s=step_rate,
                # one thread preparing images while the device waits: the path's time over the whole
                per_image_path_share=step_rate / (step_rate + per_image),
            )
    return stage


if __name__ == "__main__":
    sys.exit(main())
