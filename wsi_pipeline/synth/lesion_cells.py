"""The four lesion classes, each with the morphology that defines it (Bethesda 2014)."""

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
    seed,
    squamous,
)
from wsi_pipeline.synth.cells import Cell, Nucleus
from wsi_pipeline.synth.shapes import smooth_outline
from wsi_pipeline.synth.style import SlideStyle


def asc_us(rng: np.random.Generator, c: Point, s: SlideStyle, blur: float) -> list[Cell]:
    """ASC-US: mature squamous cell, nucleus 2.5-3x intermediate area, mild hyperchromasia."""

    ph = s.lesions

    def nuclei(p: Point, r: float) -> tuple[Nucleus, ...]:
        radius = s.um(INTERMEDIATE_NUCLEUS_UM * math.sqrt(rng.uniform(2.5, 3.0))) * ph.nucleus("ASC-US")
        first = nucleus(
            rng,
            p,
            radius,
            density=rng.uniform(1.2, 1.4) * ph.density("ASC-US"),
            texture=0.35,
            grain=s.um(0.6),
            irregularity=rng.uniform(0.03, 0.08),
            elongation=rng.uniform(1, 1.4),
        )
        if rng.uniform() < 0.08:
            q = offset(p, radius * 2.1, rng, 1.0)
            density = 1.3 * ph.density("ASC-US")
            return (first, nucleus(rng, q, radius * 0.9, density=density, texture=0.35, grain=s.um(0.6)))
        return (first,)

    return [squamous(rng, c, s, blur, kind="ASC-US", diameter_um=(36, 54), eosinophilic=0.35, nuclei=nuclei)]


def lsil(rng: np.random.Generator, c: Point, s: SlideStyle, blur: float) -> list[Cell]:
    """LSIL koilocyte: enlarged raisinoid (often two) nuclei inside a sharp, clear perinuclear cavity
    (some patients' LSIL cells lack the cavity and show only the nuclear changes)."""
    ph = s.lesions

    def nuclei(p: Point, r: float) -> tuple[Nucleus, ...]:
        radius = s.um(INTERMEDIATE_NUCLEUS_UM * math.sqrt(rng.uniform(3.0, 4.0))) * ph.nucleus("LSIL")

        def one(q: Point) -> Nucleus:
            return nucleus(
                rng,
                q,
                radius * rng.uniform(0.85, 1.0),
                density=rng.uniform(1.5, 1.9) * ph.density("LSIL"),
                texture=0.25,
                grain=s.um(0.8),
                irregularity=rng.uniform(0.1, 0.16),
                elongation=rng.uniform(1, 1.35),
                rim=0.3,
            )

        if rng.uniform() < ph.binucleation:
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
            offset((cx, cy), extent * 0.3, rng, 1.0),
            radius,
            elongation=rng.uniform(1, 1.5),
            angle=rng.uniform(0, np.pi),
            irregularity=0.18,
        )
        return poly, rng.uniform(0.8, 0.93), rng.uniform(0.7, 1.1), 0.6

    with_halo = ph.koilocyte_halo >= 1 or rng.uniform() < ph.koilocyte_halo
    return [
        squamous(
            rng,
            c,
            s,
            blur,
            kind="LSIL",
            diameter_um=(42, 58),
            eosinophilic=0.55,
            nuclei=nuclei,
            thickness=(0.75, 1.1),
            halo=halo if with_halo else None,
        )
    ]


def _hsil_cell(rng: np.random.Generator, c: Point, s: SlideStyle, blur: float) -> Cell:
    r = s.um(rng.uniform(12, 21)) / 2
    outline = smooth_outline(rng, c, r, elongation=rng.uniform(1, 1.5), angle=rng.uniform(0, np.pi), irregularity=0.12)
    nuc = nucleus(
        rng,
        offset(c, r, rng, 0.1),
        r * rng.uniform(0.62, 0.8) * s.lesions.nucleus("HSIL"),
        density=rng.uniform(1.9, 2.4) * s.lesions.density("HSIL"),
        texture=rng.uniform(0.45, 0.6),
        grain=s.um(rng.uniform(0.8, 1.1)),
        irregularity=rng.uniform(0.12, 0.2),
        elongation=rng.uniform(1, 1.4),
        rim=0.35,
    )
    return Cell("HSIL", s.cyan, outline, rng.uniform(1.2, 1.6), 0.15, 0.5, (nuc,), blur=blur, seed=seed(rng))


def hsil(rng: np.random.Generator, c: Point, s: SlideStyle, blur: float) -> list[Cell]:
    """HSIL: small cells with very high N/C ratio, dark coarse chromatin; single or a syncytial group."""
    if rng.uniform() < s.lesions.hsil_single:
        return [_hsil_cell(rng, c, s, blur)]
    n = int(rng.integers(3, 8))
    spread = s.um(9)
    return [_hsil_cell(rng, (c[0] + rng.normal(0, spread), c[1] + rng.normal(0, spread)), s, blur) for _ in range(n)]


def agc(rng: np.random.Generator, c: Point, s: SlideStyle, blur: float) -> list[Cell]:
    """AGC: crowded strip or sheet of glandular cells, enlarged overlapping hyperchromatic nuclei."""
    ph = s.lesions
    density = rng.uniform(1.2, 1.45) * ph.density("AGC")
    common = dict(kind="AGC", density=density, texture=0.4, irregularity=rng.uniform(0.06, 0.12))
    nucleus_um = ENDOCERVICAL_NUCLEUS_UM * math.sqrt(rng.uniform(2.0, 3.0)) * ph.nucleus("AGC")
    if rng.uniform() < ph.agc_strips:
        return glandular_cells(
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
    return honeycomb(
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


LESION_FACTORIES: dict[str, Factory] = {"ASC-US": asc_us, "LSIL": lsil, "HSIL": hsil, "AGC": agc}
