"""Peak memory of ``tile`` and ``infer`` as slides grow: tiled copies of a synthpap region at 2.4 and 9.7
gigapixels.

    python benchmarks/memory.py                      # makes data/bench/large/*.tiff once, then measures
    python benchmarks/memory.py --what infer         # infer's pipeline, with a model that finds nothing
    python benchmarks/memory.py --what mine          # mine's, with the same model

The large slides repeat one 8192 x 8192 synthpap-v3 slide (JPEG tiles of 512 px, 0.25 um/px, two
reduced levels), written tile by tile with tifffile so making them needs no memory either. Each
``tile`` run is a fresh process (2 workers) whose peak RSS (``ru_maxrss``) is reported.
Target (issue 12): 9.7 GP within 1.2x of 2.4 GP, for each of the three.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "data" / "synthpap-v3" / "slides" / "L0001.tiff"
OUT = ROOT / "data" / "bench" / "large"
TILE = 512


def make_slide(side: int, path: Path) -> Path:
    """A ``side`` x ``side`` pyramidal JPEG TIFF repeating the source slide's level 0."""
    import tifffile

    if path.is_file():
        return path
    source = tifffile.imread(SOURCE, level=0)

    def tiles(size: int, step: int):
        level = np.ascontiguousarray(source[::step, ::step])  # nearest-neighbour reduction: a benchmark slide
        lh, lw = level.shape[:2]  # multiples of TILE
        for y in range(0, size, TILE):
            for x in range(0, size, TILE):
                yield level[y % lh : y % lh + TILE, x % lw : x % lw + TILE]

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.tiff")
    res = (1e4 / 0.25, 1e4 / 0.25)
    with tifffile.TiffWriter(tmp, bigtiff=True) as tif:
        for k, step in enumerate((1, 4, 16)):
            size = side // step
            tif.write(tiles(size, step), shape=(size, size, 3), dtype=np.uint8, tile=(TILE, TILE),
                      compression="jpeg", compressionargs={"level": 85}, photometric="rgb",
                      subfiletype=1 if k else 0, resolution=(res[0] / step, res[1] / step),
                      resolutionunit="CENTIMETER")  # fmt: skip
    tmp.rename(path)
    return path


def peak_rss_of_tile(slide: Path) -> float:
    code = (
        "import resource, shutil, tempfile; from wsi_pipeline.config import load_config; "
        "from wsi_pipeline.tiling.batch import tile_slides; "
        f"out = tempfile.mkdtemp(dir={str(OUT)!r}); "
        "r = tile_slides([" + repr(str(slide)) + "], out, load_config(), workers=2, progress=False); "
        "assert not r.failed, r.failed; shutil.rmtree(out); "
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(done.stdout.split()[-1])


NULL_MODEL = """
import resource, shutil, sys, tempfile, torch
from wsi_pipeline.config import PipelineConfig
from wsi_pipeline.inference.batch import infer_slides
from wsi_pipeline.mining.pool import mine_slides

class Null(torch.nn.Module):  # the pipeline's memory, not a model's: no weights, no detections
    def forward(self, images):
        return [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long),
                 "scores": torch.zeros(0), "probs": torch.zeros(0, 5)} for _ in images]

ckpt = tempfile.NamedTemporaryFile(suffix=".pt", delete=False).name
out = tempfile.mkdtemp(dir=sys.argv[2])
if sys.argv[3] == "infer":
    r = infer_slides([sys.argv[1]], ckpt, out, PipelineConfig(), Null(), torch.device("cpu"), progress=False)
else:
    r = mine_slides([sys.argv[1]], ckpt, out, PipelineConfig(), Null(), torch.device("cpu"))
assert not r.failed, r.failed
shutil.rmtree(out)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def peak_rss_of_null_model(slide: Path, what: str) -> float:
    command = [sys.executable, "-c", NULL_MODEL, str(slide), str(OUT), what]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(done.stderr[-2000:])
    return float(done.stdout.split()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sides", type=int, nargs="+", default=[49152, 98304])
    parser.add_argument("--what", choices=["tile", "infer", "mine"], default="tile")
    args = parser.parse_args()

    def measure(slide: Path) -> float:
        return peak_rss_of_tile(slide) if args.what == "tile" else peak_rss_of_null_model(slide, args.what)

    print(f"| slide | gigapixels | {args.what} peak RSS (MB) |")
    print("|---|---|---|")
    for side in args.sides:
        slide = make_slide(side, OUT / f"repeat-{side}.tiff")
        print(f"| {slide.name} | {side * side / 1e9:.1f} | {measure(slide):.0f} |", flush=True)


if __name__ == "__main__":
    main()
