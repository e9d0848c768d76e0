"""The optimizer registry.

A factory is registered under a name and called as ``factory(target, *, lr, **options)``. ``target``
is what the caller handed to :func:`create_optimizer`: usually the model (an ``nn.Module``), which
is what the engine passes, so that a factory needing parameter *names* (chapter 6's SLBI splits
weights by layer) can call ``target.named_parameters()``; it may also be an iterable of parameters
or of parameter-group dicts. Built-in factories only need the parameters and call
:func:`parameters_of`.

The options a factory accepts are read from its signature: every keyword argument other than
``target`` and ``lr``. Passing anything else raises a ``ValueError`` naming the allowed options (a
factory taking ``**options`` opts out of that check). The engine uses :func:`optimizer_options` to
pass ``momentum`` and ``weight_decay`` only to optimizers that take them (Adam has no momentum
option: its ``betas`` play that part).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

OptimizerFactory = Callable[..., torch.optim.Optimizer]

_OPTIMIZERS: dict[str, OptimizerFactory] = {}


def register_optimizer(name: str | None = None, *, override: bool = False):
    """Decorator registering ``factory(target, *, lr, **options) -> Optimizer`` under ``name``.

    ``name`` defaults to the function's name. Registering a taken name raises ``ValueError``
    unless ``override=True``.
    """

    def decorator(factory: OptimizerFactory) -> OptimizerFactory:
        key = name or factory.__name__
        if key in _OPTIMIZERS and not override and _OPTIMIZERS[key] is not factory:
            raise ValueError(f"optimizer {key!r} is already registered; pass override=True to replace it")
        _OPTIMIZERS[key] = factory
        return factory

    if callable(name):  # used bare: @register_optimizer
        factory, name = name, None
        return decorator(factory)
    return decorator


def list_optimizers() -> list[str]:
    """The registered optimizer names, sorted."""
    return sorted(_OPTIMIZERS)


def get_optimizer_factory(name: str) -> OptimizerFactory:
    """The factory registered as ``name``; ``ValueError`` listing the choices if there is none."""
    try:
        return _OPTIMIZERS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown optimizer {name!r}; choose one of: {', '.join(list_optimizers())}") from None


def _factory_options(factory: Callable, skip: tuple[str, ...]) -> tuple[str, ...] | None:
    """Keyword options a factory accepts (None: it takes ``**kwargs``, anything goes)."""
    params = inspect.signature(factory).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return tuple(p.name for p in params
                 if p.name not in skip and p.kind in (inspect.Parameter.KEYWORD_ONLY,
                                                      inspect.Parameter.POSITIONAL_OR_KEYWORD))


def optimizer_options(name: str) -> tuple[str, ...] | None:
    """Option names the optimizer ``name`` accepts besides ``lr`` (None: any option)."""
    return _factory_options(get_optimizer_factory(name), skip=("target", "lr"))


def check_options(kind: str, name: str, given: Iterable[str], allowed: tuple[str, ...] | None) -> None:
    unknown = sorted(set(given) - set(allowed)) if allowed is not None else []
    if unknown:
        raise ValueError(f"{kind} {name!r} got unknown option(s) {', '.join(map(repr, unknown))}; "
                         f"allowed: {', '.join(allowed) or '(none)'}")


def create_optimizer(name: str, target: nn.Module | Iterable, *, lr: float, **options: Any) -> torch.optim.Optimizer:
    """Build the optimizer ``name`` over ``target`` (a model, or parameters / parameter groups).

    ``ValueError`` for an unknown name (listing the registered ones), an unknown option (listing
    the allowed ones) or a negative learning rate.
    """
    factory = get_optimizer_factory(name)
    check_options("optimizer", name, options, optimizer_options(name))
    if not isinstance(lr, (int, float)) or isinstance(lr, bool) or lr < 0:
        raise ValueError(f"learning rate must be a number >= 0, got {lr!r}")
    return factory(target, lr=float(lr), **options)


def parameters_of(target: nn.Module | Iterable) -> list:
    """The parameters (or parameter-group dicts) to optimize: a module's trainable parameters."""
    if isinstance(target, nn.Module):
        return [p for p in target.parameters() if p.requires_grad]
    return list(target)


# --- built-ins -------------------------------------------------------------------------------

@register_optimizer("sgd")
def sgd(target, *, lr: float, momentum: float = 0.0, weight_decay: float = 0.0, nesterov: bool = False,
        dampening: float = 0.0) -> torch.optim.Optimizer:
    """``torch.optim.SGD`` (coupled L2 weight decay, as in the report's protocol)."""
    return torch.optim.SGD(parameters_of(target), lr=lr, momentum=momentum, weight_decay=weight_decay,
                           nesterov=nesterov, dampening=dampening)


@register_optimizer("adam")
def adam(target, *, lr: float, weight_decay: float = 0.0, betas: tuple[float, float] = (0.9, 0.999),
         eps: float = 1e-8, amsgrad: bool = False) -> torch.optim.Optimizer:
    """``torch.optim.Adam`` (``weight_decay`` is coupled L2, added to the gradient, not AdamW)."""
    return torch.optim.Adam(parameters_of(target), lr=lr, weight_decay=weight_decay, betas=tuple(betas),
                            eps=eps, amsgrad=amsgrad)


@register_optimizer("adagrad")
def adagrad(target, *, lr: float, weight_decay: float = 0.0, lr_decay: float = 0.0,
            initial_accumulator_value: float = 0.0, eps: float = 1e-10) -> torch.optim.Optimizer:
    """``torch.optim.Adagrad``."""
    return torch.optim.Adagrad(parameters_of(target), lr=lr, weight_decay=weight_decay, lr_decay=lr_decay,
                               initial_accumulator_value=initial_accumulator_value, eps=eps)


@register_optimizer("adadelta")
def adadelta(target, *, lr: float, weight_decay: float = 0.0, rho: float = 0.9,
             eps: float = 1e-6) -> torch.optim.Optimizer:
    """``torch.optim.Adadelta``; ``lr`` scales the computed update (torch's default is 1.0)."""
    return torch.optim.Adadelta(parameters_of(target), lr=lr, weight_decay=weight_decay, rho=rho, eps=eps)
