"""Per-slide lesion phenotypes (``synth.lesion_variation``): off by default, and they reach the cells."""

from dataclasses import replace

import numpy as np
import pytest

from wsi_pipeline.config import SynthConfig
from wsi_pipeline.synth.lesion_cells import asc_us, lsil
from wsi_pipeline.synth.style import LesionPhenotype, draw_phenotype, draw_style


def _area(outline: np.ndarray) -> float:
    x, y = outline[:, 0], outline[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))


@pytest.fixture
def style():
    return draw_style(SynthConfig(), np.random.default_rng(0), 2048, 2048)


def test_no_variation_is_the_fixed_v1_morphology(style):
    assert draw_phenotype(np.random.default_rng(1), 0.0) == LesionPhenotype()
    assert style.lesions == LesionPhenotype()


def test_variation_spreads_between_slides_within_bounds():
    draws = [draw_phenotype(np.random.default_rng(i), 1.0) for i in range(300)]
    log_scales = np.log([d.nucleus("LSIL") for d in draws])
    assert 0.09 < log_scales.std() < 0.15 and abs(log_scales.mean()) < 0.03
    halos = np.array([d.koilocyte_halo for d in draws])
    assert halos.min() >= 0.3 and halos.max() <= 1.0 and halos.std() > 0.1
    assert all(0 <= d.hsil_single <= 1 and 0 <= d.agc_strips <= 1 and 0 <= d.binucleation <= 1 for d in draws)


def test_phenotype_scales_nuclei_and_removes_halos(style):
    def first_nucleus(s):
        (cell,) = asc_us(np.random.default_rng(5), (500.0, 500.0), s, 1.0)
        return cell.nuclei[0]

    base = first_nucleus(style)
    big = first_nucleus(replace(style, lesions=LesionPhenotype(nucleus_scale={"ASC-US": 1.3})))
    assert _area(big.outline) / _area(base.outline) == pytest.approx(1.69, rel=1e-6)
    dark = first_nucleus(replace(style, lesions=LesionPhenotype(density_scale={"ASC-US": 1.2})))
    assert dark.density == pytest.approx(base.density * 1.2)

    (koilocyte,) = lsil(np.random.default_rng(5), (500.0, 500.0), style, 1.0)
    assert koilocyte.halo is not None
    no_halo = replace(style, lesions=LesionPhenotype(koilocyte_halo=0.0))
    assert all(lsil(np.random.default_rng(i), (500.0, 500.0), no_halo, 1.0)[0].halo is None for i in range(5))
