"""The chapters' figures, drawn from run histories (lists of per-epoch dicts, accuracies in percent).

Each function returns the matplotlib Figure; a notebook displays it. Nothing here trains.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from .engine import Run


def _series(run: Run, key: str) -> tuple[list[int], list[float]]:
    rows = [r for r in run.history if r.get(key) is not None]
    return [r["epoch"] for r in rows], [r[key] for r in rows]


def _epoch_axis(fig: Figure) -> None:
    """Whole-number epoch ticks, and markers on short curves so a 2-epoch run still shows its points."""
    for ax in fig.axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        for line in ax.lines:
            if 0 < len(line.get_xdata()) <= 12 and line.get_marker() in (None, "None", ""):
                line.set_marker(".")


def _title(title: str, note: str | None) -> str:
    return f"{title}\n({note})" if note else title


def plot_training(run: Run, title: str = "", note: str | None = None) -> Figure:
    """Train and test loss (left) and accuracy (right) per epoch, the learning rate on a second axis."""
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 3.8))
    for split, style in (("train", "-"), ("test", "--")):
        ax_loss.plot(*_series(run, f"{split}_loss"), style, label=f"{split} loss")
        ax_acc.plot(*_series(run, f"{split}_acc"), style, label=f"{split} accuracy")
    ax_loss.set(xlabel="epoch", ylabel="loss", yscale="log")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)")
    for ax in (ax_loss, ax_acc):
        lr_ax = ax.twinx()
        lr_ax.plot(*_series(run, "lr"), ":", color="grey", label="learning rate")
        lr_ax.set(ylabel="learning rate", yscale="log")
        lines = ax.get_legend_handles_labels()
        lr_lines = lr_ax.get_legend_handles_labels()
        ax.legend(lines[0] + lr_lines[0], lines[1] + lr_lines[1], fontsize=8, loc="best")
        ax.grid(alpha=0.3)
    fig.suptitle(_title(title or f"Training {run.config.model}", note))
    _epoch_axis(fig)
    fig.tight_layout()
    return fig


def plot_test_error(runs: Mapping[str, Run], title: str = "Test error", note: str | None = None) -> Figure:
    """All runs' test-error curves on one plot (log scale)."""
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for label, run in runs.items():
        epochs, acc = _series(run, "test_acc")
        ax.plot(epochs, [100.0 - a for a in acc], label=label)
    ax.set(xlabel="epoch", ylabel="test error (%)", yscale="log", title=_title(title, note))
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    _epoch_axis(fig)
    fig.tight_layout()
    return fig


def plot_sweep(runs: Mapping[str, Run], title: str, note: str | None = None, log_loss: bool = True) -> Figure:
    """One sweep: train (upper row) and test (lower row) loss and accuracy per epoch, a line per variant."""
    fig, axes = plt.subplots(2, 2, figsize=(11, 7), sharex=True)
    for row, split in enumerate(("train", "test")):
        for label, run in runs.items():
            axes[row, 0].plot(*_series(run, f"{split}_loss"), label=label)
            axes[row, 1].plot(*_series(run, f"{split}_acc"), label=label)
        axes[row, 0].set(ylabel=f"{split} loss", yscale="log" if log_loss else "linear")
        axes[row, 1].set(ylabel=f"{split} accuracy (%)")
    for ax in axes.flat:
        ax.grid(alpha=0.3)
    for ax in axes[1]:
        ax.set_xlabel("epoch")
    axes[0, 1].legend(fontsize=8)
    fig.suptitle(_title(title, note))
    _epoch_axis(fig)
    fig.tight_layout()
    return fig


def plot_error_vs_params(table, groups: Mapping[str, Sequence[str]], note: str | None = None,
                         column: str = "reproduced_error") -> Figure:
    """Error against parameter count (log x), reported (hollow) and reproduced (filled), with each
    comparison group joined by a line."""
    data = table.set_index("model")
    fig, ax = plt.subplots(figsize=(8, 5))
    for i, (group, members) in enumerate(groups.items()):
        members = [m for m in members if m in data.index]
        color = f"C{i}"
        x = [data.loc[m, "params_m"] for m in members]
        ax.plot(x, [data.loc[m, "reported_error"] for m in members], "o--", mfc="none", color=color, alpha=0.6)
        ax.plot(x, [data.loc[m, column] for m in members], "o-", color=color, label=group)
    for m in data.index:
        ax.annotate(m, (data.loc[m, "params_m"], data.loc[m, column]), fontsize=7,
                    xytext=(3, 3), textcoords="offset points")
    ax.set(xscale="log", xlabel="parameters (millions)", ylabel="test error (%)",
           title=_title("Error against size: filled = reproduced, hollow = reported", note))
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


METRICS = ("train_loss", "train_acc", "test_loss", "test_acc", "lr", "images_per_s")


def plot_metric(runs: Mapping[str, Run], metric: str = "test_acc", log: bool = False, ax=None) -> Figure:
    """One history column of several runs against the epoch (the interactive explorer draws this)."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
    if ax is None:
        fig, ax = plt.subplots(figsize=(8, 4))
    else:
        fig = ax.figure
    for label, run in runs.items():
        ax.plot(*_series(run, metric), label=label)
    ax.set(xlabel="epoch", ylabel=metric.replace("_", " "), yscale="log" if log else "linear")
    ax.grid(alpha=0.3)
    if runs:
        ax.legend(fontsize=8)
    _epoch_axis(fig)
    return fig


# --- chapter 6: DessiLBI -----------------------------------------------------------------------------

def plot_regularization_path(path, runs: Mapping[str, Run] | None = None, title: str = "Regularisation path",
                             note: str | None = None) -> Figure:
    """SLBI's path: per layer the fraction of filters (conv) / weights (fc) in Gamma's support against
    epoch (left); the test accuracy of the sparse model W* against epoch (right), beside the test
    accuracy of the full trained weights of ``runs`` (label -> Run) when given.

    ``path`` is :meth:`cifar_utils.sparsity.SLBIPath.frame` (one column per layer, plus
    ``sparse_test_acc``)."""
    fig, (ax_frac, ax_acc) = plt.subplots(1, 2, figsize=(11, 3.8))
    layers = [c for c in path.columns if c not in ("sparse_test_acc", "sparse_test_loss")]
    for layer in layers:
        ax_frac.plot(path.index, 100.0 * path[layer], label=layer.removesuffix(".weight"))
    ax_frac.set(xlabel="epoch", ylabel="selected (% of filters / weights)", ylim=(-3, 103))
    ax_frac.legend(fontsize=8, ncol=2 if len(layers) > 6 else 1)
    if "sparse_test_acc" in path:
        ax_acc.plot(path.index, path["sparse_test_acc"], label="W* (support of Gamma only)")
    for label, run in (runs or {}).items():
        ax_acc.plot(*_series(run, "test_acc"), "--", label=f"{label}: full weights W")
    ax_acc.set(xlabel="epoch", ylabel="test accuracy (%)")
    ax_acc.legend(fontsize=8)
    for ax in (ax_frac, ax_acc):
        ax.grid(alpha=0.3)
    fig.suptitle(_title(title, note))
    _epoch_axis(fig)
    fig.tight_layout()
    return fig


def plot_pruned_weights(before, after, title: str, note: str | None = None, accuracy: tuple[float, float] | None = None,
                        axes=None) -> Figure:
    """A layer's weights before and after pruning, one row per output filter (conv: its inputs and
    kernel flattened along the row) or the fc matrix; pruned rows / entries show as zero (white).

    ``before`` / ``after``: 2-D arrays (:func:`cifar_utils.sparsity.weight_picture`);
    ``accuracy``: (before, after) test accuracies for the panel titles."""
    import numpy as np

    if axes is None:
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.6), layout="constrained")
    fig = axes[0].figure
    limit = float(np.abs(before).max()) or 1.0
    for ax, data, name, acc in zip(axes, (before, after), ("before", "after"),
                                   accuracy if accuracy is not None else (None, None)):
        ax.clear()
        image = ax.imshow(data, cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto", interpolation="nearest")
        kept = int((np.abs(data).sum(axis=1) > 0).sum())
        label = f"{name} pruning: {kept}/{data.shape[0]} rows non-zero"
        if acc is not None:
            label += f"\ntest accuracy {acc:.2f}%"
        ax.set(title=label, xlabel="inputs x kernel (flattened)", ylabel="output filter / unit")
    if not getattr(fig, "_has_colorbar", False):
        fig.colorbar(image, ax=list(axes), shrink=0.8, label="weight")
        fig._has_colorbar = True
    fig.suptitle(_title(title, note))
    return fig
