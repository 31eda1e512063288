"""Pure schedules: the learning rate at an iteration, and which samples make up each batch.

Both are functions of the iteration alone, so resuming at iteration ``t`` reproduces exactly what an
uninterrupted run would have done from ``t`` on, with no scheduler state to save.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Sequence

import numpy as np


def lr_factor(it: int, warmup_iters: int, warmup_factor: float, steps: Sequence[int], gamma: float) -> float:
    """Multiplier of the base learning rate at iteration ``it`` (0-based): linear warm-up from
    ``warmup_factor`` to 1 over ``warmup_iters``, times ``gamma`` per milestone passed."""
    decay = gamma ** bisect.bisect_right(sorted(steps), it)
    if it >= warmup_iters:
        return decay
    alpha = it / warmup_iters
    return decay * (warmup_factor * (1 - alpha) + alpha)


class BatchSchedule:
    """Deterministic infinite stream of index batches: epoch ``e`` is a permutation seeded by
    ``(seed, e)``; batches never straddle epochs (a short last batch is dropped when there are
    enough samples). With ``world_size`` > 1 each rank takes its slice of every global batch."""

    def __init__(self, n: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1):
        if n <= 0:
            raise ValueError("no training samples")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.per_epoch = max(1, n // batch_size)

    def epoch_of(self, it: int) -> int:
        return it // self.per_epoch

    def batch(self, it: int) -> list[int]:
        """Indices of this rank's part of global batch ``it``."""
        epoch, k = divmod(it, self.per_epoch)
        order = np.random.default_rng([self.seed, epoch]).permutation(self.n)
        chosen = order[k * self.batch_size : (k + 1) * self.batch_size]
        if len(chosen) < self.batch_size:  # fewer samples than one batch: repeat cyclically
            chosen = np.resize(order, self.batch_size)
        return [int(i) for i in chosen[self.rank :: self.world_size]]

    def iterate(self, start: int) -> Iterator[list[tuple[int, int]]]:
        """Batches of ``(index, epoch)`` for iterations ``start, start + 1, ...``: the epoch travels with
        each index so datasets seed their augmentation from it, in any worker process."""
        it = start
        while True:
            epoch = self.epoch_of(it)
            yield [(i, epoch) for i in self.batch(it)]
            it += 1
