"""What a training step receives: labeled images with their targets (and, for semi-supervised methods,
unlabeled images), moved to the device as one value."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor


@dataclass
class TrainBatch:
    """``images``: ``(3, H, W)`` float tensors in [0, 1] at the model's ``input_mpp``; ``targets``: per
    image ``boxes`` (xyxy, image pixels) and ``labels`` (lesion class ids), as torchvision detection
    takes them; ``unlabeled``: images without targets (semi-supervised methods)."""

    images: list[Tensor]
    targets: list[dict[str, Tensor]]
    unlabeled: list[Tensor] = field(default_factory=list)

    def to(self, device: torch.device, channels_last: bool = False) -> TrainBatch:
        def move(t: Tensor) -> Tensor:
            t = t.to(device, non_blocking=True)
            return t.contiguous(memory_format=torch.channels_last) if channels_last and t.dim() == 4 else t

        return replace(
            self,
            images=[move(i) for i in self.images],
            targets=[{k: v.to(device, non_blocking=True) for k, v in t.items()} for t in self.targets],
            unlabeled=[move(i) for i in self.unlabeled],
        )


def detection_collate(batch: list[tuple[Tensor, dict[str, Any]]]) -> TrainBatch:
    """A :class:`TrainBatch` of labeled ``(image, target)`` items (detection models take variable-size lists)."""
    images, targets = zip(*batch, strict=True)
    return TrainBatch(list(images), list(targets))
