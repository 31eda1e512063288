"""``wsi-pipeline demo``: the whole available pipeline on the embedded ``configs/demo.yaml`` preset."""

from __future__ import annotations

from pathlib import Path

import click

from wsi_pipeline.cli.common import fail_cleanly, load_cli_config, log, progress_enabled


@click.command("demo")
@click.option("--out", default="demo-out", show_default=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--workers", type=int, default=0, show_default=True, help="Parallel workers (0 = all cores).")
@fail_cleanly
def demo(out: Path, workers: int) -> None:
    """Generate a small synthpap set (3 labeled + 1 unlabeled slides, quick-looks, COCO patches), then
    tile its slides into patch stores with QC images."""
    from wsi_pipeline.cli.synth import run_synth
    from wsi_pipeline.tiling.batch import summary_table, tile_slides

    config = load_cli_config("demo", ())
    run_synth(config, out, workers=workers, export_patches=True)
    result = tile_slides([out / "slides"], out / "tiles", config, workers=workers, progress=progress_enabled())
    click.echo(summary_table(result.outcomes))
    if result.failed:
        raise click.ClickException(f"{len(result.failed)} slide(s) failed to tile")
    log.info(
        "demo done: %s/slides/*.quicklook.png (ground truth), %s/tiles/*.qc.png (tiling), "
        "%s/patches/*.json (COCO); open a slide with its .geojson in QuPath",
        out,
        out,
        out,
    )
