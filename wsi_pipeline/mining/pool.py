"""``mine``: patches around what a supervised detector finds on unlabeled slides, as the unlabeled pool.

Each slide goes through the same engine as ``infer`` (:func:`~wsi_pipeline.inference.slide.detect_slide`).
Windows of ``infer.patch_size`` input pixels centred on detections at or above ``mine.score_threshold``
are chosen best first, at most ``mine.top_k``, none overlapping a chosen one by more than
``mine.max_overlap`` (IoU), plus ``mine.negative_share`` hard negatives per positive (windows on the best
detections below the threshold). Patches are read again at ``model.input_mpp`` and written as a patch
store per slide (``<slide>.zarr``, the format ``tile`` writes, with chunk checksums), next to
``<slide>.mine.json`` (every patch: level-0 box, kind, best score, class histogram) and, for the whole
pool, ``pool.json`` (the checkpoint's hash, the settings, the slides). :func:`pool_stores` lists the stores
for :class:`~wsi_pipeline.data.datasets.PatchStoreDataset`, the semi-supervised trainer's unlabeled input.

A pool must be patient-disjoint from the labeled set: a slide whose patient (``--patients`` table, else the
slide itself) appears among the labeled slides (``--labeled``: COCO files) is refused.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from wsi_pipeline import __version__
from wsi_pipeline.config import PipelineConfig, config_to_dict, save_config
from wsi_pipeline.data.coco import read_coco
from wsi_pipeline.data.patch_store import (
    create_store,
    fsync_dir,
    make_durable,
    mark_complete,
    record_chunks,
    slide_fingerprint,
    verify_store,
    write_patches,
)
from wsi_pipeline.data.splits import read_patients
from wsi_pipeline.inference.merge import Detections
from wsi_pipeline.inference.predictor import Predictor
from wsi_pipeline.inference.slide import SlideRun, detect_slide
from wsi_pipeline.io import file_sha256, remove_stale_temporaries, write_json_atomic
from wsi_pipeline.runner import BatchResult, isolated
from wsi_pipeline.slide import open_slide
from wsi_pipeline.slide.discover import SLIDE_SUFFIXES, FoundSlide, find_slides
from wsi_pipeline.slide.open import IMAGE_SUFFIXES
from wsi_pipeline.slide.reader import slide_name
from wsi_pipeline.taxonomy import LESION_CLASSES

log = logging.getLogger(__name__)


def labeled_patients(labeled: Sequence[Path], patients: dict[str, str]) -> dict[str, str]:
    """Patients of the labeled set's slides (the COCO files' ``slide_id``): {patient: a slide of theirs}."""
    found = {}
    for path in labeled:
        for img in read_coco(path).images:
            sid = str(img.get("slide_id", ""))
            if sid:  # the table first, then the patient the labeled set recorded, then the slide itself
                found.setdefault(patients.get(sid, str(img.get("patient_id") or sid)), sid)
    return found


def choose_windows(
    dets: Detections, size: float, slide: tuple[float, float], threshold: float, top_k: int, max_overlap: float,
    negatives: float,
) -> list[tuple[np.ndarray, str, int]]:  # fmt: skip
    """Level-0 windows ``size`` wide centred on detections, clamped into the slide: ``(window xyxy, kind,
    detection index)``, positives (score >= threshold) best first, then hard negatives."""
    chosen: list[tuple[np.ndarray, str, int]] = []

    def pick(candidates: np.ndarray, kind: str, limit: int) -> None:
        for i in candidates:
            if limit <= 0:
                return
            cx, cy = (dets.boxes[i, 0] + dets.boxes[i, 2]) / 2, (dets.boxes[i, 1] + dets.boxes[i, 3]) / 2
            x0 = float(np.clip(cx - size / 2, 0, max(0.0, slide[0] - size)))
            y0 = float(np.clip(cy - size / 2, 0, max(0.0, slide[1] - size)))
            window = np.array([x0, y0, x0 + size, y0 + size])
            if all(_iou(window, w) <= max_overlap for w, _, _ in chosen):
                chosen.append((window, kind, int(i)))
                limit -= 1

    order = np.argsort(-dets.scores, kind="stable")
    positive = order[dets.scores[order] >= threshold]
    pick(positive, "positive", top_k)
    n_pos = sum(kind == "positive" for _, kind, _ in chosen)
    pick(order[dets.scores[order] < threshold], "negative", round(negatives * n_pos))
    return chosen


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


@dataclass
class MineOutcome:
    slide_id: str
    path: str
    status: str  # done / skipped / failed
    patches: int | None = None
    reason: str = ""


MineResult = BatchResult[MineOutcome]


def mine_slides(
    inputs: Sequence[str | Path],
    checkpoint: str | Path,
    out: str | Path,
    config: PipelineConfig,
    model: Any,
    device: Any,
    *,
    labeled: Sequence[Path] = (),
    patients: Path | None = None,
    mpp: float | None = None,
) -> MineResult:
    """Build (or complete) the pool in ``out`` from the slides of ``inputs``."""
    out, checkpoint = Path(out), Path(checkpoint)
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out)
    save_config(config, out)
    patient_of = read_patients(patients)
    taken = labeled_patients(labeled, patient_of)
    settings = {"infer": config_to_dict(config)["infer"], "mine": config_to_dict(config)["mine"], "mpp": mpp}
    provenance = {"wsi_pipeline_version": __version__, "checkpoint": str(checkpoint),
                  "checkpoint_sha256": file_sha256(checkpoint), "settings": settings}  # fmt: skip
    result: MineResult = BatchResult(out)
    found, problems = find_slides(inputs, SLIDE_SUFFIXES + IMAGE_SUFFIXES, exclude=[out])
    result.outcomes += [MineOutcome(slide_name(n), n, "failed", reason=r) for n, r in problems]
    predictor = Predictor(model, device)
    for slide in found:
        path, sid = slide.path, slide.slide_id
        patient = patient_of.get(sid, sid)
        if patient in taken and not slide.refused:
            reason = f"patient {patient} is in the labeled set (slide {taken[patient]}): the pool must not hold them"
            log.error("%s: %s", sid, reason)
            slide = FoundSlide(path, sid, reason)
        outcome, reason = (
            (None, slide.refused)
            if slide.refused
            else isolated(sid, _mine_one, path, sid, out, config, predictor, provenance, mpp)
        )
        if outcome is None:
            shutil.rmtree(out / f".tmp-{sid}.zarr", ignore_errors=True)
        result.outcomes.append(outcome or MineOutcome(sid, str(path), "failed", reason=reason))
    done = {o.slide_id: o for o in result.outcomes if o.status in ("done", "skipped")}
    write_json_atomic(
        out / "pool.json",
        {**provenance, "slides": {sid: {"store": f"{sid}.zarr", "manifest": f"{sid}.mine.json", "patches": o.patches}
                                   for sid, o in sorted(done.items())},
         "failed": {o.slide_id: o.reason for o in result.failed}},
    )  # fmt: skip
    return result


def _mine_one(
    path: Path, sid: str, out: Path, config: PipelineConfig, predictor: Predictor, provenance: dict, mpp: float | None
) -> MineOutcome:
    cfg, mine = config.infer, config.mine
    store, manifest = out / f"{sid}.zarr", out / f"{sid}.mine.json"
    fingerprint = slide_fingerprint(path)
    if manifest.is_file() and verify_store(store) is None:
        old = json.loads(manifest.read_text(encoding="utf-8"))
        same = (
            old.get("checkpoint_sha256") == provenance["checkpoint_sha256"]
            and old.get("settings") == provenance["settings"]
            and old.get("slide", {}).get("fingerprint") == fingerprint
        )
        if same:
            return MineOutcome(sid, str(path), "skipped", len(old["patches"]), reason="complete")
    with open_slide(path, "auto", mpp) as reader:
        slide_mpp = reader.require_mpp()
        run = SlideRun()
        parts = list(detect_slide(reader, predictor, cfg, config.model.input_mpp, config.tile.foreground, run))
        dets = Detections.concat(parts, parts[0].probs.shape[1] if parts else 5)
        scale = config.model.input_mpp / slide_mpp
        size = cfg.patch_size * scale
        slide = (float(reader.info.width), float(reader.info.height))
        windows = choose_windows(
            dets, size, slide, mine.score_threshold, mine.top_k, mine.max_overlap, mine.negative_share
        )
        p = cfg.patch_size
        pixels = [reader.read_region(w[0], w[1], p, p, mpp=config.model.input_mpp) for w, _, _ in windows]
    rows = []
    for k, (window, kind, i) in enumerate(windows):
        inside = (dets.boxes[:, 0] >= window[0]) & (dets.boxes[:, 2] <= window[2]) & (dets.boxes[:, 1] >= window[1])
        inside &= dets.boxes[:, 3] <= window[3]
        histogram = {c.code: int(((dets.labels == c.id) & inside & (dets.scores >= mine.score_threshold)).sum())
                     for c in LESION_CLASSES}  # fmt: skip
        rows.append({"index": k, "box": [round(float(v), 1) for v in window], "kind": kind,
                     "max_score": round(float(dets.scores[i]), 5), "classes": histogram})  # fmt: skip
    _write_store(out, sid, windows, pixels, p, mine.compressor, provenance, path, fingerprint, slide_mpp, config)
    slide_record = {"path": str(path.resolve()), "fingerprint": fingerprint, "mpp": slide_mpp}
    record = {**provenance, "slide_id": sid, "slide": slide_record, "detections": len(dets), "patches": rows}
    write_json_atomic(manifest, record)
    log.info("%s: %d patch(es) from %d detection(s)", sid, len(rows), len(dets))
    return MineOutcome(sid, str(path), "done", len(rows))


def _write_store(
    out: Path,
    sid: str,
    windows: list,
    pixels: list[np.ndarray],
    patch: int,
    compressor: str,
    provenance: dict,
    path: Path,
    fingerprint: str,
    slide_mpp: float,
    config: PipelineConfig,
) -> None:
    """The pool's patches of one slide as a patch store (the format ``tile`` writes), atomically."""
    tmp, final = out / f".tmp-{sid}.zarr", out / f"{sid}.zarr"
    shutil.rmtree(tmp, ignore_errors=True)
    boxes = np.array([w for w, _, _ in windows], np.float64).reshape(-1, 4)
    n = len(boxes)
    table = {
        "x": np.rint(boxes[:, 0]).astype(np.int64),
        "y": np.rint(boxes[:, 1]).astype(np.int64),
        "width": np.rint(boxes[:, 2] - boxes[:, 0]).astype(np.int64),
        "height": np.rint(boxes[:, 3] - boxes[:, 1]).astype(np.int64),
        "foreground": np.ones(n, np.float32),
        "row": np.full(n, -1, np.int64),
        "col": np.full(n, -1, np.int64),
    }
    slide = {"path": str(path.resolve()), "fingerprint": fingerprint, "mpp": slide_mpp, "backend": "auto"}
    attrs = {
        "wsi_pipeline_version": __version__,
        "slide_id": sid,
        "kind": "mined pool",
        "slide": {**slide, "backend_choice": "auto"},
        "patch_size": patch,
        "target_mpp": config.model.input_mpp,
        "checkpoint_sha256": provenance["checkpoint_sha256"],
        "coordinates": "level-0 pixels; x, y, width, height per patch",
    }
    create_store(tmp, table, patch, False, compressor, attrs)
    records = [write_patches(tmp, np.arange(n), pixels, compressor)] if n else []
    record_chunks(tmp, records)
    mark_complete(tmp, {})
    make_durable(tmp)
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    fsync_dir(out)
