"""Tiling throughput: ``tile`` against OpenSlide and raw tifffile/zarr reads of the same regions.

For each slide, in one run: the full ``tile`` pipeline (plan + foreground + read + store) with 1 and 2
workers, then single-threaded reads of exactly the same patch regions through OpenSlide
``read_region`` and through tifffile's zarr store, and JPEG decoding of the whole level alone.
Patches are tiled at the slide's own mpp with no foreground filter, so every method reads the same
pixels. Rates are megapixels of patch output per second per core (median of the repeats); ratios compare
within the run.

    python benchmarks/tiling.py                      # default synthpap slide + CMU-1-Small-Region.svs
    python benchmarks/tiling.py --slides a.svs b.tiff --out-dir /data/scratch

Stores go to ``--out-dir`` (default: /dev/shm when it exists) so the rates measure the pipeline, not the
disk's write-back: ten runs write several GB, and a throttled disk makes the later runs slower.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SVS = ROOT.parent / "shared" / "data" / "slides" / "CMU-1-Small-Region.svs"
SYNTH_DIR = ROOT / "data" / "bench" / "synth-default"


def synth_slide() -> Path:
    """The default 20,000 x 20,000 synthpap slide (generated once, then reused)."""
    from wsi_pipeline.config import load_config
    from wsi_pipeline.synth.dataset import generate_dataset

    path = SYNTH_DIR / "slides" / "L0001.tiff"
    if not path.is_file():
        generate_dataset(load_config(None, ["synth.seed=1"]), SYNTH_DIR, workers=1, progress=True)
    return path


def median_time(repeats: int, fn) -> float:
    """Median wall time of ``repeats`` runs (the machine's disk write-back makes single runs noisy)."""
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def bench_slide(path: Path, repeats: int, out_dir: Path | None) -> dict[str, float]:
    import openslide
    import tifffile
    import zarr

    from wsi_pipeline.config import load_config
    from wsi_pipeline.data.patch_store import PatchStore
    from wsi_pipeline.slide import open_slide
    from wsi_pipeline.tiling.batch import tile_slides

    with open_slide(path) as reader:
        mpp = reader.require_mpp()
    cfg = load_config(None, [f"tile.target_mpp={mpp}", "tile.min_foreground=0"])
    patch = cfg.tile.patch_size
    with tempfile.TemporaryDirectory() as out:
        tile_slides([path], out, cfg, scheduler="sync", progress=False)  # warm-up: imports, page cache
        store = PatchStore(Path(out) / f"{path.stem}.zarr")
        boxes = list(zip(store.table["x"].tolist(), store.table["y"].tolist(), strict=True))
    mp = len(boxes) * patch * patch / 1e6

    def tile(workers: int, config=cfg) -> None:
        with tempfile.TemporaryDirectory(dir=out_dir) as out:
            tile_slides([path], out, config, scheduler="threads", workers=workers, progress=False)

    t1 = median_time(repeats, lambda: tile(1))
    t2 = median_time(repeats, lambda: tile(2))
    plain = load_config(None, [f"tile.target_mpp={mpp}", "tile.min_foreground=0", "tile.compressor=none"])
    t_plain = median_time(repeats, lambda: tile(1, plain))

    tf = tifffile.TiffFile(path)
    z = zarr.open(tf.series[0].levels[0].keyframe.aszarr(), mode="r")

    def raw() -> None:
        for x, y in boxes:
            np.asarray(z[y : y + patch, x : x + patch])

    slide = openslide.OpenSlide(str(path))

    def osr() -> None:
        for x, y in boxes:
            slide.read_region((x, y), 0, (patch, patch))

    page = tf.series[0].levels[0].keyframe

    def decode() -> None:
        for data, index in tf.filehandle.read_segments(page.dataoffsets, page.databytecounts):
            page.decode(data, index, jpegtables=page.jpegtables)

    t_raw, t_os, t_dec = median_time(repeats, raw), median_time(repeats, osr), median_time(repeats, decode)
    level_mp = page.shape[0] * page.shape[1] / 1e6
    return {
        "patches": len(boxes),
        "mp": mp,
        "tile1": mp / t1,
        "plain": mp / t_plain,
        "tile2": mp / t2 / 2,
        "speedup": t1 / t2,
        "raw": mp / t_raw,
        "openslide": mp / t_os,
        "decode": level_mp / t_dec,
    }


def bench_batch(path: Path, copies: int, repeats: int, out_dir: Path | None) -> tuple[float, float]:
    """Speed-up from 1 to 2 workers on a batch of ``copies`` copies of one slide (plans overlap)."""
    import shutil

    from wsi_pipeline.config import load_config
    from wsi_pipeline.slide import open_slide
    from wsi_pipeline.tiling.batch import tile_slides

    with open_slide(path) as reader:
        mpp = reader.require_mpp()
    cfg = load_config(None, [f"tile.target_mpp={mpp}", "tile.min_foreground=0"])
    with tempfile.TemporaryDirectory(dir=out_dir) as folder:
        for i in range(copies):
            shutil.copy(path, Path(folder) / f"copy{i}{path.suffix}")

        def tile(workers: int) -> None:
            with tempfile.TemporaryDirectory(dir=out_dir) as out:
                tile_slides([folder], out, cfg, scheduler="threads", workers=workers, progress=False)

        tile(2)  # warm-up
        t1, t2 = median_time(repeats, lambda: tile(1)), median_time(repeats, lambda: tile(2))
    return t1, t2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slides", nargs="*", type=Path, help="slides to measure (default: synthpap + CMU-1)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out-dir", type=Path, default=Path("/dev/shm") if Path("/dev/shm").is_dir() else None)
    args = parser.parse_args()
    slides = args.slides or [synth_slide(), DEFAULT_SVS]
    print(
        "| slide | patches | MP | tile, 1 worker | tile, 2 workers (per core) | speed-up 1->2 | tile, uncompressed |"
        " raw tifffile/zarr | OpenSlide | JPEG decode only | tile / raw | uncompressed / raw | tile / OpenSlide |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    batch = bench_batch(slides[0], 3, args.repeats, args.out_dir)
    for path in slides:
        r = bench_slide(path, args.repeats, args.out_dir)
        print(
            f"| {path.name} | {r['patches']} | {r['mp']:.0f} | {r['tile1']:.0f} | {r['tile2']:.0f} | "
            f"{r['speedup']:.2f}x | {r['plain']:.0f} | {r['raw']:.0f} | {r['openslide']:.0f} | {r['decode']:.0f} | "
            f"{r['tile1'] / r['raw']:.2f} | {r['plain'] / r['raw']:.2f} | {r['tile1'] / r['openslide']:.2f} |"
        )
    print(
        f"\nBatch of 3 copies of {slides[0].name}: 1 worker {batch[0]:.2f} s, 2 workers {batch[1]:.2f} s, "
        f"speed-up {batch[0] / batch[1]:.2f}x"
    )


if __name__ == "__main__":
    main()
