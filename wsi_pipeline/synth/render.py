"""Composite a scene into RGB bands of the slide (memory bounded: one band of sprites at a time)."""

from __future__ import annotations

import numpy as np

from wsi_pipeline.synth.cells import Sprite, render_cell
from wsi_pipeline.synth.scene import Scene
from wsi_pipeline.synth.shapes import bilinear_field
from wsi_pipeline.synth.style import SlideStyle


class BandRenderer:
    """Render full-width horizontal bands of a scene, top to bottom.

    Each cell is rendered once, when the first band it touches is requested, and dropped after the
    last one; bands must therefore be requested in increasing ``y0`` order. Output pixels depend only
    on the scene, the style and the band boundaries (camera noise is drawn per band).
    """

    def __init__(self, scene: Scene, style: SlideStyle):
        self.scene = scene
        self.style = style
        bounds = np.array([c.render_bounds() for c in scene.cells], np.int64).reshape(-1, 4)
        self._bounds = bounds
        self._order = np.argsort(bounds[:, 1], kind="stable") if len(bounds) else np.zeros(0, np.int64)
        self._next = 0
        self._cache: dict[int, Sprite] = {}
        self._last_y0 = -1

    def band(self, y0: int, y1: int) -> np.ndarray:
        """RGB ``(y1 - y0, width, 3)`` uint8 of level-0 rows ``y0 .. y1 - 1``."""
        if y0 < self._last_y0:
            raise ValueError("bands must be requested top to bottom")
        self._last_y0 = y0
        width = self.scene.width
        od = np.zeros((y1 - y0, width, 3), np.float32)
        while self._next < len(self._order) and self._bounds[self._order[self._next], 1] < y1:
            idx = int(self._order[self._next])
            self._cache[idx] = render_cell(self.scene.cells[idx], self.style.hematoxylin)
            self._next += 1
        for idx in [i for i, s in self._cache.items() if s.y0 + s.od.shape[0] <= y0]:
            del self._cache[idx]
        for sprite in self._cache.values():
            _add_sprite(od, sprite, y0, width)
        return self._to_rgb(od, y0, y1)

    def _to_rgb(self, od: np.ndarray, y0: int, y1: int) -> np.ndarray:
        s = self.style
        light = bilinear_field(s.illumination_grid, s.grid_cell, y0, y1, 0, self.scene.width)
        np.negative(od, out=od)
        np.exp(od, out=od)
        for c in range(3):
            od[..., c] *= light * s.background[c]
        rng = np.random.default_rng([s.seed, y0])
        od += rng.standard_normal(od.shape, dtype=np.float32) * np.float32(s.noise_sigma)
        np.clip(od, 0, 255, out=od)
        return np.rint(od).astype(np.uint8)


def _add_sprite(od: np.ndarray, sprite: Sprite, y0: int, width: int) -> None:
    h, w = sprite.od.shape[:2]
    band_h = od.shape[0]
    top, bottom = max(sprite.y0, y0), min(sprite.y0 + h, y0 + band_h)
    left, right = max(sprite.x0, 0), min(sprite.x0 + w, width)
    if top >= bottom or left >= right:
        return
    od[top - y0 : bottom - y0, left:right] += sprite.od[
        top - sprite.y0 : bottom - sprite.y0, left - sprite.x0 : right - sprite.x0
    ]


def render_region(scene: Scene, style: SlideStyle, band_height: int = 256) -> np.ndarray:
    """The whole scene as one RGB array ``(height, width, 3)`` (small slides, tests, previews)."""
    renderer = BandRenderer(scene, style)
    bands = [renderer.band(y, min(y + band_height, scene.height)) for y in range(0, scene.height, band_height)]
    return np.concatenate(bands, axis=0)
