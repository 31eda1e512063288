"""Building blocks shared by the cell-type factories (:mod:`.normal_cells`, :mod:`.lesion_cells`).

Every factory takes ``(rng, center, style, blur)`` and returns the cells of one object (a group
returns several). Sizes are in microns and converted with the slide's mpp, so the generator works
at any resolution. Reference sizes (Bethesda atlas, Nayar & Wilbur 2015):

=================  ===============  =====================================================
cell               cell diameter    nucleus
=================  ===============  =====================================================
superficial        45-60 um         pyknotic, ~5 um, very dark
intermediate       35-55 um         vesicular, ~8 um (area ~35 um2), fine chromatin
parabasal          15-25 um         ~9 um, moderate N/C ratio            (HSIL mimic)
metaplastic        15-25 um         ~9 um, dense cytoplasm, processes     (HSIL mimic)
degenerated        35-50 um         pale smudged nucleus, fuzzy halo     (LSIL mimic)
endocervical       10 x 25 um       ~7.5 um basal, honeycomb or strips   (AGC mimic)
ASC-US             35-55 um         2.5-3x the intermediate nuclear area, mild hyperchromasia
LSIL (koilocyte)   40-58 um         3-4x area, raisinoid, often binucleated, sharp clear halo
HSIL               12-22 um         N/C 0.6-0.8, dark coarse chromatin, irregular membrane
AGC                crowded strips   2-3x endocervical area, overlapping, hyperchromatic
=================  ===============  =====================================================
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace

import numpy as np

from wsi_pipeline.synth.cells import Cell, Nucleus
from wsi_pipeline.synth.shapes import smooth_outline, soften_polygon, star_polygon
from wsi_pipeline.synth.style import SlideStyle

Point = tuple[float, float]
Factory = Callable[[np.random.Generator, Point, SlideStyle, float], list[Cell]]

INTERMEDIATE_NUCLEUS_UM = 3.6  # radius of a normal intermediate-cell nucleus (area ~ 40 um2)
ENDOCERVICAL_NUCLEUS_UM = 3.6


def seed(rng: np.random.Generator) -> int:
    return int(rng.integers(2**62))


def nucleus(
    rng: np.random.Generator,
    center: Point,
    radius: float,
    *,
    density: float,
    texture: float,
    grain: float,
    irregularity: float = 0.04,
    elongation: float = 1.0,
    rim: float = 0.2,
    angle: float | None = None,
) -> Nucleus:
    outline = smooth_outline(
        rng,
        center,
        radius,
        elongation=elongation,
        angle=rng.uniform(0, np.pi) if angle is None else angle,
        irregularity=irregularity,
    )
    return Nucleus(outline, density, texture, grain, rim)


def fold(rng: np.random.Generator, center: Point, radius: float) -> np.ndarray:
    """A chord cutting off an edge region; points ordered so the cut-off side is ``side > 0``."""
    theta = rng.uniform(0, 2 * np.pi)
    d = radius * rng.uniform(0.6, 0.9)
    px, py = center[0] + d * math.cos(theta), center[1] + d * math.sin(theta)
    tx, ty = -math.sin(theta) * radius, math.cos(theta) * radius
    a, b = np.array([px - tx, py - ty]), np.array([px + tx, py + ty])
    side_center = (center[0] - a[0]) * (b[1] - a[1]) - (center[1] - a[1]) * (b[0] - a[0])
    return np.stack([a, b]) if side_center < 0 else np.stack([b, a])


def wrinkle(rng: np.random.Generator, center: Point, radius: float) -> np.ndarray:
    theta = rng.uniform(0, np.pi)
    length = radius * rng.uniform(0.5, 1.3)
    off = rng.uniform(-0.5, 0.5, 2) * radius
    t = np.linspace(-0.5, 0.5, 8) * length
    wiggle = np.cumsum(rng.normal(0, radius * 0.03, 8))
    x = center[0] + off[0] + t * math.cos(theta) - wiggle * math.sin(theta)
    y = center[1] + off[1] + t * math.sin(theta) + wiggle * math.cos(theta)
    return np.stack([x, y], axis=1)


def rounded_rect(rng: np.random.Generator, c: Point, length: float, width: float, angle: float) -> np.ndarray:
    """A columnar cell: rectangle ``length`` along ``angle`` by ``width``, corners rounded, border wavy."""
    ca, sa = math.cos(angle), math.sin(angle)
    half = np.array([[1, 1], [-1, 1], [-1, -1], [1, -1]], float) * [length / 2, width / 2]
    pts = np.stack([c[0] + half[:, 0] * ca - half[:, 1] * sa, c[1] + half[:, 0] * sa + half[:, 1] * ca], axis=1)
    return soften_polygon(rng, pts, iterations=3, wiggle=0.02)


def scatter(rng: np.random.Generator, center: Point, radius: float, k: int) -> np.ndarray:
    r = radius * np.sqrt(rng.uniform(0, 1, k))
    t = rng.uniform(0, 2 * np.pi, k)
    return np.stack([center[0] + r * np.cos(t), center[1] + r * np.sin(t)], axis=1)


def offset(center: Point, radius: float, rng: np.random.Generator, frac: float) -> Point:
    t = rng.uniform(0, 2 * np.pi)
    d = radius * rng.uniform(0, frac)
    return (center[0] + d * math.cos(t), center[1] + d * math.sin(t))


def with_granules(cell: Cell, pts: np.ndarray, radius: float, density: float) -> Cell:
    return replace(cell, granules=(pts,), granule_radius=radius, granule_density=density)


def squamous(
    rng: np.random.Generator,
    c: Point,
    s: SlideStyle,
    blur: float,
    *,
    kind: str,
    diameter_um: tuple[float, float],
    eosinophilic: float,
    nuclei: Callable[[Point, float], tuple[Nucleus, ...]],
    thickness: tuple[float, float] = (0.45, 0.85),
    halo: Callable[[tuple[Nucleus, ...], float], tuple[np.ndarray | None, float, float, float]] | None = None,
) -> Cell:
    """A flat polygonal squamous cell (superficial/intermediate-sized) with folds and creases."""
    r = s.um(rng.uniform(*diameter_um)) / 2
    outline = star_polygon(
        rng,
        c,
        r,
        int(rng.integers(6, 10)),
        irregularity=0.18,
        elongation=rng.uniform(1.0, 1.7),
        angle=rng.uniform(0, np.pi),
    )
    outline = soften_polygon(rng, outline, iterations=1 if kind == "superficial" else 2, wiggle=0.012)
    cyto = s.eosin if rng.uniform() < eosinophilic else s.cyan
    nuc = nuclei(offset(c, r, rng, 0.3), r)
    halo_poly, clear, rim, soft = halo(nuc, r) if halo else (None, 0.0, 0.0, 0.8)
    folds = tuple(fold(rng, c, r) for _ in range(int(rng.uniform() < 0.25) + int(rng.uniform() < 0.06)))
    wrinkles = tuple(wrinkle(rng, c, r) for _ in range(int(rng.integers(0, 3)) if rng.uniform() < 0.4 else 0))
    return Cell(
        kind=kind,
        cyto_od=cyto,
        outline=outline,
        thickness=rng.uniform(*thickness),
        texture=rng.uniform(0.12, 0.3),
        edge=rng.uniform(0.3, 0.7),
        nuclei=nuc,
        halo=halo_poly,
        halo_clear=clear,
        halo_rim=rim,
        halo_softness=soft,
        folds=folds,
        wrinkles=wrinkles,
        blur=blur,
        seed=seed(rng),
    )


def glandular_cells(
    rng: np.random.Generator,
    c: Point,
    s: SlideStyle,
    blur: float,
    *,
    kind: str,
    n_cells: int,
    nucleus_um: float,
    density: float,
    texture: float,
    irregularity: float,
    crowding: float,
    polarity: float,
) -> list[Cell]:
    """Columnar cells side by side (a strip), nuclei near the basal end.

    ``crowding`` < 1 packs cells closer than their width (overlap, as in AGC); ``polarity`` in [0, 1]
    is how well nuclei keep their basal, aligned position (1 = picket fence).
    """
    angle = rng.uniform(0, np.pi)
    ux, uy = math.cos(angle), math.sin(angle)  # along the strip
    vx, vy = -uy, ux  # along the cell axis
    # cells widen with their nuclei; crowding packs them closer than their width (overlap)
    width = s.um(rng.uniform(8.5, 11)) * max(1.0, 0.85 * nucleus_um / ENDOCERVICAL_NUCLEUS_UM)
    spacing = width * crowding
    height = s.um(rng.uniform(20, 28)) * max(1.0, 0.8 * nucleus_um / ENDOCERVICAL_NUCLEUS_UM)
    rows = 2 if n_cells > 10 and rng.uniform() < 0.6 else 1
    per_row = math.ceil(n_cells / rows)
    curve = rng.normal(0, 0.15)
    cells: list[Cell] = []
    for i in range(n_cells):
        row, j = divmod(i, per_row)
        t = (j - (per_row - 1) / 2) * spacing
        bend = curve * (t / max(spacing, 1)) ** 2 * spacing * 0.3
        cx = c[0] + t * ux + (bend + row * height * 0.75) * vx
        cy = c[1] + t * uy + (bend + row * height * 0.75) * vy
        a = angle + np.pi / 2 + rng.normal(0, 0.08 + 0.5 * (1 - polarity))
        outline = rounded_rect(rng, (cx, cy), height, width * rng.uniform(0.95, 1.15), a)
        base = height * (0.25 if polarity > 0.5 else rng.uniform(-0.1, 0.3))
        nx = cx + base * math.cos(a) + rng.normal(0, 0.4 * (1 - polarity)) * width
        ny = cy + base * math.sin(a) + rng.normal(0, 0.4 * (1 - polarity)) * width
        nuc = nucleus(
            rng,
            (nx, ny),
            s.um(nucleus_um * rng.uniform(0.9, 1.15)),
            density=density * rng.uniform(0.9, 1.1),
            texture=texture,
            grain=s.um(0.5),
            irregularity=irregularity,
            elongation=rng.uniform(1.2, 1.8),
            angle=a + rng.normal(0, 0.15 + 0.6 * (1 - polarity)),
        )
        cells.append(
            Cell(
                kind,
                s.cyan * 0.7,
                outline,
                rng.uniform(0.5, 0.8),
                0.15,
                0.3,
                (nuc,),
                blur=blur,
                seed=seed(rng),
            )
        )
    return cells


def honeycomb(
    rng: np.random.Generator,
    c: Point,
    s: SlideStyle,
    blur: float,
    *,
    kind: str,
    n_cells: int,
    nucleus_um: float,
    density: float,
    texture: float,
    irregularity: float,
    spacing_um: float,
    disorder: float,
) -> list[Cell]:
    """A flat sheet of polygonal cells on a hexagonal lattice, nuclei centred (``disorder`` jitters them)."""
    spacing = s.um(spacing_um)
    angle = rng.uniform(0, np.pi)
    side = math.ceil(math.sqrt(n_cells)) + 1
    lattice = [((i + 0.5 * (j % 2)) * spacing, j * spacing * 0.866) for j in range(side) for i in range(side)]
    lattice.sort(key=lambda p: (p[0] - side * spacing / 2) ** 2 + (p[1] - side * spacing * 0.43) ** 2)
    ca, sa = math.cos(angle), math.sin(angle)
    cells: list[Cell] = []
    for px, py in lattice[:n_cells]:
        px -= side * spacing / 2
        py -= side * spacing * 0.43
        cx, cy = c[0] + px * ca - py * sa, c[1] + px * sa + py * ca
        outline = star_polygon(rng, (cx, cy), spacing * 0.6, 6, irregularity=0.06, angle=angle, angular_jitter=0.08)
        ncen = (cx + rng.normal(0, disorder * spacing * 0.3), cy + rng.normal(0, disorder * spacing * 0.3))
        nuc = nucleus(
            rng,
            ncen,
            s.um(nucleus_um * rng.uniform(0.9, 1.1 + 0.3 * disorder)),
            density=density * rng.uniform(0.92, 1.08 + 0.2 * disorder),
            texture=texture,
            grain=s.um(0.5),
            irregularity=irregularity,
            elongation=rng.uniform(1.0, 1.3 + 0.4 * disorder),
        )
        cells.append(
            Cell(
                kind,
                s.cyan * 0.7,
                outline,
                rng.uniform(0.45, 0.7),
                0.1,
                0.25,
                (nuc,),
                blur=blur,
                seed=seed(rng),
            )
        )
    return cells
