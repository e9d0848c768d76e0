"""Parameter and FLOP table for the model zoo.

FLOPs come from ``torch.utils.flop_counter.FlopCounterMode`` on a single image of the model's
``input_size``. It counts matmuls and convolutions only, a multiply-add as **2** FLOPs, so
``gflops`` is about twice the "GMACs" many papers quote (ResNet-18 here: 0.56 GMACs = 1.11
GFLOPs); BN, activations, pooling and bias additions are not counted. Models are built on
the ``meta`` device: shapes only, no weights allocated, so the whole zoo takes seconds.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .registry import create_model, list_models

if TYPE_CHECKING:
    import pandas as pd


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters (BN running stats are buffers, not counted)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def count_flops(model: nn.Module, input_size: tuple[int, ...]) -> int:
    """Forward FLOPs (multiply-add = 2) of one image, in eval mode without autograd."""
    device = next(model.parameters()).device
    x = torch.zeros((1, *input_size), device=device)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())


def model_summary(names: Iterable[str] | None = None) -> pd.DataFrame:
    """One row per model: ``model, params, params_m, gflops, input_size`` (see module docstring)."""
    import pandas as pd  # deferred: keeps `import cifar_utils.models` light

    rows = []
    for name in list_models() if names is None else list(names):
        with torch.device("meta"):
            model = create_model(name)
        size = tuple(model.input_size)
        params = count_parameters(model)
        rows.append(
            {
                "model": name,
                "params": params,
                "params_m": round(params / 1e6, 2),
                "gflops": count_flops(model, size) / 1e9,
                "input_size": "x".join(map(str, size)),
            }
        )
    return pd.DataFrame(rows, columns=["model", "params", "params_m", "gflops", "input_size"])
