"""One cell (or cell-like object) as geometry + appearance, and its rendering to optical density.

A :class:`Cell` holds level-0 polygons and a few appearance numbers; :func:`render_cell` turns it into
an OD :class:`Sprite` that the band renderer adds into the slide. Rendering depends only on the cell
(its own seed), so a cell crossing band boundaries renders identically in every band.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from wsi_pipeline.synth.shapes import blur, draw_lines, fill_mask, ring, smooth_noise


@dataclass(frozen=True)
class Nucleus:
    outline: np.ndarray  # (n, 2) level-0 px
    density: float  # multiplier on the slide's hematoxylin OD (1 = normal intermediate nucleus)
    texture: float = 0.3  # chromatin contrast
    grain: float = 1.5  # chromatin grain size, px
    rim: float = 0.2  # nuclear membrane accent


@dataclass(frozen=True)
class Cell:
    """Geometry (level-0 px) and appearance of one object on the slide."""

    kind: str
    cyto_od: np.ndarray  # (3,) OD per unit thickness of the cytoplasm/material
    outline: np.ndarray | None = None  # (n, 2) cytoplasm polygon
    thickness: float = 0.0
    texture: float = 0.2  # low-frequency thickness variation
    edge: float = 0.4  # darkening along the cell border
    nuclei: tuple[Nucleus, ...] = ()
    halo: np.ndarray | None = None  # perinuclear clearing polygon (koilocytes; degenerated cells)
    halo_clear: float = 0.0  # fraction of cytoplasm removed inside the halo
    halo_rim: float = 0.0  # dense cytoplasm condensed at the halo edge
    halo_softness: float = 0.8  # px; large for the indistinct halos of degenerated cells
    folds: tuple[np.ndarray, ...] = ()  # (2, 2) chords; the part beyond is folded over (double layer)
    wrinkles: tuple[np.ndarray, ...] = ()  # thin crease polylines
    granules: tuple[np.ndarray, ...] = ()  # (k, 2) dot centres (keratohyaline granules, bacteria)
    granule_radius: float = 1.2
    granule_density: float = 1.5
    strands: tuple[np.ndarray, ...] = ()  # mucus polylines
    strand_width: int = 3
    blur: float = 0.5  # defocus sigma, px
    seed: int = 0

    def geometry_bounds(self) -> tuple[float, float, float, float]:
        """``(x0, y0, x1, y1)`` of everything drawn, before blur (level-0 px)."""
        parts = [p for p in (self.outline, self.halo) if p is not None]
        parts += [n.outline for n in self.nuclei]
        parts += list(self.strands) + list(self.granules) + list(self.wrinkles)
        pts = np.concatenate(parts, axis=0)
        pad = max(self.granule_radius if self.granules else 0.0, self.strand_width / 2 if self.strands else 0.0)
        return (
            float(pts[:, 0].min() - pad),
            float(pts[:, 1].min() - pad),
            float(pts[:, 0].max() + pad),
            float(pts[:, 1].max() + pad),
        )

    def render_bounds(self) -> tuple[int, int, int, int]:
        """Integer pixel window ``(x0, y0, x1, y1)`` that holds the blurred sprite."""
        x0, y0, x1, y1 = self.geometry_bounds()
        pad = 3.0 * self.blur + 3.0
        return (math.floor(x0 - pad), math.floor(y0 - pad), math.ceil(x1 + pad), math.ceil(y1 + pad))


@dataclass(frozen=True)
class Sprite:
    """Rendered OD ``(h, w, 3)`` float32 whose pixel ``(0, 0)`` is level-0 pixel ``(x0, y0)``."""

    x0: int
    y0: int
    od: np.ndarray


def render_cell(cell: Cell, hematoxylin: np.ndarray) -> Sprite:
    """Render ``cell`` to an OD sprite; ``hematoxylin`` is the slide's nuclear stain OD ``(3,)``."""
    x0, y0, x1, y1 = cell.render_bounds()
    h, w = y1 - y0, x1 - x0
    origin = (float(x0), float(y0))
    rng = np.random.default_rng(cell.seed)
    od = np.zeros((h, w, 3), np.float32)

    if cell.outline is not None and cell.thickness > 0:
        od += _cytoplasm(cell, (h, w), origin, rng)[..., None] * cell.cyto_od.astype(np.float32)
    if cell.strands:
        lines = draw_lines((h, w), list(cell.strands), origin, thickness=cell.strand_width)
        lines *= 1.0 + 0.3 * smooth_noise(rng, (h, w), 6.0)
        od += np.clip(lines, 0, None)[..., None] * (cell.thickness * cell.cyto_od.astype(np.float32))
    if cell.granules:
        dots = np.zeros((h, w), np.float32)
        for centres in cell.granules:
            polys = [_disc(c, cell.granule_radius * rng.uniform(0.7, 1.3)) for c in centres]
            dots = np.maximum(dots, fill_mask((h, w), polys, origin))
        od += (dots * cell.granule_density)[..., None] * hematoxylin.astype(np.float32)
    for nucleus in cell.nuclei:
        od += _nucleus(nucleus, (h, w), origin, rng)[..., None] * hematoxylin.astype(np.float32)
    if cell.blur >= 0.25:
        od = blur(od, cell.blur)
    return Sprite(x0, y0, od)


def _cytoplasm(cell: Cell, shape: tuple[int, int], origin: tuple[float, float], rng: np.random.Generator) -> np.ndarray:
    """Thickness map ``(h, w)`` of the cytoplasm: body, texture, border, folds, creases, halo."""
    assert cell.outline is not None
    mask = fill_mask(shape, [cell.outline], origin)
    size = max(shape)
    variation = 1.0 + cell.texture * smooth_noise(rng, shape, size / 6.0)
    variation += 0.5 * cell.texture * smooth_noise(rng, shape, 2.0)
    thick = mask * np.clip(variation, 0.2, None) * cell.thickness
    if cell.edge > 0:
        thick += ring(mask, 1.5) * cell.edge * cell.thickness
    if cell.folds:
        yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float32)
        xx += origin[0] + 0.5
        yy += origin[1] + 0.5
        for chord in cell.folds:
            (ax, ay), (bx, by) = chord
            length = math.hypot(bx - ax, by - ay) or 1.0
            side = ((xx - ax) * (by - ay) - (yy - ay) * (bx - ax)) / length  # signed distance, px
            folded = 1.0 / (1.0 + np.exp(-np.clip(side, -30, 30) / 0.8))
            crease = np.exp(-(side**2) / 2.0)
            thick += mask * (folded * 0.55 + crease * 0.45) * cell.thickness
    if cell.wrinkles:
        lines = draw_lines(shape, list(cell.wrinkles), origin, thickness=1)
        thick += mask * lines * 0.9 * cell.thickness
    if cell.halo is not None:
        halo = fill_mask(shape, [cell.halo], origin)
        if cell.halo_softness > 1.0:
            halo = blur(halo, cell.halo_softness)
        thick *= 1.0 - cell.halo_clear * halo
        if cell.halo_rim > 0:
            outer = np.clip(blur(halo, 2.5) - halo, 0, 1) * 2.5
            thick += mask * outer * cell.halo_rim * cell.thickness
    return thick


def _nucleus(n: Nucleus, shape: tuple[int, int], origin: tuple[float, float], rng: np.random.Generator) -> np.ndarray:
    """Nuclear OD density map ``(h, w)``: body with chromatin texture and a membrane accent."""
    mask = fill_mask(shape, [n.outline], origin)
    chromatin = 1.0 + n.texture * smooth_noise(rng, shape, n.grain)
    dens = mask * np.clip(chromatin, 0.15, None) * n.density
    if n.rim > 0:
        dens += ring(mask, 1.2) * n.rim * n.density
    return dens


def _disc(center: np.ndarray, radius: float, n: int = 12) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([center[0] + radius * np.cos(t), center[1] + radius * np.sin(t)], axis=1)
