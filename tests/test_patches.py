import numpy as np

from wsi_pipeline.data.patches import (
    clamp_window,
    crop_annotations,
    plan_lesion_windows,
    sample_negative_window,
)
from wsi_pipeline.types import Annotation, Box


def test_clamp_window_hand_values():
    assert clamp_window(-50, 10, 100, 1000, 1000) == Box(0, 10, 100, 110)
    assert clamp_window(950, 980, 100, 1000, 1000) == Box(900, 900, 1000, 1000)
    # a slide smaller than the patch: the window is the whole slide
    assert clamp_window(5, 5, 1200, 300, 200) == Box(0, 0, 300, 200)


def test_every_lesion_is_fully_inside_some_window():
    rng = np.random.default_rng(0)
    boxes = [Box(x, y, x + 80, y + 60) for x, y in rng.uniform(0, 4900, size=(30, 2))]
    windows = plan_lesion_windows(boxes, 5000, 5000, 1200, rng, jitter=0.8)
    assert all(any(w.contains(b) for w in windows) for b in boxes)
    assert all(w.x0 >= 0 and w.y0 >= 0 and w.x1 <= 5000 and w.y1 <= 5000 for w in windows)
    assert all((w.width, w.height) == (1200, 1200) for w in windows)
    assert len(windows) < len(boxes)  # nearby lesions share windows


def test_no_jitter_centres_the_lesion():
    win = plan_lesion_windows([Box(1000, 2000, 1100, 2200)], 5000, 5000, 1200, np.random.default_rng(0), 0.0)
    assert win == [Box(450, 1500, 1650, 2700)]


def test_crop_annotations_clips_and_marks_barely_visible_boxes():
    window = Box(100, 100, 1300, 1300)
    anns = [
        Annotation(Box(200, 300, 260, 340), "HSIL"),  # inside
        Annotation(Box(1250, 500, 1350, 540), "LSIL"),  # half inside -> kept (min_visible 0.5)
        Annotation(Box(1280, 500, 1380, 540), "AGC"),  # 20% inside -> ignore
        Annotation(Box(0, 0, 50, 50), "ASC-US"),  # outside
    ]
    labels = crop_annotations(anns, window, min_visible=0.5)
    assert [(lab.box.xyxy, lab.label, lab.ignore) for lab in labels] == [
        ((100, 200, 160, 240), "HSIL", False),
        ((1150, 400, 1200, 440), "LSIL", False),
        ((1180, 400, 1200, 440), "AGC", True),
    ]


def test_negative_windows_avoid_lesions():
    boxes = [Box(0, 0, 2500, 2500)]
    rng = np.random.default_rng(1)
    for _ in range(10):
        win = sample_negative_window(boxes, 5000, 5000, 1200, rng)
        assert win is not None and win.intersect(boxes[0]) is None
    assert sample_negative_window([Box(0, 0, 5000, 5000)], 5000, 5000, 1200, rng) is None
