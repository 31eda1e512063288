"""``wsi-pipeline demo``: the whole available pipeline on the embedded ``configs/demo.yaml`` preset:
synth -> tile -> train (a tiny detector) -> eval -> infer -> eval (whole slide) -> mine -> train (dual alignment)."""

from __future__ import annotations

from pathlib import Path

import click

from wsi_pipeline.cli.common import fail_cleanly, load_cli_config, log, progress_enabled


@click.command("demo")
@click.option("--out", default="demo-out", show_default=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--workers", type=int, default=0, show_default=True, help="Parallel workers (0 = all cores).")
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="SECTION.KEY=VALUE",
    help="Override one value of the demo preset, e.g. --set train.max_iter=100. Repeatable.",
)
@fail_cleanly
def demo(out: Path, workers: int, overrides: tuple[str, ...]) -> None:
    """Generate a small synthpap set (3 labeled + 1 unlabeled slides, quick-looks, COCO patches), tile
    its slides into patch stores with QC images, train a tiny detector on the training patches and
    evaluate it on the test patches, then run it over the whole test slide (QuPath GeoJSON, summary,
    ranked table), evaluate that against the slide's ground truth, mine the unlabeled slide into the
    unlabeled pool, and train the dual-alignment detector on the labeled patches plus that pool. Re-running
    reuses what is done."""
    import json

    from wsi_pipeline.cli.synth import run_synth
    from wsi_pipeline.device import select_device
    from wsi_pipeline.engine.run import run_training
    from wsi_pipeline.evaluation.report import evaluate_saved, format_report
    from wsi_pipeline.inference.batch import infer_slides
    from wsi_pipeline.inference.patches import evaluate_checkpoint
    from wsi_pipeline.io import write_json_atomic
    from wsi_pipeline.mining.pool import mine_slides
    from wsi_pipeline.modeling.checkpoint import model_from_checkpoint
    from wsi_pipeline.tiling.batch import summary_table, tile_slides

    patches, run = out / "patches", out / "train"
    config = load_cli_config("demo", (f"train.train_json={patches / 'train.json'}", *overrides))
    run_synth(config, out, workers=workers, export_patches=True)
    result = tile_slides([out / "slides"], out / "tiles", config, workers=workers, progress=progress_enabled())
    click.echo(summary_table(result.outcomes))
    if result.failed:
        raise click.ClickException(f"{len(result.failed)} slide(s) failed to tile")

    def train_and_score(train_config, folder: Path) -> dict:  # type: ignore[no-untyped-def]
        """Train (or finish) a run in ``folder`` and score its last checkpoint on the test patches."""
        checkpoint = folder / "checkpoints" / "last.pt"
        run_training(train_config, folder, resume=checkpoint.is_file(), progress=progress_enabled())
        scored = evaluate_checkpoint(
            patches / "test.json",
            checkpoint,
            select_device(train_config.train.device),
            folder / "test_predictions.json",
        )
        write_json_atomic(folder / "test_report.json", scored)
        click.echo(format_report(scored))
        return scored

    last = run / "checkpoints" / "last.pt"
    report = train_and_score(config, run)

    # the whole test slides, as a lab would run them: lesion maps, summaries, ranking, then their score
    roles = {s["slide_id"]: s["role"] for s in json.loads((out / "manifest.json").read_text())["slides"]}
    test_slides = [out / "slides" / f"{sid}.tiff" for sid, role in sorted(roles.items()) if role == "test"]
    maps = out / "maps"
    model, _ = model_from_checkpoint(last)
    inferred = infer_slides(
        test_slides, last, maps, config, model, select_device(config.infer.device), progress=progress_enabled()
    )
    if inferred.failed:
        raise click.ClickException(f"infer failed on {', '.join(o.slide_id for o in inferred.failed)}")
    truth = maps / "ground-truth"
    for path in test_slides:  # the test slides' ground truth, beside their predictions
        truth.mkdir(exist_ok=True)
        (truth / f"{path.stem}.geojson").write_bytes((out / "slides" / f"{path.stem}.geojson").read_bytes())
    slide_report = evaluate_saved(truth, maps)
    write_json_atomic(maps / "eval_report.json", slide_report)
    click.echo(format_report(slide_report))

    # the unlabeled pool for semi-supervised training: the unlabeled slide, screened by this detector
    unlabeled = [out / "slides" / f"{sid}.tiff" for sid, role in sorted(roles.items()) if role == "unlabeled"]
    pool = mine_slides(
        unlabeled,
        last,
        out / "pool",
        config,
        model,
        select_device(config.infer.device),
        labeled=[patches / "train.json"],
    )
    if pool.failed:
        raise click.ClickException(f"mine failed on {', '.join(o.slide_id for o in pool.failed)}")

    # semi-supervised: dual alignment from this detector on the same labeled patches plus the pool, scored on
    # the same test patches
    ssl_run = out / "train-dual_alignment"
    ssl_config = load_cli_config(
        "demo-dual_alignment",
        (f"train.train_json={patches / 'train.json'}", f"train.init_checkpoint={last}",
         f"train.unlabeled={out / 'pool'}", *overrides),
    )  # fmt: skip
    ssl_report = train_and_score(ssl_config, ssl_run)
    log.info(
        "test-patch mAP: supervised %.1f after %d iterations, dual alignment %.1f after %d more with the pool "
        "(one seed of a short schedule, and not an equal one: docs/benchmarks.md has the paired tables)",
        100 * report["overall"]["mAP"],
        config.train.max_iter,
        100 * ssl_report["overall"]["mAP"],
        ssl_config.train.max_iter,
    )
    log.info(
        "demo done: %s/slides/*.quicklook.png (ground truth), %s/tiles/*.qc.png (tiling), %s/patches/*.json "
        "(COCO), %s (detector, metrics.csv, test report); lesion maps %s/*.geojson (drag onto the slide in "
        "QuPath), summaries, the ranked table %s/summary.csv and the report %s; unlabeled pool %s and the "
        "dual-alignment detector trained with it %s",
        out,
        out,
        out,
        run,
        maps,
        maps,
        maps / "report.html",
        out / "pool",
        ssl_run,
    )
