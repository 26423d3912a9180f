"""Which torch device a run computes on."""

from __future__ import annotations

import torch

from recon.errors import InputError


def resolve_device(name: str) -> torch.device:
    """``auto`` is CUDA when available, else the CPU; ``cuda`` without a GPU is an input error."""
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError("device cuda (--device, --set device or the preset): no CUDA device is available")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
