"""Normal cells of a liquid-based Pap slide, including the hard mimics of each lesion class."""

from __future__ import annotations

import math

import numpy as np

from wsi_pipeline.synth.cell_parts import (
    ENDOCERVICAL_NUCLEUS_UM,
    INTERMEDIATE_NUCLEUS_UM,
    Factory,
    Point,
    glandular_cells,
    honeycomb,
    nucleus,
    offset,
    scatter,
    seed,
    squamous,
    with_granules,
)
from wsi_pipeline.synth.cells import Cell, Nucleus
from wsi_pipeline.synth.shapes import smooth_outline, soften_polygon, star_polygon
from wsi_pipeline.synth.style import DEBRIS_BROWN, SlideStyle


def superficial(rng: np.random.Generator, c: Point, s: SlideStyle, blur: float) -> list[Cell]:
    def nuclei(p: Point, r: float) -> tuple[Nucleus, ...]:
        return (nucleus(rng, p, s.um(rng.uniform(2.2, 3.0)), density=2.3, texture=0.08, grain=1.0, rim=0.1),)

    cell = squamous(rng, c, s, blur, kind="superficial", diameter_um=(45, 60), eosinophilic=0.85, nuclei=nuclei)
    if rng.uniform() < 0.5:  # keratohyaline granules
        r = s.um(20)
        cell = with_granules(cell, scatter(rng, c, r, int(rng.integers(3, 15))), s.um(0.35), 1.2)
    return [cell]


def intermediate(rng: np.random.Generator, c: Point, s: SlideStyle, blur: float) -> list[Cell]:
    def nuclei(p: Point, r: float) -> tuple[Nucleus, ...]:
        radius = s.um(INTERMEDIATE_NUCLEUS_UM * rng.uniform(0.88, 1.12))
        return (nucleus(rng, p, radius, density=1.0, texture=0.3, grain=s.um(0.45), elongation=rng.uniform(1, 1.35)),)

    return [squamous(rng, c, s, blur, kind="intermediate", diameter_um=(35, 52), eosinophilic=0.12, nuclei=nuclei)]


def parabasal(rng: np.random.Generator, c: Point, s: SlideStyle, blur: float) -> list[Cell]:
    """Round immature cell with dense cytoplasm: a classic HSIL mimic, but with pale fine chromatin."""
    r = s.um(rng.uniform(15, 26)) / 2
    outline = smooth_outline(rng, c, r, elongation=rng.uniform(1, 1.35), angle=rng.uniform(0, np.pi), irregularity=0.06)
    nuc = nucleus(
        rng,
        offset(c, r, rng, 0.2),
        s.um(rng.uniform(3.8, 4.8)),
        density=1.15,
        texture=0.3,
        grain=s.um(0.45),
        elongation=rng.uniform(1, 1.25),
    )
    return [Cell("parabasal", s.cyan, outline, rng.uniform(1.2, 1.6), 0.15, 0.5, (nuc,), blur=blur, seed=seed(rng))]


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
    nuc = nucleus(
        rng,
        offset(c, r, rng, 0.15),
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
            seed=seed(rng),
        )
    ]


def degenerated(rng: np.random.Generator, c: Point, s: SlideStyle, blur: float) -> list[Cell]:
    """Degenerated squamous cell: pale smudged nucleus with a fuzzy, incomplete halo (LSIL mimic)."""

    def nuclei(p: Point, r: float) -> tuple[Nucleus, ...]:
        radius = s.um(INTERMEDIATE_NUCLEUS_UM * rng.uniform(1.0, 1.3))
        return (nucleus(rng, p, radius, density=0.65, texture=0.08, grain=s.um(1.0), irregularity=0.08, rim=0.0),)

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
        squamous(
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


def endocervical(rng: np.random.Generator, c: Point, s: SlideStyle, blur: float) -> list[Cell]:
    """Normal endocervical group: a picket-fence strip or an orderly honeycomb sheet (AGC mimic)."""
    common = dict(kind="endocervical", nucleus_um=ENDOCERVICAL_NUCLEUS_UM, density=1.0, texture=0.25, irregularity=0.03)
    if rng.uniform() < 0.5:
        return glandular_cells(rng, c, s, blur, n_cells=int(rng.integers(5, 14)), crowding=1.0, polarity=1.0, **common)
    return honeycomb(
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
        nucleus(
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
            seed=seed(rng),
        )
    ]


def lymphocyte(rng: np.random.Generator, c: Point, s: SlideStyle, blur: float) -> list[Cell]:
    r = s.um(rng.uniform(7, 9)) / 2
    outline = smooth_outline(rng, c, r, irregularity=0.04)
    nuc = nucleus(rng, offset(c, r, rng, 0.15), r * rng.uniform(0.75, 0.88), density=1.9, texture=0.2, grain=1.5)
    return [Cell("lymphocyte", s.cyan, outline, 0.6, 0.1, 0.2, (nuc,), blur=blur, seed=seed(rng))]


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
    return [Cell("debris", od, outline, rng.uniform(0.5, 1.4), 0.4, 0.3, blur=blur, seed=seed(rng))]


def specks(rng: np.random.Generator, c: Point, s: SlideStyle, blur: float) -> list[Cell]:
    """A cloud of tiny dark dots (bacteria, stain precipitate)."""
    pts = scatter(rng, c, s.um(rng.uniform(5, 20)), int(rng.integers(15, 80)))
    return [
        Cell(
            "specks",
            s.cyan,
            granules=(pts,),
            granule_radius=s.um(rng.uniform(0.25, 0.45)),
            granule_density=rng.uniform(0.6, 1.3),
            blur=blur,
            seed=seed(rng),
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
            seed=seed(rng),
        )
    ]


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
