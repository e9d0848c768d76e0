"""LeNet-5 for 1x28x28 MNIST.

LeCun, Bottou, Bengio, Haffner. "Gradient-Based Learning Applied to Document Recognition".
Proceedings of the IEEE 86(11), 1998 (no arXiv version).

conv1 (6@5x5, pad 2 so 28x28 stays 28x28) - pool - conv2 (16@5x5) - pool - conv3 (120@5x5,
giving 1x1) - fc1 (84) - fc2 (classes): 61,706 parameters. Modernised as usual: ReLU and
max-pooling instead of scaled tanh and trainable subsampling, full C3 connectivity, a plain
linear output instead of RBF units. ``conv3`` is kept a conv (not a Linear) because a later
chapter prunes its 120 channels.

Grad-CAM layer is ``conv2`` (16x10x10): ``conv3`` already collapses the map to 1x1, which
would give a constant heatmap.
"""

from __future__ import annotations

from torch import Tensor, nn

from .registry import register_model


class LeNet5(nn.Module):
    cam_layer = "conv2"

    def __init__(self, num_classes: int = 10, in_channels: int = 1) -> None:
        super().__init__()
        self.input_size = (in_channels, 28, 28)
        self.conv1 = nn.Conv2d(in_channels, 6, 5, padding=2)
        self.act1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.act2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(2)
        self.conv3 = nn.Conv2d(16, 120, 5)
        self.act3 = nn.ReLU()
        self.fc1 = nn.Linear(120, 84)
        self.act4 = nn.ReLU()
        self.fc2 = nn.Linear(84, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        out = self.pool1(self.act1(self.conv1(x)))
        out = self.pool2(self.act2(self.conv2(out)))
        out = self.act3(self.conv3(out)).flatten(1)
        return self.fc2(self.act4(self.fc1(out)))


@register_model
def lenet(num_classes: int = 10, in_channels: int = 1) -> LeNet5:
    return LeNet5(num_classes, in_channels)
