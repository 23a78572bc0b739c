"""What a paper-scale search costs, estimated from the measured cost of one generation.

Paper settings (Sec. IV, Table I): CIFAR-100 (40K train / 10K validation, 32x32), knowledge
base ResNet34/50/101 + VGG13/16/13bn/16bn (n = 7, c = 5), classifier input-4096-4096-100 on
the flattened last map, 20 epochs, gen = 30, p_size = 40.

One generation of `--individuals` random genotypes is evaluated the fast way (shared prefixes,
stacked classifiers, bf16) on data of CIFAR-100's shape. Only time is measured, so the images
are random normal tensors (cost does not depend on pixel values) and the modules keep random
weights: no download. The estimate multiplies the measured seconds per individual by the most
evaluations a search can need, p_size * gen = 1200 (the memo makes the real count lower).

Meant for a GPU (`--device cuda`); on CPU use small `--individuals/--epochs/--train-images`.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ARCHS = ["resnet34", "resnet50", "resnet101", "vgg13", "vgg16", "vgg13_bn", "vgg16_bn"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", choices=["cpu", "cuda"])
    parser.add_argument("--individuals", type=int, default=40)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--width", type=int, default=4096)
    parser.add_argument("--train-images", type=int, default=40_000)
    parser.add_argument("--val-images", type=int, default=10_000)
    parser.add_argument("--stack", type=int, default=8, help="classifiers trained together")
    parser.add_argument("--feature-memory-gb", type=float, default=24.0)
    parser.add_argument("--precision", default="bf16-mixed")
    parser.add_argument("--generations", type=int, default=30)
    parser.add_argument("--population", type=int, default=40)
    parser.add_argument("--out", default=str(HERE / "results_paper_scale.json"))
    args = parser.parse_args()

    import torch

    from modulenet.evaluate import EvaluationSettings, Evaluator
    from modulenet.knowledge import build_knowledge_base

    if args.device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    kb = build_knowledge_base(ARCHS, num_cells=5, cifar_stem=True, image_size=32, progress=False)
    g = torch.Generator().manual_seed(0)
    data = (torch.randn(args.train_images, 3, 32, 32, generator=g), torch.randint(0, 100, (args.train_images,), generator=g),
            torch.randn(args.val_images, 3, 32, 32, generator=g), torch.randint(0, 100, (args.val_images,), generator=g))
    rng = random.Random(0)
    genotypes = list({tuple(rng.randrange(len(ARCHS)) for _ in range(5)) for _ in range(args.individuals * 2)})
    genotypes = genotypes[:args.individuals]
    settings = EvaluationSettings(
        epochs=args.epochs, batch_size=256, hidden=[args.width] * 2, pool="flatten", cache_features=True,
        share_prefixes=True, stack_individuals=args.stack, feature_memory_gb=args.feature_memory_gb,
        precision=args.precision, accelerator="gpu" if args.device == "cuda" else "cpu", feature_batch_size=1024)
    # warm-up on a sliver: CUDA context, cuDNN autotuning, kernels
    Evaluator(kb, tuple(t[:512] for t in data), 100, settings, progress=False)(genotypes[:2])
    if args.device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    results = Evaluator(kb, data, 100, settings, progress=True)(genotypes)
    seconds = time.perf_counter() - start
    per_individual = seconds / len(genotypes)
    evaluations = args.generations * args.population
    report = {
        "device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
        "torch": torch.__version__,
        "settings": vars(args),
        "generation_seconds": seconds,
        "seconds_per_individual": per_individual,
        "max_evaluations": evaluations,
        "estimated_search_hours": per_individual * evaluations / 3600,
        "peak_gpu_gb": torch.cuda.max_memory_allocated() / 2**30 if args.device == "cuda" else None,
        "failed": sum(e.status != "ok" for e in results),
    }
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"{report['device']}: {len(genotypes)} individuals of a paper-scale generation in {seconds:.1f} s "
          f"({per_individual:.2f} s each, {report['failed']} failed); a {args.generations} x {args.population} search "
          f"needs at most {evaluations} evaluations: about {report['estimated_search_hours']:.2f} GPU-hours")


if __name__ == "__main__":
    sys.exit(main())
