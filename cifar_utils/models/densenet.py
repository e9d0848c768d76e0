"""DenseNet-121 (BC: bottleneck + compression) for 32x32 inputs.

Huang, Liu, van der Maaten, Weinberger. "Densely Connected Convolutional Networks".
CVPR 2017. arXiv:1608.06993.

kuangliu/pytorch-cifar layout: a 3x3 stem to 2k channels (no max-pool), growth k=32, blocks
[6, 12, 24, 16], transitions halve the channels (reduction 0.5) and the resolution; a final
BN-ReLU precedes global pooling. 6,956,298 parameters (10 classes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .registry import register_model


class DenseLayer(nn.Module):
    """BN-ReLU-1x1 (4k) then BN-ReLU-3x3 (k); the k new maps are concatenated to the input."""

    def __init__(self, in_planes: int, growth_rate: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.act1 = nn.ReLU()
        self.conv1 = nn.Conv2d(in_planes, 4 * growth_rate, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(4 * growth_rate)
        self.act2 = nn.ReLU()
        self.conv2 = nn.Conv2d(4 * growth_rate, growth_rate, 3, padding=1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv1(self.act1(self.bn1(x)))
        out = self.conv2(self.act2(self.bn2(out)))
        return torch.cat([out, x], 1)


class Transition(nn.Module):
    def __init__(self, in_planes: int, out_planes: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(in_planes)
        self.act = nn.ReLU()
        self.conv = nn.Conv2d(in_planes, out_planes, 1, bias=False)
        self.pool = nn.AvgPool2d(2)

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(self.conv(self.act(self.bn(x))))


@dataclass(frozen=True)
class DenseNetConfig:
    num_layers: tuple[int, int, int, int]
    growth_rate: int = 32
    reduction: float = 0.5


class DenseNet(nn.Module):
    cam_layer = "dense4"

    def __init__(self, config: DenseNetConfig, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        k = config.growth_rate
        self.input_size = (in_channels, 32, 32)
        planes = 2 * k
        self.conv1 = nn.Conv2d(in_channels, planes, 3, padding=1, bias=False)
        for i, n in enumerate(config.num_layers, start=1):
            self.add_module(f"dense{i}", nn.Sequential(*(DenseLayer(planes + j * k, k) for j in range(n))))
            planes += n * k
            if i < len(config.num_layers):
                out_planes = int(math.floor(planes * config.reduction))
                self.add_module(f"trans{i}", Transition(planes, out_planes))
                planes = out_planes
        self.bn = nn.BatchNorm2d(planes)
        self.act = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(planes, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv1(x)
        out = self.trans1(self.dense1(out))
        out = self.trans2(self.dense2(out))
        out = self.trans3(self.dense3(out))
        out = self.act(self.bn(self.dense4(out)))
        return self.linear(self.pool(out).flatten(1))


@register_model
def densenet121(num_classes: int = 10, in_channels: int = 3) -> DenseNet:
    return DenseNet(DenseNetConfig((6, 12, 24, 16)), num_classes, in_channels)
