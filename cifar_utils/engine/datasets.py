"""Where a run's data comes from: :func:`cifar_utils.data.load_dataset`, plus extra named datasets.

``register_dataset("name")`` adds a factory ``f(*, source, data_root, train_size, test_size,
val_size) -> cifar_utils.data.Dataset`` for names ``load_dataset`` does not know (the tiny random
set of :mod:`cifar_utils.engine.testing`, for instance). A registered name wins over
``load_dataset``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

_EXTRA: dict[str, Callable[..., Any]] = {}

#: Used when cifar_utils.data does not say which names it knows.
_DEFAULT_BUILTIN = ("cifar10", "mnist")


def register_dataset(name: str, *, override: bool = False):
    """Decorator registering a dataset factory under ``name``."""

    def decorator(factory):
        if name in _EXTRA and not override and _EXTRA[name] is not factory:
            raise ValueError(f"dataset {name!r} is already registered; pass override=True to replace it")
        _EXTRA[name] = factory
        return factory

    return decorator


def _builtin_names() -> tuple[str, ...]:
    try:
        import cifar_utils.data as data
    except ImportError:
        return _DEFAULT_BUILTIN
    for attr in ("list_datasets", "DATASETS", "DATASET_NAMES"):
        value = getattr(data, attr, None)
        if value is None:
            continue
        value = value() if callable(value) else value
        return tuple(value)
    return _DEFAULT_BUILTIN


def list_datasets() -> list[str]:
    """Dataset names a :class:`RunConfig` may use."""
    return sorted(set(_builtin_names()) | set(_EXTRA))


def load_for_config(config) -> Any:
    """The :class:`cifar_utils.data.Dataset` that ``config`` asks for."""
    kwargs = dict(source=config.source, data_root=config.data_root, train_size=config.train_size,
                  test_size=config.test_size, val_size=config.val_size)
    if config.dataset in _EXTRA:
        return _EXTRA[config.dataset](**kwargs)
    from cifar_utils.data import load_dataset

    return load_dataset(config.dataset, **kwargs)
