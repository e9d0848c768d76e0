"""Training throughput (images/s) of the report's setup against the engine's, in one run.

Setups, each a fresh model (same seed) trained with SGD on synthetic uint8 images, every step taken
by the engine's own :func:`cifar_utils.engine.train_epoch` (the function ``run()`` trains with):

1. ``report``: what the original code did -- fp32, a torch ``DataLoader`` with 2 workers applying
   torchvision PIL transforms (pad-4 random crop, flip, ToTensor, Normalize) to every image.
2. ``engine, fp32``: the engine's loaders (:func:`cifar_utils.data.make_loaders`): the whole
   uint8 set on the device, augmentation as batched tensor ops there; fp32.
3. ``engine default``: ``precision="auto"`` (bf16 autocast on a GPU with native bf16) and
   ``channels_last`` on CUDA (skipped on CPU, where the default is setup 2).
4. ``+ torch.compile`` (``--compile``): the previous setup with ``torch.compile(mode=...)``.

Each setup runs ``--warmup`` untimed steps (worker start-up, cuDNN autotuning, compilation) and
then ``--steps`` timed ones. Ratios are against the ``report`` setup. ``bench/gpu_check.py``
imports the functions below.

    python bench/train_throughput.py                       # resnet18, batch 128
    python bench/train_throughput.py --batch-size 32 --steps 3 --warmup 1   # quick, CPU
    python bench/train_throughput.py --compile --steps 50 --warmup 10       # GPU
"""

from __future__ import annotations

import argparse
import itertools
import platform
import sys
from collections.abc import Iterator

import torch

#: Seconds a DataLoader worker may take to deliver one batch before the benchmark gives up.
LOADER_TIMEOUT_S = 120


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="resnet18")
    p.add_argument("--dataset", default="cifar10", choices=("cifar10", "mnist"),
                   help="image shape / normalization of the synthetic data")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=20, help="timed steps per setup")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps per setup")
    p.add_argument("--device", default="auto")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers of the report setup")
    p.add_argument("--compile", action="store_true", help="also measure torch.compile")
    p.add_argument("--compile-mode", default="max-autotune")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def synthetic_dataset(dataset: str, n: int, seed: int = 0):
    """``n`` random uint8 images of ``dataset``'s shape (the test split: the first 64 of them)."""
    from cifar_utils.data import Dataset
    from cifar_utils.data.meta import IMAGE_SHAPE, class_names

    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, *IMAGE_SHAPE[dataset]), generator=g, dtype=torch.uint8)
    y = torch.randint(0, 10, (n,), generator=g)
    return Dataset(name=dataset, x_train=x, y_train=y, x_test=x[:64], y_test=y[:64], x_val=x[:0], y_val=y[:0],
                   classes=class_names(dataset), source="synthetic")


# --- the report's pipeline: PIL transforms in DataLoader workers --------------------------------

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


def report_batches(ds, batch_size: int, workers: int, device: torch.device) -> Iterator:
    """Endless device batches through the report's pipeline (close the generator to stop its workers)."""
    import torchvision.transforms as T

    from cifar_utils.data import normalization

    mean, std = normalization(ds.name)
    size = ds.x_train.shape[-1]
    transform = T.Compose([T.RandomCrop(size, padding=4), T.RandomHorizontalFlip(), T.ToTensor(),
                           T.Normalize(mean, std)])
    loader = torch.utils.data.DataLoader(PILDataset(ds.x_train, ds.y_train, transform), batch_size=batch_size,
                                         shuffle=True, num_workers=workers, drop_last=True,
                                         persistent_workers=workers > 0, pin_memory=device.type == "cuda",
                                         timeout=LOADER_TIMEOUT_S if workers > 0 else 0)
    while True:
        for xb, yb in loader:
            yield xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)


def engine_batches(ds, batch_size: int, device: torch.device, channels_last: bool, seed: int = 0) -> Iterator:
    """Endless batches from the engine's loader (a new epoch's order each pass)."""
    from cifar_utils.data import make_loaders

    train = make_loaders(ds, batch_size=batch_size, device=device, augment=True, seed=seed,
                         channels_last=channels_last).train
    for epoch in itertools.count():
        train.set_epoch(epoch)
        yield from train


# --- measuring ----------------------------------------------------------------------------------

def measure(name: str, batches: Iterator, *, model: str, device: torch.device, batch_size: int, steps: int,
            warmup: int, precision: str = "fp32", channels_last: bool = False, compile: bool = False,
            compile_mode: str = "max-autotune", compile_backend: str = "inductor", in_channels: int = 3,
            seed: int = 0) -> dict:
    """Images/s of ``steps`` training steps (after ``warmup`` untimed ones) of a fresh ``model``,
    taken by the engine's :func:`train_epoch` on ``batches`` (which is closed afterwards)."""
    from cifar_utils.engine import StepSetup, train_epoch
    from cifar_utils.engine.runtime import seed_everything
    from cifar_utils.models import create_model, model_options
    from cifar_utils.optim import create_optimizer

    try:
        seed_everything(seed)
        args = {"in_channels": in_channels} if "in_channels" in model_options(model) else {}
        net = create_model(model, num_classes=10, **args).to(device)
        if channels_last:
            net = net.to(memory_format=torch.channels_last)
        opt = create_optimizer("sgd", net, lr=0.1, momentum=0.9, weight_decay=5e-4)
        step_model = net
        if compile and compile_backend == "inductor":  # as the engine does (shared cache; graphs need CUDA)
            from cifar_utils.engine.runtime import step_model as engine_step_model

            step_model, _ = engine_step_model(net, device, True, compile_mode)
        elif compile:
            step_model = torch.compile(net, backend=compile_backend)
        net.train()
        setup = StepSetup(model=net, optimizer=opt, loss_fn=torch.nn.functional.cross_entropy, device=device,
                          precision=precision, step_model=step_model)
        warm = train_epoch(setup, itertools.islice(batches, warmup)) if warmup else None
        timed = train_epoch(setup, itertools.islice(batches, steps))  # ends with a sync (.item())
    finally:
        close = getattr(batches, "close", None)
        if close is not None:
            close()
    return {"setup": name, "model": model, "precision": precision, "channels_last": channels_last,
            "compile": compile, "img_s": timed.images / timed.seconds, "ms_step": 1000 * timed.seconds / steps,
            "warmup_s": warm.seconds if warm else 0.0, "loss": timed.loss}


def main(argv=None) -> int:
    args = parse_args(argv)
    from cifar_utils.engine.runtime import device_name, resolve_device

    device = resolve_device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as the engine does
    ds = synthetic_dataset(args.dataset, args.batch_size * max(4, args.steps + args.warmup), args.seed)
    common = dict(model=args.model, device=device, batch_size=args.batch_size, steps=args.steps,
                  warmup=args.warmup, in_channels=ds.x_train.shape[1], seed=args.seed)

    print(f"model {args.model}, batch {args.batch_size}, {args.warmup} warmup + {args.steps} timed steps per setup")
    print(f"device {device} ({device_name(device)}); torch {torch.__version__}; python {platform.python_version()}")
    print("command: python bench/train_throughput.py " + " ".join(sys.argv[1:] if argv is None else argv))
    print()

    rows, notes = [], []
    rows.append(measure(f"report: fp32, PIL DataLoader ({args.workers} workers)",
                        report_batches(ds, args.batch_size, args.workers, device), **common))
    rows.append(measure("engine, fp32", engine_batches(ds, args.batch_size, device, False), **common))
    fast = dict(precision="fp32", channels_last=False)
    if device.type == "cuda":
        from cifar_utils.engine.runtime import resolve_precision

        fast = dict(precision=resolve_precision("auto", device), channels_last=True)
        rows.append(measure(f"engine default: {fast['precision']} + channels_last",
                            engine_batches(ds, args.batch_size, device, True), **common, **fast))
    else:
        notes.append("engine default on CPU = engine, fp32 (bf16 autocast + channels_last are for CUDA)")
    if args.compile:
        label = f"{fast['precision']} + channels_last" if device.type == "cuda" else "fp32"
        rows.append(measure(f"engine {label} + torch.compile({args.compile_mode})",
                            engine_batches(ds, args.batch_size, device, fast["channels_last"]), **common,
                            compile=True, compile_mode=args.compile_mode, **fast))
    else:
        notes.append("torch.compile: not measured (pass --compile)")

    base = rows[0]["img_s"]
    width = max(len(r["setup"]) for r in rows)
    print(f"{'setup':<{width}}  {'img/s':>9}  {'ms/step':>9}  {'vs report':>9}  {'warmup s':>8}")
    for r in rows:
        print(f"{r['setup']:<{width}}  {r['img_s']:>9.1f}  {r['ms_step']:>9.1f}  {r['img_s'] / base:>8.2f}x"
              f"  {r['warmup_s']:>8.1f}")
    for note in notes:
        print(f"note: {note}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
