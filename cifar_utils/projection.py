"""Projected GPU time of a run: one speed table, one formula, for the whole project.

The plan's table (``python -m cifar_utils.plan``), ``train``'s ETA, the claims' cost of settling and
``bench/gpu_check.py``'s projection all take a run's projected time from :func:`run_seconds`.

Speeds: :data:`MEASURED` holds training images/s at batch 128 measured on one NVIDIA H200 by the
project's ``bench/gpu_check.py`` (see :data:`SOURCE`). A model the table lacks (LeNet, a model added
later) gets an **estimate** from its training FLOPs per image (three times the forward FLOPs of
:func:`cifar_utils.models.count_flops`: forward + backward) at the median FLOP/s the measured models
reach, capped at the fastest measured images/s (a small network is bound by kernel launches, not
arithmetic); :func:`speed` says which (``Speed.measured``).

A run's time: ``epochs x (training images + (test + validation images) / 3) / images_per_s``: an
evaluation pass costs about a third of a training step per image (forward only). Hours of one GPU
with one run at a time; several runs sharing a GPU are the packing's business
(``bench/gpu_check.py`` measures it).
"""

from __future__ import annotations

import functools
import statistics
from dataclasses import dataclass

#: Where :data:`MEASURED` comes from.
SOURCE = ("bench/gpu_check.py on one NVIDIA H200 (torch 2.11.0+cu130), 2026-12-01, engine default mode "
          "(bf16 autocast, channels_last, data on the GPU), batch 128, synthetic CIFAR-shaped images; "
          "../shared/gpu-check/2026-12-01/call2-maxautotune-projection.json (the call that timed every model), "
          "copied in bench/results/gpu-check-2026-12-01/")
#: Training images/s of one run at batch 128 in the engine's default mode (see :data:`SOURCE`).
MEASURED: dict[str, float] = {
    "resnet18": 10421.0, "preact_resnet18": 9147.0, "wrn28_10": 5218.0, "resnext29_32x4d": 5111.0,
    "densenet121": 1469.0, "dpn26": 4745.0, "dla": 4147.0, "resnet50": 3223.0, "resnext29_2x32d": 8051.0,
    "resnext29_2x64d": 6257.0, "resnext29_8x64d": 2985.0, "resnext50_2x40d": 3647.0, "resnext50_8x14d": 3580.0,
    "resnext50_32x4d": 3962.0, "vgg_a": 19836.0, "vgg_a_bn": 14790.0,
}
#: Images per split of the datasets, for configs that use a whole split.
SPLIT_SIZES: dict[str, tuple[int, int]] = {"cifar10": (50_000, 10_000), "mnist": (60_000, 10_000)}
#: An evaluation image costs this fraction of a training image (forward only, no backward).
EVAL_COST = 1 / 3
#: Training FLOPs per image = this x the forward FLOPs (backward ~ twice the forward).
TRAIN_FLOPS_FACTOR = 3.0


@dataclass(frozen=True)
class Speed:
    """Images/s of one model, and whether it was measured or estimated (and how)."""

    model: str
    images_per_s: float
    measured: bool
    how: str


@functools.lru_cache(maxsize=None)
def train_flops(model: str) -> float:
    """Training FLOPs per image of ``model`` (forward + backward = 3 x the forward FLOPs)."""
    import torch

    from .models import count_flops, create_model

    with torch.device("meta"):
        net = create_model(model)
    return TRAIN_FLOPS_FACTOR * count_flops(net, tuple(net.input_size))


@functools.lru_cache(maxsize=None)
def _estimate_basis() -> tuple[float, float]:
    """(median FLOP/s the measured models reach, the fastest measured images/s)."""
    rates = [MEASURED[m] * train_flops(m) for m in MEASURED]
    return statistics.median(rates), max(MEASURED.values())


def speed(model: str) -> Speed:
    """The images/s :func:`run_seconds` uses for ``model``: measured, else estimated (see the module doc)."""
    if model in MEASURED:
        return Speed(model, MEASURED[model], True, "measured on an H200 (bench/gpu_check.py, 2026-12-01)")
    try:
        flops = train_flops(model)
    except Exception as exc:  # a model the meta device cannot build: say so rather than guess
        raise ValueError(f"no speed for model {model!r}: not measured, and its FLOPs cannot be counted ({exc})") from exc
    rate, cap = _estimate_basis()
    value = min(rate / flops, cap) if flops > 0 else cap
    bound = "capped at the fastest measured model" if value == cap else f"{flops / 1e9:.3g} GFLOPs/image"
    return Speed(model, value, False, f"estimated from training FLOPs ({bound}, {rate / 1e12:.0f} TFLOP/s: "
                                      "the measured models' median)")


def images_per_epoch(config) -> tuple[int, int]:
    """(training images, evaluated images) of one epoch of ``config`` (a RunConfig)."""
    train_all, test_all = SPLIT_SIZES.get(config.dataset, SPLIT_SIZES["cifar10"])
    train = min(config.train_size, train_all) if config.train_size else train_all
    test = min(config.test_size, test_all) if config.test_size else test_all
    val = min(config.val_size, train) if config.val_size else 0
    return train - val, test + val


def run_seconds(config, images_per_s: float | None = None) -> float:
    """Projected GPU seconds of the whole run ``config`` (a RunConfig), one run on one GPU."""
    rate = images_per_s if images_per_s is not None else speed(config.model).images_per_s
    train, evaluated = images_per_epoch(config)
    return config.epochs * (train + EVAL_COST * evaluated) / rate


def hours(seconds: float) -> str:
    """``1.25 h`` / ``12 min`` / ``40 s``: a projected time for a table."""
    if seconds >= 3600:
        return f"{seconds / 3600:.2f} h"
    if seconds >= 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds:.0f} s"
