"""The trainer group's settings (conf/trainer/): where Lightning trains and in what precision,
and the one place that turns them into decisions (device, precision, layout). Plain Python:
composing configs imports no torch (the checks and decisions import it when they run)."""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass
class TrainerSettings:
    """The `trainer` group (conf/trainer/): where Lightning trains and in what precision (set up by
    runtime/trainer.py and runtime/precision.py for evaluation, fine-tuning and source training); checked when built.
    Every part that trains asks these settings (`device`, `choose_precision`, `choose_memory_format`),
    never the group's values: `auto` is decided here, by one rule, and handed down as the choice."""

    accelerator: str = "cpu"  # cpu | gpu | cuda | mps | auto
    precision: str = "auto"  # measured where a choice exists (runtime/precision.py); or a Lightning precision
    # float32 matrix products on GPUs: highest (exact fp32) | high (TF32 tensor cores) | medium
    float32_matmul_precision: str = "highest"
    # a fine-tuned network's layout: auto (measured, runtime/precision.py) | contiguous | channels_last
    memory_format: str = "auto"

    def __post_init__(self) -> None:
        import torch  # here, not at the top: composing configs needs no torch

        from modulenet.runtime.precision import check_memory_format, check_precision
        from modulenet.runtime.trainer import check_accelerator, use_float32_matmul_precision

        check_accelerator(self.accelerator)
        check_precision(self.precision)
        check_memory_format(self.memory_format)
        use_float32_matmul_precision(torch.device("cpu"), self.float32_matmul_precision)  # validates only

    def trainer(self) -> TrainerSettings:
        """These settings as the trainer group's alone (for settings that extend them)."""
        return TrainerSettings(**{f.name: getattr(self, f.name) for f in fields(TrainerSettings)})

    @property
    def device(self):
        """The torch device `accelerator` means here."""
        from modulenet.runtime.trainer import accelerator_device

        return accelerator_device(self.accelerator)

    def choose_precision(self, step=None):
        """The precision to train in and why (runtime/precision.py's `PrecisionChoice`): `auto`
        measured for `step` on this device (the search's classifiers, a whole network; None: source
        networks, not measured), an explicit precision as given."""
        from modulenet.runtime.precision import choose_precision

        return choose_precision(self.precision, self.device, step)

    def choose_memory_format(self, step, precision: str):
        """The layout a whole network fine-tunes in, and why (`auto`: measured for `step` in `precision`)."""
        from modulenet.runtime.precision import choose_memory_format

        return choose_memory_format(self.memory_format, self.device, step, precision)

    def resolved_precision(self) -> str:
        """What `auto` means for whole networks without a measurement (source training, cache keys)."""
        return self.choose_precision().precision
