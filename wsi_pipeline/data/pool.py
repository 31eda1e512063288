"""The unlabeled pool that semi-supervised training reads (``train.unlabeled``): ``mine``'s output
(``pool.json`` + one patch store per slide) or a folder of ``tile`` patch stores.

:func:`open_pool` refuses, with one line naming the pool and the problem, a pool that does not exist,
holds no patch, was cut at another resolution than the model takes, or shares slides with the labeled set
(the pool must be patient-disjoint; ``mine --labeled`` enforces it when the pool is built).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from wsi_pipeline.config import AugmentConfig
from wsi_pipeline.data.datasets import PatchStoreDataset
from wsi_pipeline.data.patch_store import PatchStore


def pool_stores(pool: str | Path) -> list[Path]:
    """The patch stores of a mined pool (``pool.json``) or of a folder of ``tile`` stores."""
    pool = Path(pool)
    if not pool.is_dir():
        raise ValueError(f"{pool}: no such unlabeled pool (a folder from `wsi-pipeline mine` or of tile stores)")
    manifest = pool / "pool.json"
    if manifest.is_file():
        data = json.loads(manifest.read_text(encoding="utf-8"))
        return [pool / entry["store"] for entry in data["slides"].values() if entry.get("patches")]
    stores = sorted(p for p in pool.glob("*.zarr") if p.is_dir())
    if not stores:
        raise ValueError(f"{pool}: neither a mined pool (pool.json) nor a folder of patch stores")
    return stores


def open_pool(
    pool: str | Path,
    input_mpp: float,
    labeled_slides: Iterable[str] = (),
    augment_cfg: AugmentConfig | None = None,
    seed: int = 0,
) -> PatchStoreDataset:
    """The pool as a dataset of ``(image, meta)`` items at the model's ``input_mpp``, checked as above."""
    stores = pool_stores(pool)
    if not stores:
        raise ValueError(f"{pool}: the unlabeled pool holds no patches (every slide of pool.json is empty)")
    opened = [PatchStore(s) for s in stores]
    for store in opened:
        if abs(store.target_mpp - input_mpp) > 1e-6 * input_mpp:
            raise ValueError(
                f"{store.path}: unlabeled patches at {store.target_mpp:g} um/px, the model takes {input_mpp:g} "
                "um/px (model.input_mpp); mine or tile the pool at that resolution"
            )
    shared = sorted({s.attrs["slide_id"] for s in opened} & set(labeled_slides))
    if shared:
        raise ValueError(
            f"{pool}: the unlabeled pool holds slides of the labeled set ({', '.join(shared[:5])}"
            f"{', ...' if len(shared) > 5 else ''}); build it with `mine --labeled` so it is patient-disjoint"
        )
    dataset = PatchStoreDataset(opened, augment_cfg, seed)  # opened (and verified) once
    if len(dataset) == 0:
        raise ValueError(f"{pool}: the unlabeled pool holds no patches")
    return dataset
