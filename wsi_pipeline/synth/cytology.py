"""Cell types of a liquid-based Pap slide: normal cells, hard mimics and the four lesion classes.

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
from wsi_pipeline.synth.style import DEBRIS_BROWN, SlideStyle

Point = tuple[float, float]
Factory = Callable[[np.random.Generator, Point, SlideStyle, float], list[Cell]]

INTERMEDIATE_NUCLEUS_UM = 3.6  # radius of a normal intermediate-cell nucleus (area ~ 40 um2)
ENDOCERVICAL_NUCLEUS_UM = 3.6


def _seed(rng: np.random.Generator) -> int:
    return int(rng.integers(2**62))


def _nucleus(
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


def _fold(rng: np.random.Generator, center: Point, radius: float) -> np.ndarray:
    """A chord cutting off an edge region; points ordered so the cut-off side is ``side > 0``."""
    theta = rng.uniform(0, 2 * np.pi)
    d = radius * rng.uniform(0.6, 0.9)
    px, py = center[0] + d * math.cos(theta), center[1] + d * math.sin(theta)
    tx, ty = -math.sin(theta) * radius, math.cos(theta) * radius
    a, b = np.array([px - tx, py - ty]), np.array([px + tx, py + ty])
    side_center = (center[0] - a[0]) * (b[1] - a[1]) - (center[1] - a[1]) * (b[0] - a[0])
    return np.stack([a, b]) if side_center < 0 else np.stack([b, a])


def _wrinkle(rng: np.random.Generator, center: Point, radius: float) -> np.ndarray:
    theta = rng.uniform(0, np.pi)
    length = radius * rng.uniform(0.5, 1.3)
    off = rng.uniform(-0.5, 0.5, 2) * radius
    t = np.linspace(-0.5, 0.5, 8) * length
    wiggle = np.cumsum(rng.normal(0, radius * 0.03, 8))
    x = center[0] + off[0] + t * math.cos(theta) - wiggle * math.sin(theta)
    y = center[1] + off[1] + t * math.sin(theta) + wiggle * math.cos(theta)
    return np.stack([x, y], axis=1)


def _rounded_rect(rng: np.random.Generator, c: Point, length: float, width: float, angle: float) -> np.ndarray:
    """A columnar cell: rectangle ``length`` along ``angle`` by ``width``, corners rounded, border wavy."""
    ca, sa = math.cos(angle), math.sin(angle)
    half = np.array([[1, 1], [-1, 1], [-1, -1], [1, -1]], float) * [length / 2, width / 2]
    pts = np.stack([c[0] + half[:, 0] * ca - half[:, 1] * sa, c[1] + half[:, 0] * sa + half[:, 1] * ca], axis=1)
    return soften_polygon(rng, pts, iterations=3, wiggle=0.02)


def _scatter(rng: np.random.Generator, center: Point, radius: float, k: int) -> np.ndarray:
    r = radius * np.sqrt(rng.uniform(0, 1, k))
    t = rng.uniform(0, 2 * np.pi, k)
    return np.stack([center[0] + r * np.cos(t), center[1] + r * np.sin(t)], axis=1)


def _offset(center: Point, radius: float, rng: np.random.Generator, frac: float) -> Point:
    t = rng.uniform(0, 2 * np.pi)
    d = radius * rng.uniform(0, frac)
    return (center[0] + d * math.cos(t), center[1] + d * math.sin(t))


def _squamous(
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
    nuc = nuclei(_offset(c, r, rng, 0.3), r)
    halo_poly, clear, rim, soft = halo(nuc, r) if halo else (None, 0.0, 0.0, 0.8)
    folds = tuple(_fold(rng, c, r) for _ in range(int(rng.uniform() < 0.25) + int(rng.uniform() < 0.06)))
    wrinkles = tuple(_wrinkle(rng, c, r) for _ in range(int(rng.integers(0, 3)) if rng.uniform() < 0.4 else 0))
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
        seed=_seed(rng),
    )


# ---------------------------------------------------------------------------------------- normal


def superficial(rng: np.random.Generator, c: Point, s: SlideStyle, blur: float) -> list[Cell]:
    def nuclei(p: Point, r: float) -> tuple[Nucleus, ...]:
        return (_nucleus(rng, p, s.um(rng.uniform(2.2, 3.0)), density=2.3, texture=0.08, grain=1.0, rim=0.1),)

    cell = _squamous(rng, c, s, blur, kind="superficial", diameter_um=(45, 60), eosinophilic=0.85, nuclei=nuclei)
    if rng.uniform() < 0.5:  # keratohyaline granules
        r = s.um(20)
        cell = _with_granules(cell, _scatter(rng, c, r, int(rng.integers(3, 15))), s.um(0.35), 1.2)
    return [cell]


def intermediate(rng: np.random.Generator, c: Point, s: SlideStyle, blur: float) -> list[Cell]:
    def nuclei(p: Point, r: float) -> tuple[Nucleus, ...]:
        radius = s.um(INTERMEDIATE_NUCLEUS_UM * rng.uniform(0.88, 1.12))
        return (_nucleus(rng, p, radius, density=1.0, texture=0.3, grain=s.um(0.45), elongation=rng.uniform(1, 1.35)),)

    return [_squamous(rng, c, s, blur, kind="intermediate", diameter_um=(35, 52), eosinophilic=0.12, nuclei=nuclei)]


def parabasal(rng: np.random.Generator, c: Point, s: SlideStyle, blur: float) -> list[Cell]:
    """Round immature cell with dense cytoplasm: a classic HSIL mimic, but with pale fine chromatin."""
    r = s.um(rng.uniform(15, 26)) / 2
    outline = smooth_outline(rng, c, r, elongation=rng.uniform(1, 1.35), angle=rng.uniform(0, np.pi), irregularity=0.06)
    nuc = _nucleus(
        rng,
        _offset(c, r, rng, 0.2),
        s.um(rng.uniform(3.8, 4.8)),
        density=1.15,
        texture=0.3,
        grain=s.um(0.45),
        elongation=rng.uniform(1, 1.25),
    )
    return [Cell("parabasal", s.cyan, outline, rng.uniform(1.2, 1.6), 0.15, 0.5, (nuc,), blur=blur, seed=_seed(rng))]


def metaplastic(rng: np.random.Generator, c: Point, s: SlideStyle, blur: float) -> list[Cell]:
    """Squamous metaplastic cell: dense cytoplasm with angular processes ("spider cell")."""
    r = s.um(rng.uniform(16, 26)) / 2
    outline = star_polygon(
        rng,
        c,
        r,
        int(rng.integers(4, 7)),
        irregularity=0.45,
        elongation=rng.uniform(1, 1.6),
        angle=rng.uniform(0, np.pi),
        angular_jitter=0.45,
    )
    outline = soften_polygon(rng, outline, iterations=2, wiggle=0.02)
    nuc = _nucleus(
        rng,
        _offset(c, r, rng, 0.15),
        s.um(rng.uniform(3.8, 4.8)),
        density=1.2,
        texture=0.32,
        grain=s.um(0.5),
        elongation=rng.uniform(1, 1.3),
    )
    return [
        Cell(
            "metaplastic",
            s.cyan,
            outline,
            rng.uniform(1.3, 1.8),
            0.15,
            0.5,
            (nuc,),
            blur=blur,
            seed=_seed(rng),
        )
    ]


def degenerated(rng: np.random.Generator, c: Point, s: SlideStyle, blur: float) -> list[Cell]:
    """Degenerated squamous cell: pale smudged nucleus with a fuzzy, incomplete halo (LSIL mimic)."""

    def nuclei(p: Point, r: float) -> tuple[Nucleus, ...]:
        radius = s.um(INTERMEDIATE_NUCLEUS_UM * rng.uniform(1.0, 1.3))
        return (_nucleus(rng, p, radius, density=0.65, texture=0.08, grain=s.um(1.0), irregularity=0.08, rim=0.0),)

    def halo(nuc: tuple[Nucleus, ...], r: float) -> tuple[np.ndarray, float, float, float]:
        cx, cy = nuc[0].outline.mean(axis=0)
        poly = smooth_outline(
            rng,
            (cx, cy),
            s.um(rng.uniform(5.5, 8)),
            elongation=rng.uniform(1, 1.4),
            angle=rng.uniform(0, np.pi),
            irregularity=0.2,
        )
        return poly, rng.uniform(0.3, 0.5), 0.0, s.um(1.5)

    return [
        _squamous(
            rng,
            c,
            s,
            blur,
            kind="degenerated",
            diameter_um=(35, 50),
            eosinophilic=0.4,
            nuclei=nuclei,
            halo=halo,
        )
    ]


def _glandular_cells(
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
        outline = _rounded_rect(rng, (cx, cy), height, width * rng.uniform(0.95, 1.15), a)
        base = height * (0.25 if polarity > 0.5 else rng.uniform(-0.1, 0.3))
        nx = cx + base * math.cos(a) + rng.normal(0, 0.4 * (1 - polarity)) * width
        ny = cy + base * math.sin(a) + rng.normal(0, 0.4 * (1 - polarity)) * width
        nuc = _nucleus(
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
                seed=_seed(rng),
            )
        )
    return cells


def _honeycomb(
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
        nuc = _nucleus(
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
                seed=_seed(rng),
            )
        )
    return cells


def endocervical(rng: np.random.Generator, c: Point, s: SlideStyle, blur: float) -> list[Cell]:
    """Normal endocervical group: a picket-fence strip or an orderly honeycomb sheet (AGC mimic)."""
    common = dict(kind="endocervical", nucleus_um=ENDOCERVICAL_NUCLEUS_UM, density=1.0, texture=0.25, irregularity=0.03)
    if rng.uniform() < 0.5:
        return _glandular_cells(rng, c, s, blur, n_cells=int(rng.integers(5, 14)), crowding=1.0, polarity=1.0, **common)
    return _honeycomb(
        rng,
        c,
        s,
        blur,
        n_cells=int(rng.integers(7, 22)),
        spacing_um=rng.uniform(10, 12),
        disorder=0.0,
        **common,
    )


def neutrophil(rng: np.random.Generator, c: Point, s: SlideStyle, blur: float) -> list[Cell]:
    r = s.um(rng.uniform(9, 12)) / 2
    outline = smooth_outline(rng, c, r, elongation=rng.uniform(1, 1.2), irregularity=0.08)
    lobes = int(rng.integers(2, 5))
    start = rng.uniform(0, 2 * np.pi)
    nuclei = tuple(
        _nucleus(
            rng,
            (c[0] + 0.45 * r * math.cos(start + k * 1.4), c[1] + 0.45 * r * math.sin(start + k * 1.4)),
            s.um(rng.uniform(1.3, 1.8)),
            density=1.7,
            texture=0.1,
            grain=1.0,
            elongation=rng.uniform(1, 1.5),
        )
        for k in range(lobes)
    )
    return [
        Cell(
            "neutrophil",
            s.cyan * 0.5 + s.eosin * 0.3,
            outline,
            0.3,
            0.1,
            0.2,
            nuclei,
            blur=blur,
            seed=_seed(rng),
        )
    ]


def lymphocyte(rng: np.random.Generator, c: Point, s: SlideStyle, blur: float) -> list[Cell]:
    r = s.um(rng.uniform(7, 9)) / 2
    outline = smooth_outline(rng, c, r, irregularity=0.04)
    nuc = _nucleus(rng, _offset(c, r, rng, 0.15), r * rng.uniform(0.75, 0.88), density=1.9, texture=0.2, grain=1.5)
    return [Cell("lymphocyte", s.cyan, outline, 0.6, 0.1, 0.2, (nuc,), blur=blur, seed=_seed(rng))]


def debris(rng: np.random.Generator, c: Point, s: SlideStyle, blur: float) -> list[Cell]:
    r = s.um(rng.uniform(2, 9))
    outline = star_polygon(
        rng,
        c,
        r,
        int(rng.integers(6, 11)),
        irregularity=0.5,
        elongation=rng.uniform(1, 3),
        angle=rng.uniform(0, np.pi),
    )
    od = [DEBRIS_BROWN, s.eosin, s.cyan][int(rng.integers(0, 3))]
    return [Cell("debris", od, outline, rng.uniform(0.5, 1.4), 0.4, 0.3, blur=blur, seed=_seed(rng))]


def specks(rng: np.random.Generator, c: Point, s: SlideStyle, blur: float) -> list[Cell]:
    """A cloud of tiny dark dots (bacteria, stain precipitate)."""
    pts = _scatter(rng, c, s.um(rng.uniform(5, 20)), int(rng.integers(15, 80)))
    return [
        Cell(
            "specks",
            s.cyan,
            granules=(pts,),
            granule_radius=s.um(rng.uniform(0.25, 0.45)),
            granule_density=rng.uniform(0.6, 1.3),
            blur=blur,
            seed=_seed(rng),
        )
    ]


def mucus(rng: np.random.Generator, c: Point, s: SlideStyle, blur: float) -> list[Cell]:
    """A faint curving mucus strand."""
    n = 12
    steps = rng.normal(0, 0.35, n).cumsum() + rng.uniform(0, 2 * np.pi)
    seg = s.um(rng.uniform(6, 16))
    x = c[0] + np.cumsum(seg * np.cos(steps))
    y = c[1] + np.cumsum(seg * np.sin(steps))
    line = np.stack([x - (x.mean() - c[0]), y - (y.mean() - c[1])], axis=1)
    return [
        Cell(
            "mucus",
            s.cyan,
            thickness=rng.uniform(0.2, 0.45),
            strands=(line,),
            strand_width=max(2, round(s.um(rng.uniform(0.6, 1.4)))),
            blur=blur + 0.5,
            seed=_seed(rng),
        )
    ]


# --------------------------------------------------------------------------------------- lesions


def asc_us(rng: np.random.Generator, c: Point, s: SlideStyle, blur: float) -> list[Cell]:
    """ASC-US: mature squamous cell, nucleus 2.5-3x intermediate area, mild hyperchromasia."""

    def nuclei(p: Point, r: float) -> tuple[Nucleus, ...]:
        radius = s.um(INTERMEDIATE_NUCLEUS_UM * math.sqrt(rng.uniform(2.5, 3.0)))
        first = _nucleus(
            rng,
            p,
            radius,
            density=rng.uniform(1.2, 1.4),
            texture=0.35,
            grain=s.um(0.6),
            irregularity=rng.uniform(0.03, 0.08),
            elongation=rng.uniform(1, 1.4),
        )
        if rng.uniform() < 0.08:
            q = _offset(p, radius * 2.1, rng, 1.0)
            return (first, _nucleus(rng, q, radius * 0.9, density=1.3, texture=0.35, grain=s.um(0.6)))
        return (first,)

    return [_squamous(rng, c, s, blur, kind="ASC-US", diameter_um=(36, 54), eosinophilic=0.35, nuclei=nuclei)]


def lsil(rng: np.random.Generator, c: Point, s: SlideStyle, blur: float) -> list[Cell]:
    """LSIL koilocyte: enlarged raisinoid (often two) nuclei inside a sharp, clear perinuclear cavity."""

    def nuclei(p: Point, r: float) -> tuple[Nucleus, ...]:
        radius = s.um(INTERMEDIATE_NUCLEUS_UM * math.sqrt(rng.uniform(3.0, 4.0)))

        def one(q: Point) -> Nucleus:
            return _nucleus(
                rng,
                q,
                radius * rng.uniform(0.85, 1.0),
                density=rng.uniform(1.5, 1.9),
                texture=0.25,
                grain=s.um(0.8),
                irregularity=rng.uniform(0.1, 0.16),
                elongation=rng.uniform(1, 1.35),
                rim=0.3,
            )

        if rng.uniform() < 0.35:
            t = rng.uniform(0, np.pi)
            d = radius * 0.95
            return (
                one((p[0] + d * math.cos(t), p[1] + d * math.sin(t))),
                one((p[0] - d * math.cos(t), p[1] - d * math.sin(t))),
            )
        return (one(p),)

    def halo(nuc: tuple[Nucleus, ...], r: float) -> tuple[np.ndarray, float, float, float]:
        pts = np.concatenate([n.outline for n in nuc])
        cx, cy = pts.mean(axis=0)
        extent = float(np.max(np.hypot(pts[:, 0] - cx, pts[:, 1] - cy)))
        radius = min(extent * rng.uniform(1.8, 2.4), r * 0.75)
        poly = smooth_outline(
            rng,
            _offset((cx, cy), extent * 0.3, rng, 1.0),
            radius,
            elongation=rng.uniform(1, 1.5),
            angle=rng.uniform(0, np.pi),
            irregularity=0.18,
        )
        return poly, rng.uniform(0.8, 0.93), rng.uniform(0.7, 1.1), 0.6

    return [
        _squamous(
            rng,
            c,
            s,
            blur,
            kind="LSIL",
            diameter_um=(42, 58),
            eosinophilic=0.55,
            nuclei=nuclei,
            thickness=(0.75, 1.1),
            halo=halo,
        )
    ]


def _hsil_cell(rng: np.random.Generator, c: Point, s: SlideStyle, blur: float) -> Cell:
    r = s.um(rng.uniform(12, 21)) / 2
    outline = smooth_outline(rng, c, r, elongation=rng.uniform(1, 1.5), angle=rng.uniform(0, np.pi), irregularity=0.12)
    nuc = _nucleus(
        rng,
        _offset(c, r, rng, 0.1),
        r * rng.uniform(0.62, 0.8),
        density=rng.uniform(1.9, 2.4),
        texture=rng.uniform(0.45, 0.6),
        grain=s.um(rng.uniform(0.8, 1.1)),
        irregularity=rng.uniform(0.12, 0.2),
        elongation=rng.uniform(1, 1.4),
        rim=0.35,
    )
    return Cell("HSIL", s.cyan, outline, rng.uniform(1.2, 1.6), 0.15, 0.5, (nuc,), blur=blur, seed=_seed(rng))


def hsil(rng: np.random.Generator, c: Point, s: SlideStyle, blur: float) -> list[Cell]:
    """HSIL: small cells with very high N/C ratio, dark coarse chromatin; single or a syncytial group."""
    if rng.uniform() < 0.7:
        return [_hsil_cell(rng, c, s, blur)]
    n = int(rng.integers(3, 8))
    spread = s.um(9)
    return [_hsil_cell(rng, (c[0] + rng.normal(0, spread), c[1] + rng.normal(0, spread)), s, blur) for _ in range(n)]


def agc(rng: np.random.Generator, c: Point, s: SlideStyle, blur: float) -> list[Cell]:
    """AGC: crowded strip or sheet of glandular cells, enlarged overlapping hyperchromatic nuclei."""
    common = dict(kind="AGC", density=rng.uniform(1.2, 1.45), texture=0.4, irregularity=rng.uniform(0.06, 0.12))
    nucleus_um = ENDOCERVICAL_NUCLEUS_UM * math.sqrt(rng.uniform(2.0, 3.0))
    if rng.uniform() < 0.6:
        return _glandular_cells(
            rng,
            c,
            s,
            blur,
            n_cells=int(rng.integers(5, 12)),
            nucleus_um=nucleus_um,
            crowding=rng.uniform(0.65, 0.85),
            polarity=rng.uniform(0.0, 0.5),
            **common,
        )
    return _honeycomb(
        rng,
        c,
        s,
        blur,
        n_cells=int(rng.integers(6, 14)),
        nucleus_um=nucleus_um,
        spacing_um=rng.uniform(9, 11),
        disorder=rng.uniform(0.6, 1.0),
        **common,
    )


def _with_granules(cell: Cell, pts: np.ndarray, radius: float, density: float) -> Cell:
    return replace(cell, granules=(pts,), granule_radius=radius, granule_density=density)


NORMAL_FACTORIES: dict[str, Factory] = {
    "superficial": superficial,
    "intermediate": intermediate,
    "parabasal": parabasal,
    "metaplastic": metaplastic,
    "degenerated": degenerated,
    "endocervical": endocervical,
    "neutrophil": neutrophil,
    "lymphocyte": lymphocyte,
    "debris": debris,
    "specks": specks,
    "mucus": mucus,
}
LESION_FACTORIES: dict[str, Factory] = {"ASC-US": asc_us, "LSIL": lsil, "HSIL": hsil, "AGC": agc}
