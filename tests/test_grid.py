import numpy as np
import pytest

from wsi_pipeline.slide.grid import axis_positions, patch_grid


def test_axis_positions_hand_values():
    assert axis_positions(3000, 1200, 1200) == [0, 1200, 1800]  # flush: last patch ends at 3000
    assert axis_positions(3000, 1200, 1200, "pad") == [0, 1200, 2400]  # runs past the edge
    assert axis_positions(3000, 1200, 1200, "drop") == [0, 1200]
    assert axis_positions(2400, 1200, 1200) == [0, 1200]  # exact fit: nothing added
    assert axis_positions(3000, 1200, 900) == [0, 900, 1800]  # overlap 300, 1800 + 1200 = 3000
    assert axis_positions(3100, 1200, 900) == [0, 900, 1800, 1900]
    assert axis_positions(500, 1200, 1200) == [0]  # smaller than a patch: one padded patch
    assert axis_positions(500, 1200, 1200, "drop") == []
    with pytest.raises(ValueError):
        axis_positions(100, 0, 1)


def test_patch_grid_maps_target_pixels_to_level0():
    # a 20x scan (0.5 um/px) tiled at 0.25 um/px: one target pixel is half a level-0 pixel
    g = patch_grid(1000, 700, slide_mpp=0.5, target_mpp=0.25, patch=1200, overlap=0)
    # target frame is 2000 x 1400: columns [0, 800], rows [0, 200]
    assert g.scale == 0.5
    assert list(zip(g.x_t.tolist(), g.y_t.tolist(), strict=True)) == [(0, 0), (800, 0), (0, 200), (800, 200)]
    assert g.x0.tolist() == [0, 400, 0, 400] and g.y0.tolist() == [0, 0, 100, 100]
    assert g.w0.tolist() == [600] * 4 and g.h0.tolist() == [600] * 4
    assert g.rows.tolist() == [0, 0, 1, 1] and g.cols.tolist() == [0, 1, 0, 1]


def test_patch_grid_non_integer_scale_rounds_each_box():
    g = patch_grid(2220, 2967, slide_mpp=0.499, target_mpp=0.5, patch=1000)
    assert g.scale == pytest.approx(0.5 / 0.499)
    assert np.all(g.x0 + g.w0 <= 2220 + 1) and np.all(g.y0 + g.h0 <= 2967 + 1)
    assert set(g.w0.tolist()) <= {1002, 1003}


def test_overlap_validation():
    with pytest.raises(ValueError, match="overlap"):
        patch_grid(100, 100, 0.25, 0.25, 64, overlap=64)
