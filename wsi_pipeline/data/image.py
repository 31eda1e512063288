"""Images as the models see them: files decoded to RGB arrays, arrays to float tensors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image


def read_rgb(path: Path) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB pixels of an image file; ``ValueError`` naming the file when unreadable."""
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"))
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: cannot read image ({err})") from None


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """``(H, W, 3)`` uint8 -> ``(3, H, W)`` float32 in [0, 1]."""
    if not image.flags.writeable or not image.flags.c_contiguous:
        image = np.array(image)  # PIL and memory maps hand out read-only views
    return torch.from_numpy(image).permute(2, 0, 1).float().div_(255.0)
