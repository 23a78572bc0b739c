"""How much knowledge crosses a connection: the frozen mixes of real pretrained networks, read
by a linear probe, under each connection side by side in one run.

Knowledge base: the four real pretrained CIFAR-10 ResNets of ../shared (n = 4, c = 3, every
boundary with equal channel counts, so ChP/ChDP is the identity). For each of the 64 genotypes
(60 mixed, 4 originals) the frozen trunk's average-pooled features feed a linear classifier
(multinomial logistic regression, L-BFGS) trained on the first `--train` `x_train` images and
scored on the 1017 `x_test` images. The probe reports; it chooses nothing. Connections:
channel_pool (the paper's), aligned and least_squares (fitted on the same `--train` images, no
gradient, no module changed). Writes benchmarks/results_connections.json.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from modulenet.data import IMAGENET_MEAN, IMAGENET_STD
from modulenet.evaluation.stacked import prefix_shared_features
from modulenet.knowledge import build_knowledge_base

HERE = Path(__file__).resolve().parent
SHARED = Path(os.environ.get("MODULENET_SHARED", HERE.parents[1] / "shared"))
CONNECTIONS = ("channel_pool", "aligned", "least_squares")


def images(split: str, count: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    data = np.load(SHARED / "data" / "cifar10-partial.npz")
    x = torch.from_numpy(data[f"x_{split}"][:count]).permute(0, 3, 1, 2).float().div(255)
    x = (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return x, torch.from_numpy(data[f"y_{split}"][:count]).long()


def linear_probe(train: torch.Tensor, y_train: torch.Tensor, test: torch.Tensor, y_test: torch.Tensor) -> float:
    """Test accuracy of a logistic regression on standardised features (L-BFGS, weight decay 1e-4)."""
    mean, std = train.mean(0), train.std(0).clamp_min(1e-6)
    train, test = (train - mean) / std, (test - mean) / std
    torch.manual_seed(0)
    layer = torch.nn.Linear(train.shape[1], 10)
    optimizer = torch.optim.LBFGS(layer.parameters(), max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(layer(train), y_train) + 1e-4 * layer.weight.square().sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        return float((layer(test).argmax(1) == y_test).float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=2000, help="x_train images for the probe and the fits")
    parser.add_argument("--out", type=Path, default=HERE / "results_connections.json")
    args = parser.parse_args()
    weights = {
        f"resnet_cifar{d}": str(next((SHARED / "weights" / "resnet-cifar10").glob(f"resnet{d}-*.th")))
        for d in (20, 32, 44, 56)
    }
    kb = build_knowledge_base(list(weights), weights=weights, progress=False)
    x_train, y_train = images("train", args.train)
    x_test, y_test = images("test")
    start = time.perf_counter()
    kb.fit_connections(x_train, progress=False)
    fit_seconds = time.perf_counter() - start
    codes = list(itertools.product(range(kb.num_archs), repeat=kb.num_cells))
    results = {}
    for connection in CONNECTIONS:
        start = time.perf_counter()
        trunks = {code: kb.assemble(code, connection=connection) for code in codes}
        features = [
            prefix_shared_features(trunks, x, 256, torch.device("cpu"), pool="avg")[0] for x in (x_train, x_test)
        ]
        accuracy = {code: linear_probe(features[0][code], y_train, features[1][code], y_test) for code in codes}
        mixed = [a for code, a in accuracy.items() if len(set(code)) > 1]
        results[connection] = {
            "mixed_mean": statistics.mean(mixed),
            "mixed_std": statistics.stdev(mixed),
            "mixed_best": max(mixed),
            "mixed_at_least_85": sum(a >= 0.85 for a in mixed),
            "mixed_count": len(mixed),
            "originals": {kb.arch_names[code[0]]: a for code, a in accuracy.items() if len(set(code)) == 1},
            "per_genotype": {"".join(map(str, code)): a for code, a in accuracy.items()},
            "seconds": time.perf_counter() - start,
        }
        r = results[connection]
        print(
            f"{connection:>14}: mixed mean {100 * r['mixed_mean']:.1f} % (sd {100 * r['mixed_std']:.1f}), best "
            f"{100 * r['mixed_best']:.1f} %, {r['mixed_at_least_85']} of {len(mixed)} at >= 85 %; originals "
            + ", ".join(f"{100 * a:.1f}" for a in r["originals"].values())
            + f"  ({r['seconds']:.0f} s)",
            flush=True,
        )
    payload = {
        "machine": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "train_images": args.train,
        "test_images": len(x_test),
        "fit_seconds": fit_seconds,
        "knowledge_base": kb.arch_names,
        "results": results,
    }
    args.out.write_text(json.dumps(payload, indent=1))
    print(
        f"fitting both connections for all {len(kb.fitted['reduce'])} boundaries: {fit_seconds:.1f} s; wrote {args.out}"
    )


if __name__ == "__main__":
    main()
