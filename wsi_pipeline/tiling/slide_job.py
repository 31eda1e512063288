"""One slide's tiling, as three kinds of task that a scheduler can spread over workers.

1. :func:`plan_slide`: open the slide, compute the grid at the target mpp, the cell-foreground mask
   on a thumbnail and each patch's foreground fraction; create the (temporary) store with its patch
   table. Returns the blocks of patches to read, and the inputs of :func:`write_qc`, which runs
   beside the block tasks.
2. :func:`write_block`: read one block of neighbouring patches as a single region (each file tile is
   decoded once per block, not once per patch) and write the patches into the store.
3. :func:`finalize_slide`: check every patch was written, mark the store complete, rename it into place.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from wsi_pipeline import __version__
from wsi_pipeline.config import TileConfig, config_to_dict
from wsi_pipeline.data.patch_store import (
    create_store,
    fsync_dir,
    make_durable,
    mark_complete,
    record_chunks,
    slide_fingerprint,
    write_patches,
)
from wsi_pipeline.io import atomic_path
from wsi_pipeline.slide import SlideReader, open_slide
from wsi_pipeline.slide.foreground import qc_overlay
from wsi_pipeline.slide.grid import Grid
from wsi_pipeline.slide.plan import plan_patches


@dataclass(frozen=True)
class SlideJob:
    """Everything a worker needs to tile one slide (picklable)."""

    path: str
    slide_id: str
    out_dir: str
    cfg: TileConfig
    mpp_override: float | None
    config_hash: str

    @property
    def final_store(self) -> Path:
        return Path(self.out_dir) / f"{self.slide_id}.zarr"

    @property
    def tmp_store(self) -> Path:
        return Path(self.out_dir) / f".tmp-{self.slide_id}.zarr"


@dataclass(frozen=True)
class TilePlan:
    job: SlideJob
    n_patches: int
    blocks: tuple[np.ndarray, ...]  # indices into the stored table, one array per block task
    x_t: np.ndarray  # target-pixel origins of the stored patches
    y_t: np.ndarray
    scale: float  # level-0 pixels per target pixel
    backend: str
    mpp: float
    seconds: float


def tile_config_hash(cfg: TileConfig, mpp_override: float | None) -> str:
    """Hash of everything that changes a store's content (not scheduling or labeled-patch settings)."""
    data = config_to_dict(cfg)
    for key in ("backend", "block_rows", "block_cols", "labels"):
        data.pop(key)
    data["mpp_override"] = mpp_override
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


# A small per-process cache: block tasks of one slide reuse its open reader.
_READERS: OrderedDict[tuple[str, str, float | None, int, int], SlideReader] = OrderedDict()
_READERS_LOCK = threading.Lock()


def cached_reader(path: str, backend: str, mpp: float | None) -> SlideReader:
    """An open reader per worker process, reused across tasks; a file changed since (size or modification
    time) gets a fresh one, never the stale handle of its former content."""
    stat = Path(path).stat()
    key = (path, backend, mpp, stat.st_size, stat.st_mtime_ns)
    with _READERS_LOCK:
        if key in _READERS:
            _READERS.move_to_end(key)
            return _READERS[key]
        reader = open_slide(path, backend, mpp)  # type: ignore[arg-type]
        _READERS[key] = reader
        while len(_READERS) > 8:
            _, old = _READERS.popitem(last=False)
            old.close()
        return reader


@dataclass(frozen=True)
class QcJob:
    """Inputs of a slide's QC image; boxes are xyxy in thumbnail pixels."""

    path: Path
    thumb: np.ndarray
    mask: np.ndarray
    kept: np.ndarray
    dropped: np.ndarray


def plan_slide(job: SlideJob) -> tuple[TilePlan, QcJob]:
    start = time.perf_counter()
    cfg = job.cfg
    reader = cached_reader(job.path, cfg.backend, job.mpp_override)
    info = reader.info
    mpp = reader.require_mpp()
    plan = plan_patches(
        reader, cfg.target_mpp, cfg.patch_size, cfg.overlap, cfg.edge, cfg.foreground, cfg.min_foreground
    )
    grid, fractions, keep = plan.grid, plan.fractions, plan.keep
    kept = plan.kept
    boxes = plan.boxes_preview
    qc = QcJob(Path(job.out_dir) / f"{job.slide_id}.qc.png", plan.preview, plan.preview_mask, boxes[keep], boxes[~keep])

    table = {
        "x": kept.x0,
        "y": kept.y0,
        "width": kept.w0,
        "height": kept.h0,
        "foreground": fractions[keep].astype(np.float32),
        "row": kept.rows,
        "col": kept.cols,
    }
    attrs = {
        "wsi_pipeline_version": __version__,
        "slide_id": job.slide_id,
        "slide": {
            "path": str(Path(job.path).resolve()),
            "fingerprint": slide_fingerprint(job.path),
            "vendor": info.vendor,
            "backend": info.backend,
            "backend_choice": cfg.backend,
            "width": info.width,
            "height": info.height,
            "mpp": mpp,
            "mpp_source": info.mpp_source,
            "mpp_override": job.mpp_override,
            "objective_power": info.objective_power,
            "levels": [[lv.width, lv.height, lv.downsample] for lv in info.levels],
            "associated": list(info.associated),
        },
        "patch_size": cfg.patch_size,
        "target_mpp": cfg.target_mpp,
        "scale": grid.scale,
        "grid_patches": len(grid),
        "config_hash": job.config_hash,
        "config": {"tile": config_to_dict(cfg)},
        "coordinates": "level-0 pixels; x, y, width, height per patch",
    }
    if job.tmp_store.exists():
        shutil.rmtree(job.tmp_store)
    create_store(job.tmp_store, table, cfg.patch_size, cfg.coords_only, cfg.compressor, attrs)
    blocks = () if cfg.coords_only else _blocks(kept, cfg.block_rows, cfg.block_cols)
    plan = TilePlan(
        job, len(kept), blocks, kept.x_t, kept.y_t, grid.scale, info.backend, mpp, time.perf_counter() - start
    )
    return plan, qc


def _blocks(grid: Grid, block_rows: int, block_cols: int) -> tuple[np.ndarray, ...]:
    """Group stored patches into rectangles of grid cells; each becomes one read + write task."""
    if not len(grid):
        return ()
    key = (grid.rows // block_rows) * (int(grid.cols.max()) // block_cols + 1) + grid.cols // block_cols
    order = np.argsort(key, kind="stable")
    splits = np.flatnonzero(np.diff(key[order])) + 1
    return tuple(np.split(order, splits))


def write_qc(qc: QcJob) -> int:
    """The QC image: foreground tinted, kept patches outlined (runs beside the block tasks)."""
    with atomic_path(qc.path) as tmp:
        Image.fromarray(qc_overlay(qc.thumb, qc.mask, qc.kept, qc.dropped)).save(tmp, format="PNG", compress_level=1)
    return 0


def write_block(plan: TilePlan, indices: np.ndarray) -> np.ndarray:
    """Read the block's bounding region once at the target mpp, cut its patches, store them; returns their
    ``[index, chunk bytes, CRC-32]`` records."""
    job, p = plan.job, plan.job.cfg.patch_size
    reader = cached_reader(job.path, job.cfg.backend, job.mpp_override)
    xs, ys = plan.x_t[indices], plan.y_t[indices]
    ux, uy = int(xs.min()), int(ys.min())
    width, height = int(xs.max()) - ux + p, int(ys.max()) - uy + p
    region = reader.read_region(ux * plan.scale, uy * plan.scale, width, height, mpp=job.cfg.target_mpp)
    patches = [region[y - uy : y - uy + p, x - ux : x - ux + p] for x, y in zip(xs, ys, strict=True)]
    return write_patches(job.tmp_store, indices, patches, job.cfg.compressor)


def finalize_slide(plan: TilePlan, written: list[np.ndarray], seconds: float) -> dict[str, Any]:
    """Record the blocks' chunk sizes and checksums, mark the store complete, make it durable and move it
    into place; returns the slide's summary row."""
    job = plan.job
    if not job.cfg.coords_only:
        record_chunks(job.tmp_store, written)
    mark_complete(job.tmp_store, {"seconds": round(seconds, 3)})
    make_durable(job.tmp_store)
    if job.final_store.exists():
        shutil.rmtree(job.final_store)
    job.tmp_store.rename(job.final_store)
    fsync_dir(job.final_store.parent)
    return {"patches": plan.n_patches, "backend": plan.backend, "mpp": plan.mpp}
