"""Wide ResNet 28-10 for 32x32 inputs.

Zagoruyko, Komodakis. "Wide Residual Networks". BMVC 2016. arXiv:1605.07146.

Follows meliketoy/wide-resnet.pytorch, which reproduces the paper's CIFAR numbers: pre-activation
blocks, dropout between the two 3x3 convs, convs *with* bias, stride on the second conv,
final BN-ReLU before pooling (36,489,290 parameters). One deliberate deviation: that repo's
final ``BatchNorm2d(momentum=0.9)`` is a Torch7-ism (PyTorch's momentum is the weight of the
*new* batch), so the default 0.1 is used; it does not change the parameter count.
"""

from __future__ import annotations

from torch import Tensor, nn

from .registry import register_model


class WideBasic(nn.Module):
    def __init__(self, in_planes: int, planes: int, dropout: float, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.act1 = nn.ReLU()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, padding=1, bias=True)
        self.dropout = nn.Dropout(p=dropout)
        self.bn2 = nn.BatchNorm2d(planes)
        self.act2 = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Conv2d(in_planes, planes, 1, stride=stride, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        out = self.dropout(self.conv1(self.act1(self.bn1(x))))
        out = self.conv2(self.act2(self.bn2(out)))
        return out + self.shortcut(x)


class WideResNet(nn.Module):
    cam_layer = "layer3"

    def __init__(
        self, depth: int, widen_factor: int, dropout: float = 0.3, num_classes: int = 10, in_channels: int = 3
    ) -> None:
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"Wide ResNet depth must be 6n+4, got {depth}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        n = (depth - 4) // 6
        widths = (16 * widen_factor, 32 * widen_factor, 64 * widen_factor)
        self.input_size = (in_channels, 32, 32)
        self.conv1 = nn.Conv2d(in_channels, 16, 3, padding=1, bias=True)
        in_planes = 16
        stages = []
        for i, planes in enumerate(widths):
            blocks = []
            for stride in [1 if i == 0 else 2] + [1] * (n - 1):
                blocks.append(WideBasic(in_planes, planes, dropout, stride))
                in_planes = planes
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.bn = nn.BatchNorm2d(in_planes)
        self.act = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(in_planes, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        out = self.layer3(self.layer2(self.layer1(self.conv1(x))))
        out = self.act(self.bn(out))
        return self.linear(self.pool(out).flatten(1))


@register_model
def wrn28_10(num_classes: int = 10, in_channels: int = 3, dropout: float = 0.3) -> WideResNet:
    return WideResNet(28, 10, dropout, num_classes, in_channels)
