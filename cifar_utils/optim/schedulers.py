"""Learning-rate schedulers, stepped once per epoch.

===========  =====================================================================================
name         behaviour (defaults)
===========  =====================================================================================
``plateau``  ``ReduceLROnPlateau(mode="min")`` on the monitored error: LR x ``factor`` (0.5) after
             ``patience`` (10) epochs without a relative improvement of ``threshold`` (1e-4),
             never below ``min_lr`` (0), ``cooldown`` 0. The report only says "LR x0.5 when test
             error plateaus"; the patience of 10 epochs is our choice.
``step``     ``StepLR``: LR x ``gamma`` (0.1) every ``step_size`` epochs (default ``epochs // 3``).
``cosine``   ``CosineAnnealingLR`` with ``T_max = epochs``, down to ``eta_min`` (0).
``none``     constant LR.
===========  =====================================================================================

Every scheduler is stepped with :func:`scheduler_step` after each epoch's evaluation; only
``plateau`` uses the metric it is given.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.optim import lr_scheduler

from .optimizers import _factory_options, check_options

_SCHEDULERS: dict[str, Callable[..., Any]] = {}


def register_scheduler(name: str | None = None, *, override: bool = False):
    """Decorator registering ``factory(optimizer, *, epochs, **options)`` under ``name``."""

    def decorator(factory):
        key = name or factory.__name__
        if key in _SCHEDULERS and not override and _SCHEDULERS[key] is not factory:
            raise ValueError(f"scheduler {key!r} is already registered; pass override=True to replace it")
        _SCHEDULERS[key] = factory
        return factory

    if callable(name):
        factory, name = name, None
        return decorator(factory)
    return decorator


def list_schedulers() -> list[str]:
    """The registered scheduler names, sorted."""
    return sorted(_SCHEDULERS)


def _factory(name: str):
    try:
        return _SCHEDULERS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown scheduler {name!r}; choose one of: {', '.join(list_schedulers())}") from None


def scheduler_options(name: str) -> tuple[str, ...] | None:
    """Option names the scheduler ``name`` accepts (None: any)."""
    return _factory_options(_factory(name), skip=("optimizer", "epochs"))


def create_scheduler(name: str, optimizer: torch.optim.Optimizer, *, epochs: int, **options: Any):
    """Build the scheduler ``name``; ``ValueError`` naming the choices / allowed options on a mistake."""
    factory = _factory(name)
    check_options("scheduler", name, options, scheduler_options(name))
    return factory(optimizer, epochs=epochs, **options)


def scheduler_step(scheduler, metric: float | None = None) -> None:
    """Step ``scheduler`` once (an epoch): plateau schedulers get ``metric`` (lower is better)."""
    if scheduler is None:
        return
    if isinstance(scheduler, lr_scheduler.ReduceLROnPlateau):
        if metric is None:
            raise ValueError("the plateau scheduler needs the monitored metric")
        scheduler.step(metric)
    else:
        scheduler.step()


@register_scheduler("plateau")
def plateau(optimizer, *, epochs: int, factor: float = 0.5, patience: int = 10, threshold: float = 1e-4,
            threshold_mode: str = "rel", cooldown: int = 0, min_lr: float = 0.0):
    return lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=factor, patience=patience,
                                          threshold=threshold, threshold_mode=threshold_mode,
                                          cooldown=cooldown, min_lr=min_lr)


@register_scheduler("step")
def step(optimizer, *, epochs: int, step_size: int | None = None, gamma: float = 0.1):
    return lr_scheduler.StepLR(optimizer, step_size=step_size or max(1, epochs // 3), gamma=gamma)


@register_scheduler("cosine")
def cosine(optimizer, *, epochs: int, eta_min: float = 0.0):
    return lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs, eta_min=eta_min)


class _Constant:
    """A picklable multiplier of 1 for ``LambdaLR`` (so its state_dict round-trips)."""

    def __call__(self, epoch: int) -> float:
        return 1.0


@register_scheduler("none")
def none(optimizer, *, epochs: int):
    return lr_scheduler.LambdaLR(optimizer, _Constant())
