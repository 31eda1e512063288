"""``tile``: patch stores, batches with bad slides, resume, Dask LocalCluster, labeled patches."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr
from click.testing import CliRunner

from wsi_pipeline.cli.main import cli
from wsi_pipeline.config import load_config
from wsi_pipeline.data.geojson_io import read_geojson
from wsi_pipeline.data.patch_store import PatchStore, verify_store
from wsi_pipeline.slide import open_slide
from wsi_pipeline.slide.discover import discover_slides, slide_ids
from wsi_pipeline.tiling.batch import tile_slides

SMALL = ("tile.patch_size=512", "tile.foreground.mask_mpp=2.0")


def _config(*extra: str):
    return load_config(None, [*SMALL, *extra])


@pytest.fixture(scope="module")
def two_slides(tiny_dataset: Path, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("slides")
    for sid in ("L0001", "L0002"):
        shutil.copy(tiny_dataset / "slides" / f"{sid}.tiff", folder / f"{sid}.tiff")
    return folder


def _table(store: Path) -> dict[str, bytes]:
    group = zarr.open_group(str(store), mode="r")
    return {k: np.asarray(group[k][:]).tobytes() for k in ("x", "y", "width", "height", "foreground", "row", "col")}


def test_tile_writes_stores_that_read_back(two_slides: Path, tmp_path: Path):
    result = tile_slides([two_slides], tmp_path, _config(), workers=2, progress=False)
    assert [o.status for o in result.outcomes] == ["done", "done"]
    store = PatchStore(tmp_path / "L0001.zarr")
    assert store.attrs["slide"]["mpp"] == pytest.approx(0.25) and store.attrs["slide"]["backend"] == "tifffile"
    assert store.patch_size == 512 and len(store) == len(store.table["x"]) > 0
    # the grid of a 1600 x 1400 slide at 512: columns 0, 512, 1024, 1088 (flush), rows 0, 512, 888
    assert set(store.table["x"].tolist()) <= {0, 512, 1024, 1088}
    assert set(store.table["y"].tolist()) <= {0, 512, 888}
    assert (store.table["foreground"] >= 0.01).all()
    with open_slide(two_slides / "L0001.tiff") as reader:
        for i in (0, len(store) - 1):
            row = store.row(i)
            expected = reader.read_region(row["x"], row["y"], 512, 512, mpp=0.25)
            assert np.array_equal(store[i], expected)
    pixels, row = next(store.iter_patches(as_tensor=True))
    assert tuple(pixels.shape) == (3, 512, 512) and 0.0 <= float(pixels.min()) <= float(pixels.max()) <= 1.0
    assert (tmp_path / "L0001.qc.png").is_file() and (tmp_path / "summary.tsv").is_file()
    assert not list(tmp_path.glob(".tmp-*"))


def test_coords_only_store_reads_pixels_from_the_slide(two_slides: Path, tmp_path: Path):
    tile_slides([two_slides / "L0001.tiff"], tmp_path, _config("tile.coords_only=true"), progress=False)
    store = PatchStore(tmp_path / "L0001.zarr")
    assert store.attrs["coords_only"] and not (tmp_path / "L0001.zarr" / "patches").exists()
    full = tmp_path / "full"
    tile_slides([two_slides / "L0001.tiff"], full, _config(), progress=False)
    assert _table(tmp_path / "L0001.zarr") == _table(full / "L0001.zarr")
    assert np.array_equal(store[1], PatchStore(full / "L0001.zarr")[1])


def test_batch_with_bad_real_slides_finishes_the_good_ones(shared_data: Path, two_slides: Path, tmp_path: Path):
    listing = tmp_path / "slides.txt"
    listing.write_text(f"# a list file\n{two_slides / 'L0001.tiff'}\n{shared_data / 'slides'}\nmissing.svs\n")
    args = ["-q", "tile", str(listing), "--out", str(tmp_path / "out"), "--set", "tile.patch_size=512"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1
    rows = {r["slide_id"]: r for r in json.loads((tmp_path / "out" / "summary.json").read_text())}
    assert rows["L0001"]["status"] == "done" and rows["CMU-1-Small-Region"]["status"] == "done"
    assert rows["boxes_0"]["status"] == "done" and "boxes_1" not in rows  # one DICOM series, opened once
    for name, reason in {
        "broken": "broken.svs: cannot open slide",
        "unopenable": "Unsupported TIFF compression",
        "unreadable": "Bogus marker length",
        "boxes": "pass --mpp",
        "missing": "no such file or folder",
    }.items():
        assert rows[name]["status"] == "failed" and reason in rows[name]["reason"], rows[name]
    assert "5 of 9 slide(s) failed" in result.output  # L0001, CMU-1, the DICOM series, small.svs + 5 failures
    assert verify_store(tmp_path / "out" / "CMU-1-Small-Region.zarr") is None


def test_resume_skips_finished_and_redoes_truncated(two_slides: Path, tmp_path: Path):
    cfg = _config()
    tile_slides([two_slides], tmp_path, cfg, progress=False)
    stamp = (tmp_path / "L0001.zarr" / "zarr.json").stat().st_mtime_ns
    chunk = next((tmp_path / "L0002.zarr" / "patches").glob("c.*"))
    chunk.unlink()  # damage a finished store
    (tmp_path / ".tmp-L0001.zarr").mkdir()  # debris of an interrupted run
    again = tile_slides([two_slides], tmp_path, cfg, progress=False)
    status = {o.slide_id: (o.status, o.reason) for o in again.outcomes}
    assert status["L0001"] == ("skipped", "complete")
    assert status["L0002"][0] == "done"
    assert (tmp_path / "L0001.zarr" / "zarr.json").stat().st_mtime_ns == stamp
    assert verify_store(tmp_path / "L0002.zarr") is None
    # different settings make finished stores stale
    changed = tile_slides([two_slides], tmp_path, _config("tile.min_foreground=0.2"), progress=False)
    assert {o.status for o in changed.outcomes} == {"done"}


@pytest.mark.filterwarnings("ignore")
def test_dask_local_cluster_matches_the_local_run(two_slides: Path, tmp_path: Path):
    from distributed import LocalCluster

    local = tile_slides([two_slides], tmp_path / "local", _config(), scheduler="threads", progress=False)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        remote = tile_slides(
            [two_slides], tmp_path / "cluster", _config(), scheduler=cluster.scheduler_address, progress=False
        )
    assert [o.status for o in local.outcomes] == [o.status for o in remote.outcomes] == ["done", "done"]
    for sid in ("L0001", "L0002"):
        assert _table(tmp_path / "local" / f"{sid}.zarr") == _table(tmp_path / "cluster" / f"{sid}.zarr")
        a, b = PatchStore(tmp_path / "local" / f"{sid}.zarr"), PatchStore(tmp_path / "cluster" / f"{sid}.zarr")
        assert all(np.array_equal(a[i], b[i]) for i in range(len(a)))


def test_processes_scheduler_runs(two_slides: Path, tmp_path: Path):
    result = tile_slides(
        [two_slides / "L0001.tiff"], tmp_path, _config(), scheduler="processes", workers=2, progress=False
    )
    assert result.outcomes[0].status == "done"


def test_discovery_and_unique_ids(tmp_path: Path):
    for rel in ("a/s1.svs", "b/s1.svs", "b/c/s2.ndpi", "b/notes.txt"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    paths, problems = discover_slides([tmp_path, tmp_path / "a" / "s1.svs", tmp_path / "nope"])
    assert sorted(p.relative_to(tmp_path).as_posix() for p in paths) == ["a/s1.svs", "b/c/s2.ndpi", "b/s1.svs"]
    assert problems == [(str(tmp_path / "nope"), "no such file or folder")]
    assert sorted(slide_ids(paths)) == ["a__s1", "b__s1", "s2"]


def test_labeled_patches_from_annotations_match_geojson(tiny_dataset: Path, tmp_path: Path):
    slides = tiny_dataset / "slides"
    args = [
        "-q",
        "tile",
        str(slides / "L0001.tiff"),
        str(slides / "L0003.tiff"),
        "--annotations",
        str(slides),
        "--out",
        str(tmp_path),
        "--set",
        "tile.labels.split=[1.0, 0.0, 0.0]",
    ]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    coco = json.loads((tmp_path / "train.json").read_text())
    gt = {sid: read_geojson(slides / f"{sid}.geojson") for sid in ("L0001", "L0003")}
    full = 0
    for ann in coco["annotations"]:
        img = coco["images"][ann["image_id"] - 1]
        x, y, w, h = ann["bbox"]
        box = (x + img["x0_level0"], y + img["y0_level0"], x + w + img["x0_level0"], y + h + img["y0_level0"])
        assert any(
            a.box.x0 <= box[0] + 1e-6
            and a.box.y0 <= box[1] + 1e-6
            and box[2] <= a.box.x1 + 1e-6
            and box[3] <= a.box.y1 + 1e-6
            for a in gt[img["slide_id"]]
        )
        full += any(a.box.xyxy == box for a in gt[img["slide_id"]])
    assert full >= sum(len(v) for v in gt.values())  # every lesion appears uncut at least once
    assert "labels: mapped" in result.output


def test_cric_fields_import_with_reported_non_targets(shared_data: Path, tmp_path: Path):
    cric = shared_data / "cric-sample"
    args = [
        "-q",
        "tile",
        str(cric),
        "--annotations",
        str(cric),
        "--mpp",
        "0.25",
        "--out",
        str(tmp_path),
        "--set",
        "tile.labels.split=[0.5, 0.0, 0.5]",
    ]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "labels_report.json").read_text())
    assert report["mapped"] == {"LSIL": 13}
    assert report["not_detector_classes"] == {"Negative for intraepithelial lesion": 42}
    boxes = sum(len(json.loads((tmp_path / f"{s}.json").read_text())["annotations"]) for s in ("train", "test"))
    assert boxes == 13


def test_chunk_sizes_and_checksums_catch_truncated_and_damaged_patches(two_slides: Path, tmp_path: Path):
    slide = two_slides / "L0001.tiff"
    tile_slides([slide], tmp_path, _config("tile.compressor=none"), progress=False)
    store = tmp_path / "L0001.zarr"
    plain = PatchStore(store)
    assert plain.verify() is None
    with open_slide(slide) as reader:  # uncompressed chunks read back as they were written
        row = plain.row(0)
        assert np.array_equal(plain[0], reader.read_region(row["x"], row["y"], 512, 512, mpp=0.25))
    chunk = store / "patches" / "c.1.0.0.0"
    data = bytearray(chunk.read_bytes())
    data[100:200] = bytes(100)  # damaged in place: same size, other bytes
    chunk.write_bytes(bytes(data))
    assert verify_store(store) is None  # sizes alone cannot see it ...
    assert verify_store(store, checksums=True) == "patch 1: chunk checksum mismatch (damaged)"  # ... checksums can
    with pytest.raises(ValueError, match=r"L0001\.zarr: patch 1 is damaged"):
        PatchStore(store)[1]
    chunk.write_bytes(b"")  # a zero-length chunk (a killed writer, a full disk)
    assert verify_store(store) == f"patch 1: chunk file has 0 of {len(data)} bytes (truncated or damaged)"
    again = tile_slides([slide], tmp_path, _config("tile.compressor=none"), progress=False)  # resume redoes it
    assert [o.status for o in again.outcomes] == ["done"] and PatchStore(store).verify() is None
