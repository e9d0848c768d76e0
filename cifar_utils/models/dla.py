"""Deep Layer Aggregation (DLA) for 32x32 inputs.

Yu, Wang, Shelhamer, Darrell. "Deep Layer Aggregation". CVPR 2018. arXiv:1707.06484.

kuangliu/pytorch-cifar's full ``DLA`` (16,291,386 parameters, 10 classes), not its
``SimpleDLA`` (15.14M): trees of ResNet basic blocks whose outputs (and, for level >= 2, a
strided ``prev_root`` block) are concatenated and fused by a 1x1 ``Root`` conv.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .registry import register_model
from .resnet import BasicBlock


def _conv_bn_relu(in_planes: int, out_planes: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_planes, out_planes, 3, padding=1, bias=False), nn.BatchNorm2d(out_planes), nn.ReLU()
    )


class Root(nn.Module):
    """Aggregation node: concatenate, 1x1 conv, BN, ReLU."""

    def __init__(self, in_planes: int, out_planes: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_planes, out_planes, 1, bias=False)
        self.bn = nn.BatchNorm2d(out_planes)
        self.act = nn.ReLU()

    def forward(self, xs: list[Tensor]) -> Tensor:
        return self.act(self.bn(self.conv(torch.cat(xs, 1))))


class Tree(nn.Module):
    def __init__(self, in_planes: int, out_planes: int, level: int = 1, stride: int = 1) -> None:
        super().__init__()
        self.level = level
        self.prev_root: nn.Module | None = None
        self.subtrees = nn.ModuleList()
        if level == 1:
            self.root = Root(2 * out_planes, out_planes)
            self.left_node = BasicBlock(in_planes, out_planes, stride)
        else:
            self.root = Root((level + 2) * out_planes, out_planes)
            # kuangliu builds level_{L-1}, ..., level_1; all read the stage input.
            self.subtrees.extend(Tree(in_planes, out_planes, i, stride) for i in reversed(range(1, level)))
            self.prev_root = BasicBlock(in_planes, out_planes, stride)
            self.left_node = BasicBlock(out_planes, out_planes, 1)
        self.right_node = BasicBlock(out_planes, out_planes, 1)

    def forward(self, x: Tensor) -> Tensor:
        xs = [] if self.prev_root is None else [self.prev_root(x)]
        for subtree in self.subtrees:
            x = subtree(x)
            xs.append(x)
        x = self.left_node(x)
        xs.append(x)
        x = self.right_node(x)
        xs.append(x)
        return self.root(xs)


class DLA(nn.Module):
    cam_layer = "layer6"

    def __init__(self, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        self.input_size = (in_channels, 32, 32)
        self.base = _conv_bn_relu(in_channels, 16)
        self.layer1 = _conv_bn_relu(16, 16)
        self.layer2 = _conv_bn_relu(16, 32)
        self.layer3 = Tree(32, 64, level=1, stride=1)
        self.layer4 = Tree(64, 128, level=2, stride=2)
        self.layer5 = Tree(128, 256, level=2, stride=2)
        self.layer6 = Tree(256, 512, level=1, stride=2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(512, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        out = self.layer2(self.layer1(self.base(x)))
        out = self.layer6(self.layer5(self.layer4(self.layer3(out))))
        return self.linear(self.pool(out).flatten(1))


@register_model
def dla(num_classes: int = 10, in_channels: int = 3) -> DLA:
    return DLA(num_classes, in_channels)
