"""Run by tests/test_memory_bank.py under ``torchrun --nproc_per_node=2`` (gloo, CPU): each rank pushes its
own prototypes into a MemoryBank inside a DDP-wrapped module that does *not* broadcast buffers, so only the
explicit gather can make the banks agree. Writes rank<r>.pt with the bank after two steps."""

import os
import sys

import torch
import torch.distributed as dist
from torch import nn

from wsi_pipeline.losses.memory_bank import MemoryBank


class Method(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(2, 2)
        self.bank = MemoryBank(size=6, dim=2)

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        out = self.head(x)
        self.bank.push(x, labels)  # the prototypes: known values, to check the contents by hand
        return out.pow(2).mean()


def main() -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(0)
    model = nn.parallel.DistributedDataParallel(Method(), broadcast_buffers=False)
    for step in range(2):
        n = 1 + rank + step  # ranks push different numbers of rows
        x = torch.full((n, 2), 10.0 * rank + step)
        labels = torch.full((n,), rank, dtype=torch.long)
        model(x, labels).backward()
    bank = model.module.bank
    torch.save(
        {"vectors": bank.vectors, "labels": bank.labels, "pointer": bank.pointer}, f"{sys.argv[1]}/rank{rank}.pt"
    )
    dist.barrier()
    os._exit(0)  # as wsi_pipeline.cli.main.main: a normal exit after DDP on gloo aborts now and then


if __name__ == "__main__":
    main()
