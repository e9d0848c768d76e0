"""CIFAR-10 and MNIST as whole-split tensors, and loaders that keep them on the training device.

Typical use::

    from cifar_utils.data import load_dataset, make_loaders

    ds = load_dataset("cifar10")               # local copy, else the official download
    loaders = make_loaders(ds, batch_size=128, device="cuda")
    for epoch in range(epochs):
        loaders.train.set_epoch(epoch)
        for x, y in loaders.train: ...

``load_dataset(..., source="sample")`` gives the small sample shipped with the package (official
images, 1000 train / 500 test) for offline smoke tests. See :func:`load_dataset` for the local
formats accepted, :class:`DeviceLoader` for the augmentations and the reproducibility contract.
"""

from .datasets import Dataset, default_cache_dir, load_dataset
from .loader import DeviceLoader, Loaders, epoch_seed, make_loaders
from .meta import DATASETS, IMAGE_SHAPE, SOURCES, class_names, normalization
from .readers import CorruptDataError, DataNotFoundError
from .transforms import denormalize, normalize, to_images

__all__ = [
    "DATASETS", "SOURCES", "IMAGE_SHAPE", "Dataset", "load_dataset", "default_cache_dir",
    "DeviceLoader", "Loaders", "make_loaders", "epoch_seed",
    "normalization", "normalize", "denormalize", "to_images", "class_names",
    "DataNotFoundError", "CorruptDataError",
]
