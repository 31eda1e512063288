"""Checkpoints: everything needed to resume exactly, or to rebuild the model from the file alone.

A checkpoint is a plain dict of tensors and Python values, saved atomically and loaded with
``torch.load(..., weights_only=True)`` (no pickled code runs). It carries the resolved config, the class
names and the wsi-pipeline version next to the model, optimizer, AMP scaler, RNG and hook states.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from wsi_pipeline import __version__
from wsi_pipeline.io import atomic_path
from wsi_pipeline.taxonomy import CLASS_CODES

FORMAT = "wsi-pipeline-checkpoint/1"


def save_checkpoint(path: str | Path, state: dict[str, Any], config: dict[str, Any]) -> Path:
    payload = {"format": FORMAT, "version": __version__, "classes": list(CLASS_CODES), "config": config, **state}
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The checkpoint dict; ``ValueError`` naming the file when it is missing, corrupt or foreign."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: checkpoint not found")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"{path}: not a readable checkpoint (corrupt or truncated: {reason})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"{path}: not a wsi-pipeline checkpoint (format {found})")
    if list(data.get("classes", [])) != list(CLASS_CODES):
        raise ValueError(f"{path}: trained for classes {data.get('classes')}, this version has {list(CLASS_CODES)}")
    return data


def model_from_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[torch.nn.Module, Any]:
    """Rebuild the detector from a checkpoint alone: ``(model in eval mode, PipelineConfig)``."""
    from wsi_pipeline.config import config_from_dict
    from wsi_pipeline.modeling import build_detector

    data = load_checkpoint(path, map_location)
    config = config_from_dict(data["config"], source=str(path))
    model = build_detector(config.model)
    model.load_state_dict(data["model"])
    return model.eval(), config
