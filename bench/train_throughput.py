"""Training throughput (images/s) of the input pipeline and precision settings, in one run.

Setups, each a fresh model (same seed) trained with SGD on synthetic uint8 images:

1. ``seed``: what the original code did -- fp32, a torch ``DataLoader`` with 2 workers applying
   torchvision PIL transforms (pad-4 random crop, flip, ToTensor, Normalize) to every image.
2. ``on-device fp32``: the engine's loaders (:func:`cifar_utils.data.make_loaders`): the whole
   uint8 set on the device, augmentation as batched tensor ops there; fp32.
3. ``+ bf16 autocast + channels_last``: the engine's CUDA default (skipped on CPU).
4. ``+ torch.compile`` (``--compile``): the previous setup with ``torch.compile(mode=...)``.

Each setup runs ``--warmup`` untimed steps (worker start-up, cuDNN autotuning, compilation) and
then ``--steps`` timed ones. Ratios are against the ``seed`` setup.

    python bench/train_throughput.py                       # resnet18, batch 128
    python bench/train_throughput.py --batch-size 32 --steps 3 --warmup 1   # quick, CPU
    python bench/train_throughput.py --compile --steps 50 --warmup 10       # GPU
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from collections.abc import Callable, Iterator

import torch


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="resnet18")
    p.add_argument("--dataset", default="cifar10", choices=("cifar10", "mnist"),
                   help="image shape / normalization of the synthetic data")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=20, help="timed steps per setup")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps per setup")
    p.add_argument("--device", default="auto")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers of the seed setup")
    p.add_argument("--compile", action="store_true", help="also measure torch.compile")
    p.add_argument("--compile-mode", default="max-autotune")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


# --- the seed's pipeline: PIL transforms in DataLoader workers ---------------------------------

class PILDataset(torch.utils.data.Dataset):
    """uint8 NCHW images served as PIL images through torchvision transforms (like CIFAR10())."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, transform) -> None:
        self.x = x.permute(0, 2, 3, 1).numpy()  # NHWC, like torchvision.datasets.CIFAR10.data
        self.y = y.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        from PIL import Image

        img = self.x[i]
        img = Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img)
        return self.transform(img), self.y[i]


def seed_batches(x, y, dataset: str, batch_size: int, workers: int, device) -> Iterator:
    import torchvision.transforms as T

    from cifar_utils.data import normalization

    mean, std = normalization(dataset)
    size = x.shape[-1]
    transform = T.Compose([T.RandomCrop(size, padding=4), T.RandomHorizontalFlip(), T.ToTensor(),
                           T.Normalize(mean, std)])
    loader = torch.utils.data.DataLoader(PILDataset(x, y, transform), batch_size=batch_size, shuffle=True,
                                         num_workers=workers, drop_last=True, persistent_workers=workers > 0,
                                         pin_memory=device.type == "cuda")
    while True:
        for xb, yb in loader:
            yield xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)


def device_batches(ds, batch_size: int, device, channels_last: bool) -> Iterator:
    from cifar_utils.data import make_loaders

    train = make_loaders(ds, batch_size=batch_size, device=device, augment=True, seed=0,
                         channels_last=channels_last).train
    epoch = 0
    while True:
        train.set_epoch(epoch)
        yield from train
        epoch += 1


# --- measuring ----------------------------------------------------------------------------------

def measure(name: str, batches: Iterator, args, device, *, precision: str = "fp32", channels_last: bool = False,
            compile: bool = False) -> dict:
    from cifar_utils.engine.loop import autocast, seed_everything
    from cifar_utils.models import create_model
    from cifar_utils.optim import create_optimizer

    seed_everything(args.seed)
    in_ch = 1 if args.dataset == "mnist" else 3
    model = create_model(args.model, num_classes=10, in_channels=in_ch).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = create_optimizer("sgd", model, lr=0.1, momentum=0.9, weight_decay=5e-4)
    step_model = torch.compile(model, mode=args.compile_mode) if compile else model
    model.train()
    loss_fn = torch.nn.functional.cross_entropy

    def step() -> torch.Tensor:
        x, y = next(batches)
        with autocast(device, precision):
            out = step_model(x)
        loss = loss_fn(out.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    sync: Callable[[], None] = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    t_warm = time.perf_counter()
    for _ in range(args.warmup):
        step()
    sync()
    warm_s = time.perf_counter() - t_warm
    t0 = time.perf_counter()
    for _ in range(args.steps):
        loss = step()
    sync()
    seconds = time.perf_counter() - t0
    if not torch.isfinite(loss):
        print(f"warning: {name}: non-finite loss", file=sys.stderr)
    return {"setup": name, "img_s": args.steps * args.batch_size / seconds, "ms_step": 1000 * seconds / args.steps,
            "warmup_s": warm_s}


def main(argv=None) -> int:
    args = parse_args(argv)
    from cifar_utils.data import Dataset
    from cifar_utils.data.meta import IMAGE_SHAPE, class_names
    from cifar_utils.engine.loop import resolve_device

    device = resolve_device(args.device)
    shape = IMAGE_SHAPE[args.dataset]
    n = args.batch_size * max(4, args.steps + args.warmup)
    g = torch.Generator().manual_seed(args.seed)
    x = torch.randint(0, 256, (n, *shape), generator=g, dtype=torch.uint8)
    y = torch.randint(0, 10, (n,), generator=g)
    ds = Dataset(name=args.dataset, x_train=x, y_train=y, x_test=x[:args.batch_size], y_test=y[:args.batch_size],
                 x_val=x[:0], y_val=y[:0], classes=class_names(args.dataset), source="synthetic")

    print(f"model {args.model}, batch {args.batch_size}, {args.warmup} warmup + {args.steps} timed steps per setup")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (
        f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads")
    print(f"device {device} ({name}); torch {torch.__version__}; python {platform.python_version()}")
    print("command: python bench/train_throughput.py " + " ".join(sys.argv[1:] if argv is None else argv))
    print()

    rows, notes = [], []
    rows.append(measure(f"seed: fp32, PIL DataLoader ({args.workers} workers)",
                        seed_batches(x, y, args.dataset, args.batch_size, args.workers, device), args, device))
    rows.append(measure("on-device data, fp32", device_batches(ds, args.batch_size, device, False), args, device))
    fast = dict(precision="fp32", channels_last=False)
    if device.type == "cuda":
        rows.append(measure("on-device + bf16 autocast + channels_last",
                            device_batches(ds, args.batch_size, device, True), args, device,
                            precision="bf16", channels_last=True))
        fast = dict(precision="bf16", channels_last=True)
    else:
        notes.append("bf16 autocast + channels_last: skipped (CUDA only; the engine uses fp32 on CPU)")
    if args.compile:
        label = "+ bf16 + channels_last" if device.type == "cuda" else "fp32"
        rows.append(measure(f"on-device {label} + torch.compile({args.compile_mode})",
                            device_batches(ds, args.batch_size, device, fast["channels_last"]), args, device,
                            compile=True, **fast))
    else:
        notes.append("torch.compile: not measured (pass --compile)")

    base = rows[0]["img_s"]
    width = max(len(r["setup"]) for r in rows)
    print(f"{'setup':<{width}}  {'img/s':>9}  {'ms/step':>9}  {'vs seed':>7}  {'warmup s':>8}")
    for r in rows:
        print(f"{r['setup']:<{width}}  {r['img_s']:>9.1f}  {r['ms_step']:>9.1f}  {r['img_s'] / base:>6.2f}x"
              f"  {r['warmup_s']:>8.1f}")
    for note in notes:
        print(f"note: {note}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
