"""``tile --annotations``: labeled patches and COCO from slide-level GeoJSON annotations.

This is how a lab builds its labeled set: lesions annotated in QuPath (or our synthetic ground
truth, or a third-party file such as the CRIC fields) become 1200 x 1200 patches at the target mpp
around every lesion, plus sampled lesion-free negatives, split train/val/test **by slide**. Labels are
mapped through the taxonomy; labels outside the four classes are counted and reported.

Each slide's annotation file is the GeoJSON that names the slide as a whole token (``<id>.geojson``,
``cric-<id>-gt.geojson``; :mod:`wsi_pipeline.data.annotation_match`) or, with
``tile.labels.annotation_pattern``, the file named exactly so. Slides are paired before any work; a slide
with no or several candidate files fails with the reason. Plain images (PNG/JPEG/WebP) are accepted as
slides; they need ``--mpp``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from wsi_pipeline import __version__
from wsi_pipeline.config import PipelineConfig, config_to_dict, save_config
from wsi_pipeline.data.annotation_match import pair_annotations
from wsi_pipeline.data.coco import CocoBuilder
from wsi_pipeline.data.geojson_io import read_geojson
from wsi_pipeline.data.labeled_patches import FrameReader, cut_labeled_patches
from wsi_pipeline.data.splits import SPLITS, assign_splits_by_patient, read_patients
from wsi_pipeline.io import write_json_atomic
from wsi_pipeline.runner import isolated
from wsi_pipeline.slide import open_slide
from wsi_pipeline.slide.discover import SLIDE_SUFFIXES, find_slides
from wsi_pipeline.slide.open import IMAGE_SUFFIXES
from wsi_pipeline.slide.reader import slide_name
from wsi_pipeline.taxonomy import LabelTally
from wsi_pipeline.types import Annotation, Box

log = logging.getLogger(__name__)


@dataclass
class LabeledResult:
    out: Path
    tally: LabelTally = field(default_factory=LabelTally)
    per_split: dict[str, dict[str, int]] = field(default_factory=dict)
    failures: list[tuple[str, str]] = field(default_factory=list)

    def report(self) -> str:
        lines = [f"labels: {self.tally.summary()}"]
        for split in SPLITS:
            c = self.per_split.get(split, {})
            lines.append(
                f"{split}: {c.get('slides', 0)} slide(s), {c.get('patches', 0)} patch(es), {c.get('boxes', 0)} box(es)"
            )
        lines += [f"FAILED {sid}: {reason}" for sid, reason in self.failures]
        return "\n".join(lines)


def cut_labeled_dataset(
    inputs: Sequence[str | Path],
    annotations: str | Path,
    out: str | Path,
    config: PipelineConfig,
    *,
    mpp: float | None = None,
    progress: bool = True,
    patients: Path | None = None,
) -> LabeledResult:
    cfg = config.tile
    out, annotations = Path(out), Path(annotations)
    out.mkdir(parents=True, exist_ok=True)
    save_config(config, out)
    result = LabeledResult(out)
    found, problems = find_slides(inputs, SLIDE_SUFFIXES + IMAGE_SUFFIXES, exclude=[out])
    result.failures += [(slide_name(name), reason) for name, reason in problems]
    paths, ids = [f.path for f in found], [f.slide_id for f in found]
    refused = {f.slide_id: f.refused for f in found if f.refused}
    pairing = pair_annotations(ids, annotations, cfg.labels.annotation_pattern)
    for f in pairing.unused:
        log.warning("%s: names none of the slides given; not used", f)
    patient_of = read_patients(patients)
    roles = assign_splits_by_patient(ids, patient_of, cfg.labels.split, cfg.labels.seed)
    builders = {s: CocoBuilder(info=_info(config, s)) for s in SPLITS}
    for k, (path, sid, role) in enumerate(
        tqdm(list(zip(paths, ids, roles, strict=True)), desc="labeled", unit="slide", disable=not progress)
    ):
        problem = refused.get(sid) or pairing.problems.get(sid)
        if problem:
            log.error("%s: %s", sid, problem)
            result.failures.append((sid, problem))
            continue
        cut, reason = isolated(
            sid, _slide_patches, path, sid, pairing.files[sid], config, mpp, role, out, result.tally, k
        )
        if cut is None:
            result.failures.append((sid, reason))
            continue
        records, mpp_used, scale = cut
        counts = result.per_split.setdefault(role, {"slides": 0, "patches": 0, "boxes": 0})
        counts["slides"] += 1
        for rec in records:
            builders[role].add_record(
                rec,
                slide_id=sid,
                patient_id=patient_of.get(sid, sid),
                mpp=cfg.target_mpp,
                slide_mpp=mpp_used,
                scale=scale,
                x0_level0=round(rec.x0 * scale),
                y0_level0=round(rec.y0 * scale),
            )
            counts["patches"] += 1
            counts["boxes"] += sum(not lab.ignore for lab in rec.labels)
    for split, builder in builders.items():
        builder.write(out / f"{split}.json")
    write_json_atomic(
        out / "labels_report.json",
        {
            "mapped": dict(result.tally.mapped),
            "not_detector_classes": dict(result.tally.other),
            "unknown": dict(result.tally.unknown),
            "skipped": dict(result.tally.skipped),
            "splits": result.per_split,
            "failures": [{"slide_id": s, "reason": r} for s, r in result.failures],
        },
    )
    return result


def _slide_patches(
    path: Path,
    sid: str,
    ann_path: Path,
    config: PipelineConfig,
    mpp: float | None,
    role: str,
    out: Path,
    tally: LabelTally,
    index: int,
) -> tuple[list[Any], float, float]:
    cfg = config.tile
    with open_slide(path, cfg.backend if path.suffix.lower() not in IMAGE_SUFFIXES else "auto", mpp) as reader:
        slide_mpp = reader.require_mpp()
        level0 = inside_image(
            read_geojson(ann_path, tally, point_box=cfg.labels.point_box_um / slide_mpp),
            reader.info.width,
            reader.info.height,
            tally,
        )
        frame = FrameReader(reader, cfg.target_mpp)
        in_frame = [
            Annotation(
                Box(a.box.x0 / frame.scale, a.box.y0 / frame.scale, a.box.x1 / frame.scale, a.box.y1 / frame.scale),
                a.label,
                a.properties,
            )
            for a in level0
        ]
        rng = np.random.default_rng([cfg.labels.seed, index, 99])
        records = cut_labeled_patches(frame, sid, frame.size, in_frame, cfg.labels.export, rng, out / role)
        return records, slide_mpp, frame.scale


def inside_image(annotations: list[Annotation], width: float, height: float, tally: LabelTally) -> list[Annotation]:
    """Annotations clipped to the image ``[0, width) x [0, height)`` (level-0 pixels); those wholly
    outside are dropped and counted in ``tally.skipped``."""
    image = Box(0, 0, width, height)
    kept = []
    for a in annotations:
        inside = a.box.intersect(image)
        if inside is None:
            tally.unmap(a.label, "outside the image")
        else:
            kept.append(Annotation(inside, a.label, a.properties))
    return kept


def _info(config: PipelineConfig, split: str) -> dict[str, Any]:
    return {
        "description": f"labeled patches ({split}) from slide annotations",
        "wsi_pipeline_version": __version__,
        "mpp": config.tile.target_mpp,
        "patch_size": config.tile.labels.export.patch_size,
        "image_root": split,
        "coordinates": "bbox in patch pixels; x0/y0 target-frame, x0_level0/y0_level0 slide level-0 pixels",
        "config": config_to_dict(config),
    }
