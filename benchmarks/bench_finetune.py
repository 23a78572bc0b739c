"""The evaluation stage's cost, the two data paths side by side in one run (issue 23).

(a) today's path: a DataLoader applying torchvision transforms image by image (random crop, flip,
normalise, Cutout 16; `num_workers=0`); (b) the new one: the whole split as one uint8 tensor on
the training device, augmented per batch with tensor operations (data/device.py). Rows:

- the data path alone: augmented, normalised batches ready on the device, no model; seconds per
  epoch and images/s per path, and `speedup_data_on_device` (per-image seconds / on-device seconds);
- a whole fine-tune epoch (Lightning, all weights trainable, SGD, bf16/float32 as `--precision`)
  of a CIFAR ResNet (ResNet-20, pretrained), a VGG-style net (`vgg_cifar`) and a hybrid of the
  two ResNets of ../shared (ResNet-20 + ResNet-32 + ResNet-32); images/s;
- validation error after `--epochs` epochs of fine-tuning on both paths, over `--seeds` seeds
  (the same augmentation's distribution, other draws: equal within seed noise, not bit for bit).

Data: the real CIFAR-10 images of ../shared (5085 training images, validation on x_test as the
shared ResNets saw x_train). Writes benchmarks/results_finetune.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from modulenet.data import NpzDataModule
from modulenet.data.device import device_batches
from modulenet.finetune.settings import FinetuneSettings
from modulenet.finetune.training import finetune_architecture
from modulenet.knowledge import build_knowledge_base
from modulenet.runtime.precision import device_model

HERE = Path(__file__).resolve().parent
SHARED = Path(os.environ.get("MODULENET_SHARED", HERE.parents[1] / "shared"))
WEIGHTS = SHARED / "weights" / "resnet-cifar10"


def datamodule(batch_size: int, seed: int = 0) -> NpzDataModule:
    dm = NpzDataModule(
        str(SHARED / "data" / "cifar10-partial.npz"), val_from="test", batch_size=batch_size, seed=seed,
        augment=True, cutout=16,
    )  # fmt: skip
    dm.setup("fit")
    return dm


def data_path_rates(dm: NpzDataModule, device: torch.device, repeats: int) -> dict:
    """One epoch of augmented, normalised batches on `device`, per path: the fastest of `repeats`
    epochs' seconds and its images per second."""
    seconds = {"per_image": [], "on_device": []}
    for _ in range(repeats):
        for path in seconds:
            loader = dm.train_dataloader() if path == "per_image" else device_batches(dm, device, seed=0)
            start, seen = time.perf_counter(), 0
            for x, _ in loader:
                x = x.to(device, non_blocking=True)
                seen += len(x)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            seconds[path].append(time.perf_counter() - start)
    best = {path: min(values) for path, values in seconds.items()}
    return {"images_per_epoch": seen, "seconds_per_epoch": best, "images_per_s": {p: seen / s for p, s in best.items()}}


def data_path_summary(timed: dict) -> dict:
    """The data path's keys in the JSON: `speedup_data_on_device` is the per-image path's seconds
    per epoch over the on-device path's, from the `data_path_seconds_per_epoch` beside it."""
    seconds = timed["seconds_per_epoch"]
    return {
        "data_path_images_per_epoch": timed["images_per_epoch"],
        "data_path_seconds_per_epoch": seconds,
        "data_path_images_per_s": timed["images_per_s"],
        "speedup_data_on_device": seconds["per_image"] / seconds["on_device"],
    }


def finetune(kb, genotype, dm, epochs: int, seed: int, on_device: bool, precision: str, accelerator: str) -> dict:
    settings = FinetuneSettings(
        epochs=epochs, hidden=[256], pool="avg", batch_size=dm.batch_size, seed=seed, data_on_device=on_device,
        precision=precision, accelerator=accelerator,
    )  # fmt: skip
    start = time.perf_counter()
    _, result = finetune_architecture(kb, genotype, dm, settings, progress=False)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "images_per_s": epochs * len(dm.train_set) / seconds, "val_error": result["val_error"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--precision", default="32-true")
    parser.add_argument("--accelerator", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", default=str(HERE / "results_finetune.json"))
    parser.add_argument("--data-path-only", action="store_true", help="time the data path alone, no fine-tune")
    args = parser.parse_args()
    device = torch.device("cuda" if args.accelerator in ("gpu", "cuda") else "cpu")
    dm = datamodule(args.batch_size)
    result = {
        "machine": {"device": device_model(device), "threads": torch.get_num_threads(), "torch": torch.__version__},
        "platform": platform.platform(),
        "settings": vars(args),
        **data_path_summary(data_path_rates(dm, device, args.repeats)),
    }
    rates = result["data_path_images_per_s"]
    print(f"data path alone: per image {rates['per_image']:.0f} img/s, on device {rates['on_device']:.0f} img/s "
          f"({result['speedup_data_on_device']:.1f}x)")  # fmt: skip
    if not args.data_path_only:
        result.update(finetune_rows(args))
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


def finetune_rows(args) -> dict:
    """Whole fine-tunes of three networks on both paths, per seed, and their summary."""
    torch.manual_seed(0)
    resnets = build_knowledge_base(
        ["resnet_cifar20", "resnet_cifar32"],
        weights={"resnet_cifar20": str(next(WEIGHTS.glob("resnet20-*.th"))),
                 "resnet_cifar32": str(next(WEIGHTS.glob("resnet32-*.th")))},
        progress=False,
    )  # fmt: skip
    vgg = build_knowledge_base(["vgg_cifar"], weights={"vgg_cifar": "random"}, progress=False)
    networks = {
        "resnet_cifar20": (resnets, (0, 0, 0)),
        "vgg_cifar": (vgg, (0, 0, 0)),
        "hybrid 20+32+32": (resnets, (0, 1, 1)),
    }
    rows = []
    for name, (kb, genotype) in networks.items():
        for seed in range(args.seeds):
            for on_device in (False, True):
                dm = datamodule(args.batch_size, seed)
                row = {"network": name, "seed": seed, "path": "on_device" if on_device else "per_image"}
                row.update(finetune(kb, genotype, dm, args.epochs, seed, on_device, args.precision, args.accelerator))
                rows.append(row)
                print(f"{name:16s} seed {seed} {row['path']:9s} {row['images_per_s']:7.0f} img/s, "
                      f"val error {100 * row['val_error']:.2f} %")  # fmt: skip
    result = {"finetune": rows}
    summary = {}
    for name in networks:
        per = {p: [r for r in rows if r["network"] == name and r["path"] == p] for p in ("per_image", "on_device")}
        speed = {p: statistics.fmean(r["images_per_s"] for r in v) for p, v in per.items()}
        errors = {p: [r["val_error"] for r in v] for p, v in per.items()}
        summary[name] = {
            "images_per_s": speed,
            "step_ratio": speed["on_device"] / speed["per_image"],
            "val_error_mean": {p: statistics.fmean(v) for p, v in errors.items()},
            "val_error_sd": {p: statistics.stdev(v) if len(v) > 1 else 0.0 for p, v in errors.items()},
        }
        print(f"{name:16s} whole step {summary[name]['step_ratio']:.2f}x")
    result["summary"] = summary
    return result


if __name__ == "__main__":
    main()
