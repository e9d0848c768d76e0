"""Name -> factory registry, timm-style, plus the Grad-CAM layer lookup.

Factories are plain functions registered under their own ``__name__``. Their keyword
arguments *are* the model's options, so :func:`create_model` can reject a misspelt option
by reading the signature instead of letting it vanish into ``**kwargs``.
"""

from __future__ import annotations

import fnmatch
import inspect
from collections.abc import Callable
from typing import TypeVar

from torch import nn

F = TypeVar("F", bound=Callable[..., nn.Module])

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: F) -> F:
    """Register ``fn`` under ``fn.__name__``; a second model with the same name is an error."""
    name = fn.__name__
    if name in _REGISTRY:
        raise ValueError(f"model {name!r} is already registered")
    params = inspect.signature(fn).parameters
    if "num_classes" not in params or any(
        p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params.values()
    ):
        raise TypeError(f"factory {name!r} must take num_classes and explicit keyword options only")
    _REGISTRY[name] = fn
    return fn


def list_models(pattern: str | None = None) -> list[str]:
    """Registered names, sorted; ``pattern`` is an optional fnmatch filter such as ``"resnext*"``."""
    names = sorted(_REGISTRY)
    if pattern is None:
        return names
    return [n for n in names if fnmatch.fnmatchcase(n, pattern)]


def model_options(name: str) -> dict[str, object]:
    """The options ``name`` accepts (besides ``num_classes``) with their defaults."""
    params = inspect.signature(_factory(name)).parameters
    return {k: p.default for k, p in params.items() if k != "num_classes"}


def create_model(name: str, num_classes: int = 10, **options: object) -> nn.Module:
    """Build a registered model; unknown names and options fail loudly with the valid choices."""
    accepted = model_options(name)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise TypeError(
            f"model {name!r} got unknown option(s) {', '.join(unknown)}; "
            f"it accepts: {', '.join(accepted) or '(none)'}"
        )
    return _REGISTRY[name](num_classes=num_classes, **options)


def get_cam_layer(model: nn.Module) -> nn.Module:
    """The submodule Grad-CAM should hook: ``model.cam_layer`` is its dotted path."""
    path = getattr(model, "cam_layer", None)
    if not isinstance(path, str):
        raise TypeError(f"{type(model).__name__} has no `cam_layer` attribute naming its Grad-CAM layer")
    return model.get_submodule(path)


def _factory(name: str) -> Callable[..., nn.Module]:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(list_models())}") from None
