"""Evaluation: hand-computed AP cases and equality with pycocotools COCOeval on random data."""

from __future__ import annotations

import numpy as np
import pytest

from wsi_pipeline.evaluation.detection import (
    PAPER_IOUS,
    accumulate,
    box_iou,
    class_confusion,
    evaluate,
    interpolated_ap,
    match_detections,
)
from wsi_pipeline.types import ImageBoxes

CLASSES = {1: "ASC-US", 2: "LSIL", 3: "HSIL", 4: "AGC"}


def test_box_iou_hand_values():
    a = np.array([[0, 0, 10, 10]])
    g = np.array([[5, 0, 15, 10], [0, 0, 20, 20]])
    assert np.allclose(box_iou(a, g, np.array([False, False])), [[50 / 150, 100 / 400]])
    # ignore regions: intersection over the detection's own area
    assert np.allclose(box_iou(a, g, np.array([True, True])), [[0.5, 1.0]])


def test_interpolated_ap_hand_values():
    # two ground truths; detections: TP, FP, TP -> precision 1, 1/2, 2/3; envelope 1, 2/3, 2/3
    ap, rec = interpolated_ap(np.array([1, 0, 1]), np.array([0, 1, 0]), 2)
    # recall points 0..0.5 (51 points) at precision 1, 0.51..1.0 (50 points) at 2/3
    assert ap == pytest.approx((51 * 1.0 + 50 * 2 / 3) / 101)
    assert rec == 1.0
    assert interpolated_ap(np.zeros(0), np.zeros(0), 3) == (0.0, 0.0)
    assert np.isnan(interpolated_ap(np.zeros(0), np.zeros(0), 0)[0])


def test_perfect_and_empty_predictions():
    gt = {1: ImageBoxes(np.array([[0, 0, 10, 10], [20, 20, 40, 40]]), np.array([1, 3]), ignore=np.zeros(2, bool))}
    perfect = {1: ImageBoxes(gt[1].boxes, gt[1].labels, scores=np.array([0.9, 0.8]))}
    m = evaluate(gt, perfect, CLASSES)
    # precision is tp / (tp + fp + eps), as in COCOeval
    assert m.ap_at(0.1)[0] == pytest.approx(1.0) and m.ap_at(0.7)[2] == pytest.approx(1.0)
    assert np.isnan(m.ap_at(0.5)[1])  # LSIL has no ground truth: excluded from the mean
    assert m.mean_ap == pytest.approx(1.0)
    assert evaluate(gt, {}, CLASSES).mean_ap == 0.0
    assert m.confusion["ASC-US"]["ASC-US"] == 1 and m.confusion["HSIL"]["HSIL"] == 1


def test_confusion_counts_class_swaps_misses_and_false_positives():
    gt = {0: ImageBoxes(np.array([[0, 0, 10, 10], [50, 50, 60, 60]]), np.array([1, 2]), ignore=np.zeros(2, bool))}
    pred = {
        0: ImageBoxes(np.array([[1, 1, 10, 10], [100, 100, 110, 110]]), np.array([3, 4]), scores=np.array([0.9, 0.5]))
    }
    c = evaluate(gt, pred, CLASSES).confusion
    assert c["ASC-US"]["HSIL"] == 1  # an ASC-US cell called HSIL
    assert c["LSIL"]["missed"] == 1
    assert c["background"]["AGC"] == 1
    confident = class_confusion(gt, pred, CLASSES, min_score=0.6)  # the AGC false positive scores 0.5
    assert confident["ASC-US"]["HSIL"] == 1 and confident["background"]["AGC"] == 0
    none = class_confusion(gt, pred, CLASSES, min_score=0.95)  # nothing left: both lesions missed
    assert none["ASC-US"]["missed"] == 1 and none["LSIL"]["missed"] == 1 and none["ASC-US"]["HSIL"] == 0


def _random_case(seed: int):
    rng = np.random.default_rng(seed)
    gts, preds = {}, {}
    for image_id in range(1, 9):
        n = int(rng.integers(0, 12))
        xy = rng.uniform(0, 1000, (n, 2))
        wh = rng.uniform(10, 120, (n, 2))
        boxes = np.concatenate([xy, xy + wh], axis=1)
        labels = rng.choice([1, 2, 3], n)  # class 4 never in ground truth
        ignore = rng.uniform(size=n) < 0.1
        gts[image_id] = ImageBoxes(boxes, labels, ignore=ignore)
        # detections: jittered copies (some relabelled), duplicates, random false positives
        keep = rng.uniform(size=n) < 0.8
        jitter = rng.normal(0, 8, (int(keep.sum()), 4))
        d_boxes = boxes[keep] + jitter
        d_labels = np.where(
            rng.uniform(size=int(keep.sum())) < 0.85, labels[keep], rng.choice([1, 2, 3, 4], int(keep.sum()))
        )
        m = int(rng.integers(0, 10))
        fxy = rng.uniform(0, 1000, (m, 2))
        f_boxes = np.concatenate([fxy, fxy + rng.uniform(10, 120, (m, 2))], axis=1)
        d_boxes = np.concatenate([d_boxes, f_boxes, d_boxes[:2] + 3])
        d_labels = np.concatenate([d_labels, rng.choice([1, 2, 3, 4], m), d_labels[:2]])
        d_boxes[:, 2:] = np.maximum(d_boxes[:, 2:], d_boxes[:, :2] + 1)
        preds[image_id] = ImageBoxes(d_boxes, d_labels.astype(int), scores=rng.uniform(size=len(d_labels)))
    return gts, preds


def test_accumulate_over_a_resample_equals_evaluate_on_its_copies():
    """A bootstrap draw of images (repeats included) scored from the matches made once equals a fresh
    evaluation of the drawn images under new keys."""
    gts, preds = _random_case(3)
    matches = match_detections(gts, preds, sorted(CLASSES))
    drawn = [5, 1, 5, 8, 2, 2, 2, 7]
    ap, recall, n_gt = accumulate(matches, drawn, len(CLASSES), len(PAPER_IOUS))
    copies = {(k, i): gts[i] for k, i in enumerate(drawn)}
    fresh = evaluate(copies, {(k, i): preds[i] for k, i in enumerate(drawn)}, CLASSES)
    assert np.allclose(ap, fresh.ap, equal_nan=True) and np.allclose(recall, fresh.recall, equal_nan=True)
    assert dict(zip(sorted(CLASSES), n_gt.tolist(), strict=True)) == fresh.n_gt
    assert n_gt[0] == sum(int(((gts[i].labels == 1) & ~gts[i].ignore).sum()) for i in drawn)  # repeats count
    assert np.isnan(ap[3]).all()  # AGC: no ground truth in any image
    whole = evaluate(gts, preds, CLASSES)
    assert np.allclose(accumulate(matches, sorted(gts), 4, len(PAPER_IOUS))[0], whole.ap, equal_nan=True)


def _coco_ap(gts, preds, max_dets):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images, anns, dets = [], [], []
    for image_id, g in gts.items():
        images.append({"id": image_id, "width": 1200, "height": 1200})
        for box, label, ign in zip(g.boxes, g.labels, g.ignore, strict=True):
            x0, y0, x1, y1 = box.tolist()
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": image_id,
                    "category_id": int(label),
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "area": (x1 - x0) * (y1 - y0),
                    "iscrowd": int(ign),
                }
            )
        p = preds[image_id]
        for box, label, score in zip(p.boxes, p.labels, p.scores, strict=True):
            x0, y0, x1, y1 = box.tolist()
            dets.append(
                {
                    "image_id": image_id,
                    "category_id": int(label),
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "score": float(score),
                }
            )
    coco = COCO()
    coco.dataset = {
        "images": images,
        "annotations": anns,
        "categories": [{"id": c, "name": n} for c, n in CLASSES.items()],
    }
    coco.createIndex()
    ev = COCOeval(coco, coco.loadRes(dets), "bbox")
    ev.params.iouThrs = np.array(PAPER_IOUS)
    ev.params.maxDets = [max_dets]
    ev.params.areaRng, ev.params.areaRngLbl = [[0, 1e10]], ["all"]
    ev.evaluate()
    ev.accumulate()
    prec = ev.eval["precision"][:, :, :, 0, 0]  # (T, R, K)
    ap = np.full((len(CLASSES), len(PAPER_IOUS)), np.nan)
    for k in range(len(CLASSES)):
        for t in range(len(PAPER_IOUS)):
            p = prec[t, :, k]
            if (p > -1).any():
                ap[k, t] = p[p > -1].mean()
    return ap, ev.eval["recall"][:, :, 0, 0].T


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("max_dets", [100, 3])
def test_equals_pycocotools_cocoeval(seed, max_dets, capsys):
    gts, preds = _random_case(seed)
    ours = evaluate(gts, preds, CLASSES, max_dets=max_dets)
    ref_ap, ref_recall = _coco_ap(gts, preds, max_dets)
    assert np.array_equal(np.isnan(ours.ap), np.isnan(ref_ap))
    assert np.allclose(np.nan_to_num(ours.ap), np.nan_to_num(ref_ap), atol=1e-6), (ours.ap, ref_ap)
    ref_recall = np.where(ref_recall < 0, np.nan, ref_recall)
    assert np.allclose(np.nan_to_num(ours.recall), np.nan_to_num(ref_recall), atol=1e-6)


def test_centre_matching_by_hand():
    from wsi_pipeline.evaluation.detection import centre_hits

    dets = np.array([[0.0, 0.0, 10, 10], [20, 20, 40, 30]])
    gts = np.array([[5.0, 5, 5, 5], [9, 1, 9, 1], [30, 25, 30, 25], [50, 50, 52, 52]])  # centres (points)
    hits = centre_hits(dets, gts)
    # det 0 (centre 5,5; half-size 5): gt 0 at its centre -> 1.0; gt 1 offset (4, 4)/5 = 0.8 -> 0.6
    assert hits[0].tolist() == pytest.approx([1.0, 0.6, 0.0, 0.0])
    assert hits[1].tolist() == pytest.approx([0.0, 0.0, 1.0, 0.0])
    gt = {"s": ImageBoxes(gts[:3], np.array([3, 3, 1]), ignore=np.zeros(3, bool))}
    # one detection containing two HSIL centres hits one of them (the nearest); the ASC-US one is hit too
    pred = {"s": ImageBoxes(dets, np.array([3, 1]), scores=np.array([0.9, 0.8]))}
    m = evaluate(gt, pred, CLASSES, match="centre")
    assert m.ious == (0.5,) and m.summary()["classes"]["ASC-US"]["mAP"] == pytest.approx(1.0)
    assert m.recall[2, 0] == pytest.approx(0.5)  # HSIL: 1 of 2 centres
    with pytest.raises(ValueError, match="match must be"):
        evaluate(gt, pred, CLASSES, match="box")


def test_slide_level_metrics_and_thresholds_by_hand():
    from wsi_pipeline.evaluation.slides import choose_thresholds, rates, roc_auc

    pos, neg = [0.9, 0.7, 0.4, 0.35], [0.1, 0.2, 0.3, 0.45, 0.05]
    assert rates(pos, neg, 0.4) == (0.75, 0.8)  # 0.35 missed; 0.45 flagged
    assert roc_auc(pos, neg) == pytest.approx(18 / 20)  # 0.4 and 0.35 each lose to 0.45
    review, high = choose_thresholds(pos, neg, sensitivity=1.0, specificity=1.0)
    assert review == 0.35  # every positive flagged
    assert 0.45 < high <= 0.45 + 1e-12  # every negative below: just above the highest one, 0.45
    assert choose_thresholds(pos, neg, 1.0, 0.8) == (0.35, 0.35)  # 4 of 5 below 0.3+: high never below review
    assert choose_thresholds(pos, neg, 0.5, 1.0) == (0.7, 0.7)  # half the positives: 0.9 and 0.7
    with pytest.raises(ValueError, match="needs positive"):
        choose_thresholds([], neg, 1.0, 0.9)
