"""Optimizers and learning-rate schedulers by name (depends on torch only).

>>> from cifar_utils.optim import create_optimizer, create_scheduler
>>> opt = create_optimizer("sgd", model, lr=0.1, momentum=0.9, weight_decay=5e-4)  # doctest: +SKIP
>>> sched = create_scheduler("plateau", opt, epochs=200)                          # doctest: +SKIP

Register more with ``@register_optimizer("name")``: the factory is called as
``factory(target, *, lr, **options)`` where ``target`` is the model when the engine calls it, so
it can use ``target.named_parameters()``. See :mod:`cifar_utils.optim.optimizers`.

Chapter 6's ``"slbi"`` and ``"slbi_adam"`` (DessiLBI's split linearized Bregman iteration) are in
:mod:`cifar_utils.optim.slbi`.
"""

from .optimizers import (
    create_optimizer,
    get_optimizer_factory,
    list_optimizers,
    optimizer_options,
    parameters_of,
    register_optimizer,
)
from .slbi import SLBI, SLBIAdam, group_soft_threshold, prox, soft_threshold, support_of
from .schedulers import create_scheduler, list_schedulers, register_scheduler, scheduler_options, scheduler_step

__all__ = [
    "create_optimizer", "get_optimizer_factory", "list_optimizers", "optimizer_options", "parameters_of",
    "register_optimizer", "create_scheduler", "list_schedulers", "register_scheduler", "scheduler_options",
    "scheduler_step", "SLBI", "SLBIAdam", "prox", "soft_threshold", "group_soft_threshold", "support_of",
]
