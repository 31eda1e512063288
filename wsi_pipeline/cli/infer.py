"""``wsi-pipeline infer``: whole slides -> per-slide QuPath GeoJSON lesion maps, summaries, a ranked table."""

from __future__ import annotations

from pathlib import Path

import click

from wsi_pipeline.cli.common import (
    checkpoint_config,
    config_options,
    fail_cleanly,
    log,
    mpp_option,
    progress_enabled,
)


@click.command("infer")
@click.argument("inputs", nargs=-1, required=True)
@click.option(
    "--checkpoint",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A trained model (checkpoints/*.pt of any training method).",
)
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Output folder.")
@config_options
@mpp_option
@click.option("--device", help="auto, cpu, cuda, cuda:1, ... (default: infer.device)")
@click.option("--batch-size", type=click.IntRange(min=1), help="Patches per model call (default: infer.batch_size).")
@fail_cleanly
def infer(
    inputs: tuple[str, ...],
    checkpoint: Path,
    out: Path,
    config_path: str | None,
    overrides: tuple[str, ...],
    mpp: float | None,
    device: str | None,
    batch_size: int | None,
) -> None:
    """Detect lesions on whole slides (files, folders, list files; plain images with --mpp; or tile's patch
    stores: a .zarr store or a tile output folder, read instead of the slide).

    Per slide: <slide>.geojson (QuPath imports it as it is) and <slide>.summary.json (counts, top lesions,
    risk, triage category); for the batch: summary.csv ranked by risk. The model's own settings come from
    the checkpoint; --config/--set change the infer section.

    \b
    Examples:
      wsi-pipeline infer slides/ --checkpoint runs/supervised/checkpoints/best.pt --out maps/
      wsi-pipeline infer fields/ --mpp 0.25 --checkpoint best.pt --out maps/ --set infer.gzip=true
    """
    from wsi_pipeline.device import select_device
    from wsi_pipeline.inference.batch import infer_slides

    if device is not None:
        overrides = (*overrides, f"infer.device={device}")
    if batch_size is not None:
        overrides = (*overrides, f"infer.batch_size={batch_size}")
    model, config = checkpoint_config(checkpoint, config_path, overrides)
    result = infer_slides(
        inputs, checkpoint, out, config, model, select_device(config.infer.device), mpp=mpp, progress=progress_enabled()
    )
    for o in result.failed:
        click.echo(f"FAILED {o.slide_id}: {o.reason}", err=True)
    log.info(
        "%d slide(s); GeoJSON and summaries in %s, ranked table %s", len(result.outcomes), out, out / "summary.csv"
    )
    if result.failed:
        raise click.ClickException(f"{len(result.failed)} of {len(result.outcomes)} slide(s) failed")
