"""The FIFO memory bank: hand-computed contents, class means with absent classes, and agreement across
two DDP ranks through the explicit gather."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from wsi_pipeline.losses.memory_bank import MemoryBank


def test_pushes_fill_first_in_first_out():
    bank = MemoryBank(size=4, dim=2)
    assert bank.counts(3).tolist() == [0, 0, 0]
    bank.push(torch.tensor([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]]), torch.tensor([0, 1, 1]))
    assert bank.labels.tolist() == [0, 1, 1, -1] and int(bank.pointer) == 3
    bank.push(torch.tensor([[4.0, 4.0], [5.0, 5.0]]), torch.tensor([2, 0]))  # wraps: the oldest (1, 1) goes
    assert bank.vectors[:, 0].tolist() == [5.0, 2.0, 3.0, 4.0] and bank.labels.tolist() == [0, 1, 1, 2]
    assert int(bank.pointer) == 1 and bank.counts(3).tolist() == [1, 2, 1]
    bank.push(torch.arange(12.0).reshape(6, 2), torch.arange(6) % 3)  # more than the bank: the last 4 stay
    assert sorted(bank.vectors[:, 0].tolist()) == [4.0, 6.0, 8.0, 10.0]
    bank.push(torch.zeros(0, 2), torch.zeros(0, dtype=torch.long))  # nothing to add is fine
    assert bank.counts(3).sum() == 4


def test_class_means_skip_absent_classes_without_nan():
    bank = MemoryBank(size=8, dim=2)
    means, present = bank.class_means(3)  # empty bank
    assert present.tolist() == [False, False, False] and torch.equal(means, torch.zeros(3, 2))
    bank.push(torch.tensor([[1.0, 0.0], [3.0, 2.0], [0.0, 5.0]]), torch.tensor([0, 0, 2]))
    means, present = bank.class_means(3)
    assert present.tolist() == [True, False, True]
    assert means.tolist() == [[2.0, 1.0], [0.0, 0.0], [0.0, 5.0]]


def test_the_bank_is_a_buffer_that_checkpoints_restore():
    bank = MemoryBank(size=3, dim=2)
    bank.push(torch.ones(2, 2), torch.tensor([1, 2]))
    state = bank.state_dict()
    assert set(state) == {"vectors", "labels", "pointer"}
    other = MemoryBank(size=3, dim=2)
    other.load_state_dict(state)
    assert torch.equal(other.vectors, bank.vectors) and int(other.pointer) == 2
    with pytest.raises(ValueError, match="must be positive"):
        MemoryBank(size=0, dim=2)


def run_two_ranks(worker: str, out: Path) -> list[dict]:
    """Run ``tests/ddp/<worker>`` under torchrun with 2 gloo processes; the ``rank<r>.pt`` each wrote in ``out``."""
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    done = subprocess.run(
        [*torchrun, str(Path(__file__).parent / "ddp" / worker), str(out)],
        capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return [torch.load(out / f"rank{r}.pt") for r in (0, 1)]


@pytest.mark.filterwarnings("ignore")
def test_two_ranks_hold_the_same_bank_with_both_ranks_prototypes(tmp_path: Path):
    r0, r1 = run_two_ranks("memory_bank_worker.py", tmp_path)
    assert all(torch.equal(r0[k], r1[k]) for k in r0)  # no broadcast of buffers: the gather did it
    # step 0 gathers rank 0's 1 row and rank 1's 2 (values 0, 10) into slots 0-2; step 1 gathers 2 + 3
    # rows (values 1, 11) into slots 3, 4, 5, 0, 1: 8 rows in 6 slots, rank order kept
    assert r0["labels"].tolist() == [1, 1, 1, 0, 0, 1] and int(r0["pointer"]) == 2
    assert r0["vectors"][:, 0].tolist() == [11.0, 11.0, 10.0, 1.0, 1.0, 11.0]
