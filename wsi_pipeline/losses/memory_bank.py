"""A FIFO memory bank of labeled class prototypes (the dual-alignment method's Eq. 7-8).

The bank keeps the last ``size`` prototypes pushed, each with its class, as module buffers, so checkpoints
hold it and an exact resume restores it. Under DDP every rank pushes the prototypes of *all* ranks, in rank
order (:func:`~wsi_pipeline.distributed.all_gather_rows`), so the banks stay identical without relying on
DDP's broadcast of rank 0's buffers.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from wsi_pipeline.distributed import all_gather_rows


class MemoryBank(nn.Module):
    """``size`` slots of ``dim``-d vectors with their class ids (``-1`` marks an empty slot)."""

    vectors: Tensor
    labels: Tensor
    pointer: Tensor

    def __init__(self, size: int, dim: int):
        super().__init__()
        if size <= 0 or dim <= 0:
            raise ValueError(f"memory bank: size and dim must be positive (got {size}, {dim})")
        self.register_buffer("vectors", torch.zeros(size, dim))
        self.register_buffer("labels", torch.full((size,), -1, dtype=torch.long))
        self.register_buffer("pointer", torch.zeros((), dtype=torch.long))  # next slot to write

    @property
    def size(self) -> int:
        return self.vectors.shape[0]

    @torch.no_grad()
    def push(self, vectors: Tensor, labels: Tensor) -> None:
        """Append ``(n, dim)`` vectors with their ``(n,)`` classes from every rank, overwriting the oldest
        entries; when more than ``size`` arrive at once, the last ``size`` are kept."""
        vectors = all_gather_rows(vectors.to(self.vectors.dtype))
        labels = all_gather_rows(labels.to(torch.long))
        n = vectors.shape[0]
        if n == 0:
            return
        if n > self.size:
            vectors, labels, n = vectors[-self.size :], labels[-self.size :], self.size
        slots = (self.pointer + torch.arange(n, device=self.pointer.device)) % self.size
        self.vectors[slots] = vectors
        self.labels[slots] = labels
        self.pointer.copy_((self.pointer + n) % self.size)

    def counts(self, num_classes: int) -> Tensor:
        """``(num_classes,)`` entries per class id ``0 .. num_classes - 1``."""
        filled = self.labels[self.labels >= 0]
        return torch.bincount(filled, minlength=num_classes)[:num_classes]

    def class_means(self, num_classes: int) -> tuple[Tensor, Tensor]:
        """``(means (num_classes, dim), present (num_classes,) bool)``: the mean entry of each class id
        ``0 .. num_classes - 1``; a class with no entry has a zero row and ``present`` False."""
        filled = self.labels >= 0
        labels, vectors = self.labels[filled], self.vectors[filled]
        sums = vectors.new_zeros(num_classes, vectors.shape[1]).index_add_(0, labels, vectors)
        counts = torch.bincount(labels, minlength=num_classes)[:num_classes]
        present = counts > 0
        return sums / counts.clamp(min=1).unsqueeze(1).to(sums.dtype), present
