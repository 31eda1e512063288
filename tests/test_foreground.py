import numpy as np
import pytest

from wsi_pipeline.config import ForegroundConfig, SynthConfig
from wsi_pipeline.slide.backends import ArrayReader
from wsi_pipeline.slide.foreground import box_areas, foreground_bands, foreground_mask, region_counts, region_fractions
from wsi_pipeline.synth.dataset import SlidePlan, make_slide
from wsi_pipeline.synth.render import render_region


def test_region_fractions_hand_values():
    mask = np.zeros((10, 10), bool)
    mask[0:5, 0:5] = True
    boxes = np.array([[0, 0, 5, 5], [0, 0, 10, 10], [5, 5, 10, 10], [-5, -5, 5, 5]])
    assert region_fractions(mask, boxes).tolist() == [1.0, 0.25, 0.0, 0.25]


def test_foreground_finds_cells_and_rejects_glass():
    cfg = SynthConfig(width=3000, height=3000, cells_per_mm2=60, debris=0.0, inflammation=0.0, mimics=0.0)
    style, scene, _ = make_slide(cfg, SlidePlan("L0001", "train", 1, 3))
    img = render_region(scene, style)
    reader = ArrayReader(img, mpp=0.25)
    mask_mpp = 2.0
    mask = foreground_mask(reader.thumbnail(mask_mpp), mask_mpp)
    scale = 0.25 / mask_mpp
    nuclei = [n.outline.mean(axis=0) for c in scene.cells for n in c.nuclei]
    hits = [mask[min(int(y * scale), mask.shape[0] - 1), min(int(x * scale), mask.shape[1] - 1)] for x, y in nuclei]
    assert np.mean(hits) > 0.95
    # glass far from every cell stays background
    occupied = np.zeros(mask.shape, bool)
    for c in scene.cells:
        x0, y0, x1, y1 = (np.array(c.render_bounds()) * scale).astype(int)
        occupied[max(y0 - 8, 0) : y1 + 8, max(x0 - 8, 0) : x1 + 8] = True
    assert (~occupied).sum() > 1000
    assert mask[~occupied].mean() < 0.01


def test_illumination_drift_is_not_foreground():
    h, w = 400, 400
    ramp = np.linspace(246, 226, w, dtype=np.float32)  # 8% darker glass across the field, no cells
    img = np.repeat(np.repeat(ramp[None, :, None], h, axis=0), 3, axis=2).astype(np.uint8)
    assert foreground_mask(img, 4.0).mean() == 0.0


def test_bright_outlier_pixels_do_not_raise_the_glass_level():
    """JPEG ringing beside dark nuclei leaves pixels brighter than glass; they must not make the
    surrounding glass look stained."""
    rng = np.random.default_rng(0)
    img = np.full((600, 600, 3), 228, np.uint8)
    ys, xs = rng.integers(0, 600, 1800), rng.integers(0, 600, 1800)  # 0.5% hot pixels
    img[ys, xs] = 255
    img[300:306, 300:306] = 90  # one small dark object
    mask = foreground_mask(img, 4.0)
    assert mask[300:306, 300:306].all()
    assert mask.mean() < 0.01


def test_region_counts_of_bands_add_up_to_the_whole_mask():
    rng = np.random.default_rng(1)
    mask = rng.random((37, 23)) < 0.3
    boxes = np.array([[0, 0, 23, 37], [2.5, 3.2, 10.1, 30.7], [-4, 20, 5, 50], [20, 36, 30, 40]])
    whole = region_counts(mask, boxes)
    banded = sum(region_counts(mask[y : y + 8], boxes, row0=y) for y in range(0, 37, 8))
    assert banded.tolist() == whole.tolist()
    # hand values: the whole mask; rows 36 and column 20-22 only for the last box
    assert whole[0] == mask.sum() and whole[3] == mask[36, 20:23].sum()
    assert np.allclose(region_fractions(mask, boxes), whole / box_areas(boxes))


def _synth_field(side: int = 1500) -> np.ndarray:
    cfg = SynthConfig(width=side, height=side, cells_per_mm2=120, debris=0.3, inflammation=0.3, mimics=0.0)
    style, scene, _ = make_slide(cfg, SlidePlan("L0001", "train", 1, 5))
    return render_region(scene, style)


def test_foreground_does_not_depend_on_the_band_height():
    """The mask is computed band by band with margins; every band height gives the whole image's mask,
    including heights that cut the glass field's blocks and cells in the middle."""
    img = _synth_field()
    thumb = ArrayReader(img, mpp=0.25).thumbnail(1.0)  # 375 x 375: not a multiple of the glass pooling
    h, w = thumb.shape[:2]
    whole = foreground_mask(thumb, 1.0)
    assert 0.02 < whole.mean() < 0.9
    for rows in (4, 28, 100, 1000):
        bands = list(foreground_bands(lambda y0, y1: thumb[y0:y1], w, h, 1.0, band_rows=rows))
        assert [y0 for y0, _, _ in bands] == list(range(0, h, max(rows, 4)))
        assert np.array_equal(np.concatenate([m for _, _, m in bands]), whole), rows
        assert np.array_equal(np.concatenate([rgb for _, rgb, _ in bands]), thumb)


def test_patch_plan_does_not_depend_on_the_band_height(monkeypatch):
    """A slide whose mask resolution is a whole factor of level 0 reads the same pixels band by band;
    fractions, cell area and the preview (shrunk 2x when the mask is wider than PREVIEW_PX) match."""
    import wsi_pipeline.slide.plan as plan_module

    reader = ArrayReader(_synth_field(), mpp=0.25)
    fg = ForegroundConfig(mask_mpp=1.0)
    monkeypatch.setattr(plan_module, "PREVIEW_PX", 200)  # 375 mask px -> preview shrunk by 2
    plans = [plan_module.plan_patches(reader, 0.5, 256, 32, "flush", fg, 0.05, band_rows=b) for b in (0, 8, 60)]
    first = plans[0]
    assert first.preview.shape == (188, 188, 3) and first.preview_mpp == 2.0
    assert 0 < first.keep.sum() < len(first.keep)
    mask = foreground_mask(reader.thumbnail(1.0), 1.0, fg)
    assert first.foreground_mm2 == pytest.approx(mask.sum() * 1e-6)
    boxes = first.boxes_preview * 2  # preview pixels -> mask pixels
    assert np.allclose(first.fractions, region_fractions(mask, boxes))
    for other in plans[1:]:
        assert np.array_equal(other.fractions, first.fractions)
        assert np.array_equal(other.preview, first.preview) and np.array_equal(other.preview_mask, first.preview_mask)
        assert other.foreground_mm2 == first.foreground_mm2
