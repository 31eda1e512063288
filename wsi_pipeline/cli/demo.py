"""``wsi-pipeline demo``: the whole available pipeline on the embedded ``configs/demo.yaml`` preset."""

from __future__ import annotations

from pathlib import Path

import click

from wsi_pipeline.cli.common import fail_cleanly, load_cli_config, log


@click.command("demo")
@click.option("--out", default="demo-out", show_default=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--workers", type=int, default=0, show_default=True, help="Parallel slides (0 = all cores).")
@fail_cleanly
def demo(out: Path, workers: int) -> None:
    """Generate a small synthpap set (3 labeled + 1 unlabeled slides) with quick-looks and COCO patches."""
    from wsi_pipeline.cli.synth import run_synth

    config = load_cli_config("demo", ())
    run_synth(config, out, workers=workers, export_patches=True)
    log.info("demo done: open %s/slides/*.quicklook.png, or a slide with its .geojson in QuPath", out)
