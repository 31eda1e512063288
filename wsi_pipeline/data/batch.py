"""What a training step receives: labeled images with their targets (and, for semi-supervised methods,
unlabeled images), moved to the device as one value."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import torch
from torch import Tensor


@dataclass
class TrainBatch:
    """``images``: ``(3, H, W)`` float tensors in [0, 1] at the model's ``input_mpp``; ``targets``: per
    image ``boxes`` (xyxy, image pixels) and ``labels`` (lesion class ids), as torchvision detection
    takes them; ``unlabeled``: images without targets (semi-supervised methods); ``unlabeled_targets``:
    boxes given with the unlabeled images (a COCO pool, e.g. offline pseudo-labels), one per image, or
    empty when the pool carries none."""

    images: list[Tensor]
    targets: list[dict[str, Tensor]]
    unlabeled: list[Tensor] = field(default_factory=list)
    unlabeled_targets: list[dict[str, Tensor]] = field(default_factory=list)

    def to(self, device: torch.device, channels_last: bool = False) -> TrainBatch:
        def move(t: Tensor) -> Tensor:
            t = t.to(device, non_blocking=True)
            return t.contiguous(memory_format=torch.channels_last) if channels_last and t.dim() == 4 else t

        def move_all(targets: list[dict[str, Tensor]]) -> list[dict[str, Tensor]]:
            return [{k: v.to(device, non_blocking=True) for k, v in t.items()} for t in targets]

        return replace(
            self,
            images=[move(i) for i in self.images],
            targets=move_all(self.targets),
            unlabeled=[move(i) for i in self.unlabeled],
            unlabeled_targets=move_all(self.unlabeled_targets),
        )


def detection_collate(batch: list[tuple[Tensor, dict[str, Any]]]) -> TrainBatch:
    """A :class:`TrainBatch` of labeled ``(image, target)`` items (detection models take variable-size lists)."""
    images, targets = zip(*batch, strict=True)
    return TrainBatch(list(images), list(targets))


def unlabeled_collate(batch: list[tuple[Tensor, dict[str, Any]]]) -> tuple[list[Tensor], list[dict[str, Tensor]]]:
    """Unlabeled ``(image, meta or target)`` items as ``(images, targets)``: the targets when every item
    carries ``boxes`` (a COCO pool), else an empty list (patch stores: their meta stays behind)."""
    images = [image for image, _ in batch]
    given = all("boxes" in extra for _, extra in batch)
    return images, [extra for _, extra in batch] if given else []


T = TypeVar("T")


def original_errors(batches: Iterable[T]) -> Iterator[T]:
    """``batches`` of a DataLoader, with a worker's exception re-raised as its original one-line message
    (the file and the problem), not "Caught ValueError in DataLoader worker process 0" and a traceback."""
    iterator = iter(batches)
    while True:
        try:
            batch = next(iterator)
        except StopIteration:
            return
        except Exception as err:
            text = str(err)
            if "Original Traceback" not in text:
                raise
            last = [line for line in text.strip().splitlines() if line.strip()][-1]
            name = type(err).__name__
            message = last.split(": ", 1)[1] if last.startswith(f"{name}: ") else last
            raise type(err)(message) from None
        yield batch
