"""``wsi-pipeline train``: the supervised Faster R-CNN baseline on COCO patches."""

from __future__ import annotations

from pathlib import Path

import click

from wsi_pipeline.cli.common import config_options, fail_cleanly, load_cli_config, log, progress_enabled


@click.command("train")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Run folder.")
@config_options
@click.option("--resume", is_flag=True, help="Continue the run in --out from checkpoints/last.pt (exactly).")
@fail_cleanly
def train(out: Path, config_path: str | None, overrides: tuple[str, ...], resume: bool) -> None:
    """Train the detector (checkpoints, validation with best model, metrics.csv).

    \b
    Examples:
      wsi-pipeline train --config supervised --out runs/supervised
      wsi-pipeline train --config tiny --out runs/tiny --set train.max_iter=200
      wsi-pipeline train --config supervised --out runs/supervised --resume
    """
    from wsi_pipeline.engine.run import run_training
    from wsi_pipeline.engine.trainer import TrainingDiverged

    config = load_cli_config(config_path, overrides)
    try:
        result = run_training(config, out, resume=resume, progress=progress_enabled())
    except TrainingDiverged as err:
        last = out / "checkpoints" / "last.pt"
        kept = f"; the last good checkpoint is {last}" if last.exists() else ""
        raise click.ClickException(f"training diverged: {err}{kept}") from None
    best = "n/a" if result.best_map is None else f"{100 * result.best_map:.2f}"
    log.info(
        "trained %d iterations; best validation mAP %s; checkpoints in %s", result.iterations, best, out / "checkpoints"
    )
