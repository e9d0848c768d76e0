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
