"""The model zoo: CIFAR-sized (3x32x32) networks and an MNIST LeNet-5 (1x28x28).

>>> from cifar_utils.models import create_model, list_models
>>> model = create_model("resnet18", num_classes=10, activation="gelu")

Every factory takes ``num_classes`` and ``in_channels``; extra options are per model
(``activation`` for ``resnet18``/``preact_resnet18``, see :data:`ACTIVATIONS`; ``dropout`` for
``wrn28_10``). Unknown names, options or option values raise with the valid choices.

Conventions every model class follows:

* ``cam_layer: str`` (class attribute) -- dotted path of the layer Grad-CAM should hook: the
  last convolutional stage before global pooling (``layer4`` for ResNets, ``dense4`` for
  DenseNet, ``features.stage5`` for VGG, ``conv2`` for LeNet...). Use :func:`get_cam_layer`.
* ``input_size`` -- ``(C, H, W)`` the model is built for; :func:`model_summary` uses it.
* Construction is deterministic given ``torch.manual_seed``; importing builds nothing.

:func:`model_summary` tabulates parameters and FLOPs (a multiply-add counts as 2 FLOPs).
Each family's module cites its paper and states any deviation from kuangliu/pytorch-cifar.
"""

from __future__ import annotations

from . import densenet, dla, dpn, lenet, preact_resnet, resnet, resnext, vgg, wide_resnet
from .registry import create_model, get_cam_layer, list_models, model_options, register_model
from .resnet import ACTIVATIONS
from .summary import count_flops, count_parameters, model_summary

__all__ = [
    "ACTIVATIONS",
    "count_flops",
    "count_parameters",
    "create_model",
    "get_cam_layer",
    "list_models",
    "model_options",
    "model_summary",
    "register_model",
]

# The family modules are imported for their @register_model side effect.
del densenet, dla, dpn, lenet, preact_resnet, resnet, resnext, vgg, wide_resnet
