"""What the semi-supervised tables' unlabeled pool holds: the labels the generator hid in v3's unlabeled
slides, each run's pseudo-label precision and recall against them, the oracle's training set (the
labeled subset plus the pool with those labels) and the pool with those labels alone (dual alignment's
pseudo-labels replaced by the truth). Used by ``benchmarks/ssl_tables.py``."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
V3 = ROOT / "data" / "synthpap-v3"
ORACLE = "oracle-pool"  # supervised on the labeled subset + the pool with its hidden labels: what the pool holds


def hidden_labels(slide_id: str, meta: dict) -> list:
    """The generator's labels of one pool patch (``meta``: the store row, level-0 window), cropped as the
    labeled patches are (``PatchLabel`` in level-0 pixels from the window's corner, ``ignore`` kept)."""
    from wsi_pipeline.data.patches import crop_annotations
    from wsi_pipeline.types import Box

    window = Box(meta["x"], meta["y"], meta["x"] + meta["width"], meta["y"] + meta["height"])
    return crop_annotations(_slide_truth(slide_id), window, 0.5)


@functools.cache
def _slide_truth(slide_id: str) -> list:
    from wsi_pipeline.data.geojson_io import read_geojson

    return read_geojson(V3 / "slides" / f"{slide_id}.geojson")  # the unlabeled slides keep theirs on disk


def pseudo_label_quality(
    checkpoint: Path, pool: Path, thresholds: tuple[float, ...] = (0.5,), iou: float = 0.3, patches: int = 120
) -> dict[str, dict]:
    """Per score threshold: precision and recall of a checkpoint's detections on a fixed sample of pool
    patches against the pool slides' hidden ground truth (IoU >= ``iou``), class-aware, overall and per
    class (``classes``: precision among the detections of that class, recall of its lesions), and
    ``lesion_precision``: the share of detections on some lesion whatever its class."""
    import torch

    from wsi_pipeline.data.pool import open_pool
    from wsi_pipeline.evaluation.detection import box_iou
    from wsi_pipeline.inference.predictor import Predictor
    from wsi_pipeline.modeling.checkpoint import model_from_checkpoint
    from wsi_pipeline.taxonomy import BY_CODE, CLASS_CODES

    model, config = model_from_checkpoint(checkpoint)
    dataset = open_pool(pool, config.model.input_mpp)  # the slides' hidden ground truth: v3's geojson
    chosen = np.random.default_rng(0).choice(len(dataset), min(patches, len(dataset)), replace=False)
    predictor = Predictor(model, torch.device("cpu"))
    ids = [BY_CODE[c].id for c in CLASS_CODES]
    # per threshold, per class (rows): detections, class-aware hits, lesions; and detections on any lesion
    counts = {t: np.zeros((len(ids), 3), int) for t in thresholds}
    on_lesion = dict.fromkeys(thresholds, 0)
    for index in sorted(chosen.tolist()):
        s, i = dataset.index[int(index)]
        store = dataset.stores[s]
        image, meta, sid = store[i], store.row(i), store.attrs["slide_id"]
        labels = [p for p in hidden_labels(sid, meta) if not p.ignore]
        to_patch = image.shape[1] / meta["width"]  # patch pixels per level-0 pixel
        gt = np.array([[p.box.x0, p.box.y0, p.box.x1, p.box.y1] for p in labels], float).reshape(-1, 4) * to_patch
        gt_cls = np.array([BY_CODE[p.label].id for p in labels], int)
        found = predictor([image])[0]
        for t in thresholds:
            keep = found["scores"] >= t
            boxes, cls, scores = found["boxes"][keep], found["labels"][keep], found["scores"][keep]
            overlap = box_iou(boxes, gt, np.zeros(len(gt), bool)) if len(boxes) and len(gt) else None
            if overlap is not None:
                on_lesion[t] += int((overlap.max(axis=1) >= iou).sum())
            for row, c in enumerate(ids):
                mine, theirs = cls == c, gt_cls == c
                hits = 0
                if overlap is not None and mine.any() and theirs.any():
                    hits = _greedy_hits(overlap[np.ix_(mine, theirs)], scores[mine], iou)
                counts[t][row] += [int(mine.sum()), hits, int(theirs.sum())]
    return {f"{t:g}": _quality(c, on_lesion[t], len(chosen)) for t, c in counts.items()}


def _quality(counts: np.ndarray, on_lesion: int, patches: int) -> dict:
    """``counts`` (C, 3): detections, class-aware hits and lesions per class."""
    from wsi_pipeline.taxonomy import CLASS_CODES

    def ratio(a: int, b: int) -> float | None:
        return a / b if b else None

    detections, hits, lesions = (int(v) for v in counts.sum(axis=0))
    return {
        "precision": ratio(hits, detections),
        "recall": ratio(hits, lesions),
        "lesion_precision": ratio(on_lesion, detections),
        "pseudo_labels": detections,
        "lesions": lesions,
        "patches": patches,
        "classes": {
            code: {"pseudo_labels": int(d), "precision": ratio(h, d), "recall": ratio(h, g), "lesions": int(g)}
            for code, (d, h, g) in zip(CLASS_CODES, counts.tolist(), strict=True)
        },
    }


def _greedy_hits(overlap: np.ndarray, scores: np.ndarray, iou: float) -> int:
    """Detections (rows, best score first) matched one-to-one to ground truth (columns) at ``iou``."""
    used = np.zeros(overlap.shape[1], bool)
    for k in np.argsort(-scores):
        j = int(np.argmax(np.where(used, -1, overlap[k])))
        if overlap[k, j] >= iou and not used[j]:
            used[j] = True
    return int(used.sum())


def oracle_json(out: Path, pool: Path, fraction: float, seed: int) -> Path:
    """A COCO file of the labeled subset (``fraction``, ``seed``: the slides the supervised run trains on)
    and every pool patch with the labels the generator hid; the pool's images are written once as JPEG.
    The labeled patches are listed as many times as it takes to match the pool's count, so that a batch of
    4 holds 2 + 2 on average, as the semi-supervised methods' batches do."""
    from wsi_pipeline.data.coco import CocoBuilder
    from wsi_pipeline.data.patches import PatchLabel
    from wsi_pipeline.data.pool import open_pool
    from wsi_pipeline.engine.run import labeled_subset
    from wsi_pipeline.types import Box

    path = out / ORACLE / f"frac{fraction:g}_seed{seed}.json"
    if path.is_file():
        return path
    images = out / ORACLE / "images"
    images.mkdir(parents=True, exist_ok=True)
    train = json.loads((V3 / "patches" / "train.json").read_text())
    names = {c["id"]: c["name"] for c in train["categories"]}
    slides = sorted({str(img["slide_id"]) for img in train["images"]})
    subset = labeled_subset(slides, fraction, seed) or set(slides)
    coco = CocoBuilder(info={"description": f"{ORACLE}: labeled {fraction:g} seed {seed} + pool", "mpp": 0.25})
    boxes_of = {}
    for ann in train["annotations"]:
        boxes_of.setdefault(ann["image_id"], []).append(ann)
    chosen = [img for img in train["images"] if str(img["slide_id"]) in subset]
    dataset = open_pool(pool, 0.25)
    for img in chosen * max(1, round(len(dataset) / len(chosen))):
        target = images / img["file_name"]
        if not target.exists():
            target.symlink_to(V3 / "patches" / "train" / img["file_name"])
        labels = [
            PatchLabel(Box(x, y, x + w, y + h), names[a["category_id"]], bool(a.get("iscrowd")))
            for a in boxes_of.get(img["id"], [])
            for x, y, w, h in [a["bbox"]]
        ]
        coco.add_image(img["file_name"], img["width"], img["height"], labels, slide_id=img["slide_id"], mpp=0.25)
    _add_pool(coco, dataset, images)
    coco.write(path)
    return path


def truth_pool_json(out: Path, pool: Path) -> Path:
    """A COCO file of the pool's patches with the labels the generator hid: the pool, with the truth as
    ``dual_alignment.pseudo_labels: given`` (images shared with :func:`oracle_json`, written once)."""
    from wsi_pipeline.data.coco import CocoBuilder
    from wsi_pipeline.data.pool import open_pool

    path = out / ORACLE / "pool_truth.json"
    if path.is_file():
        return path
    images = out / ORACLE / "images"
    images.mkdir(parents=True, exist_ok=True)
    coco = CocoBuilder(info={"description": "the mined pool with its hidden labels", "mpp": 0.25})
    _add_pool(coco, open_pool(pool, 0.25), images)
    coco.write(path)
    return path


def _add_pool(coco: Any, dataset: Any, images: Path) -> None:
    """Every patch of the pool ``dataset`` into ``coco`` with its hidden labels; the images go to
    ``images`` as JPEG (quality 95) unless there already."""
    from PIL import Image

    from wsi_pipeline.io import atomic_path

    for s, i in dataset.index:
        store = dataset.stores[s]
        meta, sid = store.row(i), str(store.attrs["slide_id"])
        name = f"{sid}_x{meta['x']}_y{meta['y']}.jpg"
        if not (images / name).exists():
            with atomic_path(images / name) as tmp:  # an interrupted write leaves no half image to reuse
                Image.fromarray(store[i]).save(tmp, format="JPEG", quality=95)
        coco.add_image(name, meta["width"], meta["height"], hidden_labels(sid, meta),
                       slide_id=sid, mpp=0.25)  # fmt: skip
    coco.info["image_root"] = "images"
