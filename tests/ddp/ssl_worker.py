"""Run by tests/test_ssl_methods.py under ``torchrun --nproc_per_node=2`` (gloo, CPU): dual alignment with an
EMA teacher in DDP *without* buffer broadcast, each rank on its own images, two steps. The ranks must end
with the same student, the same EMA teacher (same update of the same all-reduced student) and the same
memory bank (explicit gather of both ranks' prototypes). Writes rank<r>.pt."""

import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from test_methods import TINY, _target

from wsi_pipeline.config import DualAlignmentConfig, PipelineConfig, SemiSupervisedConfig, TrainConfig
from wsi_pipeline.data.batch import TrainBatch
from wsi_pipeline.methods import build_method


def main() -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    ssl = SemiSupervisedConfig(
        ramp_iters=0, ema_decay=0.5, dual_alignment=DualAlignmentConfig(threshold=0.0, pseudo_labels="ema")
    )
    torch.manual_seed(0)  # the same initial weights on both ranks, as engine.run.build_model
    method = build_method(PipelineConfig(model=TINY, train=TrainConfig(method="dual_alignment", ssl=ssl))).train()
    model = torch.nn.parallel.DistributedDataParallel(method, broadcast_buffers=False, find_unused_parameters=True)
    optimizer = torch.optim.SGD(method.parameter_groups(0.02), lr=0.02, momentum=0.9)
    g = torch.Generator().manual_seed(100 + rank)  # each rank its own images
    for step in range(2):
        images = [torch.rand(3, 192, 192, generator=g) for _ in range(2)]
        targets = [_target([[10, 20, 80, 90]], [1 + rank]), _target([[40, 40, 120, 100]], [3])]
        batch = TrainBatch(images, targets, [torch.rand(3, 192, 192, generator=g) for _ in range(2)])
        method.begin_step(step)
        losses = model(batch)
        optimizer.zero_grad()
        sum(losses.values()).backward()
        optimizer.step()
        method.end_step()
    kept = ("teacher.", "alignment.bank.", "detector.", "alignment.proxies")
    state = {k: v for k, v in method.state_dict().items() if k.startswith(kept)}
    torch.save(state, f"{sys.argv[1]}/rank{rank}.pt")
    dist.barrier()
    os._exit(0)  # as wsi_pipeline.cli.main.main: a normal exit after DDP on gloo aborts now and then


if __name__ == "__main__":
    main()
