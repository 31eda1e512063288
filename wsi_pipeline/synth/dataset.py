"""Generate a synthpap dataset: slides, ground truth, quick-looks, manifests, optional COCO patches.

Output layout (``OUT/``)::

    config.yaml                      resolved configuration
    manifest.json                    dataset manifest: slides, roles, counts, failures
    slides/<ID>.tiff                 pyramidal JPEG TIFF, mpp in the resolution tags
    slides/<ID>.geojson              ground truth, QuPath GeoJSON (level-0 pixels)
    slides/<ID>.json                 slide manifest (seed, parameters, counts); written last
    slides/<ID>.quicklook.png        thumbnail with the ground-truth boxes
    patches/<split>.json             COCO (boxes in patch pixels), --export-patches
    patches/<split>/<ID>_x<X>_y<Y>.jpg

Slides are split by slide ("patient"): labeled slides into train/val/test, plus unlabeled slides of
other patients. A slide whose manifest matches the current parameters is not generated again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import traceback
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from wsi_pipeline import __version__
from wsi_pipeline.config import PipelineConfig, SynthConfig, config_to_dict, save_config
from wsi_pipeline.data.coco import CocoBuilder
from wsi_pipeline.data.geojson_io import read_geojson, write_geojson
from wsi_pipeline.data.labeled_patches import FrameReader, PatchRecord, cut_labeled_patches
from wsi_pipeline.data.splits import SPLITS, assign_splits
from wsi_pipeline.io import file_sha256, write_json_atomic
from wsi_pipeline.slide.backends import TiffReader
from wsi_pipeline.synth import GENERATOR_VERSION
from wsi_pipeline.synth.render import BandRenderer
from wsi_pipeline.synth.scene import Scene, build_scene
from wsi_pipeline.synth.style import SlideStyle, draw_style
from wsi_pipeline.synth.writer import write_pyramidal_tiff
from wsi_pipeline.types import Annotation

log = logging.getLogger(__name__)

_ROLE_STREAM = {"labeled": 1, "unlabeled": 2}


@dataclass(frozen=True)
class SlidePlan:
    slide_id: str
    role: str  # train / val / test / unlabeled
    stream: int  # 1 labeled, 2 unlabeled: independent random streams
    index: int


def plan_slides(cfg: SynthConfig) -> list[SlidePlan]:
    """Slide ids and roles. Labeled slides are split train/val/test by slide (shuffled with the seed); the
    ``extra_test_slides`` after them are all test and the ``extra_val_slides`` after those all validation, so
    a larger test or validation split keeps every other slide."""
    roles = assign_splits(cfg.labeled_slides, cfg.split, cfg.seed)
    roles += ["test"] * cfg.extra_test_slides + ["val"] * cfg.extra_val_slides
    plans = [SlidePlan(f"L{i + 1:04d}", role, _ROLE_STREAM["labeled"], i) for i, role in enumerate(roles)]
    plans += [
        SlidePlan(f"U{i + 1:04d}", "unlabeled", _ROLE_STREAM["unlabeled"], i) for i in range(cfg.unlabeled_slides)
    ]
    return plans


def slide_rng(cfg: SynthConfig, plan: SlidePlan) -> np.random.Generator:
    return np.random.default_rng([cfg.seed, plan.stream, plan.index])


def make_slide(cfg: SynthConfig, plan: SlidePlan) -> tuple[SlideStyle, Scene, bool]:
    """Style and scene of one slide (no pixels): everything the seed decides."""
    rng = slide_rng(cfg, plan)
    style = draw_style(cfg, rng, cfg.width, cfg.height)
    positive = bool(rng.uniform() >= cfg.negative_slide_fraction)
    scene = build_scene(cfg, style, rng, cfg.width, cfg.height, positive)
    return style, scene, positive


def scene_annotations(scene: Scene) -> list[Annotation]:
    return [
        Annotation(les.box, les.label, {"lesion_id": i, "n_cells": len(les.cells)})
        for i, les in enumerate(scene.lesions)
    ]


def _params_hash(cfg: SynthConfig, plan: SlidePlan) -> str:
    params = config_to_dict(cfg)
    params.pop("export")
    for key in ("extra_test_slides", "extra_val_slides"):  # which slides exist, not how one looks (its plan
        params.pop(key)  # says that): v3's and v4's hashes hold
    payload = json.dumps({"cfg": params, "plan": asdict(plan), "generator": GENERATOR_VERSION}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _export_hash(cfg: SynthConfig) -> str:
    return hashlib.sha256(json.dumps(config_to_dict(cfg.export), sort_keys=True).encode()).hexdigest()[:16]


def _read_manifest(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def generate_slide(
    cfg: SynthConfig,
    plan: SlidePlan,
    out: Path,
    export_patches: bool = False,
    on_rows: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Generate (or reuse, when complete and current) one slide; returns its manifest."""
    folder = out / "slides"
    tiff, manifest_path = folder / f"{plan.slide_id}.tiff", folder / f"{plan.slide_id}.json"
    params_hash = _params_hash(cfg, plan)
    manifest = _read_manifest(manifest_path)
    reuse = manifest is not None and manifest.get("params_hash") == params_hash and tiff.is_file()
    if reuse and tiff.stat().st_size == manifest.get("tiff_bytes"):
        log.debug("%s: up to date, not regenerated", plan.slide_id)
    else:
        style, scene, positive = make_slide(cfg, plan)
        renderer = BandRenderer(scene, style)
        description = f"wsi-pipeline synthpap slide {plan.slide_id}; generator v{GENERATOR_VERSION}; mpp={cfg.mpp}"
        levels = write_pyramidal_tiff(
            tiff,
            cfg.width,
            cfg.height,
            renderer.band,
            mpp=cfg.mpp,
            tile=cfg.tile_size,
            quality=cfg.jpeg_quality,
            description=description,
            on_band=on_rows,
        )
        annotations = scene_annotations(scene)
        write_geojson(folder / f"{plan.slide_id}.geojson", annotations, slide_id=plan.slide_id, mpp=cfg.mpp)
        from wsi_pipeline.synth.quicklook import write_quicklook

        write_quicklook(tiff, annotations, folder / f"{plan.slide_id}.quicklook.png", cfg.quicklook_size)
        lesion_counts = Counter(a.label for a in annotations)
        manifest = {
            "slide_id": plan.slide_id,
            "patient_id": plan.slide_id,
            "role": plan.role,
            "dataset": cfg.dataset,
            "generator_version": GENERATOR_VERSION,
            "wsi_pipeline_version": __version__,
            "seed": [cfg.seed, plan.stream, plan.index],
            "params_hash": params_hash,
            "files": {
                "slide": tiff.name,
                "ground_truth": f"{plan.slide_id}.geojson",
                "quicklook": f"{plan.slide_id}.quicklook.png",
            },
            "width": cfg.width,
            "height": cfg.height,
            "mpp": cfg.mpp,
            "levels": [list(s) for s in levels],
            "positive": positive,
            "lesions": {code: lesion_counts.get(code, 0) for code in sorted(lesion_counts)},
            "n_lesions": len(annotations),
            "objects": dict(sorted(scene.counts.items())),
            "style": {
                "background": [round(v, 2) for v in style.background],
                "focus_sigma": round(style.focus, 3),
                "cellularity": round(style.cellularity, 3),
                "inflammation": round(style.inflammation, 3),
                "superficial_fraction": round(style.superficial_fraction, 3),
            },
            "tiff_bytes": tiff.stat().st_size,
            "tiff_sha256": file_sha256(tiff),
        }
    if export_patches and plan.role in SPLITS:
        patches = manifest.get("patches")
        current = (
            patches is not None
            and patches.get("export_hash") == _export_hash(cfg)
            and all((out / "patches" / plan.role / p["file_name"]).is_file() for p in patches["images"])
        )
        if not current:
            manifest["patches"] = export_slide_patches(cfg, plan, tiff, folder / f"{plan.slide_id}.geojson", out)
    write_json_atomic(manifest_path, manifest)
    return manifest


def export_slide_patches(
    cfg: SynthConfig, plan: SlidePlan, tiff: Path, geojson_path: Path, out: Path
) -> dict[str, Any]:
    """Labeled patches of one slide, read back from its TIFF (as a lab would cut them from a scan)."""
    annotations = read_geojson(geojson_path)
    rng = np.random.default_rng([cfg.seed, plan.stream, plan.index, 99])
    with TiffReader(tiff) as slide:
        records = cut_labeled_patches(
            FrameReader(slide, cfg.mpp),
            plan.slide_id,
            (cfg.width, cfg.height),
            annotations,
            cfg.export,
            rng,
            out / "patches" / plan.role,
        )
    return {"export_hash": _export_hash(cfg), "images": [r.to_dict() for r in records]}


@dataclass
class DatasetResult:
    out: Path
    manifests: list[dict[str, Any]]
    failures: list[tuple[str, str]]  # (slide id, one-line reason)


def generate_dataset(
    config: PipelineConfig,
    out: str | Path,
    *,
    workers: int = 0,
    export_patches: bool = False,
    progress: bool = True,
) -> DatasetResult:
    """Generate every slide of ``config.synth`` into ``out`` (parallel over slides), then the COCO
    files and the dataset manifest. A failing slide is logged and reported; the others complete."""
    cfg = config.synth
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_config(config, out)
    plans = plan_slides(cfg)
    workers = workers or (os.cpu_count() or 1)
    workers = max(1, min(workers, len(plans)))
    manifests: dict[str, dict[str, Any]] = {}
    failures: list[tuple[str, str]] = []

    def fail(plan: SlidePlan, err: BaseException) -> None:
        reason = f"{type(err).__name__}: {err}".splitlines()[0]
        log.error("%s: generation failed: %s", plan.slide_id, reason)
        log.debug("%s", "".join(traceback.format_exception(err)))
        failures.append((plan.slide_id, reason))

    if workers == 1:
        total_rows = cfg.height * len(plans)
        with tqdm(total=total_rows, unit="row", desc="synth", disable=not progress, unit_scale=True) as bar:
            for plan in plans:
                try:
                    manifests[plan.slide_id] = generate_slide(cfg, plan, out, export_patches, on_rows=bar.update)
                except Exception as err:  # one bad slide must not stop the batch
                    fail(plan, err)
                bar.n = (plans.index(plan) + 1) * cfg.height
                bar.refresh()
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = {pool.submit(generate_slide, cfg, plan, out, export_patches): plan for plan in plans}
            for fut in tqdm(
                as_completed(futures), total=len(futures), unit="slide", desc="synth", disable=not progress
            ):
                plan = futures[fut]
                try:
                    manifests[plan.slide_id] = fut.result()
                except Exception as err:
                    fail(plan, err)

    ordered = [manifests[p.slide_id] for p in plans if p.slide_id in manifests]
    if export_patches:
        _write_coco(cfg, config, ordered, out)
    _write_dataset_manifest(config, ordered, failures, out)
    return DatasetResult(out, ordered, failures)


def _write_coco(cfg: SynthConfig, config: PipelineConfig, manifests: list[dict[str, Any]], out: Path) -> None:
    for split in SPLITS:
        coco = CocoBuilder(
            info={
                "description": f"{cfg.dataset} {split} patches",
                "version": str(GENERATOR_VERSION),
                "wsi_pipeline_version": __version__,
                "mpp": cfg.mpp,
                "patch_size": cfg.export.patch_size,
                "image_root": split,
                "config": config_to_dict(config),
            }
        )
        for m in manifests:
            if m["role"] != split or "patches" not in m:
                continue
            for data in m["patches"]["images"]:
                coco.add_record(PatchRecord.from_dict(data), slide_id=m["slide_id"], mpp=m["mpp"])
        coco.write(out / "patches" / f"{split}.json")


def _write_dataset_manifest(
    config: PipelineConfig, manifests: list[dict[str, Any]], failures: list[tuple[str, str]], out: Path
) -> None:
    totals: dict[str, Counter[str]] = {}
    for m in manifests:
        counter = totals.setdefault(m["role"], Counter())
        counter["slides"] += 1
        counter["positive_slides"] += int(m["positive"])
        counter.update(m["lesions"])
        if "patches" in m:
            counter["patches"] += len(m["patches"]["images"])
    write_json_atomic(
        out / "manifest.json",
        {
            "dataset": config.synth.dataset,
            "generator_version": GENERATOR_VERSION,
            "wsi_pipeline_version": __version__,
            "mpp": config.synth.mpp,
            "totals": {role: dict(c) for role, c in sorted(totals.items())},
            "slides": [
                {k: m[k] for k in ("slide_id", "role", "positive", "n_lesions", "lesions", "tiff_sha256")}
                for m in manifests
            ],
            "failures": [{"slide_id": s, "reason": r} for s, r in failures],
        },
    )
