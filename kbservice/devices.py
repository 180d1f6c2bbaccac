"""Where models run: `device = "auto"` picks CUDA when torch sees a GPU, else the CPU."""

from __future__ import annotations

import functools

AUTO = "auto"


@functools.cache
def cuda_available() -> bool:
    import torch  # lazily: listing versions or verifying the audit log never loads torch

    return bool(torch.cuda.is_available())


def resolve_device(configured: str) -> str:
    """The torch device for a configured one: "auto" becomes "cuda" or "cpu"; anything else ("cpu",
    "cuda:1", "mps") is taken as written."""
    if configured != AUTO:
        return configured
    return "cuda" if cuda_available() else "cpu"


def model_dtype_name(device: str) -> str:
    """The dtype a language model runs in on `device`: bfloat16 on CUDA (half the memory, tensor cores),
    float32 elsewhere (CPUs here have no fast bfloat16, and the CPU path's figures are fp32)."""
    return "bfloat16" if device.startswith("cuda") else "float32"
