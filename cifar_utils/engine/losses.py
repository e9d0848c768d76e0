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
``mse_logits``    ``F.mse_loss(logits, one_hot(y))``: what ``nn.MSELoss`` applied to a classifier's
                  output computes; mean over all B*K entries.
``huber_logits``  ``F.huber_loss(logits, one_hot(y), delta=1.0)`` (``nn.HuberLoss``): quadratic for
                  residuals up to 1, linear beyond, so on logits it differs from ``mse_logits``
                  wherever a logit is more than 1 away from its 0/1 target (gradient clipped to
                  +-1 per entry instead of growing with the residual).

Why two pairs: ``mse`` / ``huber`` are the definitions chapter 3 first used (on probabilities,
where Huber degenerates to MSE/2). A run's identity (its key) is the hash of its config, which
holds the loss *name*; redefining ``mse`` in place would let the store load runs trained under the
old definition as if they were the new one. So the old names keep their old meaning (stored runs
stay what their ``config.json`` says) and the logit versions are new names, hence new keys.
Chapter 3 sweeps ``mse_logits`` and ``huber_logits``; a definition that ever changes again gets
a new name the same way.
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


def mse_logits(logits: Tensor, y: Tensor) -> Tensor:
    return F.mse_loss(logits, _one_hot(logits, y))


def huber_logits(logits: Tensor, y: Tensor) -> Tensor:
    return F.huber_loss(logits, _one_hot(logits, y), delta=1.0)


#: name -> loss function ``f(logits, labels) -> scalar`` (the first four in their original order;
#: the names are part of the run keys, see the module doc).
LOSSES: dict[str, LossFn] = {"ce": cross_entropy, "bce": bce, "mse": mse, "huber": huber,
                             "mse_logits": mse_logits, "huber_logits": huber_logits}


def create_loss(name: str) -> LossFn:
    """The loss function called ``name``; ``ValueError`` listing :data:`LOSSES` otherwise."""
    try:
        return LOSSES[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown loss {name!r}; choose one of: {', '.join(LOSSES)}") from None
