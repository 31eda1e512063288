"""A trained detector on COCO patch sets: validation during training, ``eval --checkpoint``, benchmarks.

The same :class:`~wsi_pipeline.inference.predictor.Predictor` as whole slides go through, fed by reader
threads. Boxes are xyxy in patch pixels (the patch's own frame, as stored in the COCO file); labels are
lesion class ids (``wsi_pipeline.taxonomy``).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from wsi_pipeline.data.datasets import CocoPatchDataset
from wsi_pipeline.inference.predictor import Predictor
from wsi_pipeline.types import ImageBoxes


def predict_patches(
    model: torch.nn.Module, dataset: CocoPatchDataset, device: torch.device, batch: int = 4, progress: bool = False,
    workers: int = 2,
) -> dict[int, ImageBoxes]:  # fmt: skip
    """Detections per COCO image id for every (unaugmented) patch of ``dataset``; ``model`` in eval mode.
    ``workers`` threads decode the next patches while the model runs."""
    predictor = Predictor(model, device)
    preds: dict[int, ImageBoxes] = {}
    starts = range(0, len(dataset), batch)
    with (
        ThreadPoolExecutor(max(1, workers)) as pool,
        tqdm(total=len(dataset), desc="predict", unit="patch", disable=not progress) as bar,
    ):
        loads = pool.map(lambda i: dataset.load(i)[0], range(len(dataset)))  # lazily consumed, in order
        for start in starts:
            indices = range(start, min(start + batch, len(dataset)))
            outputs = predictor([next(loads) for _ in indices])
            for i, out in zip(indices, outputs, strict=True):
                preds[dataset.image_id(i)] = ImageBoxes(out["boxes"], out["labels"], scores=out["scores"])
            bar.update(len(indices))
    return preds


def coco_predictions(
    model: torch.nn.Module, dataset: CocoPatchDataset, device: torch.device, batch: int = 4
) -> tuple[dict[object, ImageBoxes], dict[int, ImageBoxes]]:
    """``(ground truth, predictions)`` per image id, ready for :func:`~wsi_pipeline.evaluation.detection.evaluate`."""
    return coco_ground_truth(dataset), predict_patches(model, dataset, device, batch)


def coco_ground_truth(dataset: CocoPatchDataset) -> dict[object, ImageBoxes]:
    """Ground truth of ``dataset``'s patches per image id, read as ``wsi-pipeline eval`` reads it
    (:func:`load_coco_gt`: ``iscrowd`` boxes, lesions cut by the patch edge, are ignore regions), so
    validation, benchmarks and ``eval`` agree; uses the dataset's parsed COCO file."""
    from wsi_pipeline.evaluation.inputs import load_coco_gt

    all_gts = load_coco_gt(dataset.coco)[0]
    return {dataset.image_id(i): all_gts[dataset.image_id(i)] for i in range(len(dataset))}


def to_coco_results(preds: dict[int, ImageBoxes], dataset: CocoPatchDataset) -> list[dict[str, Any]]:
    """Detections in the COCO results format (``image_id``, ``category_id`` of the dataset's own
    categories, ``bbox`` as ``[x, y, w, h]``, ``score``), sorted by image and falling score."""
    category = {}
    for coco_id, lesion_id in sorted(dataset.categories.items()):
        if lesion_id is not None:
            category.setdefault(lesion_id, coco_id)
    results = []
    for image_id in sorted(preds):
        p = preds[image_id]
        for k in np.argsort(-p.scores, kind="stable"):
            x0, y0, x1, y1 = (round(float(v), 2) for v in p.boxes[k])
            results.append(
                {
                    "image_id": image_id,
                    "category_id": category[int(p.labels[k])],
                    "bbox": [x0, y0, round(x1 - x0, 2), round(y1 - y0, 2)],
                    "score": round(float(p.scores[k]), 5),
                }
            )
    return results


def predict_coco_file(
    gt_path: Path, checkpoint: Path, device: torch.device, save_pred: Path | None = None, progress: bool = False
) -> tuple[dict[object, ImageBoxes], dict[object, ImageBoxes], str]:
    """Run a checkpoint's model on the patches of a COCO file: ``(gts, preds, label report)`` exactly as
    :func:`~wsi_pipeline.evaluation.inputs.load_coco` gives them for saved predictions (``save_pred``
    writes those, atomically), so fresh and saved predictions evaluate identically."""
    from wsi_pipeline.data.coco import read_coco
    from wsi_pipeline.evaluation.inputs import coco_detections, load_coco_gt
    from wsi_pipeline.io import write_json_atomic
    from wsi_pipeline.modeling.checkpoint import model_from_checkpoint

    coco = read_coco(gt_path)
    gts, cats, labels = load_coco_gt(coco)
    dataset = CocoPatchDataset(coco)
    model, config = model_from_checkpoint(checkpoint, map_location=device)
    dataset.check_mpp(config.model.input_mpp)
    results = to_coco_results(predict_patches(model.to(device), dataset, device, progress=progress), dataset)
    if save_pred is not None:
        write_json_atomic(save_pred, results)
    return gts, coco_detections(results, cats, gts, checkpoint, gt_path), labels


def evaluate_checkpoint(
    gt_path: Path,
    checkpoint: Path,
    device: torch.device,
    save_pred: Path | None = None,
    max_dets: int = 100,
    progress: bool = False,
    match: str = "iou",
) -> dict[str, Any]:
    """``wsi-pipeline eval --checkpoint``: the evaluation report of a checkpoint's model on a COCO file's
    patches (``save_pred`` also keeps its predictions as COCO results)."""
    from wsi_pipeline.evaluation.report import evaluation_report

    gts, preds, labels = predict_coco_file(gt_path, checkpoint, device, save_pred, progress)
    pred = save_pred or checkpoint
    return evaluation_report(gts, preds, labels, coco=True, gt=gt_path, pred=pred, max_dets=max_dets, match=match)
