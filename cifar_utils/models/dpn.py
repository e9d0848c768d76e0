"""Dual Path Network DPN-26 for 32x32 inputs.

Chen, Li, Xiao, Jin, Yan, Feng. "Dual Path Networks". NeurIPS (NIPS) 2017. arXiv:1707.01629.

kuangliu/pytorch-cifar's DPN26: each block's output is split into a residual part (the first
``out_planes`` channels, added to the shortcut) and a dense part (``dense_depth`` channels,
concatenated), so the width grows by ``dense_depth`` per block. The grouped 3x3 conv uses 32
groups. 11,574,842 parameters (10 classes); kuangliu hard-codes 10 classes, here the head
follows ``num_classes``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .registry import register_model


class DualPathBlock(nn.Module):
    def __init__(
        self, last_planes: int, in_planes: int, out_planes: int, dense_depth: int, stride: int, first: bool
    ) -> None:
        super().__init__()
        self.out_planes = out_planes
        self.conv1 = nn.Conv2d(last_planes, in_planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.act1 = nn.ReLU()
        self.conv2 = nn.Conv2d(in_planes, in_planes, 3, stride=stride, padding=1, groups=32, bias=False)
        self.bn2 = nn.BatchNorm2d(in_planes)
        self.act2 = nn.ReLU()
        self.conv3 = nn.Conv2d(in_planes, out_planes + dense_depth, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes + dense_depth)
        self.shortcut: nn.Module = nn.Identity()
        if first:  # the first block of a stage changes both width and resolution
            self.shortcut = nn.Sequential(
                nn.Conv2d(last_planes, out_planes + dense_depth, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_planes + dense_depth),
            )
        self.act3 = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.act2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        x = self.shortcut(x)
        d = self.out_planes
        out = torch.cat([x[:, :d] + out[:, :d], x[:, d:], out[:, d:]], 1)
        return self.act3(out)


@dataclass(frozen=True)
class DPNConfig:
    in_planes: tuple[int, int, int, int]
    out_planes: tuple[int, int, int, int]
    num_blocks: tuple[int, int, int, int]
    dense_depth: tuple[int, int, int, int]


DPN26 = DPNConfig((96, 192, 384, 768), (256, 512, 1024, 2048), (2, 2, 2, 2), (16, 32, 24, 128))


class DPN(nn.Module):
    cam_layer = "layer4"

    def __init__(self, config: DPNConfig, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        self.input_size = (in_channels, 32, 32)
        self.conv1 = nn.Conv2d(in_channels, 64, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.act1 = nn.ReLU()
        last = 64
        stages = []
        for s, (mid, out, n, dense) in enumerate(
            zip(config.in_planes, config.out_planes, config.num_blocks, config.dense_depth)
        ):
            blocks = []
            for i, stride in enumerate([1 if s == 0 else 2] + [1] * (n - 1)):
                blocks.append(DualPathBlock(last, mid, out, dense, stride, first=i == 0))
                last = out + (i + 2) * dense
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(last, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return self.linear(self.pool(out).flatten(1))


@register_model
def dpn26(num_classes: int = 10, in_channels: int = 3) -> DPN:
    return DPN(DPN26, num_classes, in_channels)
