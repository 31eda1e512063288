"""One whole slide through the detector: plan, read ahead, predict in batches, merge seams, stream out.

The slide is planned like ``tile`` plans it (:func:`~wsi_pipeline.slide.plan.plan_patches`: a grid at the
model's ``input_mpp`` with ``infer.overlap``, glass patches skipped). Kept patches are grouped into blocks
of ``block_rows`` x ``block_cols`` grid cells, taken in raster order. Reader threads fetch the patches of
the next blocks while the model works on the current one. Each block's detections are mapped to level-0
pixels, merged (:func:`~wsi_pipeline.inference.merge.merge_detections`) and split: those well inside the
block are final and leave at once (so memory follows the patches in flight, not the slide); those near a
block border (within the overlap) wait for a last merge across block borders. Blocks are independent
until that last merge, so they can later run on different workers.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from wsi_pipeline.config import ForegroundConfig, InferConfig
from wsi_pipeline.inference.merge import Detections, cut_flags, merge_detections
from wsi_pipeline.inference.predictor import Predictor
from wsi_pipeline.slide.plan import PatchPlan, plan_patches
from wsi_pipeline.slide.reader import SlideReader
from wsi_pipeline.taxonomy import NUM_CLASSES

TOUCH_PX = 2.0  # a box side this close to a patch border (input pixels) was cut by it


@dataclass
class SlideRun:
    """What :func:`detect_slide` did: the plan, patches read and the time spent reading and predicting."""

    plan: PatchPlan | None = None  # set once the slide is planned
    mpp: float = 0.0
    patches: int = 0
    detections: int = 0
    seconds: float = 0.0
    read_wait: float = 0.0  # seconds the model waited for patches


def blocks_of(plan: PatchPlan, block_rows: int, block_cols: int) -> list[np.ndarray]:
    """Indices of kept grid patches grouped into blocks of grid cells, blocks in raster order."""
    kept = np.flatnonzero(plan.keep)
    if not len(kept):
        return []
    rows, cols = plan.grid.rows[kept] // block_rows, plan.grid.cols[kept] // block_cols
    key = rows * (int(cols.max()) + 1) + cols
    order = np.argsort(key, kind="stable")
    splits = np.flatnonzero(np.diff(key[order])) + 1
    return [kept[part] for part in np.split(order, splits)]


def detect_slide(
    reader: SlideReader,
    predictor: Predictor,
    cfg: InferConfig,
    input_mpp: float,
    foreground: ForegroundConfig,
    run: SlideRun | None = None,
) -> Iterator[Detections]:
    """Yield the slide's final detections (level-0 pixels, merged, at or above ``cfg.min_score``) block by
    block, then those of the block borders. ``run`` (when given) is filled in as the slide goes."""
    started = time.perf_counter()
    mpp = reader.require_mpp()
    plan = plan_patches(reader, input_mpp, cfg.patch_size, cfg.overlap, "flush", foreground, cfg.min_foreground)
    if run is not None:
        run.plan, run.mpp = plan, mpp
    grid, scale = plan.grid, plan.grid.scale
    slide_size = (float(reader.info.width), float(reader.info.height))
    margin = (cfg.overlap + TOUCH_PX) * scale  # level-0 pixels: nearer a block border, wait for the last merge
    blocks = blocks_of(plan, cfg.block_rows, cfg.block_cols)
    order = [int(i) for block in blocks for i in block]
    held: list[Detections] = []
    p = cfg.patch_size

    def read(i: int) -> np.ndarray:
        return reader.read_region(float(grid.x0[i]), float(grid.y0[i]), p, p, mpp=input_mpp)

    with ThreadPoolExecutor(max(1, cfg.workers)) as pool:
        ahead: deque[Future[np.ndarray]] = deque()
        queue = iter(order)
        window = max(2 * cfg.batch_size, cfg.workers * 2)

        def refill() -> None:
            while len(ahead) < window:
                i = next(queue, None)
                if i is None:
                    return
                ahead.append(pool.submit(read, i))

        refill()
        for block in blocks:
            found: list[Detections] = []
            for start in range(0, len(block), cfg.batch_size):
                batch = block[start : start + cfg.batch_size]
                waited = time.perf_counter()
                patches = [ahead.popleft().result() for _ in batch]
                if run is not None:
                    run.read_wait += time.perf_counter() - waited
                refill()
                for i, out in zip(batch, predictor(patches), strict=True):
                    found.append(_to_level0(out, int(i), plan, scale, slide_size, cfg.min_score))
            merged = merge_detections(Detections.concat(found, NUM_CLASSES + 1), cfg.merge_ios, TOUCH_PX * scale)
            inner = _inside(merged.boxes, _extent(plan, block), slide_size, margin)
            held.append(merged.take(~inner))
            if run is not None:
                run.patches += len(block)
                run.detections += int(inner.sum())
            yield merged.take(inner)
    last = merge_detections(Detections.concat(held, NUM_CLASSES + 1), cfg.merge_ios, TOUCH_PX * scale)
    if run is not None:
        run.detections += len(last)
        run.seconds = time.perf_counter() - started
    yield last


def _to_level0(
    out: dict[str, np.ndarray], i: int, plan: PatchPlan, scale: float, slide: tuple[float, float], min_score: float
) -> Detections:
    """One patch's detections in level-0 pixels with their cut flags."""
    keep = out["scores"] >= min_score
    grid = plan.grid
    x0, y0 = float(grid.x0[i]), float(grid.y0[i])
    boxes = out["boxes"][keep].astype(np.float64) * scale + np.array([x0, y0, x0, y0])
    patch = (x0, y0, x0 + float(grid.w0[i]), y0 + float(grid.h0[i]))
    probs = out["probs"]
    if probs is None:  # a model without probabilities: the score for its class, the rest to background
        probs = np.zeros((len(out["scores"]), NUM_CLASSES + 1), np.float32)
        probs[np.arange(len(probs)), out["labels"]] = out["scores"]
        probs[:, 0] = 1 - out["scores"]
    return Detections(
        boxes,
        out["labels"][keep],
        out["scores"][keep].astype(np.float64),
        probs[keep].astype(np.float32),
        cut_flags(boxes, patch, slide, TOUCH_PX * scale),
    )


def _extent(plan: PatchPlan, block: np.ndarray) -> tuple[float, float, float, float]:
    g = plan.grid
    return (
        float(g.x0[block].min()),
        float(g.y0[block].min()),
        float((g.x0[block] + g.w0[block]).max()),
        float((g.y0[block] + g.h0[block]).max()),
    )


def _inside(
    boxes: np.ndarray, extent: tuple[float, float, float, float], slide: tuple[float, float], margin: float
) -> np.ndarray:
    """Boxes at least ``margin`` away from every side of ``extent`` that is not the slide's edge."""
    x0, y0, x1, y1 = extent
    ok = np.ones(len(boxes), bool)
    if x0 > 0:
        ok &= boxes[:, 0] >= x0 + margin
    if y0 > 0:
        ok &= boxes[:, 1] >= y0 + margin
    if x1 < slide[0]:
        ok &= boxes[:, 2] <= x1 - margin
    if y1 < slide[1]:
        ok &= boxes[:, 3] <= y1 - margin
    return ok
