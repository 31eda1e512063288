"""Cost of one training iteration on CPU: loading + augmenting the patches, and the forward/backward/SGD
step of the configured training method (`train.method`), for a config preset with overrides (what
`configs/curve-cpu.yaml` was tuned with).

    python benchmarks/train_step.py --config curve-cpu
    python benchmarks/train_step.py --config curve-cpu --set model.fpn_channels=64 --threads 1
"""

from __future__ import annotations

import argparse
import time

import torch

from wsi_pipeline.config import load_config
from wsi_pipeline.data.batch import detection_collate
from wsi_pipeline.data.datasets import CocoPatchDataset
from wsi_pipeline.methods import build_method


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="curve-cpu")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--patches", type=int, default=40, help="augmented patches loaded (and cycled through)")
    parser.add_argument("--steps", type=int, default=15, help="timed steps, after 3 warm-up steps")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_config(args.config, args.overrides)
    t = cfg.train
    dataset = CocoPatchDataset(
        t.train_json, augment_cfg=t.augment, seed=0, crop_size=t.crop_size, crop_min_visible=t.crop_min_visible
    )
    started = time.perf_counter()
    items = [dataset[i] for i in range(min(args.patches, len(dataset)))]
    load_ms = (time.perf_counter() - started) / len(items) * 1000
    torch.manual_seed(0)
    model = build_method(cfg).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    batch = cfg.train.batch_size

    def step(k: int) -> None:
        start = k * batch % (len(items) - batch + 1)
        loss = sum(model(detection_collate(items[start : start + batch])).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    for k in range(3):
        step(k)
    started = time.perf_counter()
    for k in range(3, 3 + args.steps):
        step(k)
    step_ms = (time.perf_counter() - started) / args.steps * 1000
    print(f"{args.config} {' '.join(args.overrides)}")
    iteration_ms = step_ms + batch * load_ms
    print(f"load+augment {load_ms:.0f} ms per patch, step {step_ms:.0f} ms, iteration {iteration_ms:.0f} ms")


if __name__ == "__main__":
    main()
