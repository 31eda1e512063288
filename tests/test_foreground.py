import numpy as np

from wsi_pipeline.config import SynthConfig
from wsi_pipeline.slide.backends import ArrayReader
from wsi_pipeline.slide.foreground import foreground_mask, region_fractions
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
