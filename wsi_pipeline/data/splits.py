"""Train/val/test assignment by slide (patient), never by patch."""

from __future__ import annotations

import numpy as np

SPLITS = ("train", "val", "test")


def assign_splits(n: int, fractions: tuple[float, float, float], seed: int) -> list[str]:
    """Role of each of ``n`` slides: ``round(n * train)`` train, ``round(n * val)`` val, the rest test,
    shuffled with ``seed``. Deterministic; the counts do not depend on the seed."""
    n_train = round(n * fractions[0])
    n_val = min(round(n * fractions[1]), n - n_train)
    roles = ["train"] * n_train + ["val"] * n_val + ["test"] * (n - n_train - n_val)
    order = np.random.default_rng([seed, 0]).permutation(n)
    return [roles[int(order[i])] for i in range(n)]
