"""The evaluation report: what ``wsi-pipeline eval`` prints and writes, assembled from ground truth and
predictions in one frame (COCO patches, or whole slides in level-0 pixels)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from wsi_pipeline.evaluation.detection import evaluate
from wsi_pipeline.types import ImageBoxes


def evaluation_report(
    gts: dict[object, ImageBoxes],
    preds: dict[object, ImageBoxes],
    labels: str,
    *,
    coco: bool,
    gt: Path,
    pred: Path,
    max_dets: int = 100,
    match: str = "iou",
) -> dict[str, Any]:
    """The full report (per class and IoU, overall, confusion) plus what was evaluated; patches (``coco``)
    keep ``max_dets`` detections each, whole slides are never capped."""
    report = evaluate(gts, preds, max_dets=max_dets if coco else None, match=match).summary()
    report.update(
        {
            "mode": "patches (COCO)" if coco else "whole slides (GeoJSON)",
            "match": "IoU" if match == "iou" else "centre (a detection hits a label whose centre it contains)",
            "images": len(gts),
            "labels": labels,
            "gt": str(gt),
            "pred": str(pred),
        }
    )
    return report


def evaluate_saved(
    gt: Path, pred: Path, max_dets: int = 100, missing_as_empty: bool = False, match: str = "iou"
) -> dict[str, Any]:
    """Report for saved predictions: COCO results against a COCO file, or per-slide GeoJSON (a slide
    without predictions is an error unless ``missing_as_empty``; point labels count with ``match="centre"``)."""
    from wsi_pipeline.evaluation.inputs import load_coco, load_slides

    coco = gt.suffix == ".json" and pred.suffix == ".json"
    gts, preds, labels = load_coco(gt, pred) if coco else load_slides(gt, pred, missing_as_empty, match == "centre")
    return evaluation_report(gts, preds, labels, coco=coco, gt=gt, pred=pred, max_dets=max_dets, match=match)


def format_report(report: dict[str, Any]) -> str:
    """The report as a plain-text table (per class: mAP, AP10/30/50, recall) and the confusion line."""

    def f(v: float | None) -> str:
        return "  -  " if v is None else f"{100 * v:5.1f}"

    match = "" if report.get("match", "IoU") == "IoU" else f"; match by {report['match']}"
    lines = [
        f"{report['mode']}: {report['images']} image(s); labels {report['labels']}{match}",
        f"{'class':8s} {'n_gt':>6s} {'mAP':>6s} {'AP10':>6s} {'AP30':>6s} {'AP50':>6s} {'R10':>6s} {'R50':>6s}",
    ]
    for name, row in report["classes"].items():
        lines.append(
            f"{name:8s} {row['n_gt']:6d} {f(row['mAP']):>6s} {f(row.get('AP10')):>6s} {f(row.get('AP30')):>6s} "
            f"{f(row.get('AP50')):>6s} {f(row.get('recall10')):>6s} {f(row.get('recall50')):>6s}"
        )
    o = report["overall"]
    lines.append(
        f"{'mean':8s} {'':6s} {f(o['mAP']):>6s} {f(o.get('AP10')):>6s} {f(o.get('AP30')):>6s} {f(o.get('AP50')):>6s}"
    )
    lines.append("confusion (rows: truth, columns: predicted): " + json.dumps(report["confusion"]))
    return "\n".join(lines)
