"""Whole-slide inference: end-to-end rate against the model alone, peak memory, GeoJSON writing.

    python benchmarks/inference.py throughput --checkpoint demo-out/train/checkpoints/last.pt
    python benchmarks/inference.py geojson --n 1000000
    python benchmarks/inference.py rss --checkpoint CKPT --slides small.tiff large.tiff

* ``throughput``: ``infer`` on one slide (read + detect + merge + GeoJSON + summary + report), patches per
  second, against the model alone on the same patches held in memory, in the same process with the same
  thread count. Target: end-to-end >= 0.9x model-only (the model never waits for reading).
* ``geojson``: ``n`` synthetic detections streamed to a QuPath GeoJSON file: seconds and peak RSS (run in a
  fresh process, so the peak is this work's).
* ``rss``: peak RSS of ``infer`` on each slide, each in a fresh process (``resource`` ru_maxrss).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SLIDE = ROOT / "data" / "bench" / "synth-default" / "slides" / "L0001.tiff"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def throughput(checkpoint: Path, slide: Path, threads: int) -> dict[str, float]:
    import torch

    from wsi_pipeline.config import PipelineConfig
    from wsi_pipeline.inference.batch import infer_slides
    from wsi_pipeline.inference.predictor import Predictor
    from wsi_pipeline.modeling.checkpoint import model_from_checkpoint
    from wsi_pipeline.slide import open_slide
    from wsi_pipeline.slide.plan import plan_patches

    torch.set_num_threads(threads)
    model, trained = model_from_checkpoint(checkpoint)
    config = PipelineConfig(trained.synth, trained.tile, trained.model, trained.train)
    cfg = config.infer
    device = torch.device("cpu")
    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        result = infer_slides([slide], checkpoint, out, config, model, device, progress=False)
        e2e = time.perf_counter() - started
        patches = json.loads((Path(out) / f"{slide.stem}.summary.json").read_text())["patches"]
    assert not result.failed, result.failed
    with open_slide(slide) as reader:  # the same patches, read beforehand: the model alone
        plan = plan_patches(reader, config.model.input_mpp, cfg.patch_size, cfg.overlap, "flush",
                            config.tile.foreground, cfg.min_foreground)  # fmt: skip
        grid, p = plan.kept, cfg.patch_size
        pixels = [
            reader.read_region(float(x), float(y), p, p, mpp=config.model.input_mpp)
            for x, y in zip(grid.x0, grid.y0, strict=True)
        ]
    predictor = Predictor(model, device)
    started = time.perf_counter()
    for start in range(0, len(pixels), cfg.batch_size):
        predictor(pixels[start : start + cfg.batch_size])
    alone = time.perf_counter() - started
    return {"patches": patches, "e2e_per_s": patches / e2e, "model_per_s": len(pixels) / alone,
            "ratio": (patches / e2e) / (len(pixels) / alone), "e2e_s": e2e, "model_s": alone}  # fmt: skip


def geojson(n: int) -> dict[str, float]:
    from wsi_pipeline.export.qupath import GeoJsonStream
    from wsi_pipeline.inference.merge import Detections

    rng = np.random.default_rng(0)
    chunk = 10_000
    with tempfile.TemporaryDirectory() as out:
        path = Path(out) / "s.geojson"
        started = time.perf_counter()
        with GeoJsonStream(path, slide_id="s", mpp=0.25) as stream:
            for _ in range(n // chunk):
                xy = rng.uniform(0, 100_000, (chunk, 2))
                boxes = np.concatenate([xy, xy + rng.uniform(20, 200, (chunk, 2))], axis=1)
                probs = rng.dirichlet(np.ones(5), chunk).astype(np.float32)
                labels = probs[:, 1:].argmax(1) + 1
                stream.write(
                    Detections(boxes, labels, probs[np.arange(chunk), labels], probs, np.zeros((chunk, 4), bool))
                )
        seconds = time.perf_counter() - started
        size = path.stat().st_size / 1e6
    return {"detections": n, "seconds": seconds, "per_s": n / seconds, "mb": size, "peak_rss_mb": peak_rss_mb()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    t = sub.add_parser("throughput")
    t.add_argument("--checkpoint", type=Path, required=True)
    t.add_argument("--slide", type=Path, default=DEFAULT_SLIDE)
    t.add_argument("--threads", type=int, default=2)
    g = sub.add_parser("geojson")
    g.add_argument("--n", type=int, default=1_000_000)
    r = sub.add_parser("rss")
    r.add_argument("--checkpoint", type=Path, required=True)
    r.add_argument("--slides", type=Path, nargs="+", required=True)
    args = parser.parse_args()
    if args.what == "throughput":
        print(json.dumps(throughput(args.checkpoint, args.slide, args.threads), indent=1))
    elif args.what == "geojson":
        print(json.dumps(geojson(args.n), indent=1))
    else:
        for slide in args.slides:  # a fresh process per slide: its own peak
            code = (
                "import resource, sys, tempfile, torch; from wsi_pipeline.config import PipelineConfig; "
                "from wsi_pipeline.inference.batch import infer_slides; "
                "from wsi_pipeline.modeling.checkpoint import model_from_checkpoint; "
                f"m, c = model_from_checkpoint({str(args.checkpoint)!r}); "
                "cfg = PipelineConfig(c.synth, c.tile, c.model, c.train); "
                f"infer_slides([{str(slide)!r}], {str(args.checkpoint)!r}, tempfile.mkdtemp(), cfg, m, "
                "torch.device('cpu'), progress=False); "
                "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)"
            )
            done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
            print(f"{slide.name}: peak RSS {float(done.stdout.split()[-1]):.0f} MB")


if __name__ == "__main__":
    main()
