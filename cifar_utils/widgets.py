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


#: ``1``: show static figures instead of live widgets (the book runner sets it in its kernels);
#: ``0``: always build live widgets. Unset: live exactly when running inside a Jupyter kernel.
STATIC_ENV = "CIFAR_UTILS_STATIC"


def live_widgets() -> bool:
    """Whether to build and display live widgets in this process.

    Decided, in order, by:

    1. ``CIFAR_UTILS_STATIC``: ``1`` (set by the book runner for the kernels it starts) -> static;
       ``0`` -> live. Deterministic, so the static build never executes a widget.
    2. otherwise, whether this code runs inside a Jupyter kernel (JupyterLab, Notebook, VS Code):
       ``get_ipython()`` exists and has a ``kernel``. Plain Python, the IPython terminal and tests
       get the static figure.

    A kernel cannot tell a person's JupyterLab from a headless executor (papermill, ``nbconvert
    --execute``): both are just clients of the kernel, and an ipywidgets comm opens without any
    answer from the other side. So headless runs outside the book runner should set
    ``CIFAR_UTILS_STATIC=1`` too. Why it matters (issue #9): executed headless, nbclient's
    stand-in for an ``Output`` widget sends comm messages to the kernel on the shell socket while
    nbclient waits on that same socket for the cell's reply (see nbclient issue #312). In one of
    60 measured headless runs of such a cell the reply then sat unnoticed until the cell timeout;
    with no timeout that is the endless hang of #9. No widget, no such traffic.
    """
    import os

    flag = os.environ.get(STATIC_ENV, "").strip().lower()
    if flag in ("1", "true", "yes", "on"):
        return False
    if flag in ("0", "false", "no", "off"):
        return True
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython is a dependency
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def show_explorer(explorer_or_factory, static_figure, title: str | None = None) -> None:
    """Display a live explorer when a front end can use it, else a static matplotlib figure.

    ``explorer_or_factory``: an explorer (an object with a ``.widget``, e.g. a
    :class:`HistoryExplorer`) or, better, a function with no arguments that builds one: in the
    static build the factory is never called, so no widget (and no widget traffic) exists at all.
    ``static_figure``: a matplotlib figure, or a function with no arguments returning one; only
    called in the static build. It is displayed once and closed, with ``title`` (e.g. the smoke
    note) as its heading when given. See :func:`live_widgets` for how
    "live" is decided. Returns None, so a cell ending with this call displays nothing twice.
    """
    from IPython.display import display

    if live_widgets():
        explorer = explorer_or_factory() if callable(explorer_or_factory) and not hasattr(
            explorer_or_factory, "widget") else explorer_or_factory
        display(getattr(explorer, "widget", explorer))
        return None
    figure = static_figure() if callable(static_figure) else static_figure
    if figure is None:
        raise ValueError("show_explorer needs a static figure (or a function returning one) for the static build")
    if title:
        figure.suptitle(title)
    display(figure)
    plt.close(figure)
    return None


class CamExplorer:
    """Grad-CAM explorer: an image (class, then index within the class), the class the map explains
    (the prediction or any class) and the method; the overlay and the top-3 predictions follow.

    ``explorer.widget`` is the ipywidgets box to display; ``explorer.figure`` the last drawn figure
    (closed; it stays readable). The figure reaches the page as a PNG in an ``ipywidgets.Image``,
    not through an ``Output`` widget. The computation is :func:`cifar_utils.cam.explain`.
    """

    PREDICTED = -1

    def __init__(self, model, data, methods=None, probs=None, scale: int = 4) -> None:
        import ipywidgets as w

        from . import cam

        if len(data) == 0:
            raise ValueError("no images to explore")
        methods = list(methods or cam.METHODS)
        for m in methods:
            if m not in cam.METHODS:
                raise ValueError(f"unknown CAM method {m!r}; choose from {', '.join(cam.METHODS)}")
        self.model, self.data, self.scale = model, data, scale
        self.probs = cam.predict(model, data.x) if probs is None else probs
        present = [c for c in range(len(data.classes)) if len(data.class_indices(c))]
        self.klass = w.Dropdown(options=[(data.classes[c], c) for c in present], value=present[0],
                                description="class")
        # continuous_update=False: a drag draws once, where it ends (a map is a forward and a backward pass and a
        # figure: about a second on a 2-core CPU, see the README)
        self.index = w.IntSlider(value=0, min=0, max=len(data.class_indices(present[0])) - 1,
                                 description="image", continuous_update=False)
        self.target = w.Dropdown(options=[("predicted", self.PREDICTED)] + [(n, i) for i, n in enumerate(data.classes)],
                                 value=self.PREDICTED, description="map of")
        self.method = w.Dropdown(options=[(cam.METHODS[m], m) for m in methods], value=methods[0],
                                 description="method")
        self.image = w.Image(format="png")
        self.figure = None
        self.item = None
        self._busy = False
        self.klass.observe(self._class_changed, names="value")
        for control in (self.index, self.target, self.method):
            control.observe(lambda _change: self.redraw(), names="value")
        self.widget = w.VBox([w.HBox([w.VBox([self.klass, self.index]), w.VBox([self.target, self.method])]),
                              self.image])
        self.redraw()

    def _class_changed(self, _change) -> None:
        self._busy = True  # changing the slider's range may move its value: draw once, after
        try:
            self.index.value = 0
            self.index.max = len(self.data.class_indices(self.klass.value)) - 1
        finally:
            self._busy = False
        self.redraw()

    @property
    def selected(self) -> int:
        """Position in the data of the chosen image."""
        return int(self.data.class_indices(self.klass.value)[self.index.value])

    def redraw(self) -> None:
        """Compute the chosen map and draw the overlay and the top-3 predictions."""
        if self._busy:
            return
        import io

        target = None if self.target.value == self.PREDICTED else int(self.target.value)
        if self.figure is not None:
            plt.close(self.figure)
        self.item, self.figure = _cam_view(self.model, self.data, self.selected, target, self.method.value,
                                           self.probs, self.scale)
        buf = io.BytesIO()
        self.figure.savefig(buf, format="png", dpi=80)
        plt.close(self.figure)
        self.image.value = buf.getvalue()

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)


class PruningExplorer:
    """Chapter 6: a layer choice and a pruning percentage (slider) above the layer's weights after
    pruning by DessiLBI's order and the pruned model's test accuracy; the model is restored after
    every evaluation.

    ``orders``: layer name -> pruning order (:meth:`cifar_utils.sparsity.SLBIPath.order`);
    ``loader``: the test loader (:func:`cifar_utils.sparsity.test_loader`). ``explorer.widget`` is
    the ipywidgets box, ``explorer.figure`` the figure, ``explorer.accuracy`` the last accuracy (also
    shown as text in ``explorer.summary``). The slider draws once a drag ends (``continuous_update=False``):
    every step evaluates the model on the whole test set.
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
        self.summary = w.HTML()  # the accuracies as text (also in the figure's titles)
        self.output = w.Output()
        self.figure, axes = plt.subplots(1, 2, figsize=(11, 4.6), layout="constrained")
        plt.close(self.figure)
        self.axes = list(axes)
        self.accuracy: float | None = None
        self.baseline: dict[str, float] = {}
        for control in (self.layer, self.percent):
            control.observe(lambda _change: self.redraw(), names="value")
        self.widget = w.VBox([w.HBox([self.layer, self.percent]), self.summary, self.output])
        self.redraw()

    def evaluate(self, layer: str, percent: float) -> tuple[float, object]:
        """Test accuracy with ``layer`` pruned at ``percent`` %, and the pruned weights' picture."""
        return _pruned_accuracy(self.model, self.orders, self.loader, layer, percent)

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
        self.summary.value = (f"test accuracy with {layer} {percent}% pruned: <b>{self.accuracy:.2f}%</b> "
                              f"(unpruned: {base_acc:.2f}%)")
        self.output.clear_output(wait=True)
        with self.output:
            from IPython.display import display

            display(self.figure)

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)


def cam_explorer(model, data, methods=None, probs=None) -> CamExplorer:
    """A Grad-CAM explorer over ``data`` (:class:`cifar_utils.cam.CamData`); display it in a notebook cell."""
    return CamExplorer(model, data, methods, probs)


def _cam_view(model, data, index: int, target: int | None, method: str, probs, scale: int = 4):
    """The explorer's computation and drawing for one choice: (CamItem, figure)."""
    from . import cam
    from .plots import plot_cam_explorer

    item = cam.explain(model, data, index, target, method, probs)
    top = cam.top_k(probs[index] if probs is not None else cam.predict(model, data.x[index:index + 1])[0],
                    data.classes, 3)
    return item, plot_cam_explorer(item, data.classes, top, cam.METHODS[method], scale)


def cam_explorer_figure(model, data, probs=None, method: str = "gradcam"):
    """The explorer's first view as a plain figure (the first image of the first class, the map of its
    predicted class), for the static book: no widget is created."""
    first = next(c for c in range(len(data.classes)) if len(data.class_indices(c)))
    return _cam_view(model, data, int(data.class_indices(first)[0]), None, method, probs)[1]


def _pruned_accuracy(model, orders: Mapping[str, "object"], loader, layer: str, percent: float) -> tuple[float, object]:
    """Test accuracy of ``model`` with ``layer`` pruned at ``percent`` % by ``orders[layer]``, and the
    pruned weights' picture; the layer is restored afterwards."""
    from torch import nn

    from .engine import evaluate
    from .sparsity import _param, pruned, weight_picture

    device = next(model.parameters()).device
    with pruned(model, layer, percent, orders[layer]):
        _, acc = evaluate(model, loader, nn.CrossEntropyLoss(), device)
        picture = weight_picture(_param(model, layer)[1])
    return acc, picture


def pruning_explorer_figure(model, orders: Mapping[str, "object"], loader, percent: int = 0,
                            note: str | None = None, accuracy=None):
    """The pruning explorer's first view (its first layer at ``percent`` %) as a plain figure, for the
    static book: no widget is created. ``accuracy(layer, percent)``, when given, supplies the test
    accuracies (e.g. :func:`cifar_utils.sparsity.pruning_accuracy`, read from a published run) instead of
    measuring them on ``loader``."""
    from .plots import plot_pruned_weights
    from .sparsity import _param, pruned, weight_picture

    if not orders:
        raise ValueError("no layers to prune: give at least one layer's pruning order")
    layer = next(iter(orders))
    before = weight_picture(_param(model, layer)[1])
    if accuracy is not None:
        base_acc, acc = accuracy(layer, 0), accuracy(layer, percent)
        with pruned(model, layer, percent, orders[layer]):
            after = weight_picture(_param(model, layer)[1])
    else:
        base_acc, _ = _pruned_accuracy(model, orders, loader, layer, 0)
        acc, after = _pruned_accuracy(model, orders, loader, layer, percent)
    return plot_pruned_weights(before, after, f"{layer}: {percent}% pruned by DessiLBI's order", note,
                               accuracy=(base_acc, acc))


def pruning_explorer(model, orders, loader, percent: int = 0, note: str | None = None) -> PruningExplorer:
    """A :class:`PruningExplorer`; display ``explorer.widget`` in a notebook cell."""
    return PruningExplorer(model, orders, loader, percent, note)
