"""Pick the torch device once: CUDA when present (or asked for), else CPU."""

from __future__ import annotations

import torch

from model.errors import ModelError


class DeviceError(ModelError, RuntimeError):
    """A device was asked for that this machine does not have."""


def choose_device(name: str | None = None) -> torch.device:
    """`name` ("cpu", "cuda", "cuda:1") wins; by default CUDA if available, else CPU.

    >>> choose_device("cpu")
    device(type='cpu')
    """
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"device {name!r} asked for, but torch sees no CUDA device")
    return device
