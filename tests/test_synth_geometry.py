"""Pure helpers of the generator, with hand-computed values."""

import numpy as np

from wsi_pipeline.synth.shapes import bilinear_field, fill_mask, soften_polygon
from wsi_pipeline.synth.writer import _reduce, pyramid_shapes


def test_pyramid_shapes():
    assert pyramid_shapes(20000, 20000) == [(20000, 20000), (5000, 5000), (1250, 1250), (312, 312)]
    assert pyramid_shapes(1600, 1400) == [(1600, 1400), (400, 350)]
    assert pyramid_shapes(1000, 800) == [(1000, 800)]


def test_reduce_is_an_exact_block_mean():
    band = np.zeros((4, 8, 3), np.uint8)
    band[:, :4] = 8
    band[0, 4:] = 40  # one row of four in the second block: mean 10
    assert _reduce(band)[..., 0].tolist() == [[8, 10]]


def test_fill_mask_covers_the_polygon_area():
    square = np.array([[2.0, 2.0], [12.0, 2.0], [12.0, 12.0], [2.0, 12.0]])
    mask = fill_mask((16, 16), [square], origin=(0.0, 0.0))
    # 10 x 10 px; the rasteriser may add up to a quarter pixel along an edge, never a pixel outside
    assert 100.0 <= mask.sum() <= (10 + 0.25) ** 2
    assert mask[2:12, 2:12].min() == 1.0
    assert mask[:2].max() == 0.0 and mask[:, :2].max() == 0.0
    assert mask[:, 12].max() <= 0.25 and mask[12, :].max() <= 0.25  # cv2 fills both boundary subpixels
    assert mask[:, 13:].max() == 0.0 and mask[13:, :].max() == 0.0
    half = fill_mask((16, 16), [square + 0.5], origin=(0.0, 0.0))
    assert half[2, 2] == 0.25 and half[2, 3] == 0.5 and half[3, 3] == 1.0
    shifted = fill_mask((16, 16), [square + 100], origin=(100.0, 100.0))
    assert np.array_equal(mask, shifted)


def test_bilinear_field_is_independent_of_band_split():
    grid = np.random.default_rng(0).normal(size=(5, 6))
    whole = bilinear_field(grid, 32.0, 0, 150, 0, 170)
    parts = np.concatenate([bilinear_field(grid, 32.0, y, min(y + 40, 150), 0, 170) for y in range(0, 150, 40)])
    assert np.allclose(whole, parts, atol=1e-6)
    # at a grid node centre the field equals the node value
    assert np.isclose(bilinear_field(grid, 32.0, 64, 65, 96, 97)[0, 0], grid[2, 3], atol=0.05)


def test_soften_polygon_keeps_the_shape_in_place():
    square = np.array([[0.0, 0.0], [10.0, 0.0], [10.0, 10.0], [0.0, 10.0]])
    soft = soften_polygon(np.random.default_rng(0), square, iterations=2, wiggle=0.0)
    assert len(soft) == 16
    assert np.allclose(soft.mean(axis=0), [5.0, 5.0])
    assert soft.min() >= 0.0 and soft.max() <= 10.0
