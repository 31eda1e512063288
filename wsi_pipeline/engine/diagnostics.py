"""Stability checks of semi-supervised training: pseudo-label collapse and exploding loss terms.

:class:`CollapseWatch` is fed each step's pseudo-labels per class (when the method made any attempt) and
loss terms, and returns the warnings to emit, each once per episode:

- no pseudo-label for ``patience`` iterations in a row (threshold too high, or the detector too weak);
- one class holding more than ``max_share`` of the pseudo-labels of the last ``patience`` iterations
  (counted once ``patience`` iterations have pseudo-labelled and at least ``min_count`` labels were made);
- a loss term whose size is above ``jump`` times the median size of its non-zero values among the last
  ``history`` (and above ``floor``).
"""

from __future__ import annotations

from collections import deque

import numpy as np

from wsi_pipeline.taxonomy import CLASS_CODES


class CollapseWatch:
    def __init__(
        self,
        patience: int,
        max_share: float = 0.95,
        min_count: int = 20,
        jump: float = 10.0,
        floor: float = 1.0,
        history: int = 100,
    ):
        self.patience, self.max_share, self.min_count = patience, max_share, min_count
        self.jump, self.floor = jump, floor
        self.without = 0  # iterations in a row without a pseudo-label
        self.window: deque[np.ndarray] = deque(maxlen=patience)
        self.one_class = False
        self.history: dict[str, deque[float]] = {}
        self.history_len = history
        self.quiet_until: dict[str, int] = {}
        self.steps = 0

    def update(self, pseudo_counts: np.ndarray | None, losses: dict[str, float]) -> list[str]:
        """``pseudo_counts`` (C,): this step's pseudo-labels per class, ``None`` when the method made none
        this step (no unlabeled loss yet, or a method without pseudo-labels)."""
        self.steps += 1
        warnings: list[str] = []
        if pseudo_counts is not None:
            counts = np.asarray(pseudo_counts, np.float64)
            self.without = 0 if counts.sum() > 0 else self.without + 1
            if self.without == self.patience:
                warnings.append(
                    f"pseudo-labelling collapsed: no pseudo-label for {self.patience} iterations "
                    "(threshold too high for this detector?)"
                )
            self.window.append(counts)
            total = np.sum(self.window, axis=0)
            full = len(self.window) == self.patience  # not on a run's first steps: a random head's bias
            share = total.max() / total.sum() if full and total.sum() >= self.min_count else 0.0
            if share > self.max_share and not self.one_class:
                name = CLASS_CODES[int(total.argmax())]
                warnings.append(
                    f"pseudo-labelling collapsed to one class: {name} holds {100 * share:.0f}% of the "
                    f"pseudo-labels of the last {len(self.window)} iterations"
                )
            self.one_class = share > self.max_share
        for name, value in losses.items():
            past = self.history.setdefault(name, deque(maxlen=self.history_len))
            active = [abs(v) for v in past if v != 0.0]  # 0 on steps without pseudo-labels is not a baseline
            if len(active) >= 10 and self.steps >= self.quiet_until.get(name, 0):
                scale = max(float(np.median(active)), 1e-12)  # terms such as L_pml can be negative: sizes count
                if abs(value) > self.floor and abs(value) > self.jump * scale:
                    ratio = abs(value) / scale
                    warnings.append(f"loss term {name} exploded: {value:.4g}, {ratio:.0f}x its usual size {scale:.4g}")
                    self.quiet_until[name] = self.steps + self.history_len
            past.append(value)
        return warnings
