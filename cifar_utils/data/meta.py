"""Fixed facts about the supported datasets: names, classes, image shapes, normalisation."""

from __future__ import annotations

DATASETS = ("cifar10", "mnist")
SOURCES = ("auto", "local", "download", "sample")

_CLASSES = {
    # The official label order (batches.meta label_names).
    "cifar10": ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
    "mnist": tuple(str(d) for d in range(10)),
}

#: (channels, height, width) of one image.
IMAGE_SHAPE = {"cifar10": (3, 32, 32), "mnist": (1, 28, 28)}

#: images in the official splits (train, test).
OFFICIAL_SIZES = {"cifar10": (50000, 10000), "mnist": (60000, 10000)}

_NORMALIZATION = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "mnist": ((0.1307,), (0.3081,)),
}


def check_name(name: str) -> str:
    """``name`` if it is a supported dataset, else a ValueError listing the supported ones."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")
    return name


def class_names(name: str) -> tuple[str, ...]:
    """The class names of dataset ``name`` in label order (label ``i`` is ``class_names(name)[i]``).

    CIFAR-10: airplane, automobile, bird, cat, deer, dog, frog, horse, ship, truck.
    MNIST: the digits ``"0"`` ... ``"9"``.
    """
    return _CLASSES[check_name(name)]


def normalization(name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel ``(mean, std)`` of the official training set, for inputs scaled to [0, 1].

    CIFAR-10: mean (0.4914, 0.4822, 0.4465), std (0.2470, 0.2435, 0.2616): the true standard
    deviation of each channel over all 50000 x 32 x 32 training pixels. Much code copied from
    kuangliu/pytorch-cifar uses std (0.2023, 0.1994, 0.2010) instead; that is a known slip (it is
    the *average of per-image* standard deviations, which leaves out the variation between images'
    means), not the dataset's std. It only rescales the inputs (about 1.2x larger), so networks
    still train, but the numbers here are the correct ones.

    MNIST: mean 0.1307, std 0.3081 (the usual values, computed over the 60000 training images).
    """
    return _NORMALIZATION[check_name(name)]
