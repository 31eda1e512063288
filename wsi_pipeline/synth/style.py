"""Per-slide appearance: stain colours and strengths, background, illumination, focus.

Colours are optical densities (OD = -ln(I / I0)) per unit of material, so overlapping cells add up
and darken the way stained material does in transmitted light.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from wsi_pipeline.config import SynthConfig
from wsi_pipeline.synth.shapes import smooth_noise
from wsi_pipeline.taxonomy import CLASS_CODES


def rgb_to_od(rgb: tuple[float, float, float]) -> np.ndarray:
    """OD ``(3,)`` of a colour seen on white glass."""
    return -np.log(np.asarray(rgb, np.float64) / 255.0)


# Papanicolaou palette (colours of one layer of material on a white background).
PINK = rgb_to_od((241, 176, 172))  # eosin: superficial cells
ORANGE = rgb_to_od((238, 186, 132))  # orange G: keratinised superficial cells
GREEN = rgb_to_od((172, 212, 204))  # light green: intermediate / parabasal cytoplasm
BLUE = rgb_to_od((168, 178, 212))  # blue-grey variant of cyanophilic cytoplasm
HEMATOXYLIN = rgb_to_od((128, 104, 156))  # a normal (vesicular) nucleus at density 1
DEBRIS_BROWN = rgb_to_od((200, 170, 140))


@dataclass(frozen=True)
class LesionPhenotype:
    """How one patient's lesions look (drawn once per slide). Real lesions differ between patients (HPV
    type, grade, preparation), so a detector has to see many labeled *slides*, not only many cells.
    ``lesion_variation: 0`` gives the fixed values below (the synthpap-v1 generator)."""

    nucleus_scale: dict[str, float] = field(default_factory=dict)  # multiplier on nuclear radius, per class
    density_scale: dict[str, float] = field(default_factory=dict)  # multiplier on chromatin density, per class
    koilocyte_halo: float = 1.0  # share of LSIL cells with a clear perinuclear halo
    binucleation: float = 0.35  # share of binucleated LSIL cells
    hsil_single: float = 0.7  # share of HSIL seen as single cells (else syncytial groups)
    agc_strips: float = 0.6  # share of AGC seen as strips (else crowded sheets)

    def nucleus(self, label: str) -> float:
        return self.nucleus_scale.get(label, 1.0)

    def density(self, label: str) -> float:
        return self.density_scale.get(label, 1.0)


def draw_phenotype(rng: np.random.Generator, variation: float) -> LesionPhenotype:
    """One slide's lesion phenotype; ``variation`` scales every departure from the fixed values."""
    if variation <= 0:
        return LesionPhenotype()
    return LesionPhenotype(
        nucleus_scale={c: float(np.exp(variation * rng.normal(0, 0.12))) for c in CLASS_CODES},
        density_scale={c: float(np.exp(variation * rng.normal(0, 0.1))) for c in CLASS_CODES},
        koilocyte_halo=float(max(0.3, 1 - variation * rng.uniform(0, 0.7))),
        binucleation=float(np.clip(0.35 + variation * rng.uniform(-0.25, 0.25), 0, 1)),
        hsil_single=float(np.clip(0.7 + variation * rng.uniform(-0.35, 0.2), 0, 1)),
        agc_strips=float(np.clip(0.6 + variation * rng.uniform(-0.4, 0.4), 0, 1)),
    )


@dataclass(frozen=True)
class SlideStyle:
    """Everything that makes one slide look different from another (drawn once per slide)."""

    mpp: float
    background: tuple[float, float, float]  # RGB of empty glass
    eosin: np.ndarray  # OD per unit: superficial cytoplasm
    cyan: np.ndarray  # OD per unit: intermediate/parabasal cytoplasm
    hematoxylin: np.ndarray  # OD per unit: nuclei
    focus: float  # defocus blur sigma (level-0 px) at the slide's mean focus
    focus_grid: np.ndarray  # coarse multiplicative focus variation, one value per `grid_cell` px
    illumination_grid: np.ndarray  # coarse multiplicative illumination, one value per `grid_cell` px
    grid_cell: float
    noise_sigma: float  # camera noise, 8-bit levels
    cellularity: float  # multiplier on cell counts
    inflammation: float
    superficial_fraction: float  # hormonal status: superficial vs intermediate squamous cells
    seed: int
    lesions: LesionPhenotype = LesionPhenotype()

    def um(self, microns: float) -> float:
        """Length in level-0 pixels."""
        return microns / self.mpp


def draw_style(cfg: SynthConfig, rng: np.random.Generator, width: int, height: int) -> SlideStyle:
    """Draw one slide's appearance from the config's ranges."""
    t_orange = rng.beta(1.3, 1.8)
    s_blue = rng.beta(1.3, 1.8)
    eosin = ((1 - t_orange) * PINK + t_orange * ORANGE) * rng.uniform(0.85, 1.2)
    cyan = ((1 - s_blue) * GREEN + s_blue * BLUE) * rng.uniform(0.85, 1.2)
    hema = HEMATOXYLIN * rng.uniform(0.85, 1.25) * (1 + rng.normal(0, 0.04, 3))
    base = rng.uniform(236, 247)
    tint = rng.normal(0, 2.0, 3)
    background = tuple(float(np.clip(base + t, 220, 252)) for t in tint)
    grid_cell = 1024.0
    gh, gw = int(np.ceil(height / grid_cell)) + 1, int(np.ceil(width / grid_cell)) + 1
    illumination = 1.0 + 0.025 * _coarse_field(rng, gh, gw)
    focus_grid = np.exp(0.3 * _coarse_field(rng, gh, gw))
    lo, hi = cfg.focus_sigma
    style = SlideStyle(
        mpp=cfg.mpp,
        background=background,  # type: ignore[arg-type]
        eosin=eosin,
        cyan=cyan,
        hematoxylin=hema,
        focus=float(rng.uniform(lo, hi)),
        focus_grid=focus_grid,
        illumination_grid=illumination,
        grid_cell=grid_cell,
        noise_sigma=float(rng.uniform(0.8, 2.0)),
        cellularity=float(np.exp(rng.normal(0, 0.35))),
        inflammation=float(np.exp(rng.normal(-0.3, 0.9))),
        superficial_fraction=float(rng.uniform(0.25, 0.75)),
        seed=int(rng.integers(2**62)),
    )
    # its own stream, so that lesion_variation leaves every other draw (and synthpap-v1) unchanged
    return replace(style, lesions=draw_phenotype(np.random.default_rng([style.seed, 2**40]), cfg.lesion_variation))


def _coarse_field(rng: np.random.Generator, gh: int, gw: int) -> np.ndarray:
    """Smooth unit-std field on a coarse grid."""
    field = smooth_noise(rng, (gh, gw), scale=1.5 if min(gh, gw) > 3 else 0.0).astype(np.float64)
    return np.clip(field, -3, 3)
