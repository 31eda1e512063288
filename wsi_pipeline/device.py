"""The torch device a command runs on: ``auto`` (the local GPU when there is one), ``cpu``, ``cuda``,
``cuda:1``, ``mps``; anything else is a one-line error listing what this machine offers."""

from __future__ import annotations

import torch


def available_devices() -> list[str]:
    """Device names this machine can run on, ``auto`` first."""
    names = ["auto", "cpu"]
    if torch.cuda.is_available():
        names += ["cuda", *(f"cuda:{i}" for i in range(torch.cuda.device_count()))]
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        names.append("mps")
    return names


def select_device(name: str, local_rank: int = 0) -> torch.device:
    """The device called ``name``; ``auto`` picks GPU ``local_rank`` (its process's GPU under torchrun)
    when CUDA is available, else the CPU. ``ValueError`` for a name this machine cannot use."""
    if name == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    valid = ", ".join(available_devices())
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ValueError(f"device {name!r}: not a device name (this machine offers: {valid})") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name}: CUDA is not available on this machine (offers: {valid})")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device {name}: this machine has {torch.cuda.device_count()} GPU(s) (offers: {valid})")
    elif device.type == "mps" and "mps" not in available_devices():
        raise ValueError(f"device {name}: MPS is not available on this machine (offers: {valid})")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device {name}: not supported (this machine offers: {valid})")
    return device
