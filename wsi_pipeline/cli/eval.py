"""``wsi-pipeline eval``: AP over IoU 0.10-0.70, AP10/30/50, recall and class confusion."""

from __future__ import annotations

import json
from pathlib import Path

import click

from wsi_pipeline.cli.common import fail_cleanly, log, progress_enabled


@click.command("eval")
@click.option(
    "--gt",
    "gt_path",
    required=True,
    type=click.Path(exists=True, path_type=Path),
    help="Ground truth: a COCO .json, or a GeoJSON file / folder of per-slide GeoJSON.",
)
@click.option(
    "--pred",
    "pred_path",
    type=click.Path(exists=True, path_type=Path),
    help="Predictions: COCO results .json, or GeoJSON with scores (file or folder).",
)
@click.option(
    "--checkpoint",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Instead of --pred: predict the COCO patches of --gt with this trained model (checkpoints/*.pt).",
)
@click.option(
    "--save-pred",
    type=click.Path(dir_okay=False, path_type=Path),
    help="With --checkpoint: also write its predictions as COCO results (re-evaluate with --pred).",
)
@click.option("--device", default="auto", show_default=True, help="With --checkpoint: auto, cpu, cuda, cuda:1, ...")
@click.option(
    "--out",
    "out_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the full report (per class, per IoU, confusion) as JSON.",
)
@click.option(
    "--max-dets",
    type=int,
    default=100,
    show_default=True,
    help="Detections kept per patch (COCO's 100); whole slides are never capped.",
)
@fail_cleanly
def eval_cmd(
    gt_path: Path,
    pred_path: Path | None,
    checkpoint: Path | None,
    save_pred: Path | None,
    device: str,
    out_path: Path | None,
    max_dets: int,
) -> None:
    """Evaluate detections the paper's way: mean AP over IoU 0.10, 0.15, ..., 0.70 per lesion class.

    \b
    Examples:
      wsi-pipeline eval --gt data/synthpap-v3/patches/test.json --pred preds.json
      wsi-pipeline eval --gt data/synthpap-v3/patches/test.json --checkpoint runs/tiny/checkpoints/best.pt
      wsi-pipeline eval --gt data/synthpap-v3/slides --pred predictions/ --out report.json
    """
    from wsi_pipeline.evaluation.detection import evaluate
    from wsi_pipeline.evaluation.inputs import CLASSES, load_coco, load_slides
    from wsi_pipeline.io import write_json_atomic

    if (pred_path is None) == (checkpoint is None):
        raise click.UsageError("give either --pred (saved predictions) or --checkpoint (a trained model)")
    if checkpoint is None and save_pred is not None:
        raise click.UsageError("--save-pred goes with --checkpoint")
    if checkpoint is not None and gt_path.suffix != ".json":
        raise click.UsageError(f"--checkpoint predicts COCO patch sets; {gt_path} is not a COCO .json")
    coco = gt_path.suffix == ".json" and (pred_path is None or pred_path.suffix == ".json")
    if checkpoint is not None:  # torch is imported only here: evaluating saved predictions stays light
        from wsi_pipeline.engine.predict import predict_coco_file
        from wsi_pipeline.engine.run import select_device

        gts, preds, labels = predict_coco_file(
            gt_path, checkpoint, select_device(device), save_pred, progress=progress_enabled()
        )
        if save_pred is not None:
            log.info("predictions written to %s", save_pred)
        pred_path = save_pred or checkpoint
    elif coco:
        gts, preds, labels = load_coco(gt_path, pred_path)
    else:
        gts, preds, labels = load_slides(gt_path, pred_path)
    metrics = evaluate(gts, preds, CLASSES, max_dets=max_dets if coco else None)
    report = metrics.summary()
    report.update(
        {
            "mode": "patches (COCO)" if coco else "whole slides (GeoJSON)",
            "images": len(gts),
            "labels": labels,
            "gt": str(gt_path),
            "pred": str(pred_path),
        }
    )
    click.echo(format_report(report))
    if out_path is not None:
        write_json_atomic(out_path, report)
        log.info("report written to %s", out_path)


def format_report(report: dict) -> str:
    def f(v: float | None) -> str:
        return "  -  " if v is None else f"{100 * v:5.1f}"

    lines = [
        f"{report['mode']}: {report['images']} image(s); labels {report['labels']}",
        f"{'class':8s} {'n_gt':>6s} {'mAP':>6s} {'AP10':>6s} {'AP30':>6s} {'AP50':>6s} {'R10':>6s} {'R50':>6s}",
    ]
    for name, row in report["classes"].items():
        lines.append(
            f"{name:8s} {row['n_gt']:6d} {f(row['mAP']):>6s} {f(row['AP10']):>6s} {f(row['AP30']):>6s} "
            f"{f(row['AP50']):>6s} {f(row['recall10']):>6s} {f(row['recall50']):>6s}"
        )
    o = report["overall"]
    lines.append(
        f"{'mean':8s} {'':6s} {f(o['mAP']):>6s} {f(o.get('AP10')):>6s} {f(o.get('AP30')):>6s} {f(o.get('AP50')):>6s}"
    )
    lines.append("confusion (rows: truth, columns: predicted): " + json.dumps(report["confusion"]))
    return "\n".join(lines)
