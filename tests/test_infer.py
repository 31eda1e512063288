"""``infer`` end to end on tiny synthetic slides with a fixed-output model: level-0 mapping, QuPath GeoJSON
that our reader and shapely accept, summaries, the ranked table, resume and bad-slide isolation."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
from shapely.geometry import shape

from wsi_pipeline.config import load_config
from wsi_pipeline.data.geojson_io import read_geojson
from wsi_pipeline.data.patch_store import PatchStore
from wsi_pipeline.inference.batch import infer_slides

SMALL = ("infer.patch_size=512", "infer.overlap=64", "infer.block_rows=2", "infer.block_cols=2")


class FixedModel(torch.nn.Module):
    """Every patch: one HSIL at (100, 120)-(150, 190) of its own pixels, score 0.9."""

    def forward(self, images):  # type: ignore[no-untyped-def]
        probs = torch.tensor([0.05, 0.0, 0.05, 0.9, 0.0])
        return [
            {"boxes": torch.tensor([[100.0, 120.0, 150.0, 190.0]]), "labels": torch.tensor([3]),
             "scores": torch.tensor([0.9]), "probs": probs[None]}
            for _ in images
        ]  # fmt: skip


@pytest.fixture()
def slides(tiny_dataset: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "slides"
    folder.mkdir()
    for sid in ("L0001", "L0002"):
        shutil.copy(tiny_dataset / "slides" / f"{sid}.tiff", folder / f"{sid}.tiff")
    (folder / "broken.tiff").write_bytes(b"II*\x00not a tiff")
    return folder


def _infer(slides: Path, out: Path, *extra: str):
    ckpt = out.parent / "model.pt"
    ckpt.write_bytes(b"stands in for a checkpoint: only hashed")
    config = load_config(None, [*SMALL, *extra])
    return infer_slides([slides], ckpt, out, config, FixedModel(), torch.device("cpu"), progress=False)


def test_infer_writes_qupath_maps_summaries_and_a_ranked_table(slides: Path, tmp_path: Path):
    out = tmp_path / "out"
    result = _infer(slides, out)
    status = {o.slide_id: o.status for o in result.outcomes}
    assert status == {"L0001": "done", "L0002": "done", "broken": "failed"}  # one bad slide, the rest done
    data = json.loads((out / "L0001.geojson").read_text())
    summary = json.loads((out / "L0001.summary.json").read_text())
    features = data["features"]
    assert data["type"] == "FeatureCollection" and data["wsi_pipeline"]["checkpoint_sha256"]
    assert len(features) == summary["patches"] == summary["classes"]["HSIL"]["count"] > 0
    # patches at 0.25 um/px, stride 448: every detection is its patch origin + (100, 120)
    xs = sorted({f["geometry"]["coordinates"][0][0][0] for f in features})
    assert set(xs) <= {100.0, 548.0, 996.0, 1188.0}  # 1600 wide: columns 0, 448, 896, flush 1088
    for f in features:
        ring = f["geometry"]["coordinates"][0]
        assert ring[0] == ring[-1] and shape(f["geometry"]).is_valid
        assert uuid.UUID(f["id"]).version == 5
        props = f["properties"]
        assert props["objectType"] == "detection" and props["classification"] == {
            "name": "HSIL",
            "color": [220, 20, 40],
        }
        assert props["measurements"]["score"] == 0.9 and props["measurements"]["p_HSIL"] == 0.9
        assert props["measurements"]["area_um2"] == pytest.approx(50 * 70 * 0.25**2)
    back = read_geojson(out / "L0001.geojson")
    assert len(back) == len(features) and {a.properties["score"] for a in back} == {0.9}
    # 0.4 x 0.35 mm of slide hold far less than 0.5 mm^2 of cells: not judged, whatever the lesions say
    assert summary["risk"] == pytest.approx(0.9) and summary["category"] == "unsatisfactory"
    assert "ASC-H and SCC" in summary["note"] and len(summary["classes"]["HSIL"]["top"]) == 8
    table = (out / "summary.csv").read_text().splitlines()
    assert table[0].startswith("rank,slide_id,category,risk") and table[-1].split(",")[1] == "broken"

    again = _infer(slides, out)  # resume: finished slides are skipped, the output is the same
    assert {o.slide_id: o.status for o in again.outcomes}["L0001"] == "skipped"
    assert json.loads((out / "L0001.geojson").read_text()) == data
    gz = _infer(
        slides, tmp_path / "gz", "infer.gzip=true", "infer.object_type=annotation", "infer.triage.min_cell_area_mm2=0"
    )
    assert [o.category for o in gz.outcomes if o.status == "done"] == ["high risk", "high risk"]
    zipped = read_geojson(tmp_path / "gz" / "L0001.geojson.gz")
    assert sorted(a.box.xyxy for a in zipped) == sorted(a.box.xyxy for a in back)  # ids, boxes: deterministic


def test_infer_needs_an_mpp_for_plain_images(tmp_path: Path):
    folder = tmp_path / "fields"
    folder.mkdir()
    from PIL import Image

    Image.fromarray(np.full((600, 700, 3), 120, np.uint8)).save(folder / "field.png")
    result = _infer(folder, tmp_path / "out")
    assert result.outcomes[0].status == "failed" and "pass --mpp" in result.outcomes[0].reason


def test_infer_output_evaluates_as_whole_slide_predictions(slides: Path, tmp_path: Path):
    from click.testing import CliRunner

    from wsi_pipeline.cli.main import cli
    from wsi_pipeline.data.geojson_io import write_geojson

    out = tmp_path / "out"
    _infer(slides, out, "infer.gzip=true")
    truth = tmp_path / "truth"  # ground truth = what the fixed model sees: a perfect score, read from .gz
    for sid in ("L0001", "L0002"):
        write_geojson(truth / f"{sid}.geojson", read_geojson(out / f"{sid}.geojson.gz"), slide_id=sid, mpp=0.25)
    result = CliRunner().invoke(
        cli, ["-q", "eval", "--gt", str(truth), "--pred", str(out), "--out", str(tmp_path / "r")]
    )
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "r").read_text())
    assert report["mode"] == "whole slides (GeoJSON)" and report["classes"]["HSIL"]["mAP"] == pytest.approx(1.0)


def test_the_batch_report_shows_every_slide_ranked_with_its_lesions(slides: Path, tmp_path: Path):
    out = tmp_path / "out"
    _infer(slides, out, "infer.triage.min_cell_area_mm2=0")
    page = (out / "report.html").read_text()
    # ranked: the two slides (high risk) before the failed one, each with its thumbnail, counts and gallery
    assert page.index('href="#L0001"') < page.index('href="#broken"') and page.index('id="L0002"') > 0
    assert page.count('class="badge high"') == 4  # two in the ranking, two in the sections
    assert "ASC-H and SCC are outside the detector" in page
    assert 'src="report/L0001.thumb.png"' in page and (out / "report" / "L0001.thumb.png").is_file()
    summary = json.loads((out / "L0001.summary.json").read_text())
    crops = summary["visuals"]["crops"]["HSIL"]
    assert len(crops) == 8 and all((out / "report" / c["file"]).is_file() for c in crops)
    assert f'src="report/{crops[0]["file"]}"' in page and "score 0.90" in page
    assert "cannot open slide" in page  # the failed slide says why
    from PIL import Image

    thumb = Image.open(out / "report" / "L0001.thumb.png")
    assert max(thumb.size) <= 640 and np.asarray(thumb)[..., 0].std() > 0  # a picture, not a blank


@pytest.mark.slow
def test_the_report_renders_in_headless_chromium(slides: Path, tmp_path: Path):
    """Screenshot of report.html (Debian's chromium); look at tmp_path/report.png when changing the page."""
    import subprocess

    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    out = tmp_path / "out"
    _infer(slides, out)
    shot = tmp_path / "report.png"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip
    page = (out / "report.html").as_uri()
    window = ["--window-size=1100,900", f"--screenshot={shot}", f"--user-data-dir={tmp_path / 'profile'}"]
    subprocess.run([chromium, *flags, *window, page], capture_output=True, timeout=120)
    from PIL import Image

    image = np.asarray(Image.open(shot).convert("RGB"))
    assert image.shape[:2] == (900, 1100) and image.std() > 20  # rendered content, not an empty page


def test_infer_reads_tiles_patch_stores_like_the_slides(slides: Path, tmp_path: Path):
    from wsi_pipeline.tiling.batch import tile_slides

    tiles = tmp_path / "tiles"
    tile_slides([slides / "L0001.tiff"], tiles, load_config(None, ["tile.patch_size=512"]), progress=False)
    from_store = _infer(tiles, tmp_path / "a")  # a tile output folder: its stores are the inputs
    assert [(o.slide_id, o.status) for o in from_store.outcomes] == [("L0001", "done")]
    summary = json.loads((tmp_path / "a" / "L0001.summary.json").read_text())
    store = PatchStore(tiles / "L0001.zarr")
    assert summary["patches"] == len(store) and summary["classes"]["HSIL"]["count"] == len(store)
    xs = sorted(
        {
            f["geometry"]["coordinates"][0][0][0]
            for f in json.loads((tmp_path / "a" / "L0001.geojson").read_text())["features"]
        }
    )
    assert set(xs) <= {float(x) + 100 for x in store.table["x"]}  # each patch's origin + the fixed offset
    assert (tmp_path / "a" / "report" / "L0001.thumb.png").is_file()  # the slide recorded in the store
    wrong = _infer(tiles, tmp_path / "b", "model.input_mpp=0.5")
    assert (
        wrong.outcomes[0].status == "failed"
        and "patches at 0.25 um/px but the model takes 0.5" in wrong.outcomes[0].reason
    )


def test_an_out_of_focus_slide_is_unsatisfactory_never_negative(tiny_dataset: Path, tmp_path: Path):
    import cv2
    import tifffile

    from wsi_pipeline.inference.summary import sharpness
    from wsi_pipeline.slide import open_slide

    with open_slide(tiny_dataset / "slides" / "L0001.tiff") as reader:
        pixels = reader.read_region(0, 0, 1600, 1400, mpp=0.25)
    assert sharpness(pixels) > 6 and sharpness(cv2.GaussianBlur(pixels, (0, 0), 4)) < 3  # 1 um of blur
    assert sharpness(np.full((64, 64, 3), 240, np.uint8)) is None  # glass says nothing about focus
    folder = tmp_path / "blurred"
    folder.mkdir()
    tifffile.imwrite(folder / "soft.tiff", cv2.GaussianBlur(pixels, (0, 0), 4), tile=(256, 256),
                     resolution=(40000, 40000), resolutionunit="CENTIMETER")  # fmt: skip
    result = _infer(folder, tmp_path / "out", "infer.triage.min_cell_area_mm2=0")
    summary = json.loads((tmp_path / "out" / "soft.summary.json").read_text())
    assert result.outcomes[0].category == "unsatisfactory" and summary["focus"]["out_of_focus"] > 0.5
    sharp = _infer(tiny_dataset / "slides" / "L0001.tiff", tmp_path / "sharp", "infer.triage.min_cell_area_mm2=0")
    assert sharp.outcomes[0].category == "high risk"  # the same slide in focus is judged
