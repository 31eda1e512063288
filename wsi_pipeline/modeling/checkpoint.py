"""Checkpoints: everything needed to resume exactly, or to rebuild the inference detector from the file alone.

A checkpoint is a plain dict of tensors and Python values, saved atomically and loaded with
``torch.load(..., weights_only=True)`` (no pickled code runs). Format 2 holds:

* ``format``, ``version`` (of wsi-pipeline), ``classes``, ``config`` (resolved), ``method`` (its
  ``train.method`` name);
* ``model``: the whole training method's state (detector, heads, proxies, memory bank, EMA teacher) for
  resuming, with ``optimizer``, ``scaler``, ``rng``, ``hooks`` and ``iteration``;
* ``detector``: the weights meant for inference (the EMA teacher where a method has one), which
  :func:`model_from_checkpoint` loads from any method's checkpoint;
* ``sha256``: a digest of all of the above, checked at load, so a damaged file is refused rather than
  loaded with silently wrong weights.

Format 1 files (before training methods) still load for inference, with a warning; they cannot be resumed.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import torch

from wsi_pipeline import __version__
from wsi_pipeline.io import atomic_path
from wsi_pipeline.taxonomy import CLASS_CODES

log = logging.getLogger(__name__)

FORMAT = "wsi-pipeline-checkpoint/2"
LEGACY_FORMATS = ("wsi-pipeline-checkpoint/1",)


def content_digest(value: Any) -> str:
    """SHA-256 of a checkpoint's content: dict keys in sorted order, tensors by dtype, shape and bytes,
    other values by their ``repr``. Independent of how ``torch.save`` lays the file out."""
    digest = hashlib.sha256()

    def feed(v: Any) -> None:
        if isinstance(v, torch.Tensor):
            t = v.detach().cpu().contiguous()
            digest.update(f"T{t.dtype}{tuple(t.shape)}".encode())
            if t.numel():
                digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        elif isinstance(v, dict):
            digest.update(f"D{len(v)}".encode())
            for k in sorted(v, key=repr):
                digest.update(repr(k).encode())
                feed(v[k])
        elif isinstance(v, list | tuple):
            digest.update(f"L{len(v)}".encode())
            for item in v:
                feed(item)
        else:
            digest.update(f"V{v!r}".encode())

    feed(value)
    return digest.hexdigest()


def save_checkpoint(path: str | Path, state: dict[str, Any], config: dict[str, Any]) -> Path:
    """Write ``state`` (``model``, ``detector``, ``method``, ``optimizer`` ...) with the format header, the
    resolved ``config`` and the content digest, atomically."""
    payload = {"format": FORMAT, "version": __version__, "classes": list(CLASS_CODES), "config": config, **state}
    payload["sha256"] = content_digest(payload)
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The checkpoint dict; ``ValueError`` naming the file when it is missing, damaged, foreign, not a
    weights-only file, or for other classes. A format-1 file comes back converted (``legacy`` set)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: checkpoint not found")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:
        text = str(err).strip()
        if "Unsupported global" in text:  # pickled objects, i.e. code that would run: refused, not damaged
            name = text.split("Unsupported global:", 1)[1].split(" was not", 1)[0].strip()
            raise ValueError(
                f"{path}: not a weights-only checkpoint (it pickles {name}, code that would run when loaded); "
                "not loaded"
            ) from None
        detail = text.split("WeightsUnpickler error:", 1)[-1].strip().splitlines()
        reason = detail[0] if detail and detail[0] else type(err).__name__
        raise ValueError(f"{path}: not a readable checkpoint (corrupt or truncated: {reason})") from None
    found = data.get("format") if isinstance(data, dict) else type(data).__name__
    if found in LEGACY_FORMATS:
        data = _from_format_1(data, path)
    elif found != FORMAT:
        raise ValueError(f"{path}: not a wsi-pipeline checkpoint (format {found})")
    else:
        stored = data.pop("sha256", None)
        if stored is None or stored != content_digest(data):
            raise ValueError(f"{path}: checksum mismatch: the file is damaged; not loaded")
    if list(data.get("classes", [])) != list(CLASS_CODES):
        raise ValueError(f"{path}: trained for classes {data.get('classes')}, this version has {list(CLASS_CODES)}")
    return data


def _from_format_1(data: dict[str, Any], path: Path) -> dict[str, Any]:
    """A format-1 checkpoint (a bare detector with a projection head, no method, no digest) as format 2,
    for inference only."""
    log.warning(
        "%s: a format-1 checkpoint (wsi-pipeline %s, no checksum): its detector loads for inference; "
        "it cannot be resumed",
        path,
        data.get("version", "?"),
    )
    model = data.get("model", {})
    detector = {k.removeprefix("detector."): v for k, v in model.items() if k.startswith("detector.")}
    config = {**data.get("config", {})}
    config["model"] = {k: v for k, v in config.get("model", {}).items() if k != "projection_dims"}
    return {**data, "config": config, "method": "supervised", "detector": detector, "legacy": True}


def model_from_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[torch.nn.Module, Any]:
    """Rebuild the inference detector from any method's checkpoint: ``(detector in eval mode, PipelineConfig)``."""
    from wsi_pipeline.config import config_from_dict
    from wsi_pipeline.modeling import build_detector

    data = load_checkpoint(path, map_location)
    config = config_from_dict(data["config"], source=str(path))
    model = build_detector(config.model)
    _load_detector_state(model, data, path)
    return model.eval(), config


def init_detector_from(detector: torch.nn.Module, path: str | Path, mpp: float) -> None:
    """Start ``detector`` (built for a run at ``mpp`` microns per pixel) from the inference weights of any
    method's checkpoint at ``path``; ``ValueError`` naming the file when they do not fit. A detector trained
    at another resolution still loads, with a warning: its features were learnt at that scale."""
    data = load_checkpoint(path)
    _load_detector_state(detector, data, Path(path))
    trained_mpp = data.get("config", {}).get("model", {}).get("mpp")
    if trained_mpp is not None and abs(float(trained_mpp) - mpp) > 1e-9:
        log.warning("%s: trained at %g um/px, this run works at %g um/px", path, trained_mpp, mpp)
    log.info("detector weights from %s (its iteration %s)", path, data.get("iteration", "?"))


def _load_detector_state(detector: torch.nn.Module, data: dict[str, Any], path: Path) -> None:
    try:
        detector.load_state_dict(data["detector"])
    except RuntimeError as err:
        raise ValueError(
            f"{path}: the detector weights do not fit model settings ({str(err).splitlines()[0]})"
        ) from None
