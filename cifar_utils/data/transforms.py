"""Batched tensor transforms: normalisation and the training augmentations (crop, flip, Cutout).

Everything works on whole batches, on whatever device the batch lives on: no PIL, no loop over
images. Random parameters are passed in (drawn by the caller on a CPU ``torch.Generator``), so
CPU and GPU runs with the same seed see the same crops, flips and holes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .meta import normalization


def _stats(name_or_mean, std, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(name_or_mean, str):
        mean, std = normalization(name_or_mean)
    else:
        mean = name_or_mean
    shape = (1, -1, 1, 1) if like.dim() == 4 else (-1, 1, 1)
    as_t = lambda v: torch.as_tensor(v, dtype=torch.float32, device=like.device).reshape(shape)  # noqa: E731
    return as_t(mean), as_t(std)


def normalize(x: torch.Tensor, name: str | Sequence[float], std: Sequence[float] | None = None) -> torch.Tensor:
    """uint8 images ``(B, C, H, W)`` or ``(C, H, W)`` -> float32 ``(x / 255 - mean) / std``.

    ``name`` is a dataset name (its :func:`normalization`) or a mean sequence, then ``std`` too.
    The arithmetic is exactly torchvision's ``ToTensor`` then ``Normalize``, so the results are
    bit-identical to the usual PIL pipeline on the same pixels."""
    mean_t, std_t = _stats(name, std, x)
    return x.to(torch.float32).div_(255).sub_(mean_t).div_(std_t)


def denormalize(x: torch.Tensor, name: str | Sequence[float], std: Sequence[float] | None = None) -> torch.Tensor:
    """Normalised ``(B, C, H, W)`` (or ``(C, H, W)``) -> float in [0, 1] (clamped), same shape.

    Inverse of :func:`normalize` up to float rounding (and the clamp); ``name`` as there."""
    mean_t, std_t = _stats(name, std, x)
    return (x.detach().to(torch.float32) * std_t + mean_t).clamp_(0.0, 1.0)


def to_images(x: torch.Tensor, name: str | Sequence[float], std: Sequence[float] | None = None) -> np.ndarray:
    """Normalised ``(B, C, H, W)`` -> numpy float32 in [0, 1] for ``plt.imshow``: ``(B, H, W, 3)``
    for colour, ``(B, H, W)`` for one channel (use ``cmap="gray"``). A single ``(C, H, W)`` image
    gives ``(H, W, 3)`` / ``(H, W)``."""
    img = denormalize(x, name, std).cpu()
    img = img.movedim(-3, -1)
    if img.shape[-1] == 1:
        img = img[..., 0]
    return img.contiguous().numpy().astype(np.float32, copy=False)


def crop_flip(xp: torch.Tensor, idx: torch.Tensor, dy: torch.Tensor | None, dx: torch.Tensor | None,
              flip: torch.Tensor | None, size: tuple[int, int]) -> torch.Tensor:
    """Gather ``xp[idx]`` cropped at per-image offsets and optionally mirrored, in one indexing op.

    ``xp`` ``(N, C, H + 2p, W + 2p)`` is the (zero-)padded data; image ``i`` of the batch is
    ``xp[idx[i], :, dy[i]:dy[i] + H, dx[i]:dx[i] + W]``, left-right mirrored where ``flip[i]``,
    i.e. torchvision's ``RandomCrop(padding=p)`` then ``RandomHorizontalFlip``. ``dy``/``dx``
    ``None`` means offset 0, ``flip`` ``None`` means no flip. All index tensors on ``xp.device``.
    """
    h, w = size
    dev = xp.device
    ar_h = torch.arange(h, device=dev)
    ar_w = torch.arange(w, device=dev)
    rows = ar_h.expand(len(idx), h) if dy is None else dy[:, None] + ar_h
    cols = ar_w.expand(len(idx), w)
    if flip is not None:
        cols = torch.where(flip[:, None], (w - 1) - ar_w, ar_w)
    if dx is not None:
        cols = dx[:, None] + cols
    ch = torch.arange(xp.shape[1], device=dev)
    return xp[idx[:, None, None, None], ch[None, :, None, None], rows[:, None, :, None], cols[:, None, None, :]]


def cutout_(x: torch.Tensor, cy: torch.Tensor, cx: torch.Tensor, size: int) -> torch.Tensor:
    """Cutout (DeVries & Taylor, 2017), in place: zero the square of side ``size`` centred at
    ``(cy[i], cx[i])`` in every channel of image ``i``, clipped at the image border.

    The hole covers rows ``cy - size // 2`` to ``cy - size // 2 + size - 1`` (and likewise
    columns), intersected with the image; for even ``size`` that is exactly the original code's
    ``[cy - size/2, cy + size/2)``. Centres are drawn uniformly over all pixels (as there), so holes
    near the border are smaller. Applied to *normalised* inputs, zero is the mean colour, as in the
    original, which multiplies the normalised tensor by a 0/1 mask."""
    h, w = x.shape[-2:]
    top = (cy - size // 2)[:, None]
    left = (cx - size // 2)[:, None]
    ar_h = torch.arange(h, device=x.device)
    ar_w = torch.arange(w, device=x.device)
    in_rows = (ar_h >= top) & (ar_h < top + size)
    in_cols = (ar_w >= left) & (ar_w < left + size)
    return x.masked_fill_(in_rows[:, None, :, None] & in_cols[:, None, None, :], 0.0)
