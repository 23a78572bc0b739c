"""Dispatch cost: the same generations evaluated by `evaluator=local` and by `evaluator=gpus`
with CPU worker processes, side by side in one run.

Both evaluate the fast way (cached features, shared module prefixes, stacked classifiers). `local`
trains each group in this process on every core; `gpus` sends whole groups (`Planner.tasks`:
halved until each worker has one) to `--workers` processes with cores / workers threads each.
Real data and knowledge (the shared CIFAR-10 images and CIFAR ResNets, as `make bench`). Two
generations of different genotypes, and `gpus` once more with one individual a task (what it did
before tasks: nothing stacked or shared on a worker). The first generation includes the workers'
start-up (spawning, sending the knowledge base and data), the second runs on warm workers.
Prints the table and writes benchmarks/results_dispatch.json.

Score rule: the same ranking, |delta err_val| <= 0.01 (a stack split across workers is trained
in smaller batched products, so float rounding may differ).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def run(name: str, args, generations, kb, data, num_classes, stack: int | None = None) -> dict:
    from modulenet.evaluation.evaluator import make_evaluator
    from modulenet.evaluation.settings import EvaluationSettings

    settings = EvaluationSettings(
        epochs=args.epochs,
        batch_size=256,
        hidden=[args.width] * 2,
        pool="avg",
        stack_individuals=stack or len(generations[0]),
        precision=args.precision,
    )
    options = {"num_workers": args.workers} if name == "gpus" else {}
    evaluator = make_evaluator(name, kb, data, num_classes, settings, progress=False, **options)
    seconds, results = [], []
    try:
        for genotypes in generations:
            start = time.perf_counter()
            results += evaluator(genotypes)
            seconds.append(time.perf_counter() - start)
    finally:
        evaluator.close()
    return {
        "seconds": seconds,
        "precision": evaluator.settings.precision,
        "results": [{"genotype": list(e.genotype), "err_val": e.err_val, "score": e.score} for e in results],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--individuals", type=int, default=8, help="per generation")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--width", type=int, default=2048)
    parser.add_argument("--train-images", type=int, default=1024)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--out", default=str(HERE / "results_dispatch.json"))
    args = parser.parse_args()

    import torch
    from bench_evaluation import load, meets_rule

    from modulenet.runtime.precision import device_model

    space = list(itertools.product(range(4), repeat=3))
    sample = random.Random(1).sample(space, 2 * args.individuals)
    generations = [sample[: args.individuals], sample[args.individuals :]]
    kb, data, num_classes = load(args.train_images)
    modes = {name: run(name, args, generations, kb, data, num_classes) for name in ("local", "gpus")}
    # what `gpus` did before tasks: one individual per message, so nothing stacked or shared
    modes["gpus-single"] = run("gpus", args, generations, kb, data, num_classes, stack=1)

    local, gpus = modes["local"]["results"], modes["gpus"]["results"]
    delta = max(abs(a["err_val"] - b["err_val"]) for a, b in zip(local, gpus))
    report = {
        "machine": f"{device_model(torch.device('cpu'))}, {os.cpu_count()} CPU cores, torch {torch.__version__}",
        "settings": vars(args),
        "modes": {k: {"seconds": v["seconds"], "precision": v["precision"]} for k, v in modes.items()},
        "max_abs_delta_err_val": delta,
        "score_rule_met": meets_rule("fast", gpus, local),  # the same ranking, |d err_val| <= 0.01
        "individuals": {k: v["results"] for k, v in modes.items()},
    }
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(
        f"{report['machine']}; {args.individuals} individuals per generation, {args.epochs} epochs, "
        f"head {args.width}-{args.width}, {args.train_images} train images, {modes['local']['precision']}"
    )
    print(f"{'evaluator':<28} {'generation 1 s':>15} {'generation 2 s':>15}")
    labels = {
        "local": "local (this process)",
        "gpus": f"gpus ({args.workers} CPU workers)",
        "gpus-single": "gpus, one individual a task",
    }
    for name, label in labels.items():
        first, second = modes[name]["seconds"]
        print(f"{label:<28} {first:15.1f} {second:15.1f}")
    warm = {name: m["seconds"][1] for name, m in modes.items()}
    print(
        f"warm workers take {warm['gpus'] / warm['local']:.2f}x local's time (one individual a task: "
        f"{warm['gpus-single'] / warm['local']:.2f}x); max |d err_val| {delta:.4f}, "
        f"score rule met: {report['score_rule_met']}\nwrote {args.out}"
    )


if __name__ == "__main__":
    sys.exit(main())
