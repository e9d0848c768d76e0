"""Pre-activation ResNet-18 for 32x32 inputs.

He, Zhang, Ren, Sun. "Identity Mappings in Deep Residual Networks". ECCV 2016. arXiv:1603.05027.

As kuangliu/pytorch-cifar: BN and activation come *before* each conv, the shortcut is a bare
1x1 conv taken from the pre-activated input, and there is no stem BN nor a final BN-ReLU
(11,171,146 parameters). 16 activation sites (2 per block), all replaceable via
``activation=`` (see :data:`cifar_utils.models.resnet.ACTIVATIONS`).
"""

from __future__ import annotations

from torch import Tensor, nn

from .registry import register_model
from .resnet import ActFactory, activation_factory


class PreActBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1, act: ActFactory = nn.ReLU) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.act1 = act()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.act2 = act()
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        out = self.act1(self.bn1(x))
        # A projection sees the pre-activated input; the identity path carries x untouched.
        shortcut = x if self.shortcut is None else self.shortcut(out)
        out = self.conv1(out)
        out = self.conv2(self.act2(self.bn2(out)))
        return out + shortcut


class PreActResNet(nn.Module):
    cam_layer = "layer4"

    def __init__(
        self, num_blocks: tuple[int, ...], num_classes: int = 10, in_channels: int = 3, activation: str = "relu"
    ) -> None:
        super().__init__()
        act = activation_factory(activation)
        self.input_size = (in_channels, 32, 32)
        self.conv1 = nn.Conv2d(in_channels, 64, 3, padding=1, bias=False)
        in_planes = 64
        stages = []
        for i, (planes, n) in enumerate(zip((64, 128, 256, 512), num_blocks)):
            blocks = []
            for stride in [1 if i == 0 else 2] + [1] * (n - 1):
                blocks.append(PreActBlock(in_planes, planes, stride, act))
                in_planes = planes
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(in_planes, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv1(x)
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return self.linear(self.pool(out).flatten(1))


@register_model
def preact_resnet18(num_classes: int = 10, in_channels: int = 3, activation: str = "relu") -> PreActResNet:
    return PreActResNet((2, 2, 2, 2), num_classes, in_channels, activation)
