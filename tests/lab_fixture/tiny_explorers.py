"""The book's four explorers over tiny stored runs, for the live JupyterLab test (``tests/test_lab_live.py``).

Imported by ``explorers.ipynb`` beside it, in a kernel that JupyterLab started: the runs are trained (well
under a second per epoch on a CPU) into, or loaded from, the store the server's environment names
(``CIFAR_UTILS_RUNS``), exactly as a chapter gets them. Each explorer's ``redraw`` is wrapped to count
its calls, so the test can tell one update from a queue of them.
"""

from __future__ import annotations

import json

import cifar_utils.engine.testing as tiny
from cifar_utils import bn_metrics as bm
from cifar_utils import cam, sparsity, widgets
from cifar_utils.engine import run

#: explorer name -> number of redraws since it was built (its first draw included)
REDRAWS: dict[str, int] = {}


def _counted(name: str, explorer):
    """Count ``explorer.redraw`` calls (the controls call it through ``self.redraw``)."""
    original = explorer.redraw
    REDRAWS[name] = 1

    def redraw(*args, **kwargs):
        REDRAWS[name] += 1
        return original(*args, **kwargs)

    explorer.redraw = redraw
    return explorer


def history_runs() -> dict:
    """Two tiny runs that differ in their learning rate (label -> Run)."""
    return {f"tiny_cnn lr {lr:g}": run(tiny.tiny_config(lr=lr, epochs=3), progress=False) for lr in (0.05, 0.01)}


def build() -> dict:
    """The four explorers, name -> explorer, over tiny runs from the store."""
    runs = history_runs()
    trained = next(iter(runs.values()))
    model = trained.load_model("cpu")
    data = cam.load_cam_data(trained.config)
    configs = [tiny.tiny_config(optimizer="adam", lr=lr, epochs=4, train_size=128) for lr in (1e-2, 1e-3)]
    records = bm.MetricsFactory()  # chapter 5's per-step measurements
    bn_runs = [run(c, callbacks=records(c), progress=False) for c in configs]
    weight = dict(model.named_parameters())["block2.0.weight"].detach()
    orders = {"block2.0": sparsity.pruning_order(weight, sparsity.NEVER * (weight.new_ones(weight.shape[0])).int())}
    return {
        "history": _counted("history", widgets.history_explorer(runs)),
        "cam": _counted("cam", widgets.cam_explorer(model, data)),
        "landscape": _counted("landscape", bm.landscape_explorer({"tiny_cnn": {r.config.lr: r for r in bn_runs}})),
        "pruning": _counted("pruning", widgets.pruning_explorer(model, orders, sparsity.test_loader(trained.config),
                                                                percent=50)),
    }


def state(explorers: dict) -> str:
    """One JSON line: every control the test moves as the kernel sees it, and the redraw counts."""
    h, c, ls, p = (explorers[k] for k in ("history", "cam", "landscape", "pruning"))
    return json.dumps({"history": {"metric": h.metric.value},
                       "cam": {"index": c.index.value, "index_max": c.index.max, "method": c.method.value, "method_label": c.method.label},
                       "landscape": {"window": ls.window.value, "window_max": ls.window.max},
                       "pruning": {"percent": p.percent.value, "accuracy": p.accuracy},
                       "redraws": REDRAWS})
