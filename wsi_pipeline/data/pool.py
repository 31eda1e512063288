"""The unlabeled pool that semi-supervised training reads (``train.unlabeled``): ``mine``'s output
(``pool.json`` + one patch store per slide), a folder of ``tile`` patch stores, or a COCO file of patches
whose boxes are given (offline pseudo-labels, or hidden labels for an oracle experiment; only
``dual_alignment.pseudo_labels: given`` reads them, the other methods see images only).

:func:`open_pool` refuses, with one line naming the pool and the problem, a pool that does not exist,
holds no patch, was cut at another resolution than the model takes, or shares slides with the labeled set
(the pool must be patient-disjoint; ``mine --labeled`` enforces it when the pool is built).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from wsi_pipeline.config import AugmentConfig
from wsi_pipeline.data.datasets import CocoPatchDataset, PatchStoreDataset
from wsi_pipeline.data.patch_store import PatchStore

UnlabeledSet = PatchStoreDataset | CocoPatchDataset


def pool_stores(pool: str | Path) -> list[Path]:
    """The patch stores of a mined pool (``pool.json``) or of a folder of ``tile`` stores."""
    pool = Path(pool)
    if not pool.is_dir():
        raise ValueError(
            f"{pool}: no such unlabeled pool (a folder from `wsi-pipeline mine`, of tile stores, or a COCO file)"
        )
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
) -> UnlabeledSet:
    """The pool as a dataset at the model's ``input_mpp``, checked as above: ``(image, meta)`` items of
    patch stores, or ``(image, target)`` items of a COCO file (``.json``; a mined pool's ``pool.json``
    stands for its folder)."""
    if Path(pool).name == "pool.json":
        pool = Path(pool).parent
    if str(pool).endswith(".json") and Path(pool).is_file():
        dataset: UnlabeledSet = CocoPatchDataset(pool, augment_cfg=augment_cfg, seed=seed)
        dataset.check_mpp(input_mpp)
    else:
        stores = pool_stores(pool)
        if not stores:
            raise ValueError(f"{pool}: the unlabeled pool holds no patches (every slide of pool.json is empty)")
        opened = [PatchStore(s) for s in stores]
        for store in opened:
            if abs(store.target_mpp - input_mpp) > 1e-6 * input_mpp:
                raise ValueError(
                    f"{store.path}: unlabeled patches at {store.target_mpp:g} um/px, the model takes "
                    f"{input_mpp:g} um/px (model.input_mpp); mine or tile the pool at that resolution"
                )
        dataset = PatchStoreDataset(opened, augment_cfg, seed)  # opened (and verified) once
    shared = sorted(set(dataset.slide_ids()) & set(labeled_slides) - {""})  # "": no slide recorded
    if shared:
        raise ValueError(
            f"{pool}: the unlabeled pool holds slides of the labeled set ({', '.join(shared[:5])}"
            f"{', ...' if len(shared) > 5 else ''}); build it with `mine --labeled` so it is patient-disjoint"
        )
    if len(dataset) == 0:
        raise ValueError(f"{pool}: the unlabeled pool holds no patches")
    return dataset
