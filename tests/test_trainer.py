"""The training loop and its hooks on a toy model: call order, the loss dict summed, exact resume of the
iteration, optimizer, RNG and hook state, and the NaN guard."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from wsi_pipeline.engine.hooks import LRSchedule
from wsi_pipeline.engine.trainer import HookBase, Trainer, TrainingDiverged


class Toy(nn.Module):
    """A training "method": forward(batch) -> loss dict; a random draw per step, like the RoI sampler."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor([1.0, -2.0]))

    def forward(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        noise = torch.rand(())  # consumes the global generator, which resume must restore
        return {"sup_fit": ((self.w - batch) ** 2).sum(), "unsup_reg": 0.1 * noise * self.w.abs().sum()}


def batches(start: int):
    it = start
    while True:
        yield torch.tensor([float(it), 1.0])
        it += 1


class Recorder(HookBase):
    def __init__(self) -> None:
        self.calls: list[str] = []
        self.steps = 0

    def before_train(self) -> None:
        self.calls.append("before_train")

    def before_step(self) -> None:
        self.calls.append(f"before_step {self.trainer.iter}")

    def after_step(self) -> None:
        self.steps += 1
        self.calls.append(f"after_step {self.trainer.iter} {sorted(self.trainer.last_losses)}")

    def after_train(self) -> None:
        self.calls.append("after_train")

    def state_dict(self) -> dict[str, Any]:
        return {"steps": self.steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.steps = state.get("steps", 0)


def _trainer(max_iter: int, hooks: list[HookBase]) -> Trainer:
    torch.manual_seed(0)
    model = Toy()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    return Trainer(model, optimizer, batches(0), max_iter, torch.device("cpu"), hooks)


def test_hooks_run_around_every_step_and_see_the_summed_losses():
    recorder = Recorder()
    trainer = _trainer(2, [recorder])
    trainer.train()
    names = "['sup_fit', 'total', 'unsup_reg']"
    assert recorder.calls == [
        "before_train",
        "before_step 0",
        f"after_step 0 {names}",
        "before_step 1",
        f"after_step 1 {names}",
        "after_train",
    ]
    losses = trainer.last_losses
    assert losses["total"] == pytest.approx(losses["sup_fit"] + losses["unsup_reg"])


def test_lr_schedule_hook_sets_the_rate_before_each_step():
    rates = []

    class Spy(HookBase):
        def after_step(self) -> None:
            rates.append(self.trainer.optimizer.param_groups[0]["lr"])

    _trainer(4, [LRSchedule(2, 0.5, (3,), 0.1), Spy()]).train()
    assert rates == pytest.approx([0.05, 0.075, 0.1, 0.01])  # warm-up from half, then x0.1 at iteration 3


def test_resume_from_state_continues_exactly():
    straight = _trainer(6, [Recorder()])
    straight.train()

    first = _trainer(3, [Recorder()])
    first.train()
    state = first.state_dict()
    assert state["iteration"] == 3 and state["hooks"]["Recorder"] == {"steps": 3}
    torch.manual_seed(123)  # a different process state: resume must restore the generator itself
    resumed = _trainer(6, [Recorder()])
    resumed.load_state_dict(state)
    resumed.data = batches(resumed.start_iter)
    resumed.train()
    assert resumed.hooks[0].steps == 6  # type: ignore[attr-defined]
    assert torch.equal(resumed.model.w, straight.model.w)
    assert resumed.last_losses == straight.last_losses


def test_a_non_finite_loss_stops_before_the_update():
    trainer = _trainer(3, [])
    trainer.data = iter([torch.tensor([0.0, 1.0]), torch.tensor([float("nan"), 1.0])])
    with pytest.raises(TrainingDiverged, match=r"iteration 1: loss is not finite \(sup_fit=nan"):
        trainer.train()
    assert torch.isfinite(trainer.model.w).all()
