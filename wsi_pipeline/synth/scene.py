"""Place cells on a slide: normal cells, hard mimics, lesions, and the ground truth boxes.

A :class:`Scene` is pure geometry (no pixels): it is cheap to build, decides the labels, and the
renderer turns it into pixels band by band.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

import cv2
import numpy as np

from wsi_pipeline.config import SynthConfig
from wsi_pipeline.synth.cells import Cell
from wsi_pipeline.synth.lesion_cells import LESION_FACTORIES
from wsi_pipeline.synth.normal_cells import NORMAL_FACTORIES
from wsi_pipeline.synth.shapes import smooth_noise
from wsi_pipeline.synth.style import SlideStyle
from wsi_pipeline.taxonomy import CLASS_CODES
from wsi_pipeline.types import Box

# Mean objects per mm2 at multiplier 1, besides squamous cells (config ``cells_per_mm2``).
_MIMICS_PER_MM2 = {"parabasal": 3.0, "metaplastic": 3.0, "degenerated": 3.0, "endocervical": 0.5}
_INFLAMMATORY_PER_MM2 = {"neutrophil": 40.0, "lymphocyte": 8.0}
_DEBRIS_PER_MM2 = {"debris": 25.0, "specks": 6.0, "mucus": 1.5}
_DOMINANT_SHARE = 0.6  # share of a positive slide's lesions that have the slide's own diagnosis


@dataclass(frozen=True)
class Lesion:
    """A ground-truth lesion: class code, level-0 box, and the indices of its cells in ``Scene.cells``."""

    label: str
    box: Box
    cells: tuple[int, ...]


@dataclass
class Scene:
    width: int
    height: int
    cells: list[Cell]
    lesions: list[Lesion]
    counts: Counter[str] = field(default_factory=Counter)  # objects per kind (lesion groups count once)

    def subset(self, indices: list[int]) -> Scene:
        """A scene holding only the given cells (lesion cell indices remapped)."""
        keep = {old: new for new, old in enumerate(indices)}
        lesions = [
            Lesion(les.label, les.box, tuple(keep[i] for i in les.cells))
            for les in self.lesions
            if all(i in keep for i in les.cells)
        ]
        return Scene(self.width, self.height, [self.cells[i] for i in indices], lesions, Counter())


def cell_box(cells: list[Cell]) -> Box:
    """Ground-truth box of a lesion's cells: their outlines' extent, rounded outwards to whole pixels."""
    bounds = [c.geometry_bounds() for c in cells]
    return Box(
        math.floor(min(b[0] for b in bounds)),
        math.floor(min(b[1] for b in bounds)),
        math.ceil(max(b[2] for b in bounds)),
        math.ceil(max(b[3] for b in bounds)),
    )


def build_scene(
    cfg: SynthConfig, style: SlideStyle, rng: np.random.Generator, width: int, height: int, positive: bool
) -> Scene:
    """Draw every object of one slide. ``positive`` slides get lesions, the others none."""
    area_mm2 = width * height * (cfg.mpp / 1000.0) ** 2
    density = _DensityMap(rng, width, height)
    scene = Scene(width, height, [], [])

    lesions = _place_lesions(cfg, style, rng, density, area_mm2) if positive else []
    occupied = [les_box for les_box, _, _ in lesions]

    def add(kind: str, center: tuple[float, float]) -> None:
        cells = NORMAL_FACTORIES[kind](rng, center, style, _blur(style, center))
        # keep lesions readable: no epithelial cell centred on top of one
        epithelial = kind in _MIMICS_PER_MM2 or kind in ("superficial", "intermediate")
        if epithelial and any(b.x0 <= center[0] < b.x1 and b.y0 <= center[1] < b.y1 for b in occupied):
            return
        scene.cells.extend(cells)
        scene.counts[kind] += 1

    n_squamous = rng.poisson(cfg.cells_per_mm2 * area_mm2 * style.cellularity)
    for center in _clustered_points(rng, density, n_squamous, style.um(30)):
        add("superficial" if rng.uniform() < style.superficial_fraction else "intermediate", center)
    rates = {k: v * cfg.mimics for k, v in _MIMICS_PER_MM2.items()}
    rates |= {k: v * cfg.inflammation * style.inflammation for k, v in _INFLAMMATORY_PER_MM2.items()}
    rates |= {k: v * cfg.debris for k, v in _DEBRIS_PER_MM2.items()}
    for kind, rate in rates.items():
        n = rng.poisson(rate * area_mm2)
        spread = style.um(25) if kind == "neutrophil" else 0.0
        for center in _clustered_points(rng, density, n, spread):
            add(kind, center)

    for les_box, label, cells in lesions:
        first = len(scene.cells)
        scene.cells.extend(cells)
        scene.lesions.append(Lesion(label, les_box, tuple(range(first, first + len(cells)))))
        scene.counts[label] += 1
    return scene


def _place_lesions(
    cfg: SynthConfig, style: SlideStyle, rng: np.random.Generator, density: _DensityMap, area_mm2: float
) -> list[tuple[Box, str, list[Cell]]]:
    """Lesions where the cellularity map puts cells, fully inside the slide, never touching each other."""
    width, height = density.width, density.height
    weights = np.array([cfg.class_weights.get(code, 0.0) for code in CLASS_CODES], float)
    weights /= weights.sum()
    dominant = CLASS_CODES[rng.choice(len(CLASS_CODES), p=weights)]
    n = max(cfg.min_lesions, rng.poisson(cfg.lesions_per_mm2 * area_mm2 * math.exp(rng.normal(0, 0.5))))
    placed: list[tuple[Box, str, list[Cell]]] = []
    for _ in range(n):
        label = dominant if rng.uniform() < _DOMINANT_SHARE else CLASS_CODES[rng.choice(len(CLASS_CODES), p=weights)]
        for _attempt in range(40):
            center = (rng.uniform(0, width), rng.uniform(0, height))
            if not density.accept(rng, np.array([center]))[0]:
                continue
            cells = LESION_FACTORIES[label](rng, center, style, _blur(style, center))
            box = cell_box(cells)
            margin = 3 * max(c.blur for c in cells) + 2
            inside = box.x0 >= margin and box.y0 >= margin and box.x1 <= width - margin and box.y1 <= height - margin
            if inside and not any(_near(box, other, style.um(5)) for other, _, _ in placed):
                placed.append((box, label, cells))
                break
    return placed


def _near(a: Box, b: Box, gap: float) -> bool:
    return not (a.x1 + gap <= b.x0 or b.x1 + gap <= a.x0 or a.y1 + gap <= b.y0 or b.y1 + gap <= a.y0)


def _blur(style: SlideStyle, center: tuple[float, float]) -> float:
    gy = min(int(center[1] / style.grid_cell), style.focus_grid.shape[0] - 1)
    gx = min(int(center[0] / style.grid_cell), style.focus_grid.shape[1] - 1)
    return float(style.focus * style.focus_grid[max(gy, 0), max(gx, 0)])


class _DensityMap:
    """Smooth, uneven cellularity over the slide (thick and thin areas of the preparation)."""

    def __init__(self, rng: np.random.Generator, width: int, height: int, cell: float = 512.0):
        gh, gw = max(2, math.ceil(height / cell)), max(2, math.ceil(width / cell))
        field = np.exp(0.6 * smooth_noise(rng, (gh, gw), 2.0 if min(gh, gw) > 4 else 0.0))
        self.field = cv2.resize(field.astype(np.float32), (gw, gh))
        self.cell = cell
        self.peak = float(self.field.max())
        self.width, self.height = width, height

    def accept(self, rng: np.random.Generator, pts: np.ndarray) -> np.ndarray:
        gx = np.clip((pts[:, 0] / self.cell).astype(int), 0, self.field.shape[1] - 1)
        gy = np.clip((pts[:, 1] / self.cell).astype(int), 0, self.field.shape[0] - 1)
        return rng.uniform(0, self.peak, len(pts)) < self.field[gy, gx]


def _clustered_points(
    rng: np.random.Generator, density: _DensityMap, n: int, spread: float
) -> list[tuple[float, float]]:
    """``n`` points following the density map; with ``spread`` > 0 a third of them come in clusters."""
    if n <= 0:
        return []
    pts: list[np.ndarray] = []
    total = 0
    while total < n:
        cand = rng.uniform((0, 0), (density.width, density.height), size=(2 * n + 8, 2))
        cand = cand[density.accept(rng, cand)]
        pts.append(cand)
        total += len(cand)
    out = np.concatenate(pts)[:n]
    if spread > 0 and n >= 3:
        clustered = rng.uniform(size=n) < 0.33
        parents = out[rng.integers(0, n, size=int(clustered.sum()))]
        out[clustered] = parents + rng.normal(0, spread, size=parents.shape)
    out[:, 0] = np.clip(out[:, 0], 0, density.width - 1)
    out[:, 1] = np.clip(out[:, 1], 0, density.height - 1)
    return [(float(x), float(y)) for x, y in out]
