"""Heads that training methods add on top of the detector."""

from __future__ import annotations

from torch import Tensor, nn


class ProjectionHead(nn.Module):
    """x = W2 ReLU(W1 h) (the dual-alignment method's Eq. 1): box-head features (1024-d) into the metric
    space (128-d by default); ``(N, in_dim) -> (N, out_dim)``."""

    def __init__(self, in_dim: int = 1024, hidden: int = 512, out_dim: int = 128):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out_dim))

    def forward(self, features: Tensor) -> Tensor:
        return self.net(features)
