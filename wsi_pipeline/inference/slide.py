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
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from wsi_pipeline.config import ForegroundConfig, InferConfig
from wsi_pipeline.inference.merge import Detections, cut_flags, merge_detections
from wsi_pipeline.inference.predictor import Predictor
from wsi_pipeline.inference.summary import sharpness
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
    sharpness: list[float | None] = field(default_factory=list)  # focus of each patch read


@dataclass(frozen=True)
class PatchLayout:
    """The patches to detect on: ``boxes`` (n, 4) xyxy in level-0 pixels, their grid ``rows``/``cols``,
    ``scale`` (level-0 pixels per input pixel), the ``slide`` size (level-0) and the ``overlap`` neighbours
    share (input pixels)."""

    boxes: np.ndarray
    rows: np.ndarray
    cols: np.ndarray
    scale: float
    slide: tuple[float, float]
    overlap: int

    @staticmethod
    def of_plan(plan: PatchPlan, slide: tuple[float, float], overlap: int) -> PatchLayout:
        g = plan.kept
        boxes = np.stack([g.x0, g.y0, g.x0 + g.w0, g.y0 + g.h0], axis=1).astype(np.float64).reshape(-1, 4)
        return PatchLayout(boxes, g.rows, g.cols, g.scale, slide, overlap)


def blocks_of(layout: PatchLayout, block_rows: int, block_cols: int) -> list[np.ndarray]:
    """Patch indices grouped into blocks of grid cells, blocks in raster order."""
    if not len(layout.boxes):
        return []
    rows, cols = layout.rows // block_rows, layout.cols // block_cols
    key = rows * (int(cols.max()) + 1) + cols
    order = np.argsort(key, kind="stable")
    splits = np.flatnonzero(np.diff(key[order])) + 1
    return np.split(order, splits)


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
    mpp = reader.require_mpp()
    plan = plan_patches(reader, input_mpp, cfg.patch_size, cfg.overlap, "flush", foreground, cfg.min_foreground)
    if run is not None:
        run.plan, run.mpp = plan, mpp
    layout = PatchLayout.of_plan(plan, (float(reader.info.width), float(reader.info.height)), cfg.overlap)
    p = cfg.patch_size

    def read(i: int) -> np.ndarray:
        x0, y0 = layout.boxes[i, :2]
        return reader.read_region(float(x0), float(y0), p, p, mpp=input_mpp)

    yield from detect_patches(layout, read, predictor, cfg, run)


def detect_patches(
    layout: PatchLayout,
    read: Callable[[int], np.ndarray],
    predictor: Predictor,
    cfg: InferConfig,
    run: SlideRun | None = None,
) -> Iterator[Detections]:
    """The detection loop over any patch source (a slide read on the fly, or a ``tile`` patch store):
    ``read(i)`` gives patch ``i``'s pixels at the model's input resolution."""
    started = time.perf_counter()
    scale = layout.scale
    margin = (layout.overlap + TOUCH_PX) * scale  # level-0 pixels: nearer a block border, wait for the last merge
    blocks = blocks_of(layout, cfg.block_rows, cfg.block_cols)
    order = [int(i) for block in blocks for i in block]
    held: list[Detections] = []

    def read_and_judge(i: int) -> tuple[np.ndarray, float | None]:  # in the reader threads, off the model's path
        pixels = read(i)
        return pixels, sharpness(pixels)

    with ThreadPoolExecutor(max(1, cfg.workers)) as pool:
        ahead: deque[Future[tuple[np.ndarray, float | None]]] = deque()
        queue = iter(order)
        window = max(2 * cfg.batch_size, cfg.workers * 2)

        def refill() -> None:
            while len(ahead) < window:
                i = next(queue, None)
                if i is None:
                    return
                ahead.append(pool.submit(read_and_judge, i))

        refill()
        for block in blocks:
            found: list[Detections] = []
            for start in range(0, len(block), cfg.batch_size):
                batch = block[start : start + cfg.batch_size]
                waited = time.perf_counter()
                judged = [ahead.popleft().result() for _ in batch]
                patches = [pixels for pixels, _ in judged]
                if run is not None:
                    run.read_wait += time.perf_counter() - waited
                    run.sharpness += [focus for _, focus in judged]
                refill()
                for i, out in zip(batch, predictor(patches), strict=True):
                    found.append(_to_level0(out, layout.boxes[int(i)], scale, layout.slide, cfg.min_score))
            merged = merge_detections(Detections.concat(found, NUM_CLASSES + 1), cfg.merge_ios, TOUCH_PX * scale)
            inner = _inside(merged.boxes, _extent(layout, block), layout.slide, margin)
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
    out: dict[str, np.ndarray], patch: np.ndarray, scale: float, slide: tuple[float, float], min_score: float
) -> Detections:
    """One patch's detections in level-0 pixels with their cut flags (``patch``: its level-0 box)."""
    keep = out["scores"] >= min_score
    x0, y0 = float(patch[0]), float(patch[1])
    boxes = out["boxes"][keep].astype(np.float64) * scale + np.array([x0, y0, x0, y0])
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
        cut_flags(boxes, tuple(float(v) for v in patch), slide, TOUCH_PX * scale),
    )


def _extent(layout: PatchLayout, block: np.ndarray) -> tuple[float, float, float, float]:
    b = layout.boxes[block]
    return float(b[:, 0].min()), float(b[:, 1].min()), float(b[:, 2].max()), float(b[:, 3].max())


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
