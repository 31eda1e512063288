"""``tile`` over many slides: discover inputs (:mod:`wsi_pipeline.slide.discover`), skip finished slides,
run the tasks, report."""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from wsi_pipeline.config import PipelineConfig, save_config
from wsi_pipeline.data.patch_store import slide_fingerprint, stored_slide, verify_store
from wsi_pipeline.io import remove_stale_temporaries, write_json_atomic, write_text_atomic
from wsi_pipeline.runner import BatchResult, Failure, TaskRunner
from wsi_pipeline.slide.discover import find_slides
from wsi_pipeline.slide.reader import slide_name
from wsi_pipeline.tiling.slide_job import (
    SlideJob,
    TilePlan,
    finalize_slide,
    plan_slide,
    tile_config_hash,
    write_block,
    write_qc,
)

log = logging.getLogger(__name__)

NO_FOREGROUND = "warning: no cell foreground, 0 patches (see <slide>.qc.png; tile.min_foreground)"


@dataclass
class SlideOutcome:
    slide_id: str
    path: str
    status: str  # done / skipped / failed
    patches: int | None = None
    backend: str = ""
    mpp: float | None = None
    seconds: float = 0.0
    reason: str = ""


def tile_slides(
    inputs: Sequence[str | Path],
    out: str | Path,
    config: PipelineConfig,
    *,
    mpp: float | None = None,
    scheduler: str = "threads",
    workers: int = 0,
    progress: bool = True,
    overwrite: bool = False,
) -> BatchResult[SlideOutcome]:
    """Tile every slide of ``inputs`` into ``out``; finished slides are skipped, failures reported.

    Refused before any work, each with its reason: slides whose names clash (``A.svs`` and ``A.tiff``),
    and, unless ``overwrite``, slides whose store in ``out`` was made from another file."""
    cfg = config.tile
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out)
    save_config(config, out)
    result: BatchResult[SlideOutcome] = BatchResult(out)
    found, problems = find_slides(inputs, exclude=[out])
    for name, reason in problems:
        result.outcomes.append(SlideOutcome(slide_name(name), name, "failed", reason=reason))
    config_hash = tile_config_hash(cfg, mpp)
    jobs: list[SlideJob] = []
    for slide in found:
        path, sid = slide.path, slide.slide_id
        job = SlideJob(str(path), sid, str(out), cfg, mpp, config_hash)
        if slide.refused:
            result.outcomes.append(SlideOutcome(sid, str(path), "failed", reason=slide.refused))
            continue
        try:
            fingerprint = slide_fingerprint(path)
            reason = verify_store(job.final_store, config_hash, fingerprint)
        except OSError as err:
            result.outcomes.append(SlideOutcome(sid, str(path), "failed", reason=f"{path}: {err.strerror}"))
            continue
        owner = stored_slide(job.final_store)
        if owner is not None and owner.get("fingerprint") != fingerprint and not overwrite:
            reason = (
                f"{job.final_store} holds patches of another file ({owner.get('path')}); "
                "pass --overwrite to replace it, or choose another --out"
            )
            result.outcomes.append(SlideOutcome(sid, str(path), "failed", reason=reason))
            continue
        if reason is None:
            attrs = _store_summary(job.final_store)
            result.outcomes.append(
                SlideOutcome(sid, str(path), "skipped", attrs["n"], attrs["backend"], attrs["mpp"], reason="complete")
            )
            continue
        if job.final_store.exists():
            log.info("%s: redoing %s (%s)", sid, job.final_store.name, reason)
        jobs.append(job)

    with TaskRunner(scheduler, workers, progress) as runner:
        started = time.perf_counter()
        plans = runner.map(plan_slide, [(j,) for j in jobs], desc="plan", unit="slide")
        ok: list[TilePlan] = []
        calls: list[tuple[Any, tuple[Any, ...]]] = []
        owners: list[str] = []
        weights: list[int] = []
        for job, planned in zip(jobs, plans, strict=True):
            if isinstance(planned, Failure):
                _fail(result, job, planned)
                continue
            plan, qc = planned
            ok.append(plan)
            calls.append((write_qc, (qc,)))
            owners.append(job.slide_id)
            weights.append(0)
            for idx in plan.blocks:
                calls.append((write_block, (plan, idx)))
                owners.append(job.slide_id)
                weights.append(len(idx))
        written = runner.run(calls, desc="tile", weights=weights, unit="patch")
        elapsed = time.perf_counter() - started
    per_slide: dict[str, list[Any]] = {}
    for owner, res in zip(owners, written, strict=True):
        per_slide.setdefault(owner, []).append(res)
    for plan in ok:
        results = per_slide.get(plan.job.slide_id, [])
        failure = next((r for r in results if isinstance(r, Failure)), None)
        if failure is not None:
            _fail(result, plan.job, failure)
            continue
        try:
            row = finalize_slide(plan, [r for r in results if isinstance(r, np.ndarray)], plan.seconds + elapsed)
        except Exception as err:
            _fail(result, plan.job, Failure(str(err)))
            continue
        result.outcomes.append(
            SlideOutcome(
                plan.job.slide_id,
                plan.job.path,
                "done",
                row["patches"],
                row["backend"],
                row["mpp"],
                round(plan.seconds, 2),
                reason=NO_FOREGROUND if row["patches"] == 0 else "",
            )
        )
        if row["patches"] == 0:
            log.warning("%s: %s", plan.job.slide_id, NO_FOREGROUND)
    _write_summary(result)
    return result


def _fail(result: BatchResult[SlideOutcome], job: SlideJob, failure: Failure) -> None:
    log.error("%s: %s", job.slide_id, failure.reason)
    log.debug("%s", failure.details)
    if job.tmp_store.exists():
        shutil.rmtree(job.tmp_store, ignore_errors=True)
    result.outcomes.append(SlideOutcome(job.slide_id, job.path, "failed", reason=failure.reason))


def _store_summary(path: Path) -> dict[str, Any]:
    import zarr

    attrs = zarr.open_group(str(path), mode="r").attrs["wsi_pipeline"]
    return {"n": attrs["n_patches"], "backend": attrs["slide"]["backend"], "mpp": attrs["slide"]["mpp"]}


def summary_table(outcomes: Sequence[SlideOutcome]) -> str:
    """A plain-text table, one row per slide, failures last."""
    order = {"done": 0, "skipped": 1, "failed": 2}
    rows = sorted(outcomes, key=lambda o: (order[o.status], o.slide_id))
    header = ("slide", "status", "patches", "backend", "mpp", "reason")
    body = [
        (
            o.slide_id,
            o.status,
            "" if o.patches is None else str(o.patches),
            o.backend,
            "" if o.mpp is None else f"{o.mpp:.4g}",
            o.reason,
        )
        for o in rows
    ]
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header) - 1)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r[:-1], widths, strict=True)) + "  " + r[-1] for r in [header, *body]]
    return "\n".join(line.rstrip() for line in lines)


def _write_summary(result: BatchResult[SlideOutcome]) -> None:
    rows = [o.__dict__ for o in result.outcomes]
    write_json_atomic(result.out / "summary.json", rows)
    cols = ("slide_id", "path", "status", "patches", "backend", "mpp", "seconds", "reason")
    lines = ["\t".join(cols)] + ["\t".join("" if r[c] is None else str(r[c]) for c in cols) for r in rows]
    write_text_atomic(result.out / "summary.tsv", "\n".join(lines) + "\n")
