"""``wsi-pipeline mine``: the unlabeled pool from unlabeled slides, screened by a supervised detector."""

from __future__ import annotations

from pathlib import Path

import click

from wsi_pipeline.cli.common import checkpoint_config, config_options, fail_cleanly, log, mpp_option


@click.command("mine")
@click.argument("inputs", nargs=-1, required=True)
@click.option(
    "--checkpoint",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The supervised detector that screens the slides (checkpoints/*.pt).",
)
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="The pool folder.")
@click.option(
    "--labeled",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="COCO file(s) of the labeled set: slides of their patients are refused (patient-disjoint pool).",
)
@click.option(
    "--patients",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="CSV of slide_id,patient_id for patients with several slides (default: a slide is its own patient).",
)
@config_options
@mpp_option
@click.option("--device", help="auto, cpu, cuda, cuda:1, ... (default: infer.device)")
@fail_cleanly
def mine(
    inputs: tuple[str, ...],
    checkpoint: Path,
    out: Path,
    labeled: tuple[Path, ...],
    patients: Path | None,
    config_path: str | None,
    overrides: tuple[str, ...],
    mpp: float | None,
    device: str | None,
) -> None:
    """Screen unlabeled slides with a supervised detector and keep the patches around what it finds.

    Writes a patch store and a manifest per slide and pool.json: the unlabeled pool for semi-supervised
    training (train --set train.unlabeled=POOL; in Python: data.pool.open_pool(POOL, mpp)). Settings:
    mine.score_threshold, mine.top_k, mine.max_overlap, mine.negative_share (and infer.*).

    \b
    Examples:
      wsi-pipeline mine unlabeled/ --checkpoint runs/sup/checkpoints/last.pt --out pool/ --labeled train.json
    """
    from wsi_pipeline.device import select_device
    from wsi_pipeline.mining.pool import mine_slides

    if device is not None:
        overrides = (*overrides, f"infer.device={device}")
    model, config = checkpoint_config(checkpoint, config_path, overrides)
    result = mine_slides(
        inputs, checkpoint, out, config, model, select_device(config.infer.device), labeled=labeled,
        patients=patients, mpp=mpp,
    )  # fmt: skip
    for o in result.failed:
        click.echo(f"FAILED {o.slide_id}: {o.reason}", err=True)
    total = sum(o.patches or 0 for o in result.outcomes)
    log.info("pool %s: %d patch(es) from %d slide(s)", out, total, len(result.outcomes) - len(result.failed))
    if result.failed:
        raise click.ClickException(f"{len(result.failed)} of {len(result.outcomes)} slide(s) failed")
