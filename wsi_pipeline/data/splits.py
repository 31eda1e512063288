"""Train/val/test assignment by slide (patient), never by patch."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

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


def read_patients(path: Path | None) -> dict[str, str]:
    """``slide_id,patient_id`` rows (a header row is allowed) -> {slide: patient}; no table: {} (each slide
    is its own patient)."""
    if path is None:
        return {}
    try:
        rows = list(csv.reader(Path(path).read_text(encoding="utf-8").splitlines()))
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not a readable slide,patient table ({err})") from None
    table = {}
    for k, row in enumerate(rows):
        if not row or row[0].startswith("#") or (k == 0 and row[0].strip().lower() in ("slide", "slide_id")):
            continue
        if len(row) < 2 or not row[0].strip() or not row[1].strip():
            raise ValueError(f"{path}: line {k + 1}: expected slide_id,patient_id")
        table[row[0].strip()] = row[1].strip()
    return table


def assign_splits_by_patient(
    slide_ids: Sequence[str], patients: dict[str, str], fractions: tuple[float, float, float], seed: int
) -> list[str]:
    """Role of each slide such that all slides of one patient share it (:func:`assign_splits` over the
    patients, in order of first appearance); without a table entry a slide is its own patient, which gives
    exactly :func:`assign_splits` over the slides."""
    owner = [patients.get(s, s) for s in slide_ids]
    unique = list(dict.fromkeys(owner))
    role = dict(zip(unique, assign_splits(len(unique), fractions, seed), strict=True))
    return [role[p] for p in owner]
