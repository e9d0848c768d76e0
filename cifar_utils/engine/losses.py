"""Training losses by name.

All take raw logits ``(B, K)`` and integer labels ``(B,)`` and return the batch mean, computed in
float32 (the engine casts bf16 logits up first). The choice of what the non-CE losses compare
decides chapter 3's loss figure, so here it is explicitly:

``ce``     ``F.cross_entropy(logits, y)``.
``bce``    ``F.binary_cross_entropy_with_logits(logits, one_hot(y))``: K independent sigmoids,
           mean over all B*K entries (PyTorch's default reduction).
``mse``    ``F.mse_loss(softmax(logits), one_hot(y))``: squared error of the softmax
           *probabilities*, mean over all B*K entries (PyTorch's default reduction, i.e. the
           per-sample sum divided by K -- a factor K weaker gradient than a per-sample sum).
``huber``  ``F.huber_loss(softmax(logits), one_hot(y), delta=1.0)``, mean over all entries.
           Since probabilities and one-hot targets lie in [0, 1], every residual is <= 1 =
           delta, so this Huber loss is *exactly half the MSE* and trains like ``mse`` at half
           the learning rate: with SGD the two curves differ only by that factor.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

LossFn = Callable[[Tensor, Tensor], Tensor]


def _one_hot(logits: Tensor, y: Tensor) -> Tensor:
    return F.one_hot(y, logits.shape[-1]).to(logits.dtype)


def cross_entropy(logits: Tensor, y: Tensor) -> Tensor:
    return F.cross_entropy(logits, y)


def bce(logits: Tensor, y: Tensor) -> Tensor:
    return F.binary_cross_entropy_with_logits(logits, _one_hot(logits, y))


def mse(logits: Tensor, y: Tensor) -> Tensor:
    return F.mse_loss(torch.softmax(logits, dim=-1), _one_hot(logits, y))


def huber(logits: Tensor, y: Tensor) -> Tensor:
    return F.huber_loss(torch.softmax(logits, dim=-1), _one_hot(logits, y), delta=1.0)


#: name -> loss function ``f(logits, labels) -> scalar``.
LOSSES: dict[str, LossFn] = {"ce": cross_entropy, "bce": bce, "mse": mse, "huber": huber}


def create_loss(name: str) -> LossFn:
    """The loss function called ``name``; ``ValueError`` listing :data:`LOSSES` otherwise."""
    try:
        return LOSSES[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown loss {name!r}; choose one of: {', '.join(LOSSES)}") from None
