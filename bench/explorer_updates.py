"""How long one update of each explorer takes on this machine, in a Jupyter kernel as in JupyterLab.

An update is what one control change costs the kernel: the explorer's computation and drawing, and the
PNG that the kernel's inline matplotlib backend renders for the page (or the PNG the Grad-CAM explorer
renders itself). Not counted: sending it to the browser and showing it (a few ms on localhost).
The measurements run in a real IPython kernel (``ipykernel``, started here with ``jupyter_client``), so
``display(figure)`` renders the PNG exactly as it does in JupyterLab; the figures are then discarded.

Sizes, per explorer, at the smoke profile's and at the full profile's scale (``params/*.yaml``):

* history (chapters 1 and 3): the metric dropdown changed; chapter 1's 7 runs x 200 epochs (full) /
  x 2 (smoke), chapter 3's 13 runs x 50 epochs (full) / x 3 (smoke); the curves are synthetic.
* Grad-CAM (chapter 4): the image slider moved, ResNet-18 (the chapter's model; weights untrained,
  which costs the same), on the embedded CIFAR-10 sample, for each method. One image per update
  whatever the profile: the full profile's update costs the same.
* BatchNorm landscape (chapter 5): the smoothing slider moved; 2 models x 4 learning rates x 24 steps
  (smoke: 192 images, batch 8, 1 epoch) / x 7,820 steps (full: 50,000 images, batch 128, 20 epochs).
* pruning (chapter 6): the percentage slider moved, LeNet-5 (untrained) pruned at ``conv3``, test
  accuracy over 500 MNIST test images (smoke: the embedded sample) / 10,000 (full: MNIST-shaped
  random images; the cost does not depend on the pixels).

Each figure is the median of ``--repeat`` updates after one not timed. Run from the repository root::

    .venv/bin/python bench/explorer_updates.py [--repeat 5] [--json out.json]

On a shared or busy CPU the numbers vary from run to run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


# --- inside the kernel ---------------------------------------------------------------------------

def _timed(update, values, repeat: int) -> float:
    """Median seconds of ``update(value)`` over ``repeat`` values (after one not timed); ``values[0]`` must
    differ from the control's value, consecutive values from each other."""
    import statistics

    update(values[0])
    times = []
    for i in range(repeat):
        t0 = time.perf_counter()
        update(values[1 + i % (len(values) - 1)])
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _history_runs(runs: int, epochs: int) -> dict:
    import numpy as np

    from cifar_utils.engine import Run, RunConfig

    rng = np.random.default_rng(0)
    out = {}
    for r in range(runs):
        acc = np.clip(np.cumsum(rng.uniform(0, 2, epochs)) + 10, 0, 100)
        history = [{"epoch": e + 1, "train_loss": 2.0 / (e + 1), "train_acc": float(a), "test_loss": 2.1 / (e + 1),
                    "test_acc": float(a) - 1, "lr": 0.1, "images_per_s": 1000.0} for e, a in enumerate(acc)]
        out[f"run {r}"] = Run(config=RunConfig(), path=Path("/nonexistent"), history=history, status="finished")
    return out


def _landscape_runs(steps: int) -> dict:
    import numpy as np
    import torch

    from cifar_utils import bn_metrics as bm
    from cifar_utils.engine import Run, RunConfig

    rng = np.random.default_rng(0)
    out = {}
    for model in bm.MODELS:
        out[model] = {}
        for lr in (2e-3, 1e-3, 5e-4, 1e-4):
            values = rng.uniform(0.5, 1.5, size=(steps, len(bm.STEP_FIELDS)))
            values[0, 3:] = np.nan
            states = {bm.STEP_KEY: {"fields": bm.STEP_FIELDS, "layer": "x", "step": torch.arange(1, steps + 1),
                                    "values": torch.as_tensor(values), "carry": None}}
            cfg = RunConfig(model=model, lr=lr, optimizer="adam")
            out[model][lr] = Run(config=cfg, path=Path("/nonexistent") / cfg.name, status="finished",
                                 _callback_states=states)
    return out


def _pruning_setup(test_images: int | None):
    import torch

    from cifar_utils import sparsity
    from cifar_utils.data import Dataset, make_loaders
    from cifar_utils.engine.config import RunConfig
    from cifar_utils.engine.datasets import load_for_config
    from cifar_utils.models import create_model

    torch.manual_seed(0)
    model = create_model("lenet", num_classes=10, in_channels=1).eval()
    if test_images is None:  # the embedded sample: 500 real MNIST test images
        ds = load_for_config(RunConfig(model="lenet", dataset="mnist", source="sample"))
    else:
        g = torch.Generator().manual_seed(0)
        x = torch.randint(0, 256, (test_images, 1, 28, 28), dtype=torch.uint8, generator=g)
        y = torch.randint(0, 10, (test_images,), generator=g)
        empty = torch.zeros(0, 1, 28, 28, dtype=torch.uint8)
        ds = Dataset(name="mnist", x_train=empty, y_train=torch.zeros(0, dtype=torch.int64), x_test=x, y_test=y,
                     x_val=empty, y_val=torch.zeros(0, dtype=torch.int64), classes=tuple(str(i) for i in range(10)),
                     source="random")
    loader = make_loaders(ds, batch_size=128, device="cpu", augment=False, seed=0).test
    weight = dict(model.named_parameters())["conv3.weight"].detach()
    orders = {"conv3": sparsity.pruning_order(weight, torch.full((weight.shape[0],), sparsity.NEVER))}
    return model, orders, loader, len(ds.y_test)


def measure(repeat: int = 5) -> list[dict]:
    """Every explorer's update time; runs inside the kernel (see the module docstring)."""
    import torch

    from cifar_utils import bn_metrics as bm
    from cifar_utils import cam, widgets
    from cifar_utils.engine.config import RunConfig
    from cifar_utils.models import create_model

    rows = []

    def row(explorer, scale, what, seconds):
        rows.append({"explorer": explorer, "scale": scale, "what": what, "seconds": round(seconds, 3)})

    metrics = ["train_loss", "test_acc", "test_loss", "train_acc"]
    for chapter, runs, by_scale in (("1", 7, {"smoke": 2, "full": 200}), ("3", 13, {"smoke": 3, "full": 50})):
        for scale, epochs in by_scale.items():
            ex = widgets.history_explorer(_history_runs(runs, epochs))
            seconds = _timed(lambda v: setattr(ex.metric, "value", v), metrics, repeat)
            row("history", scale, f"chapter {chapter}: {runs} runs x {epochs} epochs, metric changed", seconds)

    torch.manual_seed(0)
    model = create_model("resnet18", num_classes=10).eval()
    data = cam.load_cam_data(RunConfig(model="resnet18", dataset="cifar10", source="sample"), test_size=100)
    probs = cam.predict(model, data.x)
    for method in cam.METHODS:
        ex = widgets.cam_explorer(model, data, methods=[method], probs=probs)
        last = ex.index.max
        # the first value (not timed) differs from the initial 0, so that it is a real, warming update
        seconds = _timed(lambda v: setattr(ex.index, "value", v), [1, 2, 0, min(3, last)], repeat)
        row("Grad-CAM", "smoke = full", f"ResNet-18, one image, {cam.METHODS[method]}, image slider moved", seconds)

    for scale, steps in (("smoke", 24), ("full", 7820)):
        ex = bm.landscape_explorer(_landscape_runs(steps), window=3 if scale == "smoke" else 25)
        ex.widget  # noqa: B018 - as in a notebook: the first access draws into the Output widget
        seconds = _timed(lambda v: setattr(ex.window, "value", v), [10, 50, 100, 200, 25], repeat)
        row("BatchNorm landscape", scale, f"2 models x 4 lrs x {steps} steps, smoothing slider moved", seconds)

    for scale, images in (("smoke", None), ("full", 10_000)):
        model, orders, loader, n = _pruning_setup(images)
        ex = widgets.pruning_explorer(model, orders, loader, percent=50)
        seconds = _timed(lambda v: setattr(ex.percent, "value", v), [40, 60, 80, 20, 0], repeat)
        row("pruning", scale, f"LeNet-5 conv3, test accuracy over {n} images, percentage slider moved", seconds)
    return rows


# --- outside: start a kernel, run measure() in it ----------------------------------------------

def run_in_kernel(repeat: int, timeout: float = 1800) -> list[dict]:
    """Start an IPython kernel (this Python), run :func:`measure` in it, return its rows."""
    from jupyter_client.manager import start_new_kernel

    env = dict(os.environ, CIFAR_UTILS_STATIC="0", PYTHONPATH=os.pathsep.join(filter(None, [str(HERE), str(ROOT),
                                                                                          os.environ.get("PYTHONPATH")])))
    km, kc = start_new_kernel(kernel_name="python3", env=env, cwd=str(ROOT), startup_timeout=120)
    rows: list[dict] = []
    errors: list[str] = []

    def on_output(msg):
        kind, content = msg["header"]["msg_type"], msg["content"]
        if kind == "stream" and content.get("name") == "stdout":
            for line in content["text"].splitlines():
                if line.startswith("ROWS "):
                    rows.extend(json.loads(line[5:]))
        elif kind == "error":
            errors.append("\n".join(content.get("traceback", [])) or f"{content['ename']}: {content['evalue']}")

    try:
        code = (f"import json, explorer_updates as b\nprint('ROWS ' + json.dumps(b.measure({repeat})))")
        reply = kc.execute_interactive(code, timeout=timeout, output_hook=on_output, store_history=False)
        if reply["content"]["status"] != "ok" or errors:
            raise RuntimeError("the measurement failed in the kernel:\n" + "\n".join(errors))
        return rows
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="timed updates per explorer (median reported)")
    parser.add_argument("--json", default=None, help="also write the rows to this file")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error(f"--repeat must be >= 1, got {args.repeat}")
    import platform

    import torch

    rows = run_in_kernel(args.repeat)
    cpu = platform.processor() or platform.machine()
    print(f"one explorer update, median of {args.repeat}, in a Jupyter kernel; {os.cpu_count()} CPUs ({cpu}), "
          f"torch {torch.__version__} with {torch.get_num_threads()} threads")
    width = max(len(r["explorer"]) for r in rows)
    for r in rows:
        print(f"  {r['explorer']:<{width}}  {r['scale']:<12} {r['seconds']:7.3f} s   {r['what']}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
