"""VGG-A (VGG-11), with and without batch norm, for 32x32 inputs.

Simonyan, Zisserman. "Very Deep Convolutional Networks for Large-Scale Image Recognition".
ICLR 2015. arXiv:1409.1556. Batch norm: Ioffe, Szegedy, ICML 2015, arXiv:1502.03167.

Configuration A (64-M-128-M-256-256-M-512-512-M-512-512-M); five max-pools take 32x32 to
1x1. The classifier is the paper's three FC layers shrunk to CIFAR size and without dropout:
Linear(512, 512)-ReLU-Linear(512, 512)-ReLU-Linear(512, classes). Convs keep their bias in
the BN variant too (torchvision style): 9,750,922 / 9,756,426 parameters (10 classes).

Convs are grouped by resolution into ``features.stage1``..``stage5`` with ``pool1``..``pool5``
between them, so Grad-CAM can hook ``features.stage5`` (2x2 for a 32x32 input) rather than the
1x1 map after the last pool.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import Tensor, nn

from .registry import register_model

VGG_A: tuple[int | str, ...] = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")


class VGG(nn.Module):
    cam_layer = "features.stage5"

    def __init__(
        self, cfg: tuple[int | str, ...], batch_norm: bool, num_classes: int = 10, in_channels: int = 3
    ) -> None:
        super().__init__()
        self.input_size = (in_channels, 32, 32)
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        stage: list[nn.Module] = []
        planes = in_channels
        for v in cfg:
            if v == "M":
                n = len(layers) // 2 + 1
                layers[f"stage{n}"] = nn.Sequential(*stage)
                layers[f"pool{n}"] = nn.MaxPool2d(2)
                stage = []
                continue
            assert isinstance(v, int)
            stage.append(nn.Conv2d(planes, v, 3, padding=1))
            if batch_norm:
                stage.append(nn.BatchNorm2d(v))
            stage.append(nn.ReLU())
            planes = v
        if stage:
            raise ValueError("a VGG cfg must end with 'M'")
        self.features = nn.Sequential(layers)
        self.pool = nn.AdaptiveAvgPool2d(1)  # a no-op at 32x32; keeps other sizes working
        self.classifier = nn.Sequential(
            nn.Linear(planes, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, num_classes)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.pool(self.features(x)).flatten(1))


@register_model
def vgg_a(num_classes: int = 10, in_channels: int = 3) -> VGG:
    return VGG(VGG_A, False, num_classes, in_channels)


@register_model
def vgg_a_bn(num_classes: int = 10, in_channels: int = 3) -> VGG:
    return VGG(VGG_A, True, num_classes, in_channels)
