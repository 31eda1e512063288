"""Average precision over IoU thresholds, computed the way COCOeval does (pure numpy).

The paper's metric is the mean AP over IoU 0.10, 0.15, ..., 0.70 (cells are small, so low thresholds),
per class and averaged over the four classes, with 101-point interpolated precision. This module
reproduces pycocotools' COCOeval for the "all" area range to 1e-6 (tested on random data) without
its quirks of format: inputs are per-image arrays in any one frame (patch pixels or level-0 slide
pixels), boxes xyxy.

Matching per image, class and threshold (as COCOeval): detections by descending score (stable), each
takes the unmatched ground truth with the highest IoU >= threshold, preferring regular boxes over
ignore regions (``ignore`` = COCO ``iscrowd``: IoU with them is intersection / detection area, they can
absorb any number of detections, and detections matched to them count neither as TP nor FP).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from wsi_pipeline.taxonomy import CLASS_NAMES
from wsi_pipeline.types import ImageBoxes

PAPER_IOUS: tuple[float, ...] = tuple(round(0.10 + 0.05 * i, 2) for i in range(13))  # 0.10 ... 0.70
RECALL_POINTS = np.linspace(0.0, 1.0, 101)


def box_iou(dets: np.ndarray, gts: np.ndarray, crowd: np.ndarray) -> np.ndarray:
    """IoU matrix ``(n_det, n_gt)`` of xyxy boxes; for crowd/ignore ground truth the denominator is the
    detection's own area (COCO)."""
    if len(dets) == 0 or len(gts) == 0:
        return np.zeros((len(dets), len(gts)))
    dets, gts = np.asarray(dets, np.float64), np.asarray(gts, np.float64)
    iw = np.minimum(dets[:, None, 2], gts[None, :, 2]) - np.maximum(dets[:, None, 0], gts[None, :, 0])
    ih = np.minimum(dets[:, None, 3], gts[None, :, 3]) - np.maximum(dets[:, None, 1], gts[None, :, 1])
    inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
    area_d = (dets[:, 2] - dets[:, 0]) * (dets[:, 3] - dets[:, 1])
    area_g = (gts[:, 2] - gts[:, 0]) * (gts[:, 3] - gts[:, 1])
    union = np.where(crowd[None, :], area_d[:, None], area_d[:, None] + area_g[None, :] - inter)
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def centre_hits(dets: np.ndarray, gts: np.ndarray) -> np.ndarray:
    """``(n_det, n_gt)`` similarity for labels that mark a cell's centre (CRIC's nucleus-centred labels):
    0 when the detection does not contain the label's centre, else 0.5 + 0.5 x closeness (1 at the
    detection's own centre, 0.5 at its border), so a threshold of 0.5 means "contains the centre" and the
    greedy matching prefers the nearest centre."""
    if len(dets) == 0 or len(gts) == 0:
        return np.zeros((len(dets), len(gts)))
    dets, gts = np.asarray(dets, np.float64), np.asarray(gts, np.float64)
    gx, gy = (gts[:, 0] + gts[:, 2]) / 2, (gts[:, 1] + gts[:, 3]) / 2
    dx, dy = (dets[:, 0] + dets[:, 2]) / 2, (dets[:, 1] + dets[:, 3]) / 2
    half_w = np.maximum((dets[:, 2] - dets[:, 0]) / 2, 1e-9)[:, None]
    half_h = np.maximum((dets[:, 3] - dets[:, 1]) / 2, 1e-9)[:, None]
    off = np.maximum(np.abs(gx[None] - dx[:, None]) / half_w, np.abs(gy[None] - dy[:, None]) / half_h)
    return np.where(off <= 1.0, 0.5 + 0.5 * (1.0 - off), 0.0)


def _match_image(
    det_boxes: np.ndarray, gt_boxes: np.ndarray, gt_ignore: np.ndarray, ious: Sequence[float], match: str = "iou"
) -> tuple[np.ndarray, np.ndarray]:
    """COCOeval.evaluateImg for one image and class. Detections must be sorted by score.

    Returns ``matched`` (T, n_det) bool and ``det_ignored`` (T, n_det) bool.
    """
    order = np.argsort(gt_ignore, kind="mergesort")  # regular boxes first, ignore regions last
    gt_boxes, gt_ignore = gt_boxes[order], gt_ignore[order]
    iou = centre_hits(det_boxes, gt_boxes) if match == "centre" else box_iou(det_boxes, gt_boxes, gt_ignore)
    n_det, n_gt = len(det_boxes), len(gt_boxes)
    matched = np.zeros((len(ious), n_det), bool)
    det_ignored = np.zeros((len(ious), n_det), bool)
    for t, thr in enumerate(ious):
        gt_taken = np.zeros(n_gt, bool)
        for d in range(n_det):
            best_iou, m = min(thr, 1 - 1e-10), -1
            for g in range(n_gt):
                if gt_taken[g] and not gt_ignore[g]:
                    continue
                if m > -1 and not gt_ignore[m] and gt_ignore[g]:
                    break
                if iou[d, g] < best_iou:
                    continue
                best_iou, m = iou[d, g], g
            if m == -1:
                continue
            det_ignored[t, d] = gt_ignore[m]
            matched[t, d] = True
            gt_taken[m] = True
    return matched, det_ignored


def interpolated_ap(tp: np.ndarray, fp: np.ndarray, n_gt: int) -> tuple[float, float]:
    """(AP, recall) from detections sorted by score: COCO 101-point interpolated precision."""
    if n_gt == 0:
        return float("nan"), float("nan")
    if len(tp) == 0:
        return 0.0, 0.0
    tp_sum, fp_sum = np.cumsum(tp, dtype=np.float64), np.cumsum(fp, dtype=np.float64)
    recall = tp_sum / n_gt
    precision = tp_sum / (fp_sum + tp_sum + np.spacing(1))
    precision = np.maximum.accumulate(precision[::-1])[::-1]  # the precision envelope
    idx = np.searchsorted(recall, RECALL_POINTS, side="left")
    q = np.where(idx < len(precision), precision[np.minimum(idx, len(precision) - 1)], 0.0)
    return float(q.mean()), float(recall[-1])


@dataclass
class DetectionMetrics:
    """AP ``(n_classes, n_ious)`` and recall, NaN where a class has no ground truth."""

    class_ids: tuple[int, ...]
    class_names: tuple[str, ...]
    ious: tuple[float, ...]
    ap: np.ndarray
    recall: np.ndarray
    n_gt: dict[int, int] = field(default_factory=dict)
    confusion: dict[str, dict[str, int]] = field(default_factory=dict)

    def ap_at(self, iou: float) -> np.ndarray:
        """Per-class AP at one IoU threshold."""
        return self.ap[:, self.ious.index(round(iou, 2))]

    @property
    def per_class_map(self) -> np.ndarray:
        """Per-class mean AP over all thresholds (NaN for classes without ground truth)."""
        valid = ~np.isnan(self.ap)
        counts = valid.sum(axis=1)
        sums = np.where(valid, self.ap, 0.0).sum(axis=1)
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)

    @property
    def mean_ap(self) -> float:
        """The paper's metric: mean over classes (with ground truth) of the mean AP over thresholds."""
        vals = self.per_class_map[~np.isnan(self.per_class_map)]
        return float(vals.mean()) if len(vals) else float("nan")

    def summary(self) -> dict[str, object]:
        def clean(v: float) -> float | None:
            return None if np.isnan(v) else round(float(v), 6)

        rows = {}
        for k, (cid, name) in enumerate(zip(self.class_ids, self.class_names, strict=True)):
            rows[name] = {
                "id": cid,
                "n_gt": self.n_gt.get(cid, 0),
                "mAP": clean(self.per_class_map[k]),
                **{f"AP{round(t * 100)}": clean(self.ap[k, j]) for j, t in enumerate(self.ious)},
                **{f"recall{round(t * 100)}": clean(self.recall[k, j]) for j, t in enumerate(self.ious)},
            }
        overall = {"mAP": clean(self.mean_ap)}
        for t in (0.1, 0.3, 0.5):
            if round(t, 2) in self.ious:
                vals = self.ap_at(t)
                vals = vals[~np.isnan(vals)]
                overall[f"AP{round(t * 100)}"] = clean(vals.mean()) if len(vals) else None
        return {"ious": list(self.ious), "overall": overall, "classes": rows, "confusion": self.confusion}


def evaluate(
    gts: dict[object, ImageBoxes],
    preds: dict[object, ImageBoxes],
    classes: dict[int, str] = CLASS_NAMES,
    ious: Sequence[float] = PAPER_IOUS,
    max_dets: int | None = 100,
    confusion_iou: float = 0.3,
    match: str = "iou",
) -> DetectionMetrics:
    """AP per class and IoU threshold over all images (keys of ``gts``; missing predictions = none).

    ``max_dets`` keeps each image's top-scoring detections (COCO's 100 for patches; ``None`` for whole
    slides, which hold thousands of cells). ``match="centre"`` scores labels that mark a cell's centre: a
    detection hits a label when it contains the label's centre (:func:`centre_hits`), one threshold (0.5).
    """
    if match not in ("iou", "centre"):
        raise ValueError(f"match must be 'iou' or 'centre', not {match!r}")
    ious = (0.5,) if match == "centre" else tuple(float(t) for t in ious)
    class_ids = tuple(sorted(classes))
    matches = match_detections(gts, preds, class_ids, ious, max_dets, match)
    ap, recall, n_gt = accumulate(matches, sorted(gts, key=lambda k: (str(type(k)), k)), len(class_ids), len(ious))
    n_gt_all = dict(zip(class_ids, n_gt.tolist(), strict=True))
    confusion = class_confusion(gts, preds, classes, 0.5 if match == "centre" else confusion_iou, match)
    names = tuple(classes[c] for c in class_ids)
    return DetectionMetrics(class_ids, names, ious, ap, recall, n_gt_all, confusion)


@dataclass(frozen=True)
class ClassMatches:
    """One image's detections of one class, matched at every threshold (COCOeval.evaluateImg)."""

    scores: np.ndarray  # (n,) in descending order
    matched: np.ndarray  # (T, n) bool: matched to a ground-truth box or an ignore region
    ignored: np.ndarray  # (T, n) bool: matched to an ignore region (neither TP nor FP)
    n_gt: int  # regular ground-truth boxes of the class in the image


def match_detections(
    gts: dict[object, ImageBoxes],
    preds: dict[object, ImageBoxes],
    class_ids: Sequence[int],
    ious: Sequence[float] = PAPER_IOUS,
    max_dets: int | None = 100,
    match: str = "iou",
) -> dict[object, tuple[ClassMatches, ...]]:
    """Per image of ``gts`` (missing predictions = none), one :class:`ClassMatches` per class of
    ``class_ids``: its top ``max_dets`` detections of that class matched independently of every other
    image, so AP over any list of images needs no new matching (:func:`accumulate`)."""
    out = {}
    for image_id, gt in gts.items():
        pr = preds.get(image_id, ImageBoxes.empty())
        rows = []
        for cid in class_ids:
            g_sel = gt.labels == cid
            g_boxes = gt.boxes[g_sel].reshape(-1, 4)
            g_ign = (gt.ignore[g_sel] if gt.ignore is not None else np.zeros(g_sel.sum(), bool)).astype(bool)
            d_sel = pr.labels == cid
            d_scores = pr.scores[d_sel] if pr.scores is not None else np.ones(d_sel.sum())
            order = np.argsort(-d_scores, kind="mergesort")
            if max_dets is not None:
                order = order[:max_dets]
            m, ig = _match_image(pr.boxes[d_sel].reshape(-1, 4)[order], g_boxes, g_ign, ious, match)
            rows.append(ClassMatches(d_scores[order], m, ig, int((~g_ign).sum())))
        out[image_id] = tuple(rows)
    return out


def accumulate(
    matches: dict[object, tuple[ClassMatches, ...]], image_ids: Sequence[object], n_classes: int, n_ious: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """AP and recall ``(n_classes, n_ious)`` (NaN for a class without ground truth) and the ground-truth
    count ``(n_classes,)`` over ``image_ids`` in that order (ties in score keep it); an id listed twice
    counts twice, as in a bootstrap resample of the test set."""
    ap = np.full((n_classes, n_ious), np.nan)
    recall = np.full_like(ap, np.nan)
    n_gt = np.zeros(n_classes, int)
    for k in range(n_classes):
        rows = [matches[i][k] for i in image_ids]
        n_gt[k] = sum(r.n_gt for r in rows)
        if n_gt[k] == 0:
            continue
        order = np.argsort(-np.concatenate([r.scores for r in rows]), kind="mergesort")
        m_all = np.concatenate([r.matched for r in rows], axis=1)[:, order]
        i_all = np.concatenate([r.ignored for r in rows], axis=1)[:, order]
        for t in range(n_ious):
            keep = ~i_all[t]
            ap[k, t], recall[k, t] = interpolated_ap((m_all[t] & keep)[keep], (~m_all[t] & keep)[keep], int(n_gt[k]))
    return ap, recall, n_gt


def class_confusion(
    gts: dict[object, ImageBoxes],
    preds: dict[object, ImageBoxes],
    classes: dict[int, str],
    iou: float = 0.3,
    match: str = "iou",
    min_score: float = 0.0,
) -> dict[str, dict[str, int]]:
    """Confusion between lesion classes, class-agnostic matching at ``iou``.

    Each regular ground-truth box is paired with the highest-scoring unpaired detection of any class
    overlapping it by at least ``iou`` (greedy by score): rows are true classes, columns predicted
    classes plus ``missed``; unpaired detections count in the ``background`` row. Detections scoring
    below ``min_score`` are left out (the confusion at an operating point; 0 keeps every detection).
    """
    names = {c: classes[c] for c in sorted(classes)}
    table = {n: {m: 0 for m in [*names.values(), "missed"]} for n in [*names.values(), "background"]}
    for image_id, gt in gts.items():
        pr = preds.get(image_id, ImageBoxes.empty())
        keep = ~(gt.ignore.astype(bool) if gt.ignore is not None else np.zeros(len(gt.labels), bool))
        g_boxes, g_labels = gt.boxes[keep].reshape(-1, 4), gt.labels[keep]
        scores = pr.scores if pr.scores is not None else np.ones(len(pr.labels))
        order = np.argsort(-scores, kind="mergesort")
        order = order[scores[order] >= min_score]
        d_boxes = pr.boxes.reshape(-1, 4)[order]
        if match == "centre":
            overlap = centre_hits(d_boxes, g_boxes)
        else:
            overlap = box_iou(d_boxes, g_boxes, np.zeros(len(g_boxes), bool))
        taken = np.zeros(len(g_boxes), bool)
        for d, det_label in enumerate(pr.labels[order]):
            cand = np.where(~taken & (overlap[d] >= iou), overlap[d], -1.0) if len(g_boxes) else np.zeros(0)
            if len(cand) and cand.max() >= 0:
                g = int(cand.argmax())
                taken[g] = True
                table[names[int(g_labels[g])]][names[int(det_label)]] += 1
            elif int(det_label) in names:
                table["background"][names[int(det_label)]] += 1
        for g in np.flatnonzero(~taken):
            table[names[int(g_labels[g])]]["missed"] += 1
    return table
