"""The environment the README's install produces."""

import torch


def test_torch_is_not_the_cpu_only_local_wheel():
    # the local CPU-only build ("+cpu") cannot load torchvision's compiled ops
    assert "+cpu" not in torch.__version__, f"torch {torch.__version__}: reinstall with pip install -e '.[dev]'"
