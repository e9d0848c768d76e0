"""Training-input throughput: the usual torchvision pipeline vs ``cifar_utils.data.DeviceLoader``.

Both pipelines produce the same thing: shuffled batches of 128 CIFAR-10 training images, randomly
cropped from the 4-pixel zero-padded image, randomly flipped, normalised, on ``--device``. Both
run on the same uint8 arrays, in the same process, one after the other ((b) first, so that no
idle or prefetching DataLoader worker competes with it for the CPU):

(a) the seed notebook's setup: a torchvision ``CIFAR10`` dataset with the PIL transforms
    ``RandomCrop(32, padding=4)``, ``RandomHorizontalFlip()``, ``ToTensor()``, ``Normalize``, in a
    ``DataLoader(batch_size=128, shuffle=True, num_workers=2)``, each batch then moved to the
    device (pinned memory when it is a GPU). The official files cannot be downloaded offline, so
    ``ArrayCIFAR`` below does exactly what ``torchvision.datasets.CIFAR10.__getitem__`` does
    (``Image.fromarray`` on one HWC uint8 image, then the transform) over the same arrays. Workers
    are kept alive between epochs (``persistent_workers=True``) and the first batch is not timed,
    so worker start-up is left out: this flatters (a), and the ratio is a lower bound.
(b) ``DeviceLoader``: the split copied to the device once (the copy is reported, not timed),
    batches gathered, cropped and flipped by one indexing op, then normalised.

Run from the project root (``cuda`` is the default device when one is available)::

    python bench/data_loader.py                       # embedded sample, 60 batches
    python bench/data_loader.py --device cpu --batches 100
    python bench/data_loader.py --source local --data-root ../shared/data/cifar10/cifar10_jpeg_q75.tar.gz

The sample has 1000 training images (7 batches per epoch); both pipelines simply run through as
many epochs as ``--batches`` needs. On a shared or busy CPU the numbers vary from run to run
(PyTorch's OpenMP threads stall when other processes hold the cores): compare within one run.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a clone without installing

from cifar_utils.data import DeviceLoader, load_dataset, normalization  # noqa: E402


class ArrayCIFAR(torch.utils.data.Dataset):
    """torchvision's ``CIFAR10`` over in-memory arrays: ``data`` uint8 (N, 32, 32, 3), ``targets``."""

    def __init__(self, data: np.ndarray, targets: list[int], transform=None) -> None:
        self.data, self.targets, self.transform = data, targets, transform

    def __getitem__(self, index: int):
        from PIL import Image

        img, target = self.data[index], self.targets[index]
        img = Image.fromarray(img)  # exactly as torchvision.datasets.CIFAR10.__getitem__
        if self.transform is not None:
            img = self.transform(img)
        return img, target

    def __len__(self) -> int:
        return len(self.data)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_batches(make_iter, n_batches: int, device: torch.device, to_device: bool) -> float:
    """Seconds for ``n_batches`` batches after one untimed warm-up batch, epochs restarting as needed."""
    it = make_iter()
    done = -1  # the first batch warms up
    t0 = None
    while done < n_batches:
        for x, y in it:
            if to_device:
                x = x.to(device, non_blocking=True)
                y = y.to(device, non_blocking=True)
            done += 1
            if done == 0:
                sync(device)
                t0 = time.perf_counter()
            if done == n_batches:
                break
        else:
            it = make_iter()
    sync(device)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--source", default="sample", choices=["sample", "auto", "local", "download"])
    parser.add_argument("--data-root", default=None, help="for --source local/auto (else $CIFAR_UTILS_DATA)")
    parser.add_argument("--batches", type=int, default=60, help="timed batches per pipeline (default 60)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers for (a) (default 2)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    from torchvision import transforms as T

    ds = load_dataset("cifar10", source=args.source, data_root=args.data_root)
    mean, std = normalization("cifar10")
    n = len(ds.x_train)
    print(f"data: {n} CIFAR-10 training images ({ds.source})")
    print(f"device: {device}" + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "")
          + f"; torch {torch.__version__}; {torch.get_num_threads()} intra-op threads; {os.cpu_count()} CPUs")
    print(f"{args.batches} timed batches of {args.batch_size} per pipeline, after one warm-up batch\n")

    # (b) DeviceLoader
    t0 = time.perf_counter()
    loader = DeviceLoader(ds.x_train, ds.y_train, batch_size=args.batch_size, mean=mean, std=std, device=device,
                          train=True, crop_padding=4, flip=True)
    sync(device)
    setup = time.perf_counter() - t0
    t_b = time_batches(lambda: iter(loader), args.batches, device, to_device=False)
    ips_b = args.batches * args.batch_size / t_b
    print(f"(b) DeviceLoader, crop + flip as batched tensor ops on {device} (one-off copy to the device {setup:.3f} s):"
          f"\n    {t_b:7.3f} s  {ips_b:10.0f} images/s")

    # (a) torchvision dataset + PIL transforms + DataLoader workers
    tf = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(mean, std)])
    tv_ds = ArrayCIFAR(ds.x_train.permute(0, 2, 3, 1).contiguous().numpy(), ds.y_train.tolist(), tf)
    dl = torch.utils.data.DataLoader(tv_ds, batch_size=args.batch_size, shuffle=True, num_workers=args.workers,
                                     pin_memory=device.type == "cuda", persistent_workers=args.workers > 0)
    t_a = time_batches(lambda: iter(dl), args.batches, device, to_device=True)
    del dl  # stop the workers
    ips_a = args.batches * args.batch_size / t_a
    print(f"(a) torchvision Dataset + PIL RandomCrop/Flip/ToTensor/Normalize, DataLoader(num_workers={args.workers}):"
          f"\n    {t_a:7.3f} s  {ips_a:10.0f} images/s")

    print(f"\nratio (b)/(a): {ips_b / ips_a:.1f}x")


if __name__ == "__main__":
    main()
