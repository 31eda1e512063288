"""``infer`` over many slides: per slide a QuPath GeoJSON and a summary; for the batch a ranked table.

Per slide, in ``out``: ``<slide>.geojson`` (or ``.geojson.gz``), then ``<slide>.summary.json`` (written last:
its presence with the same checkpoint, settings and slide file means the slide is done, and a re-run
skips it). A slide that fails is reported with its one-line reason and the others go on; ``summary.csv``
ranks every slide by risk, failures last. Every output records its provenance.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from wsi_pipeline import __version__
from wsi_pipeline.config import PipelineConfig, config_to_dict, save_config
from wsi_pipeline.data.patch_store import PatchStore, slide_fingerprint
from wsi_pipeline.export.qupath import GeoJsonStream
from wsi_pipeline.export.report import slide_visuals, write_report
from wsi_pipeline.inference.predictor import Predictor
from wsi_pipeline.inference.slide import PatchLayout, SlideRun, detect_patches, detect_slide
from wsi_pipeline.inference.summary import SlideSummary
from wsi_pipeline.io import file_sha256, remove_stale_temporaries, write_json_atomic, write_text_atomic
from wsi_pipeline.runner import BatchResult, isolated
from wsi_pipeline.slide import open_slide
from wsi_pipeline.slide.discover import SLIDE_SUFFIXES, find_slides
from wsi_pipeline.slide.open import IMAGE_SUFFIXES
from wsi_pipeline.slide.reader import slide_name
from wsi_pipeline.taxonomy import BY_ID

log = logging.getLogger(__name__)


@dataclass
class InferOutcome:
    slide_id: str
    path: str
    status: str  # done / skipped / failed
    risk: float | None = None
    category: str = ""
    lesions: int | None = None
    seconds: float = 0.0
    reason: str = ""


InferResult = BatchResult[InferOutcome]


def infer_slides(
    inputs: Sequence[str | Path],
    checkpoint: str | Path,
    out: str | Path,
    config: PipelineConfig,
    model: Any,
    device: Any,
    *,
    mpp: float | None = None,
    progress: bool = True,
) -> InferResult:
    """Run ``model`` (the checkpoint's inference detector, in eval mode) over every slide of ``inputs``."""
    out, checkpoint = Path(out), Path(checkpoint)
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out)
    save_config(config, out)
    provenance = {
        "wsi_pipeline_version": __version__,
        "checkpoint": str(checkpoint),
        "checkpoint_sha256": file_sha256(checkpoint),
        "config": config_to_dict(config),
    }
    settings = hashlib.sha256(
        json.dumps({"infer": config_to_dict(config)["infer"], "mpp": mpp}, sort_keys=True).encode()
    ).hexdigest()[:16]
    result: InferResult = BatchResult(out)
    stores, others = split_stores(inputs)
    found, problems = find_slides(others, SLIDE_SUFFIXES + IMAGE_SUFFIXES, exclude=[out], extra=stores)
    for name, reason in problems:
        result.outcomes.append(InferOutcome(slide_name(name), name, "failed", reason=reason))
    predictor = Predictor(model, device)
    for slide in found:
        path, sid = slide.path, slide.slide_id
        outcome, reason = (
            (None, slide.refused)
            if slide.refused
            else isolated(sid, _infer_one, path, sid, out, config, predictor, provenance, settings, mpp)
        )
        result.outcomes.append(outcome or InferOutcome(sid, str(path), "failed", reason=reason))
    write_batch_table(result)
    write_batch_report(result)
    return result


def _infer_one(
    path: Path,
    sid: str,
    out: Path,
    config: PipelineConfig,
    predictor: Predictor,
    provenance: dict[str, Any],
    settings: str,
    mpp: float | None,
) -> InferOutcome:
    cfg = config.infer
    geojson = out / f"{sid}.geojson{'.gz' if cfg.gzip else ''}"
    summary_path = out / f"{sid}.summary.json"
    store = PatchStore(path) if is_patch_store(path) else None
    fingerprint = store.attrs["slide"]["fingerprint"] if store is not None else slide_fingerprint(path)
    done = _finished(summary_path, geojson, provenance["checkpoint_sha256"], settings, fingerprint)
    if done is not None:
        return InferOutcome(
            sid, str(path), "skipped", done["risk"], done["category"], done["lesions"], reason="complete"
        )
    started = time.perf_counter()
    run = SlideRun()
    with contextlib.ExitStack() as stack:
        if store is None:
            reader = stack.enter_context(open_slide(path, "auto", mpp))
            slide_mpp = reader.require_mpp()
            found = detect_slide(reader, predictor, cfg, config.model.input_mpp, config.tile.foreground, run)
        else:
            slide_mpp = float(store.attrs["slide"]["mpp"])
            found = detect_patches(store_layout(store, config.model.input_mpp), store.__getitem__, predictor, cfg, run)
            reader = _recorded_slide(store, stack)
        summary = SlideSummary(cfg.top_n, cfg.triage)
        header = {**provenance, "slide_fingerprint": fingerprint}
        overlay: list[tuple[str, list[float]]] = []  # what the thumbnail shows: confident lesions, bounded
        with GeoJsonStream(
            geojson, slide_id=sid, mpp=slide_mpp, object_type=cfg.object_type, provenance=header
        ) as stream:
            for dets in found:
                stream.write(dets)
                summary.add(dets)
                for k in np.flatnonzero(dets.scores >= OVERLAY_SCORE)[: OVERLAY_MAX - len(overlay)]:
                    overlay.append((BY_ID[int(dets.labels[k])].code, dets.boxes[k].tolist()))
        if run.plan is not None:  # a slide: its plan has the cell area and the thumbnail
            report = summary.result(run.plan.foreground_mm2, run.sharpness)
            thumb, thumb_mpp = run.plan.preview, run.plan.preview_mpp
        else:  # a patch store: cell area from its patches' foreground fractions; thumbnail from the slide
            t = store.table  # type: ignore[union-attr]
            cells_mm2 = float((t["foreground"] * t["width"] * t["height"]).sum()) * (slide_mpp / 1e3) ** 2
            report = summary.result(cells_mm2, run.sharpness)
            thumb_mpp = config.tile.foreground.mask_mpp
            thumb = reader.thumbnail(thumb_mpp) if reader is not None else None
        if reader is not None and thumb is not None:
            report["visuals"] = slide_visuals(reader, thumb, thumb_mpp, overlay, report, out / "report", sid)
        size = store.attrs["slide"] if store is not None else {"width": reader.info.width, "height": reader.info.height}
        report.update(
            {
                "slide_id": sid,
                "slide": {"path": str(path.resolve()), "fingerprint": fingerprint, "mpp": slide_mpp,
                          "width": size["width"], "height": size["height"]},
                "geojson": geojson.name,
                "patches": run.patches,
                "read_wait_s": round(run.read_wait, 2),  # time the model waited for patches
                "seconds": round(time.perf_counter() - started, 2),
                "settings_hash": settings,
                **provenance,
            }
        )  # fmt: skip
    write_json_atomic(summary_path, report)
    log.info("%s: %d lesion(s), risk %.2f (%s)", sid, report["lesions"], report["risk"], report["category"])
    return InferOutcome(
        sid, str(path), "done", report["risk"], report["category"], report["lesions"], report["seconds"]
    )


def is_patch_store(path: Path) -> bool:
    return path.suffix == ".zarr" and path.is_dir()


def split_stores(inputs: Sequence[str | Path]) -> tuple[list[Path], list[str | Path]]:
    """``tile``'s patch stores among the inputs (a ``.zarr`` store, or a folder of them: a ``tile`` output)
    and everything else (slides, folders of slides, list files)."""
    stores: list[Path] = []
    others: list[str | Path] = []
    for raw in inputs:
        path = Path(raw)
        found = sorted(p for p in path.glob("*.zarr") if p.is_dir()) if path.is_dir() else []
        if is_patch_store(path):
            stores.append(path)
        elif found:
            stores += found
        else:
            others.append(raw)
    return stores, others


def store_layout(store: PatchStore, input_mpp: float) -> PatchLayout:
    """A ``tile`` patch store's patches as the detection loop's layout; its patches must be at the model's
    input resolution."""
    if abs(store.target_mpp - input_mpp) > 0.02 * input_mpp:
        raise ValueError(
            f"{store.path}: patches at {store.target_mpp:g} um/px but the model takes {input_mpp:g} um/px "
            "(model.input_mpp); tile at that resolution, or give the slide instead"
        )
    t = store.table
    boxes = np.stack([t["x"], t["y"], t["x"] + t["width"], t["y"] + t["height"]], axis=1).astype(np.float64)
    slide = store.attrs["slide"]
    overlap = int(store.attrs.get("config", {}).get("tile", {}).get("overlap", 0))
    rows, cols = t["row"], t["col"]
    if len(rows) and rows.min() < 0:  # stores without a grid (a mined pool): one block per patch
        rows, cols = np.arange(len(rows)), np.zeros(len(rows), np.int64)
    scale = float(store.attrs.get("scale", slide["mpp"] and store.target_mpp / slide["mpp"]))
    return PatchLayout(
        boxes.reshape(-1, 4), rows, cols, scale, (float(slide["width"]), float(slide["height"])), overlap
    )


def _recorded_slide(store: PatchStore, stack: contextlib.ExitStack) -> Any:
    """The slide a store was cut from, for the report's thumbnail and crops, or ``None`` when it is gone."""
    slide = store.attrs["slide"]
    try:
        return stack.enter_context(
            open_slide(slide["path"], slide.get("backend_choice", "auto"), slide.get("mpp_override"))
        )
    except (OSError, ValueError) as err:
        log.warning("%s: the slide of this store cannot be opened (%s): the report shows no images", store.path, err)
        return None


def _finished(summary: Path, geojson: Path, checkpoint_sha: str, settings: str, fingerprint: str) -> dict | None:
    """The summary of a slide finished with the same checkpoint, settings and slide file, or ``None``."""
    if not summary.is_file() or not geojson.is_file():
        return None
    try:
        data = json.loads(summary.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    same = (
        data.get("checkpoint_sha256") == checkpoint_sha
        and data.get("settings_hash") == settings
        and data.get("slide", {}).get("fingerprint") == fingerprint
    )
    return data if same else None


OVERLAY_SCORE = 0.5  # lesions drawn on the report's thumbnails
OVERLAY_MAX = 5000


def ranked(outcomes: list[InferOutcome]) -> list[InferOutcome]:
    """High risk, review, negative, unsatisfactory, then failed; by falling risk within each."""
    order = {"high risk": 0, "review": 1, "negative": 2, "unsatisfactory": 3, "": 4}
    return sorted(outcomes, key=lambda o: (order.get(o.category, 4), -(o.risk or 0.0), o.slide_id))


def write_batch_report(result: InferResult) -> None:
    """``report.html``: the slides as ranked in ``summary.csv``, with thumbnails and lesion galleries."""
    rows = []
    for o in ranked(result.outcomes):
        path = result.out / f"{o.slide_id}.summary.json"
        if o.status != "failed" and path.is_file():
            rows.append({"slide_id": o.slide_id, "status": o.status, "summary": json.loads(path.read_text())} | {
                "visuals": json.loads(path.read_text()).get("visuals")})  # fmt: skip
        else:
            rows.append({"slide_id": o.slide_id, "status": "failed", "reason": o.reason})
    done = sum(r["status"] != "failed" for r in rows)
    note = (
        f"{done} slide(s) ranked by risk, {len(rows) - done} failed. Risk: max over classes of severity x mean of "
        "the top scores; unsatisfactory: too few cells to judge. ASC-H and SCC are outside the detector's four "
        "classes (ASC-US, LSIL, HSIL, AGC): a negative call does not rule them out. A screening aid, not a diagnosis."
    )
    write_report(result.out / "report.html", rows, "wsi-pipeline slide triage", note)


COLUMNS = ("rank", "slide_id", "category", "risk", "lesions", "status", "path", "reason")


def write_batch_table(result: InferResult) -> None:
    """``summary.csv``: slides ranked by risk (highest first), unsatisfactory and failed slides last."""
    rows = ranked(result.outcomes)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(COLUMNS)
    for rank, o in enumerate(rows, 1):
        risk = "" if o.risk is None else f"{o.risk:.4f}"
        writer.writerow([rank, o.slide_id, o.category, risk, "" if o.lesions is None else o.lesions, o.status, o.path,
                         o.reason])  # fmt: skip
    write_text_atomic(result.out / "summary.csv", buffer.getvalue())
