"""The trainer group's settings (conf/trainer/): where Lightning trains and in what precision.
Plain Python: composing configs imports no torch (the checks import it when they run)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TrainerSettings:
    """The `trainer` group (conf/trainer/): where Lightning trains and in what precision (set up by
    runtime/trainer.py and runtime/precision.py for evaluation, fine-tuning and source training); checked when built."""

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
