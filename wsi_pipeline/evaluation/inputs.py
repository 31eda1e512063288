"""Load ground truth and predictions for evaluation: COCO patch sets or per-slide GeoJSON.

* COCO: a ground-truth COCO file (``iscrowd`` boxes are ignore regions) and predictions in the COCO
  results format (a list of ``{image_id, category_id, bbox: [x, y, w, h], score}``, or a COCO file whose
  annotations carry scores). Boxes in patch pixels.
* Slides: ground-truth GeoJSON and prediction GeoJSON (features with a ``score``), one file per slide,
  matched by name (``<slide>.geojson`` in both folders, or ``<slide>.pred.geojson``). Boxes in level-0
  pixels; each slide counts as one image with no cap on detections.

Category names are mapped through the taxonomy, so files using Bethesda names evaluate correctly.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from wsi_pipeline.data.annotation_match import names_slide
from wsi_pipeline.data.coco import CocoFile, lesion_categories, read_coco
from wsi_pipeline.data.geojson_io import read_geojson
from wsi_pipeline.taxonomy import BY_CODE, LabelTally
from wsi_pipeline.types import ImageBoxes

log = logging.getLogger(__name__)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not a readable JSON file ({err})") from None


def load_coco(gt_path: Path, pred_path: Path) -> tuple[dict[object, ImageBoxes], dict[object, ImageBoxes], str]:
    """Ground truth and predictions keyed by image id, and a one-line label report."""
    gts, cats, labels = load_coco_gt(gt_path)
    pred = _read_json(pred_path)
    dets = pred.get("annotations") if isinstance(pred, dict) else pred
    if not isinstance(dets, list):
        raise ValueError(f"{pred_path}: expected a COCO results list of detections")
    if isinstance(pred, dict) and "categories" in pred:
        tally = LabelTally()
        cats = lesion_categories(pred["categories"], tally)
        if not any(v is not None for v in cats.values()):
            raise ValueError(f"{pred_path}: no category maps to a lesion class ({tally.summary()})")
    return gts, coco_detections(dets, cats, gts, pred_path, gt_path), labels


def load_coco_gt(gt: Path | CocoFile) -> tuple[dict[object, ImageBoxes], dict[int, int | None], str]:
    """Ground truth of a COCO file per image id (``iscrowd`` boxes as ignore regions), its category
    ids mapped to lesion ids (``None``: not a lesion class), and a one-line label report."""
    coco = gt if isinstance(gt, CocoFile) else read_coco(gt)
    if not any(v is not None for v in coco.categories.values()):
        raise ValueError(f"{coco.path}: no category maps to a lesion class ({coco.labels})")
    gts = {}
    for image_id, anns in coco.annotations.items():
        rows = []
        for ann in anns:
            cid = coco.lesion_id(ann)
            if cid is not None:
                x, y, w, h = ann["bbox"]
                rows.append(([x, y, x + w, y + h], cid, bool(ann.get("iscrowd", 0))))
        gts[image_id] = _image_boxes(rows, "ignore")
    return gts, coco.categories, coco.labels


def coco_detections(
    dets: list[Any], cats: dict[int, int | None], gts: dict[object, ImageBoxes], source: Path, gt_path: Path
) -> dict[object, ImageBoxes]:
    """COCO results (``image_id``, ``category_id``, ``bbox`` xywh, ``score``) per image id; detections of
    categories outside the lesion classes are dropped. ``source`` names the predictions in errors."""
    found: dict[int, list[tuple[list[float], int, float]]] = {}
    for k, det in enumerate(dets):
        try:
            x, y, w, h = (float(v) for v in det["bbox"])
            category = int(det["category_id"])
            score = float(det["score"])
            image_id = int(det["image_id"])
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{source}: detection {k} lacks image_id/category_id/bbox/score ({err})") from None
        check_detection(source, f"detection {k}", [x, y, x + w, y + h], score)
        if category not in cats:
            known = ", ".join(str(c) for c in sorted(cats))
            raise ValueError(
                f"{source}: detection {k}: category_id {category} is not a ground-truth category ({known})"
            )
        cid = cats[category]
        if cid is None:
            continue
        if image_id not in gts:
            raise ValueError(f"{source}: detection {k} refers to image {image_id}, not in {gt_path.name}")
        found.setdefault(image_id, []).append(([x, y, x + w, y + h], cid, score))
    return {i: _image_boxes(v, "scores") for i, v in found.items()}


def check_detection(source: Path, what: str, xyxy: list[float], score: Any) -> None:
    """One-line ``ValueError`` naming the file and the record for a score that is not a probability or a
    box that is not finite with positive width and height."""
    if not isinstance(score, int | float) or isinstance(score, bool) or not 0.0 <= score <= 1.0:
        raise ValueError(f"{source}: {what}: score {score!r} is not a probability in [0, 1]")
    if not all(math.isfinite(v) for v in xyxy):
        raise ValueError(f"{source}: {what}: box {xyxy} has non-finite coordinates")
    if xyxy[2] <= xyxy[0] or xyxy[3] <= xyxy[1]:
        raise ValueError(f"{source}: {what}: box {[round(v, 2) for v in xyxy]} has no positive width and height")


def _image_boxes(rows: list[tuple[list[float], int, Any]], extra: str) -> ImageBoxes:
    """``(xyxy, class id, ignore flag or score)`` rows as :class:`ImageBoxes`."""
    boxes = np.array([b for b, _, _ in rows], float).reshape(-1, 4)
    labels = np.array([c for _, c, _ in rows], int)
    if extra == "ignore":
        return ImageBoxes(boxes, labels, ignore=np.array([x for _, _, x in rows], bool))
    return ImageBoxes(boxes, labels, scores=np.array([x for _, _, x in rows], float))


def _geojson_files(path: Path) -> dict[str, Path]:
    """Per-slide GeoJSON (``.geojson`` or ``.geojson.gz``) by slide id (``<slide>[.pred].geojson[.gz]``)."""
    files = (
        [path]
        if path.is_file()
        else sorted(p for p in path.glob("*.geojson*") if p.name.endswith((".geojson", ".geojson.gz")))
    )
    if not files:
        raise ValueError(f"{path}: no GeoJSON files")
    return {p.name.removesuffix(".gz").removesuffix(".geojson").removesuffix(".pred"): p for p in files}


def _by_slide(gt_files: dict[str, Path], slides: set[str]) -> dict[str, Path]:
    """Ground-truth files keyed by the slide they name (``cric-<id>-gt.geojson`` -> ``<id>``, the whole-token
    rule of :mod:`wsi_pipeline.data.annotation_match`, longest name first); files naming no predicted slide
    keep their own name."""
    keyed: dict[str, Path] = {}
    for stem, path in gt_files.items():
        named = [sid for sid in slides if sid == stem or names_slide(stem, sid)]
        key = stem if stem in slides or not named else max(named, key=len)
        if key in keyed:
            raise ValueError(f"{path}: names slide {key}, as {keyed[key].name} does: one ground-truth file per slide")
        keyed[key] = path
    return keyed


def load_slides(
    gt_path: Path, pred_path: Path, missing_as_empty: bool = False, points: bool = False
) -> tuple[dict[object, ImageBoxes], dict[object, ImageBoxes], str]:
    """Per-slide ground truth and predictions keyed by slide id. A ground-truth slide without a prediction
    file is an error naming the slides (``infer`` writes a file for every slide, empty or not), unless
    ``missing_as_empty`` counts them as slides where nothing was detected. Prediction labels outside the
    four classes are dropped with a warning that counts them. ``points``: ground-truth Points (cell centres)
    are kept, as 1-pixel boxes, for centre matching."""
    gt_files, pred_files = _geojson_files(gt_path), _geojson_files(pred_path)
    if gt_path.is_file() and pred_path.is_file():
        pred_files = {next(iter(gt_files)): pred_path}
    gt_files = _by_slide(gt_files, set(pred_files))
    unknown = sorted(set(pred_files) - set(gt_files))
    if unknown:
        raise ValueError(f"{pred_path}: predictions for slides without ground truth: {', '.join(unknown[:5])}")
    absent = sorted(set(gt_files) - set(pred_files))
    if absent and not missing_as_empty:
        shown = ", ".join(absent[:5]) + (f" and {len(absent) - 5} more" if len(absent) > 5 else "")
        raise ValueError(
            f"{pred_path}: no predictions for {len(absent)} ground-truth slide(s): {shown} "
            "(--missing-as-empty counts them as slides where nothing was detected)"
        )
    tally, pred_tally = LabelTally(), LabelTally()
    gts, preds = {}, {}
    for sid, path in gt_files.items():
        anns = read_geojson(path, tally, point_box=1.0 if points else None)
        gts[sid] = ImageBoxes(
            np.array([a.box.xyxy for a in anns], float).reshape(-1, 4),
            np.array([BY_CODE[a.label].id for a in anns], int),
            ignore=np.zeros(len(anns), bool),
            frame="level0",
        )
        if sid in pred_files:
            dets = read_geojson(pred_files[sid], pred_tally)
            for i, a in enumerate(dets):
                if "score" not in a.properties:
                    raise ValueError(f"{pred_files[sid]}: feature {i} has no score (properties.score)")
                check_detection(pred_files[sid], f"feature {i}", list(a.box.xyxy), a.properties["score"])
            preds[sid] = ImageBoxes(
                np.array([a.box.xyxy for a in dets], float).reshape(-1, 4),
                np.array([BY_CODE[a.label].id for a in dets], int),
                scores=np.array([a.properties["score"] for a in dets], float),
                frame="level0",
            )
    if pred_tally.other or pred_tally.unknown or pred_tally.skipped:
        log.warning("%s: prediction labels not evaluated: %s", pred_path, pred_tally.summary())
    return gts, preds, tally.summary()
