"""Interactive exploration in JupyterLab: pick runs and a metric, see the curves.

The drawing is :func:`cifar_utils.plots.plot_metric`; this module only wires ipywidgets to it.
"""

from __future__ import annotations

from collections.abc import Mapping

import matplotlib.pyplot as plt

from .engine import Run
from .plots import METRICS, plot_metric


class HistoryExplorer:
    """Runs (multi-select), a metric (dropdown) and a log-scale switch above a live plot.

    ``explorer.widget`` is the ipywidgets box to display; ``explorer.figure`` the last drawn figure.
    """

    def __init__(self, runs: Mapping[str, Run], metric: str = "test_acc") -> None:
        import ipywidgets as w

        if not runs:
            raise ValueError("no runs to explore")
        if metric not in METRICS:
            raise ValueError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
        self.runs = dict(runs)
        self.select = w.SelectMultiple(options=list(self.runs), value=tuple(self.runs), description="runs",
                                       rows=min(len(self.runs), 8))
        self.metric = w.Dropdown(options=list(METRICS), value=metric, description="metric")
        self.log = w.Checkbox(value=False, description="log scale")
        self.output = w.Output()
        self.figure = None
        for control in (self.select, self.metric, self.log):
            control.observe(lambda _change: self.redraw(), names="value")
        self.widget = w.VBox([w.HBox([self.select, w.VBox([self.metric, self.log])]), self.output])
        self.redraw()

    def redraw(self) -> None:
        """Draw the chosen runs' chosen metric into the output area."""
        chosen = {k: self.runs[k] for k in self.select.value}
        if self.figure is not None:
            plt.close(self.figure)
        self.figure = plot_metric(chosen, self.metric.value, self.log.value)
        self.output.clear_output(wait=True)
        with self.output:
            from IPython.display import display

            display(self.figure)
        plt.close(self.figure)

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)


def history_explorer(runs: Mapping[str, Run], metric: str = "test_acc") -> HistoryExplorer:
    """An explorer over ``runs`` (label -> Run); display it in a notebook cell."""
    return HistoryExplorer(runs, metric)


class PruningExplorer:
    """Chapter 6: a layer choice and a pruning percentage (slider) above the layer's weights after
    pruning by DessiLBI's order and the pruned model's test accuracy; the model is restored after
    every evaluation.

    ``orders``: layer name -> pruning order (:meth:`cifar_utils.sparsity.SLBIPath.order`);
    ``loader``: the test loader (:func:`cifar_utils.sparsity.test_loader`). ``explorer.widget`` is
    the ipywidgets box, ``explorer.figure`` the figure, ``explorer.accuracy`` the last accuracy.
    """

    def __init__(self, model, orders: Mapping[str, "object"], loader, percent: int = 0,
                 note: str | None = None) -> None:
        import ipywidgets as w

        if not orders:
            raise ValueError("no layers to prune: give at least one layer's pruning order")
        self.model, self.orders, self.loader, self.note = model, dict(orders), loader, note
        self.layer = w.Dropdown(options=list(self.orders), value=next(iter(self.orders)), description="layer")
        self.percent = w.IntSlider(value=percent, min=0, max=100, step=5, description="pruned %",
                                   continuous_update=False)
        self.output = w.Output()
        self.figure, axes = plt.subplots(1, 2, figsize=(11, 4.6), layout="constrained")
        plt.close(self.figure)
        self.axes = list(axes)
        self.accuracy: float | None = None
        self.baseline: dict[str, float] = {}
        for control in (self.layer, self.percent):
            control.observe(lambda _change: self.redraw(), names="value")
        self.widget = w.VBox([w.HBox([self.layer, self.percent]), self.output])
        self.redraw()

    def evaluate(self, layer: str, percent: float) -> tuple[float, object]:
        """Test accuracy with ``layer`` pruned at ``percent`` %, and the pruned weights' picture."""
        from torch import nn

        from .engine import evaluate
        from .sparsity import _param, pruned, weight_picture

        device = next(self.model.parameters()).device
        with pruned(self.model, layer, percent, self.orders[layer]):
            _, acc = evaluate(self.model, self.loader, nn.CrossEntropyLoss(), device)
            picture = weight_picture(_param(self.model, layer)[1])
        return acc, picture

    def redraw(self) -> None:
        """Recompute the accuracy and redraw the pictures for the current layer and percentage."""
        from .plots import plot_pruned_weights
        from .sparsity import _param, weight_picture

        layer, percent = self.layer.value, self.percent.value
        if layer not in self.baseline:
            self.baseline[layer], _ = self.evaluate(layer, 0)
        base_acc = self.baseline[layer]
        before = weight_picture(_param(self.model, layer)[1])
        self.accuracy, after = self.evaluate(layer, percent)
        plot_pruned_weights(before, after, f"{layer}: {percent}% pruned by DessiLBI's order", self.note,
                            accuracy=(base_acc, self.accuracy), axes=self.axes)
        self.output.clear_output(wait=True)
        with self.output:
            from IPython.display import display

            display(self.figure)

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)


def pruning_explorer(model, orders, loader, percent: int = 0, note: str | None = None) -> PruningExplorer:
    """A :class:`PruningExplorer`; display ``explorer.widget`` in a notebook cell."""
    return PruningExplorer(model, orders, loader, percent, note)
