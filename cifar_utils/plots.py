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


def legend_label(label: str, run: Run, lr: bool = False) -> str:
    """A legend entry: the variant's label, with the run's learning rate when ``lr`` (``"SGD (lr 0.1)"``)."""
    return f"{label} (lr {run.config.lr:g})" if lr else label


def plot_sweep(runs: Mapping[str, Run], title: str, note: str | None = None, log_loss: bool = True,
               lr_in_legend: bool = False) -> Figure:
    """One sweep: train (upper row) and test (lower row) loss and accuracy per epoch, a line per variant.
    ``lr_in_legend`` adds each run's learning rate to its legend entry (the optimizer sweep, where
    every optimizer has its own)."""
    fig, axes = plt.subplots(2, 2, figsize=(11, 7), sharex=True)
    for row, split in enumerate(("train", "test")):
        for label, run in runs.items():
            label = legend_label(label, run, lr_in_legend)
            axes[row, 0].plot(*_series(run, f"{split}_loss"), label=label)
            axes[row, 1].plot(*_series(run, f"{split}_acc"), label=label)
    return _finish_loss_acc_grid(fig, axes, _title(title, note), log_loss)


def _finish_loss_acc_grid(fig: Figure, axes, title: str, log_loss: bool) -> Figure:
    """The labels, grid, legend and title of a 2x2 grid of train/test (rows) loss/accuracy (columns) per epoch."""
    for row, split in enumerate(("train", "test")):
        axes[row, 0].set(ylabel=f"{split} loss", yscale="log" if log_loss else "linear")
        axes[row, 1].set(ylabel=f"{split} accuracy (%)")
    for ax in axes.flat:
        ax.grid(alpha=0.3)
    for ax in axes[1]:
        ax.set_xlabel("epoch")
    axes[0, 1].legend(fontsize=8)
    fig.suptitle(title)
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
           title=_title("Error against size: filled = reproduced (best epoch), hollow = reported", note))
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


# --- chapter 4: class activation maps and the best model ------------------------------------

def _cam_title(item, classes) -> str:
    text = f"true: {classes[item.label]}\npred: {classes[item.pred]} ({100 * item.confidence:.0f}%)"
    if item.target != item.pred:
        text += f"\nmap of: {classes[item.target]}"
    return text


def plot_cam_gallery(items, classes, note: str | None = None, scale: int = 4,
                     title: str = "Grad-CAM of the predicted class") -> Figure:
    """Figure 13: one column per class, its images down the column, each the CAM overlay (enlarged
    ``scale`` times) titled with the true class, the prediction and its confidence."""
    by_class = {c: [it for it in items if it.label == c] for c in range(len(classes))}
    by_class = {c: its for c, its in by_class.items() if its}
    rows = max((len(v) for v in by_class.values()), default=1)
    cols = max(len(by_class), 1)
    fig, axes = plt.subplots(rows, cols, figsize=(1.75 * cols, 2.15 * rows + 0.6), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for col, (c, its) in enumerate(by_class.items()):
        for row, it in enumerate(its):
            ax = axes[row, col]
            ax.imshow(it.overlay(scale))
            ok = it.pred == it.label
            ax.set_title(_cam_title(it, classes), fontsize=7, color="black" if ok else "firebrick")
    fig.suptitle(_title(title, note), fontsize=10)
    fig.tight_layout()
    return fig


def plot_misclassified(pairs, classes, note: str | None = None, scale: int = 4) -> Figure:
    """Misclassified images: the image, the CAM of the predicted (wrong) class, the CAM of the true class."""
    n = max(len(pairs), 1)
    fig, axes = plt.subplots(n, 3, figsize=(6.3, 2.3 * n + 0.6), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for row, (as_pred, as_true) in enumerate(pairs):
        axes[row, 0].imshow(as_pred.image if scale == 1 else _upsample(as_pred.image, scale))
        axes[row, 0].set_title(f"true: {classes[as_pred.label]}", fontsize=8)
        axes[row, 1].imshow(as_pred.overlay(scale))
        axes[row, 1].set_title(f"map of predicted: {classes[as_pred.pred]}\n({100 * as_pred.confidence:.0f}%)",
                               fontsize=8, color="firebrick")
        axes[row, 2].imshow(as_true.overlay(scale))
        axes[row, 2].set_title(f"map of true: {classes[as_true.target]}", fontsize=8)
    if not pairs:
        axes[0, 1].text(0.5, 0.5, "no misclassified image among those searched", ha="center", va="center")
    fig.suptitle(_title("Misclassified: where the network looked for each class", note), fontsize=10)
    fig.tight_layout()
    return fig


def _upsample(array, scale: int):
    from .cam import upsample

    return upsample(array, scale)


def plot_cam_methods(images, maps: Mapping[str, object], labels: Mapping[str, str], titles: Sequence[str] = (),
                     note: str | None = None, scale: int = 4) -> Figure:
    """The same images (rows) under each CAM method (columns), first column the image itself."""
    from .cam import overlay

    n, methods = len(images), list(maps)
    fig, axes = plt.subplots(max(n, 1), len(methods) + 1, figsize=(1.9 * (len(methods) + 1), 1.95 * max(n, 1) + 0.6),
                             squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i in range(n):
        axes[i, 0].imshow(_upsample(images[i], scale))
        if i < len(titles):
            axes[i, 0].set_title(titles[i], fontsize=8)
        for j, m in enumerate(methods, start=1):
            axes[i, j].imshow(overlay(images[i], maps[m][i], scale))
            if i == 0:
                axes[i, j].set_title(labels.get(m, m), fontsize=9)
    fig.suptitle(_title("The same images under each method (map of the predicted class)", note), fontsize=10)
    fig.tight_layout()
    return fig


def plot_cutout_comparison(runs: Mapping[str, Run], note: str | None = None,
                           title: str = "WRN-28-10 with and without Cutout") -> Figure:
    """Figure 14: test error (left, log scale) and training loss (right, log scale) per epoch, a line per run."""
    fig, (ax_err, ax_loss) = plt.subplots(1, 2, figsize=(11, 3.8))
    for label, run in runs.items():
        epochs, acc = _series(run, "test_acc")
        ax_err.plot(epochs, [100.0 - a for a in acc], label=label)
        ax_loss.plot(*_series(run, "train_loss"), label=label)
    ax_err.set(xlabel="epoch", ylabel="test error (%)", yscale="log")
    ax_loss.set(xlabel="epoch", ylabel="training loss", yscale="log")
    for ax in (ax_err, ax_loss):
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.suptitle(_title(title, note))
    _epoch_axis(fig)
    fig.tight_layout()
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


def plot_augmentations(rows: Mapping[str, object], dataset: str = "cifar10", scale: int = 3) -> Figure:
    """Training images as the network sees them: one row per stage (original, crop + flip, + Cutout),
    the same images in every row (normalised tensors, shown de-normalised)."""
    from .data import to_images

    names = list(rows)
    arrays = {k: to_images(v, dataset) for k, v in rows.items()}
    n = len(next(iter(arrays.values()))) if arrays else 0
    fig, axes = plt.subplots(len(names), max(n, 1), figsize=(1.3 * max(n, 1), 1.45 * len(names) + 0.4), squeeze=False)
    for r, name in enumerate(names):
        for c in range(n):
            ax = axes[r, c]
            ax.imshow(_upsample(arrays[name][c], scale), cmap="gray" if arrays[name].ndim == 3 else None)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r, 0].set_ylabel(name, fontsize=8)
    fig.suptitle("Training augmentation: the same images, as the loader makes them", fontsize=10)
    fig.tight_layout()
    return fig


def plot_cam_explorer(item, classes, top: Sequence[tuple[str, float]], method_label: str = "",
                      scale: int = 4) -> Figure:
    """The explorer's view: the image, the overlay of the chosen class's map, and the top predictions."""
    fig, (ax_img, ax_cam, ax_top) = plt.subplots(1, 3, figsize=(9.5, 3.2),
                                                 gridspec_kw={"width_ratios": [1, 1, 1.2]})
    ax_img.imshow(_upsample(item.image, scale))
    ax_img.set_title(f"test image {item.index}\ntrue: {classes[item.label]}", fontsize=9)
    ax_cam.imshow(item.overlay(scale))
    ax_cam.set_title(f"{method_label or item.method} map of: {classes[item.target]}", fontsize=9)
    for ax in (ax_img, ax_cam):
        ax.axis("off")
    names = [name for name, _ in top][::-1]
    values = [100 * p for _, p in top][::-1]
    ax_top.barh(names, values, color=["C0" if nm != classes[item.label] else "C2" for nm in names])
    ax_top.set(xlim=(0, 100), xlabel="probability (%)", title="top predictions")
    ax_top.grid(alpha=0.3, axis="x")
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


def plot_seed_curves(runs: Mapping[str, Sequence[Run]], title: str, note: str | None = None, log_loss: bool = True,
                     included=None) -> Figure:
    """Like :func:`plot_sweep` for labels with several seeds: train (upper row) and test (lower row) loss and
    accuracy per epoch, each seed a thin line and the mean over the seeds a thick one, a colour per label.
    ``included(run)`` (default :func:`cifar_utils.replicates.included`) picks the runs the mean is over; the
    others are drawn dotted."""
    import numpy as np

    from .replicates import included as default_included

    included = included or default_included
    fig, axes = plt.subplots(2, 2, figsize=(11, 7), sharex=True)
    for i, (label, group) in enumerate(runs.items()):
        color = f"C{i}"
        used = [r for r in group if included(r)]
        for row, split in enumerate(("train", "test")):
            for col, key in enumerate((f"{split}_loss", f"{split}_acc")):
                ax = axes[row, col]
                for r in group:
                    ax.plot(*_series(r, key), color=color, lw=0.7, alpha=0.35, ls="-" if r in used else ":")
                series = [_series(r, key)[1] for r in used]
                n = min((len(s) for s in series), default=0)
                if n:
                    mean = np.mean([s[:n] for s in series], axis=0)
                    epochs = _series(used[0], key)[0][:n]
                    ax.plot(epochs, mean, color=color, lw=2,
                            label=f"{label}, mean of {len(used)} seed{'s' if len(used) != 1 else ''}")
    return _finish_loss_acc_grid(fig, axes, _title(title + " (thin: each seed; thick: their mean)", note), log_loss)
