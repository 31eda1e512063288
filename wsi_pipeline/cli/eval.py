"""``wsi-pipeline eval``: AP over IoU 0.10-0.70, AP10/30/50, recall and class confusion."""

from __future__ import annotations

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
    "--missing-as-empty",
    is_flag=True,
    help="Whole slides: count ground-truth slides without a prediction file as slides with no detection "
    "(default: refuse, naming them).",
)
@click.option(
    "--match",
    type=click.Choice(["iou", "centre"]),
    default="iou",
    show_default=True,
    help="centre: labels mark cells' centres (CRIC); a detection hits a label whose centre it contains.",
)
@click.option(
    "--max-dets",
    type=click.IntRange(min=1),
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
    missing_as_empty: bool,
    match: str,
    max_dets: int,
) -> None:
    """Evaluate detections the paper's way: mean AP over IoU 0.10, 0.15, ..., 0.70 per lesion class.

    \b
    Examples:
      wsi-pipeline eval --gt data/synthpap-v3/patches/test.json --pred preds.json
      wsi-pipeline eval --gt data/synthpap-v3/patches/test.json --checkpoint runs/tiny/checkpoints/best.pt
      wsi-pipeline eval --gt data/synthpap-v3/slides --pred predictions/ --out report.json
    """
    from wsi_pipeline.evaluation.report import evaluate_saved, format_report
    from wsi_pipeline.io import write_json_atomic

    if (pred_path is None) == (checkpoint is None):
        raise click.UsageError("give either --pred (saved predictions) or --checkpoint (a trained model)")
    if checkpoint is None and save_pred is not None:
        raise click.UsageError("--save-pred goes with --checkpoint")
    if checkpoint is not None and gt_path.suffix != ".json":
        raise click.UsageError(f"--checkpoint predicts COCO patch sets; {gt_path} is not a COCO .json")
    if checkpoint is not None:  # torch is imported only here: evaluating saved predictions stays light
        from wsi_pipeline.device import select_device
        from wsi_pipeline.inference.patches import evaluate_checkpoint

        report = evaluate_checkpoint(
            gt_path, checkpoint, select_device(device), save_pred, max_dets, progress=progress_enabled(), match=match
        )
        if save_pred is not None:
            log.info("predictions written to %s", save_pred)
    else:
        assert pred_path is not None
        report = evaluate_saved(gt_path, pred_path, max_dets, missing_as_empty, match)
    click.echo(format_report(report))
    if out_path is not None:
        write_json_atomic(out_path, report)
        log.info("report written to %s", out_path)
