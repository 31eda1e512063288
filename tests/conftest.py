"""Shared fixtures: a tiny synthpap dataset generated once per session, and the shared real data."""

from __future__ import annotations

from pathlib import Path

import pytest

from wsi_pipeline.config import PipelineConfig, load_config

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

TINY_OVERRIDES = (
    "synth.dataset=synthpap-tiny",
    "synth.seed=11",
    "synth.labeled_slides=3",
    "synth.unlabeled_slides=1",
    "synth.width=1600",
    "synth.height=1400",
    "synth.tile_size=256",
    "synth.negative_slide_fraction=0.0",
    "synth.lesions_per_mm2=60",
    "synth.min_lesions=3",
    "synth.quicklook_size=512",
    "synth.export.negatives_per_slide=1",
)


@pytest.fixture(scope="session")
def tiny_overrides() -> tuple[str, ...]:
    """``--set`` values for tiny synth slides (commands that take overrides)."""
    return TINY_OVERRIDES


@pytest.fixture(scope="session")
def tiny_config() -> PipelineConfig:
    return load_config(None, TINY_OVERRIDES)


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory, tiny_config: PipelineConfig) -> Path:
    """A 4-slide dataset (1600 x 1400 px each) with exported COCO patches."""
    from wsi_pipeline.synth.dataset import generate_dataset

    out = tmp_path_factory.mktemp("synthpap-tiny")
    result = generate_dataset(tiny_config, out, workers=1, export_patches=True, progress=False)
    assert not result.failures
    return out


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared test data not found at {SHARED_DATA}")
    return SHARED_DATA
