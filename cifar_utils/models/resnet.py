"""ResNet-18 and ResNet-50 for 32x32 inputs, and the activation switch of the ResNet-18 family.

He, Zhang, Ren, Sun. "Deep Residual Learning for Image Recognition". CVPR 2016. arXiv:1512.03385.

CIFAR stem as in kuangliu/pytorch-cifar: one 3x3 stride-1 conv and no max-pool, so a 32x32
image reaches ``layer4`` as a 4x4 map. ResNet-18 has 11,173,962 parameters, ResNet-50
23,520,842 (10 classes).

Every activation is its own module (never ``F.relu``), so ``activation=`` really replaces all
of them and a test can count them: ResNet-18 has 17 sites (stem + 2 per block).
Options: ``activation`` in :data:`ACTIVATIONS` -- ELU is Clevert et al. arXiv:1511.07289,
GELU is Hendrycks & Gimpel arXiv:1606.08415.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor, nn

from .registry import register_model

ActFactory = Callable[[], nn.Module]

ACTIVATIONS: tuple[str, ...] = ("relu", "sigmoid", "leaky_relu", "elu", "gelu")
_ACT_MODULES: dict[str, ActFactory] = {
    "relu": nn.ReLU,
    "sigmoid": nn.Sigmoid,
    "leaky_relu": nn.LeakyReLU,
    "elu": nn.ELU,
    "gelu": nn.GELU,
}


def activation_factory(name: str) -> ActFactory:
    """Constructor for activation ``name``; each call site builds its own instance."""
    try:
        return _ACT_MODULES[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown activation {name!r}; allowed: {', '.join(ACTIVATIONS)}") from None


def _shortcut(in_planes: int, out_planes: int, stride: int) -> nn.Module:
    """Projection (1x1 conv + BN) when the shape changes, identity otherwise."""
    if stride == 1 and in_planes == out_planes:
        return nn.Identity()
    return nn.Sequential(
        nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False), nn.BatchNorm2d(out_planes)
    )


class BasicBlock(nn.Module):
    """Two 3x3 convs; used by ResNet-18 and by DLA."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1, act: ActFactory = nn.ReLU) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.act1 = act()
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = _shortcut(in_planes, planes, stride)
        self.act2 = act()

    def forward(self, x: Tensor) -> Tensor:
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act2(out + self.shortcut(x))


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3, 1x1 expand (x4); the stride sits on the 3x3 conv. ``groups`` splits the 3x3
    conv into parallel paths (ResNeXt's block is this one with groups = cardinality, expansion 2)."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1, act: ActFactory = nn.ReLU,
                 groups: int = 1) -> None:
        super().__init__()
        out_planes = self.expansion * planes
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.act1 = act()
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.act2 = act()
        self.conv3 = nn.Conv2d(planes, out_planes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.shortcut = _shortcut(in_planes, out_planes, stride)
        self.act3 = act()

    def forward(self, x: Tensor) -> Tensor:
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.act2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.act3(out + self.shortcut(x))


@dataclass(frozen=True)
class ResNetConfig:
    block: type[BasicBlock] | type[Bottleneck]
    num_blocks: tuple[int, int, int, int]


RESNET18 = ResNetConfig(BasicBlock, (2, 2, 2, 2))
RESNET50 = ResNetConfig(Bottleneck, (3, 4, 6, 3))


class ResNet(nn.Module):
    cam_layer = "layer4"

    def __init__(
        self, config: ResNetConfig, num_classes: int = 10, in_channels: int = 3, activation: str = "relu"
    ) -> None:
        super().__init__()
        act = activation_factory(activation)
        self.input_size = (in_channels, 32, 32)
        self.conv1 = nn.Conv2d(in_channels, 64, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.act1 = act()
        in_planes = 64
        stages = []
        for i, (planes, n) in enumerate(zip((64, 128, 256, 512), config.num_blocks)):
            blocks = []
            for stride in [1 if i == 0 else 2] + [1] * (n - 1):
                blocks.append(config.block(in_planes, planes, stride, act))
                in_planes = planes * config.block.expansion
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(in_planes, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return self.linear(self.pool(out).flatten(1))


@register_model
def resnet18(num_classes: int = 10, in_channels: int = 3, activation: str = "relu") -> ResNet:
    return ResNet(RESNET18, num_classes, in_channels, activation)


@register_model
def resnet50(num_classes: int = 10, in_channels: int = 3) -> ResNet:
    return ResNet(RESNET50, num_classes, in_channels)
