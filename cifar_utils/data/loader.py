"""Whole-split data loaders that keep the data on the training device.

A CIFAR-10 training split is 150 MB of uint8: it fits on any GPU, so instead of decoding and
augmenting images one by one in worker processes (torchvision's ``DataLoader`` + PIL transforms),
:class:`DeviceLoader` copies the split to the device once and builds each batch with a few
batched tensor ops: one indexing op gathers the shuffled images, crops them and flips them; then
normalisation and Cutout. See ``bench/data_loader.py`` for the speed difference.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .datasets import Dataset
from .meta import normalization
from .transforms import crop_flip, cutout_, normalize


def epoch_seed(seed: int, epoch: int) -> int:
    """The RNG seed of one epoch: a hash of ``(seed, epoch)`` only (numpy's SeedSequence)."""
    return int(np.random.SeedSequence([int(seed), int(epoch)]).generate_state(1, dtype=np.uint64)[0])


class DeviceLoader:
    """Whole split held as one uint8 tensor on ``device``; batches indexed from it; augmentation
    as batched tensor ops.

    Yields ``(x, y)``: ``x`` float32 ``(B, C, H, W)`` normalised with ``mean``/``std`` (in
    ``channels_last`` memory format if asked), ``y`` int64 ``(B,)``, both on ``device``.

    Augmentation (only with ``train=True``), in this order, like the usual torchvision pipeline
    ``RandomCrop(H, padding=p), RandomHorizontalFlip(), ToTensor(), Normalize(mean, std), Cutout``:

    * ``crop_padding=p``: pad each image with ``p`` zero pixels on every side *in pixel space*
      (black, as ``RandomCrop(padding=p)`` on the uint8 image; after normalisation the border is
      ``-mean/std``, not 0) and cut a random ``H x W`` window, offsets uniform in ``0..2p``;
    * ``flip``: mirror left-right with probability 0.5;
    * ``cutout=s``: zero a random ``s x s`` square after normalisation (see
      :func:`cifar_utils.data.transforms.cutout_`).

    Randomness: each epoch's shuffle and augmentation parameters are drawn from a CPU
    ``torch.Generator`` seeded with a hash of ``(seed, epoch)`` and nothing else, so epoch ``k``
    yields the same batches whether or not epochs ``0..k-1`` ran in this process (resuming relies
    on this), and a CUDA loader yields the same images as a CPU one. Call :meth:`set_epoch` before
    each epoch, or let the internal counter do it: it starts at 0 and goes up by one after every
    *complete* pass (a pass abandoned half-way is repeated).

    ``shuffle`` and ``drop_last`` default to ``train``. With ``drop_last`` the last
    ``num_samples % batch_size`` images (a different set every epoch) are skipped.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, *, batch_size: int, mean: Sequence[float],
                 std: Sequence[float], device="cpu", train: bool = False, crop_padding: int = 0,
                 flip: bool = False, cutout: int = 0, shuffle: bool | None = None,
                 drop_last: bool | None = None, seed: int = 0, channels_last: bool = False) -> None:
        if x.dtype != torch.uint8 or x.dim() != 4:
            raise ValueError(f"x must be uint8 (N, C, H, W), got {x.dtype} {tuple(x.shape)}")
        if y.dim() != 1 or len(y) != len(x) or y.dtype.is_floating_point:
            raise ValueError(f"y must be an integer (N,) tensor matching x's {len(x)} rows, "
                             f"got {y.dtype} {tuple(y.shape)}")
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if crop_padding < 0 or cutout < 0:
            raise ValueError("crop_padding and cutout must be >= 0")
        if not train and (crop_padding or flip or cutout):
            raise ValueError("augmentation (crop_padding, flip, cutout) needs train=True")
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        c = x.shape[1]
        if len(mean) != c or len(std) != c:
            raise ValueError(f"mean and std need {c} values (one per channel), got {len(mean)} and {len(std)}")
        self.batch_size = int(batch_size)
        self.device = torch.device(device)
        self.train = bool(train)
        self.crop_padding = int(crop_padding)
        self.flip = bool(flip)
        self.cutout = int(cutout)
        self.shuffle = self.train if shuffle is None else bool(shuffle)
        self.drop_last = self.train if drop_last is None else bool(drop_last)
        self.seed = int(seed)
        self.channels_last = bool(channels_last)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self._n = len(x)
        self._hw = tuple(x.shape[2:])
        p = self.crop_padding
        xd = x.to(self.device)
        self._xp = F.pad(xd, (p, p, p, p)) if p else xd  # padded once, in pixel space, with 0
        self.y = y.to(self.device, torch.int64)
        self._epoch = 0
        if self.drop_last and self._n < self.batch_size and self._n > 0:
            raise ValueError(f"drop_last with {self._n} samples < batch_size={self.batch_size} would yield no batch")

    @property
    def x(self) -> torch.Tensor:
        """The split's uint8 images on the device (a view; not normalised or augmented)."""
        p = self.crop_padding
        return self._xp[:, :, p:p + self._hw[0], p:p + self._hw[1]] if p else self._xp

    @property
    def num_samples(self) -> int:
        """Images in the split (each seen at most once per epoch)."""
        return self._n

    @property
    def epoch(self) -> int:
        """The epoch the next pass will use."""
        return self._epoch

    @property
    def augments(self) -> bool:
        return bool(self.crop_padding or self.flip or self.cutout)

    def set_epoch(self, epoch: int) -> None:
        """Make the next pass epoch ``epoch`` (its shuffle and augmentation depend on (seed, epoch) only)."""
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        self._epoch = int(epoch)

    def __len__(self) -> int:
        """Batches per epoch."""
        return self._n // self.batch_size if self.drop_last else math.ceil(self._n / self.batch_size)

    def _draw(self, epoch: int) -> dict[str, torch.Tensor | None]:
        """This epoch's random parameters, drawn on the CPU in a fixed order, moved to the device."""
        g = torch.Generator().manual_seed(epoch_seed(self.seed, epoch))
        n, (h, w), p = self._n, self._hw, self.crop_padding
        r: dict[str, torch.Tensor | None] = dict.fromkeys(("order", "dy", "dx", "flip", "cy", "cx"))
        if self.shuffle:
            r["order"] = torch.randperm(n, generator=g)
        if p:
            r["dy"] = torch.randint(0, 2 * p + 1, (n,), generator=g)
            r["dx"] = torch.randint(0, 2 * p + 1, (n,), generator=g)
        if self.flip:
            r["flip"] = torch.rand(n, generator=g) < 0.5
        if self.cutout:
            r["cy"] = torch.randint(0, h, (n,), generator=g)
            r["cx"] = torch.randint(0, w, (n,), generator=g)
        return {k: (v.to(self.device) if v is not None else None) for k, v in r.items()}

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        epoch = self._epoch
        r = self._draw(epoch)
        order = r["order"]
        crop_or_flip = bool(self.crop_padding or self.flip)
        for b in range(len(self)):
            lo, hi = b * self.batch_size, min((b + 1) * self.batch_size, self._n)
            if order is not None:
                idx = order[lo:hi]
            elif crop_or_flip:
                idx = torch.arange(lo, hi, device=self.device)
            else:
                idx = None
            if crop_or_flip:
                sl = slice(lo, hi)
                xb = crop_flip(self._xp, idx, r["dy"][sl] if r["dy"] is not None else None,
                               r["dx"][sl] if r["dx"] is not None else None,
                               r["flip"][sl] if r["flip"] is not None else None, self._hw)
            else:
                xb = self._xp[idx] if idx is not None else self._xp[lo:hi]
            yb = self.y[idx] if idx is not None else self.y[lo:hi]
            xb = normalize(xb, self.mean, self.std)
            if self.cutout:
                cutout_(xb, r["cy"][lo:hi], r["cx"][lo:hi], self.cutout)
            if self.channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            yield xb, yb
        if self._epoch == epoch:  # a complete pass; set_epoch during the pass wins
            self._epoch = epoch + 1

    def __repr__(self) -> str:
        aug = ", ".join(a for a, on in ((f"crop(pad={self.crop_padding})", self.crop_padding), ("flip", self.flip),
                                        (f"cutout({self.cutout})", self.cutout)) if on) or "none"
        return (f"DeviceLoader({self._n} samples, batch_size={self.batch_size}, {len(self)} batches, "
                f"device={self.device}, shuffle={self.shuffle}, drop_last={self.drop_last}, augment={aug}, "
                f"seed={self.seed}, epoch={self._epoch})")


@dataclass(frozen=True)
class Loaders:
    train: DeviceLoader
    test: DeviceLoader
    val: DeviceLoader | None


DEFAULT_EVAL_BATCH = 512


def make_loaders(ds: Dataset, *, batch_size: int = 128, eval_batch_size: int | None = None, device="cpu",
                 augment: bool = True, cutout: int = 0, seed: int = 0, channels_last: bool = False) -> Loaders:
    """Train/test(/val) :class:`DeviceLoader` s for ``ds`` on ``device``, normalised with
    :func:`normalization` of ``ds.name``.

    * train: shuffled, ``drop_last``; with ``augment=True`` CIFAR-10 gets the standard random
      crop (4-pixel zero padding) and horizontal flip; MNIST gets none (flipping digits changes
      their meaning and MNIST networks conventionally train without augmentation). ``cutout > 0``
      adds a Cutout hole of that side (16 for CIFAR-10 in the paper) whatever ``augment`` is.
    * test and val (val only when ``ds`` has a validation split, else ``None``): in order, no
      augmentation, every image once; batch ``eval_batch_size``, default ``max(batch_size, 512)``
      (no gradients are kept, so bigger batches are cheap and faster).
    """
    mean, std = normalization(ds.name)
    eval_bs = int(eval_batch_size) if eval_batch_size is not None else max(int(batch_size), DEFAULT_EVAL_BATCH)
    crop = augment and ds.name == "cifar10"
    common = dict(mean=mean, std=std, device=device, channels_last=channels_last)
    train = DeviceLoader(ds.x_train, ds.y_train, batch_size=batch_size, train=True, crop_padding=4 if crop else 0,
                         flip=crop, cutout=cutout, seed=seed, **common)
    test = DeviceLoader(ds.x_test, ds.y_test, batch_size=eval_bs, **common)
    val = DeviceLoader(ds.x_val, ds.y_val, batch_size=eval_bs, **common) if len(ds.x_val) else None
    return Loaders(train=train, test=test, val=val)
