"""A tiny model and a tiny random dataset, for tests and documentation examples.

Importing this module registers

* model ``tiny_cnn`` (two conv+BatchNorm+ReLU layers, global pooling, a linear head; a few
  hundred parameters at the default ``width=8``; with ``oom_when_shared=True`` its forward pass raises
  ``torch.OutOfMemoryError`` while its run shares the GPU, i.e. while ``run_many``'s worker says its
  share is below 1: the out-of-memory retry's test), and
* engine dataset ``tiny_random``: CIFAR-10-shaped uint8 images (3x32x32, the CIFAR-10 class
  names and normalization) drawn from a fixed generator, 64 train / 32 test images unless
  ``train_size`` / ``test_size`` say otherwise. Each class has its own mean colour, so a
  network can learn it. ``Dataset.source`` is ``"random"``.

It lives in the package (not in a test file) so that :func:`run_many`'s spawned workers can import
it: ``run_many(configs, imports=["cifar_utils.engine.testing"])`` (added automatically when this
module is already imported).

>>> import cifar_utils.engine.testing
>>> from cifar_utils.engine import RunConfig, run
>>> r = run(tiny_config(epochs=2), runs_dir="/tmp/runs", progress=False)   # doctest: +SKIP
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import Tensor, nn

from cifar_utils.models import register_model

from .batch import SHARE_ENV
from .config import RunConfig
from .datasets import register_dataset

MODEL = "tiny_cnn"
DATASET = "tiny_random"


class TinyCNN(nn.Module):
    cam_layer = "block2"

    def __init__(self, num_classes: int = 10, in_channels: int = 3, width: int = 8,
                 oom_when_shared: bool = False) -> None:
        super().__init__()
        self.input_size = (in_channels, 32, 32)
        self.oom_when_shared = oom_when_shared
        self.block1 = nn.Sequential(nn.Conv2d(in_channels, width, 3, stride=2, padding=1, bias=False),
                                    nn.BatchNorm2d(width), nn.ReLU())
        self.block2 = nn.Sequential(nn.Conv2d(width, 2 * width, 3, stride=2, padding=1, bias=False),
                                    nn.BatchNorm2d(2 * width), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(2 * width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        if self.oom_when_shared and float(os.environ.get(SHARE_ENV) or 1) < 1:
            raise torch.OutOfMemoryError(f"tiny_cnn(oom_when_shared=True) with {SHARE_ENV}="
                                         f"{os.environ[SHARE_ENV]}: CUDA out of memory (a test)")
        return self.linear(self.pool(self.block2(self.block1(x))).flatten(1))


def tiny_cnn(num_classes: int = 10, in_channels: int = 3, width: int = 8, oom_when_shared: bool = False) -> TinyCNN:
    return TinyCNN(num_classes, in_channels, width, oom_when_shared)


try:
    tiny_cnn = register_model(tiny_cnn)
except ValueError:  # already registered (module reloaded): keep the first registration
    pass


def random_dataset(*, train_size: int | None = None, test_size: int | None = None, val_size: int = 0,
                   seed: int = 1234, **_: Any):
    """The ``tiny_random`` dataset (a :class:`cifar_utils.data.Dataset`)."""
    from cifar_utils.data import Dataset
    from cifar_utils.data.meta import class_names

    classes = class_names("cifar10")
    g = torch.Generator().manual_seed(seed)
    colours = torch.randint(40, 216, (len(classes), 3, 1, 1), generator=g)

    def split(n: int) -> tuple[Tensor, Tensor]:
        y = torch.randint(0, len(classes), (n,), generator=g)
        noise = torch.randint(-40, 41, (n, 3, 32, 32), generator=g)
        x = (colours[y] + noise).clamp(0, 255).to(torch.uint8)
        return x, y.to(torch.int64)

    x_train, y_train = split(train_size or 64)
    x_test, y_test = split(test_size or 32)
    x_val, y_val = split(val_size)
    return Dataset(name="cifar10", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test,
                   x_val=x_val, y_val=y_val, classes=classes, source="random")


register_dataset(DATASET, override=True)(random_dataset)


def tiny_config(**changes: Any) -> RunConfig:
    """A :class:`RunConfig` that trains ``tiny_cnn`` on ``tiny_random`` in well under a second per
    epoch on a CPU (batch 16, 3 epochs, fp32 on CPU); ``changes`` override any field."""
    base = dict(model=MODEL, dataset=DATASET, batch_size=16, epochs=3, device="cpu", lr=0.05)
    base.update(changes)
    return RunConfig(**base)
