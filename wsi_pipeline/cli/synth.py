"""``wsi-pipeline synth``: synthetic Pap-smear slides, ground truth, quick-looks, COCO patches."""

from __future__ import annotations

from pathlib import Path

import click

from wsi_pipeline.cli.common import config_options, fail_cleanly, load_cli_config, log, progress_enabled


@click.command("synth")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Output folder.")
@config_options
@click.option("--export-patches", is_flag=True, help="Also cut labeled 1200x1200 patches and write COCO per split.")
@click.option("--workers", type=int, default=0, show_default=True, help="Parallel slides (0 = all cores).")
@fail_cleanly
def synth(out: Path, config_path: str | None, overrides: tuple[str, ...], export_patches: bool, workers: int) -> None:
    """Generate synthetic liquid-based Pap-smear slides (pyramidal JPEG TIFF) with QuPath ground truth.

    \b
    Examples:
      wsi-pipeline synth --out synth/ --set synth.width=4096 --set synth.height=4096
      wsi-pipeline synth --config synthpap-v3 --out data/synthpap-v3 --export-patches
    """
    config = load_cli_config(config_path, overrides)
    run_synth(config, out, workers=workers, export_patches=export_patches)


def run_synth(config: object, out: Path, *, workers: int, export_patches: bool) -> None:
    from wsi_pipeline.synth.dataset import generate_dataset

    result = generate_dataset(config, out, workers=workers, export_patches=export_patches, progress=progress_enabled())  # type: ignore[arg-type]
    lesions = sum(m["n_lesions"] for m in result.manifests)
    log.info(
        "%d slide(s), %d lesion(s) in %s (manifest.json, slides/*.quicklook.png)",
        len(result.manifests),
        lesions,
        out,
    )
    if result.failures:
        for slide_id, reason in result.failures:
            click.echo(f"FAILED {slide_id}: {reason}", err=True)
        raise click.ClickException(
            f"{len(result.failures)} of {len(result.failures) + len(result.manifests)} slide(s) failed"
        )
