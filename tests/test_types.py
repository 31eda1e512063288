import pytest

from wsi_pipeline.types import Box


def test_box_geometry_hand_values():
    a = Box(10, 20, 30, 60)
    assert (a.width, a.height, a.area, a.center) == (20, 40, 800, (20.0, 40.0))
    assert a.shift(-10, -20).xyxy == (0, 0, 20, 40)
    assert a.intersect(Box(25, 50, 100, 100)) == Box(25, 50, 30, 60)
    assert a.intersect(Box(30, 20, 40, 60)) is None  # touching edges share no area (x1 exclusive)
    assert Box(0, 0, 100, 100).contains(a) and not a.contains(Box(0, 0, 100, 100))
    assert Box.union([a, Box(0, 70, 5, 80)]) == Box(0, 20, 30, 80)


def test_box_rejects_inverted_coordinates():
    with pytest.raises(ValueError, match="invalid box"):
        Box(5, 0, 4, 1)
