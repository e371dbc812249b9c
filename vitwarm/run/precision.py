"""The run's numeric precision: one source of truth, and fp32 on a GPU in TF32.

The recipe's ``precision`` decides. ``accelerate launch`` also carries one (its config file's
``mixed_precision`` or ``--mixed_precision``, handed to the processes as ``ACCELERATE_MIXED_PRECISION``), and
the Accelerator the run builds would silently override it; so a launch that asks for mixed precision other
than the recipe's is refused in one line before anything runs. A launch that says 'no' (accelerate's
default, which cannot be told apart from an explicit 'no') leaves the recipe's choice alone.
"""

from __future__ import annotations

import os

import torch

from ..errors import ConfigError

LAUNCH_ENV = "ACCELERATE_MIXED_PRECISION"


def accelerate_precision(precision: str) -> str:
    """Accelerate's name for a precision: full fp32 is 'no' (mixed precision off)."""
    return "no" if precision == "fp32" else precision


def check_launch_precision(precision: str) -> None:
    """ConfigError when ``accelerate launch`` asked for another mixed precision than the recipe's ``precision``."""
    launched = os.environ.get(LAUNCH_ENV, "no")
    if launched not in ("no", accelerate_precision(precision)):
        raise ConfigError(f"precision={precision} (the recipe) and mixed_precision={launched} (accelerate launch: its "
                          f"config file or --mixed_precision) disagree; the recipe's precision is the run's: set "
                          f"precision={launched}, or launch with mixed_precision: no")


def use_tf32(precision: str, device: torch.device) -> str | None:
    """For an fp32 run on CUDA, let matmuls use TF32 and return a one-line warning; else None.

    TF32 keeps fp32's range with a 10-bit mantissa in the matmul inputs: PyTorch leaves it off for matmuls
    by default (convolutions have it on), and an fp32 ViT run on an H100 wants it (about 7x the plain fp32
    matmul rate in NVIDIA's datasheet); bf16 is twice that again.
    """
    if device.type != "cuda" or precision != "fp32":
        return None
    torch.set_float32_matmul_precision("high")
    return ("vitwarm: warning: precision=fp32 on a GPU trains with TF32 matmuls; precision=bf16 (the GPU "
            "recipes') is about twice as fast")
