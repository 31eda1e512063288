"""``wsi-pipeline tile``: slides -> 1200 x 1200 patches at a physical resolution, in patch stores."""

from __future__ import annotations

from pathlib import Path

import click

from wsi_pipeline.cli.common import config_options, fail_cleanly, load_cli_config, log, mpp_option, progress_enabled


@click.command("tile")
@click.argument("inputs", nargs=-1, required=True)
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Output folder.")
@config_options
@mpp_option
@click.option(
    "--coords-only", is_flag=True, help="Store only the patch table; later stages read pixels from the slide."
)
@click.option(
    "--annotations",
    "annotations",
    type=click.Path(exists=True, path_type=Path),
    help="Folder (or file) of QuPath GeoJSON annotations: cut labeled patches and write COCO instead.",
)
@click.option(
    "--scheduler",
    default="threads",
    show_default=True,
    help="threads, processes, sync, or a dask.distributed scheduler address (tcp://host:8786).",
)
@click.option("--workers", type=int, default=0, show_default=True, help="Local workers (0 = all cores).")
@click.option(
    "--annotation-pattern",
    metavar="PATTERN",
    help="With --annotations: each slide's file is named exactly so, e.g. '{slide}-gt.geojson' "
    "(default: the file that names the slide as a whole token).",
)
@click.option(
    "--patients",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="With --annotations: CSV of slide_id,patient_id; a patient's slides share one split (default: "
    "each slide is its own patient).",
)
@click.option("--overwrite", is_flag=True, help="Replace stores in --out that were made from other slide files.")
@fail_cleanly
def tile(
    inputs: tuple[str, ...],
    out: Path,
    config_path: str | None,
    overrides: tuple[str, ...],
    mpp: float | None,
    coords_only: bool,
    annotations: Path | None,
    scheduler: str,
    workers: int,
    annotation_pattern: str | None,
    patients: Path | None,
    overwrite: bool,
) -> None:
    """Tile slides (files, folders, or list files) into per-slide patch stores.

    \b
    Examples:
      wsi-pipeline tile slides/ --out tiles/
      wsi-pipeline tile slides.txt --out tiles/ --set tile.target_mpp=0.5 --scheduler tcp://10.0.0.5:8786
      wsi-pipeline tile slides/ --annotations qupath/ --out labeled/      # labeled patches + COCO
    """
    if coords_only:
        overrides = (*overrides, "tile.coords_only=true")
    if annotation_pattern is not None:
        quoted = annotation_pattern.replace("'", "''")
        overrides = (*overrides, f"tile.labels.annotation_pattern='{quoted}'")
    config = load_cli_config(config_path, overrides)
    if annotations is not None:
        from wsi_pipeline.tiling.labeled import cut_labeled_dataset

        labeled = cut_labeled_dataset(
            inputs, annotations, out, config, mpp=mpp, progress=progress_enabled(), patients=patients
        )
        click.echo(labeled.report())
        if labeled.failures:
            raise click.ClickException(f"{len(labeled.failures)} slide(s) failed")
        return
    from wsi_pipeline.tiling.batch import summary_table, tile_slides

    result = tile_slides(
        inputs,
        out,
        config,
        mpp=mpp,
        scheduler=scheduler,
        workers=workers,
        progress=progress_enabled(),
        overwrite=overwrite,
    )
    click.echo(summary_table(result.outcomes))
    log.info("summary written to %s", out / "summary.tsv")
    if result.failed:
        raise click.ClickException(f"{len(result.failed)} of {len(result.outcomes)} slide(s) failed")
