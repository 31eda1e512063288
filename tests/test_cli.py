"""The command line, end to end, in-process (click's runner) and as the installed console script."""

import json
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from wsi_pipeline import __version__
from wsi_pipeline.cli.main import cli


def test_help_lists_only_working_commands_and_is_light():
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    assert "synth" in result.output and "demo" in result.output
    # heavy libraries are imported inside commands, not by the group
    code = (
        "import sys; from wsi_pipeline.cli.main import cli; "
        "print(sorted(m for m in ('torch', 'cv2', 'tifffile', 'numpy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_version():
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output


def test_bad_override_is_a_usage_error_naming_the_key(tmp_path: Path):
    result = CliRunner().invoke(cli, ["synth", "--out", str(tmp_path), "--set", "synth.hieght=3"])
    assert result.exit_code == 2
    assert "unknown key 'synth.hieght' (did you mean 'synth.height'?)" in result.output


def test_synth_end_to_end(tmp_path: Path):
    args = [
        "-q",
        "synth",
        "--out",
        str(tmp_path),
        "--workers",
        "1",
        "--export-patches",
        "--set",
        "synth.width=1300",
        "--set",
        "synth.height=1250",
        "--set",
        "synth.labeled_slides=2",
        "--set",
        "synth.negative_slide_fraction=0",
        "--set",
        "synth.quicklook_size=256",
    ]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert len(manifest["slides"]) == 2 and not manifest["failures"]
    assert (tmp_path / "slides" / "L0001.quicklook.png").stat().st_size > 0
    assert (tmp_path / "patches" / "train.json").is_file()
    assert "width: 1300" in (tmp_path / "config.yaml").read_text()


def test_demo_runs_every_stage_and_reuses_its_outputs(tmp_path: Path, tiny_overrides: tuple[str, ...]):
    """The README demo on tiny slides and a 4-iteration schedule: synth, tile, train, eval, infer on the test
    slide, whole-slide eval, mine, dual alignment on the pool; every stage writes its files, and a re-run
    reuses them."""
    sets = [*tiny_overrides, "train.max_iter=4", "train.checkpoint_every=2", "train.ssl.start_iter=0",
            "train.ssl.dual_alignment.threshold=0.05", "mine.score_threshold=0.0"]  # fmt: skip
    args = ["-q", "demo", "--out", str(tmp_path), "--workers", "1", *[a for kv in sets for a in ("--set", kv)]]
    first = CliRunner().invoke(cli, args)
    assert first.exit_code == 0, first.output
    report = json.loads((tmp_path / "train" / "test_report.json").read_text())
    assert report["mode"] == "patches (COCO)" and report["images"] > 0 and "mAP" in report["overall"]
    assert list((tmp_path / "tiles").glob("*.zarr")) and (tmp_path / "train" / "test_predictions.json").is_file()
    maps = tmp_path / "maps"
    assert (maps / "L0003.geojson").is_file() and (maps / "L0003.summary.json").is_file()
    assert (maps / "summary.csv").is_file() and json.loads((maps / "eval_report.json").read_text())["images"] == 1
    pool = json.loads((tmp_path / "pool" / "pool.json").read_text())
    assert list(pool["slides"]) == ["U0001"] and not pool["failed"]
    ssl = tmp_path / "train-dual_alignment"  # the semi-supervised step on that pool
    assert (
        "unlabeled: " in (ssl / "config.yaml").read_text()
        and "method: dual_alignment" in (ssl / "config.yaml").read_text()
        and f"init_checkpoint: {tmp_path / 'train' / 'checkpoints' / 'last.pt'}" in (ssl / "config.yaml").read_text()
    )
    assert "mAP" in json.loads((ssl / "test_report.json").read_text())["overall"]
    again = CliRunner().invoke(cli, args)  # finished stages are reused, not redone or refused
    assert again.exit_code == 0, again.output
    assert json.loads((tmp_path / "train" / "test_report.json").read_text()) == report


def test_console_script_is_installed():
    exe = Path(sys.executable).parent / "wsi-pipeline"
    out = subprocess.run([str(exe), "--version"], capture_output=True, text=True, check=True).stdout
    assert __version__ in out
