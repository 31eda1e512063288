"""Slide readers: real vendor files, level choice, resolution-aware reads, coordinate round trips."""

from pathlib import Path

import numpy as np
import pytest

from wsi_pipeline.slide import SlideError, choose_level, open_slide
from wsi_pipeline.slide.backends import ArrayReader


def _slides(shared: Path) -> Path:
    return shared / "slides"


def test_aperio_svs_opens_on_the_fast_path_with_metadata(shared_data):
    with open_slide(_slides(shared_data) / "CMU-1-Small-Region.svs") as r:
        info = r.info
        assert (info.backend, info.vendor, info.width, info.height) == ("tifffile", "aperio", 2220, 2967)
        assert info.mpp == pytest.approx(0.499) and info.mpp_source == "metadata"
        assert info.objective_power == 20
        assert set(info.associated) == {"label", "macro", "thumbnail"}
        assert r.associated_image("label").shape == (463, 387, 3)
        fast = r.read_level_region(0, 1000, 1200, 300, 200)
    with open_slide(_slides(shared_data) / "CMU-1-Small-Region.svs", backend="openslide") as o:
        assert o.info.vendor == "aperio" and o.info.mpp == pytest.approx(0.499)
        slow = o.read_level_region(0, 1000, 1200, 300, 200)
    assert np.abs(fast.astype(int) - slow.astype(int)).mean() < 1.0  # same JPEG tiles, two decoders


@pytest.mark.parametrize(
    ("name", "backend", "vendor"),
    [
        ("boxes.tiff", "tifffile", "generic-tiff"),
        ("small.svs", "tifffile", "aperio"),
        ("boxes_0.dcm", "openslide", "dicom"),
    ],
)
def test_real_files_open_through_the_expected_backend(shared_data, name, backend, vendor):
    with open_slide(_slides(shared_data) / name) as r:
        assert (r.info.backend, r.info.vendor) == (backend, vendor)
        assert r.read_level_region(0, 0, 0, 8, 8).shape == (8, 8, 3)


def test_resolution_tags_that_are_not_microscopy_are_no_mpp(shared_data):
    path = _slides(shared_data) / "boxes.tiff"  # 72 dpi tags: 353 um/px is not a microscope scan
    with open_slide(path) as r:
        assert r.info.mpp is None and len(r.info.levels) == 4
        with pytest.raises(SlideError, match=r"boxes\.tiff: no microns-per-pixel in the slide metadata; pass --mpp"):
            r.read_region(0, 0, 10, 10, mpp=1.0)
    with open_slide(path, mpp=0.5) as r:
        assert r.info.mpp == 0.5 and r.info.mpp_source == "--mpp"


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("broken.svs", r"broken\.svs: cannot open slide \(tifffile: .*not a TIFF file.*; openslide: .*Unsupported"),
        ("unopenable.tiff", r"unopenable\.tiff: cannot open slide \(.*Unsupported TIFF compression: 52479"),
    ],
)
def test_unopenable_files_fail_with_one_line(shared_data, name, message):
    with pytest.raises(SlideError, match=message) as err:
        open_slide(_slides(shared_data) / name)
    assert "\n" not in str(err.value)


def test_corrupt_tile_data_fails_at_read_time(shared_data):
    reader = open_slide(_slides(shared_data) / "unreadable.svs")  # opens: the header is fine
    with reader, pytest.raises(SlideError, match=r"unreadable\.svs: cannot read level 0 .*Bogus marker length"):
        reader.read_level_region(0, 0, 0, 16, 16)


def test_missing_file():
    with pytest.raises(SlideError, match="no such file"):
        open_slide("/nonexistent/slide.svs")


def test_choose_level_hand_values():
    ds = [1.0, 4.0, 16.0, 64.0]
    assert choose_level(ds, 1.0) == 0
    assert choose_level(ds, 3.9) == 0  # never read a level more than 1% coarser than asked
    assert choose_level(ds, 3.99) == 1  # within 1%: the 0.25% upsample beats reading 16x the pixels
    assert choose_level(ds, 4.0) == 1
    assert choose_level(ds, 10.0) == 1
    assert choose_level(ds, 0.5) == 0  # finer than level 0: read level 0 and upsample
    assert choose_level(ds, 1000.0) == 3
    assert choose_level([1.0, 4.000000001], 4.0) == 1  # float noise in downsamples


def _checker(size: int = 2048) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size]
    img = np.stack([(xx % 256), (yy % 256), ((xx // 256 + yy // 256) % 2) * 255], axis=2)
    return img.astype(np.uint8)


def test_read_region_picks_the_level_and_resizes():
    img = _checker()
    r = ArrayReader(img, mpp=0.25)
    assert [lv.downsample for lv in r.info.levels] == [1.0, 4.0, 16.0]
    # native resolution: exact pixels
    assert np.array_equal(r.read_region(100, 200, 64, 32, mpp=0.25), img[200:232, 100:164])
    # 1.0 um/px = downsample 4: level 1 exactly
    assert np.array_equal(r.read_region(400, 800, 50, 40, mpp=1.0), r._levels[1][200:240, 100:150])
    # 0.5 um/px: read level 0, 2x2 area mean
    half = r.read_region(0, 0, 64, 64, mpp=0.5).astype(float)
    expected = img[:128, :128].reshape(64, 2, 64, 2, 3).mean(axis=(1, 3))
    assert np.abs(half - expected).max() <= 1.0
    # outside the slide is white glass
    corner = r.read_region(2040, 2040, 16, 16, mpp=0.25)
    assert (corner[8:, :] == 255).all() and (corner[:, 8:] == 255).all()


def test_patch_coordinates_round_trip_to_level0():
    img = np.full((3000, 3000, 3), 240, np.uint8)
    marker = (1733, 2210)  # level-0 (x, y)
    img[marker[1] - 2 : marker[1] + 2, marker[0] - 2 : marker[0] + 2] = 0
    r = ArrayReader(img, mpp=0.25)
    target_mpp, scale = 0.5, 2.0
    patch_origin = (1500, 2000)  # level-0 origin of a patch read at 0.5 um/px
    patch = r.read_region(*patch_origin, 256, 256, mpp=target_mpp)
    v, u = np.unravel_index(np.argmin(patch.sum(axis=2)), patch.shape[:2])
    # patch pixel (u, v) -> level 0: origin + (u + 0.5) * scale
    assert abs(patch_origin[0] + (u + 0.5) * scale - marker[0]) <= scale
    assert abs(patch_origin[1] + (v + 0.5) * scale - marker[1]) <= scale


def test_banded_thumbnail_equals_one_read():
    r = ArrayReader(_checker(1024), mpp=0.25)
    assert np.array_equal(r.thumbnail(1.0, band=100), r.read_region(0, 0, 256, 256, mpp=1.0))
