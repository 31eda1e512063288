"""Generator throughput and peak memory: one slide per size, each in a fresh process.

Memory must grow with the slide's width (one band of tiles is in memory), not with its area. Prints a
Markdown table; ratios compare runs of the same invocation.

    python benchmarks/synth_throughput.py --sizes 4096x4096 16384x4096 16384x16384
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile

_CHILD = """
import json, resource, sys, time
from pathlib import Path
from wsi_pipeline.config import load_config
from wsi_pipeline.synth.dataset import generate_dataset
w, h, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
cfg = load_config(None, [f"synth.width={w}", f"synth.height={h}", "synth.seed=1", "synth.quicklook_size=1024"])
t = time.perf_counter()
generate_dataset(cfg, out, workers=1, progress=False)
seconds = time.perf_counter() - t
tiff = Path(out) / "slides" / "L0001.tiff"
print(json.dumps({"seconds": seconds, "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "tiff_mib": tiff.stat().st_size / 2**20}))
"""


def run(width: int, height: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as out:
        res = subprocess.run(
            [sys.executable, "-c", _CHILD, str(width), str(height), out], capture_output=True, text=True, check=True
        )
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["4096x4096", "16384x4096", "16384x16384"])
    args = parser.parse_args()
    rows = []
    for size in args.sizes:
        w, h = (int(v) for v in size.split("x"))
        r = run(w, h)
        rows.append((w, h, r))
    base = rows[0][2]
    print("| slide (px) | MP | seconds | MP/s | peak RSS (MiB) | peak / first row | TIFF (MiB) |")
    print("|---|---|---|---|---|---|---|")
    for w, h, r in rows:
        mp = w * h / 1e6
        print(
            f"| {w} x {h} | {mp:.0f} | {r['seconds']:.1f} | {mp / r['seconds']:.1f} | {r['peak_mib']:.0f} | "
            f"{r['peak_mib'] / base['peak_mib']:.2f} | {r['tiff_mib']:.1f} |"
        )


if __name__ == "__main__":
    main()
