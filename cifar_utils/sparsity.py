"""Chapter 6's toolbox: the sparse model W*, the regularisation path and pruning (uses the engine).

SLBI (:mod:`cifar_utils.optim.slbi`) couples each conv / fc weight W to a sparse Gamma whose support
grows along training. This module reads that structure:

* :func:`masked` / :func:`sparse_model` -- W* = W masked by Gamma's support (whole filters of a conv,
  single entries of an fc weight), to evaluate without changing the trained weights;
* :func:`support_fractions` -- the fraction of non-zero filters (conv) / weights (fc) per layer;
* :class:`SLBIPath` -- a callback recording, after every epoch, each layer's support fraction, the
  first epoch each filter / weight entered the support, and the test accuracy of W*;
* :func:`pruning_order`, :func:`keep_mask`, :func:`pruned`, :func:`pruning_table` -- DessiLBI's
  pruning: ``order_f = ||W_f||_2 - e_f`` (``|W| - e`` for fc entries) with ``e_f`` the first epoch
  filter f was selected (:data:`NEVER` if never); pruning p % of a layer zeroes the entries whose
  order is below the p-th percentile of the layer's orders (and a conv's matching bias entries),
  and :func:`pruned` restores the layer afterwards.

Where the state lives. V and Gamma are in the optimizer's state (``optimizer.state_dict()``, saved in
every checkpoint, so a resumed run continues exactly). The bookkeeping needed *after* training --
the final support, the first-selected epochs and the path -- is the :class:`SLBIPath` callback's
``state_dict``: the engine saves it in every checkpoint (resume) and in the finished run's
``callbacks.pt`` (kept even when the checkpoint is dropped), and :meth:`SLBIPath.from_run` reads it
back from a stored run. So train SLBI runs with an :class:`SLBIPath` callback: ``run(config,
callbacks=[SLBIPath()])``, or ``run_many(configs, callbacks=SLBIPathRecords())`` (what the plan does,
:mod:`cifar_utils.plan`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .engine import Callback, Run, TrainState, evaluate

#: The first-selected epoch of a filter that never entered Gamma's support (the authors' constant).
NEVER = 2000
CALLBACK_KEY = "slbi_path"


# --- W* ------------------------------------------------------------------------------------------

def _param(model: nn.Module, layer: str) -> tuple[str, nn.Parameter]:
    """The weight named ``layer`` (``"conv3"`` or ``"conv3.weight"``)."""
    params = dict(model.named_parameters())
    name = layer if layer in params else f"{layer}.weight"
    if name not in params:
        weights = [n for n, p in params.items() if p.dim() in (2, 4)]
        raise ValueError(f"no layer {layer!r} in the model; conv/fc weights: {', '.join(weights)}")
    return name, params[name]


def entry_mask(weight: Tensor, support: Tensor) -> Tensor:
    """``support`` (per filter for a conv, per entry for fc) broadcast to ``weight``'s shape."""
    support = support.to(weight.device, torch.bool)
    if weight.dim() == 4:
        if support.shape != (weight.shape[0],):
            raise ValueError(f"a conv support needs one flag per filter ({weight.shape[0]}), got {tuple(support.shape)}")
        return support[:, None, None, None].expand_as(weight)
    if support.shape != weight.shape:
        raise ValueError(f"an fc support needs the weight's shape {tuple(weight.shape)}, got {tuple(support.shape)}")
    return support


@contextlib.contextmanager
def masked(model: nn.Module, support: Mapping[str, Tensor]) -> Iterator[nn.Module]:
    """Within the block ``model`` is W*: each weight named in ``support`` zeroed outside it; the
    trained weights are restored on exit (also on an exception)."""
    saved = {}
    try:
        with torch.no_grad():
            for name, keep in support.items():
                name, p = _param(model, name)
                saved[name] = p.detach().clone()
                p.mul_(entry_mask(p, keep).to(p.dtype))
        yield model
    finally:
        _restore(model, saved)


def sparse_model(model: nn.Module, support: Mapping[str, Tensor]) -> nn.Module:
    """A copy of ``model`` holding W* (``model`` itself is left as it is)."""
    import copy

    out = copy.deepcopy(model)
    with torch.no_grad():
        for name, keep in support.items():
            name, p = _param(out, name)
            p.mul_(entry_mask(p, keep).to(p.dtype))
    return out


def support_fractions(support: Mapping[str, Tensor]) -> dict[str, float]:
    """Fraction of selected filters (conv) / weights (fc) per layer."""
    return {name: float(s.float().mean()) for name, s in support.items()}


def _restore(model: nn.Module, saved: Mapping[str, Tensor]) -> None:
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in saved.items():
            params[name].copy_(value)


# --- the path --------------------------------------------------------------------------------------

class SLBIPath(Callback):
    """Per-epoch bookkeeping of an SLBI run; ``state_dict`` survives resume and the store.

    After training (or after ``run(config, callbacks=[cb])`` loaded a stored run, or
    :meth:`from_run`): ``support`` (name -> bool per filter / entry, Gamma's final support),
    ``first_epoch`` (name -> the first epoch, counted from 1, each filter / entry was in the
    support; :data:`NEVER` if never) and ``path`` (one dict per epoch: ``epoch``, ``fractions``
    {layer: fraction selected}, and with ``evaluate_sparse`` the test ``sparse_test_loss`` /
    ``sparse_test_acc`` of W*).
    """

    key = CALLBACK_KEY

    def __init__(self, evaluate_sparse: bool = True) -> None:
        self.evaluate_sparse = evaluate_sparse
        self.support: dict[str, Tensor] = {}
        self.first_epoch: dict[str, Tensor] = {}
        self.path: list[dict[str, Any]] = []

    @classmethod
    def from_run(cls, run: Run) -> "SLBIPath":
        """The bookkeeping a stored run saved (``ValueError`` if it was trained without this callback)."""
        states = run.callback_states or {}
        if CALLBACK_KEY not in states:
            raise ValueError(f"run {run.name} has no {CALLBACK_KEY!r} state: train SLBI runs with "
                             "callbacks=[SLBIPath()] (cifar_utils.engine.run)")
        cb = cls()
        cb.load_state_dict(states[CALLBACK_KEY])
        return cb

    def on_fit_start(self, state: TrainState) -> None:
        if not callable(getattr(state.optimizer, "support", None)):
            raise TypeError(f"SLBIPath needs an SLBI optimizer (optimizer='slbi' or 'slbi_adam'), "
                            f"got {type(state.optimizer).__name__}")
        if not self.first_epoch:  # a fresh run (on resume the checkpoint's state is already loaded)
            self.first_epoch = {n: torch.full(s.shape, NEVER, dtype=torch.int32)
                                for n, s in state.optimizer.support().items()}

    def on_epoch_end(self, state: TrainState, record: dict) -> None:
        epoch = int(record["epoch"])
        self.support = {n: s.cpu() for n, s in state.optimizer.support().items()}
        for name, s in self.support.items():
            first = self.first_epoch[name]
            self.first_epoch[name] = torch.where(s & (first == NEVER), torch.full_like(first, epoch), first)
        entry: dict[str, Any] = {"epoch": epoch, "fractions": support_fractions(self.support)}
        if self.evaluate_sparse:
            with masked(state.model, self.support):
                loss, acc = evaluate(state.model, state.loaders.test, state.loss_fn, state.device)
            entry.update(sparse_test_loss=loss, sparse_test_acc=acc)
        self.path.append(entry)

    def state_dict(self) -> dict[str, Any]:
        return {"support": dict(self.support), "first_epoch": dict(self.first_epoch), "path": list(self.path),
                "evaluate_sparse": self.evaluate_sparse}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.support = dict(state["support"])
        self.first_epoch = dict(state["first_epoch"])
        self.path = list(state["path"])
        self.evaluate_sparse = bool(state.get("evaluate_sparse", True))

    # -- views ----------------------------------------------------------------------------------------
    def frame(self):
        """The path as a DataFrame indexed by epoch: one column per layer's selected fraction, plus
        ``sparse_test_acc`` / ``sparse_test_loss`` when recorded."""
        import pandas as pd

        rows = [{"epoch": e["epoch"], **e["fractions"],
                 **{k: e[k] for k in ("sparse_test_loss", "sparse_test_acc") if k in e}} for e in self.path]
        return pd.DataFrame(rows).set_index("epoch")

    def order(self, model: nn.Module, layer: str) -> Tensor:
        """The pruning order of ``layer``'s filters (conv) / entries (fc) for ``model``'s weights."""
        name, p = _param(model, layer)
        if not self.first_epoch:
            raise ValueError("no path recorded: the run was trained without callbacks=[SLBIPath()] (or not yet)")
        if name not in self.first_epoch:
            raise ValueError(f"{name} was not coupled to a Gamma; coupled: {', '.join(self.first_epoch)}")
        return pruning_order(p.detach().cpu(), self.first_epoch[name])


@dataclass(frozen=True)
class SLBIPathRecords:
    """The callbacks factory of an SLBI run: ``run_many(configs, callbacks=SLBIPathRecords())`` gives each
    run an :class:`SLBIPath`. Picklable (sent to worker processes); :meth:`has_records` tells whether a
    stored run holds the path (``run_many`` retrains a finished run that does not, see
    :mod:`cifar_utils.engine.batch`)."""

    evaluate_sparse: bool = True

    def __call__(self, config) -> list[Callback]:
        return [SLBIPath(self.evaluate_sparse)]

    def has_records(self, run: Run) -> bool:
        state = (run.callback_states or {}).get(CALLBACK_KEY)
        return state is not None and bool(state.get("path")) and (
            not self.evaluate_sparse or "sparse_test_acc" in state["path"][0])


# --- pruning ---------------------------------------------------------------------------------------

def pruning_order(weight: Tensor, first_epoch: Tensor) -> Tensor:
    """``||W_f||_2 - e_f`` per output filter of a conv weight, ``|W| - e`` per entry of an fc weight:
    filters selected early come last, never-selected ones (e = :data:`NEVER`) first, ties by size."""
    # float64: in float32, norm - 2000 keeps only ~1e-4 of the norm and makes ties of distinct filters
    first_epoch = first_epoch.to(weight.device, torch.float64)
    if weight.dim() == 4:
        size = weight.detach().double().reshape(weight.shape[0], -1).norm(dim=1)
    elif weight.dim() == 2:
        size = weight.detach().double().abs()
    else:
        raise ValueError(f"pruning orders exist for conv (4-D) and fc (2-D) weights, got shape {tuple(weight.shape)}")
    if first_epoch.shape != size.shape:
        raise ValueError(f"first_epoch has shape {tuple(first_epoch.shape)}, expected {tuple(size.shape)}")
    return size - first_epoch


def keep_mask(order: Tensor, percent: float) -> Tensor:
    """True where an entry survives pruning ``percent`` % of the layer: its order is not below the
    ``percent``-th percentile (numpy's, linear interpolation) of the layer's orders."""
    if not 0 <= percent <= 100:
        raise ValueError(f"percent must be in [0, 100], got {percent!r}")
    threshold = float(np.percentile(order.detach().cpu().numpy(), percent))
    return order >= threshold


@contextlib.contextmanager
def pruned(model: nn.Module, layer: str, percent: float, order: Tensor) -> Iterator[Tensor]:
    """Within the block ``layer`` has ``percent`` % of its filters / entries zeroed by ``order`` (and
    a conv's bias entries of the pruned filters); yields the keep mask; restores the layer on exit."""
    name, weight = _param(model, layer)
    keep = keep_mask(order, percent).to(weight.device)
    bias_name = name[: -len("weight")] + "bias" if name.endswith("weight") else None
    params = dict(model.named_parameters())
    bias = params.get(bias_name) if weight.dim() == 4 else None
    saved = {name: weight.detach().clone()}
    if bias is not None:
        saved[bias_name] = bias.detach().clone()
    try:
        with torch.no_grad():
            weight.mul_(entry_mask(weight, keep).to(weight.dtype))
            if bias is not None:
                bias.mul_(keep.to(bias.dtype))
        yield keep
    finally:
        _restore(model, saved)


def test_loader(config, device: str | torch.device = "cpu", lazy: bool = False):
    """The (unaugmented) test loader of a run's config, to evaluate a trained or pruned model. With
    ``lazy=True``, a :class:`LazyLoader` that loads the data the first time it is iterated (a chapter whose
    numbers all come from published runs never loads it)."""
    if lazy:
        return LazyLoader(config, device)
    from .data import make_loaders
    from .engine.datasets import load_for_config

    ds = load_for_config(config)
    return make_loaders(ds, batch_size=config.batch_size, device=device, augment=False, seed=config.seed).test


class LazyLoader:
    """:func:`test_loader` of ``config``, loaded on first use (iteration or ``len``), then kept."""

    def __init__(self, config, device: str | torch.device = "cpu") -> None:
        self.config, self.device, self._loader = config, device, None

    @property
    def loaded(self) -> bool:
        return self._loader is not None

    def _get(self):
        if self._loader is None:
            self._loader = test_loader(self.config, self.device)
        return self._loader

    def __iter__(self):
        return iter(self._get())

    def __len__(self) -> int:
        return len(self._get())


def pruning_table(model: nn.Module, layer: str, order: Tensor, loader, percents: Sequence[float],
                  reported: Mapping[float, float] | None = None):
    """Test accuracy of ``model`` with ``layer`` pruned at each percentage (the model is restored).

    Columns: ``kept`` (filters / entries left), ``test_acc`` (percent), ``reported`` (when given)."""
    import pandas as pd

    device = next(model.parameters()).device
    loss_fn = nn.CrossEntropyLoss()
    rows = []
    for percent in percents:
        with pruned(model, layer, percent, order) as keep:
            _, acc = evaluate(model, loader, loss_fn, device)
        row = {"pruned %": percent, "kept": int(keep.sum()), "test_acc": acc}
        if reported is not None:
            row["reported"] = reported.get(percent)
        rows.append(row)
    return pd.DataFrame(rows).set_index("pruned %")


def weight_picture(weight: Tensor) -> np.ndarray:
    """A layer's weights as a 2-D array for display: one row per output filter (conv, its inputs and
    kernel flattened) or the fc matrix itself."""
    w = weight.detach().float().cpu().clone()  # a copy: the layer may be restored afterwards
    return w.reshape(w.shape[0], -1).numpy()


# --- pruning tables as derived results (read from published runs, computed for local ones) ------------------

#: The percentages a publication measures for every coupled layer (with the chapter's ``prune_percents``): Table 3
#: of any layer, the pruning explorer's static figure (50 %) and the claims' 60 % read them.
PUBLISHED_PERCENTS: tuple[int, ...] = tuple(range(0, 101, 10))


def pruning_name(layer: str) -> str:
    """The derived result holding a layer's pruning table: ``pruning-conv3``."""
    return f"pruning-{layer.removesuffix('.weight')}"


def coupled_layers(run: Run) -> list[str]:
    """The layers SLBI coupled to a Gamma in ``run`` (its recorded path's), without ``.weight``."""
    return [name.removesuffix(".weight") for name in SLBIPath.from_run(run).first_epoch]


def pruning_data(run: Run, layer: str, percents: Sequence[float], loader=None) -> dict[str, Any]:
    """``run``'s pruning table of ``layer`` at ``percents`` as JSON data (``layer``, ``percents``, ``kept``,
    ``test_acc``, ``test_images``; the rows of ``percents``, in their order): read from the stored table of a
    published run that holds these percentages (:func:`cifar_utils.engine.bundle.derived`), else measured on
    the weights with ``loader`` (default: the run's test set, loaded only then). What the chapter, the claims
    and ``python -m cifar_utils.publish`` use."""
    from .engine.bundle import derived

    wanted = [float(p) for p in percents]

    def compute() -> dict[str, Any]:
        model = run.model
        if model is None:
            raise ValueError(f"run {run.name} has no stored weights to prune")
        order = SLBIPath.from_run(run).order(model, layer)
        ld = loader if loader is not None else test_loader(run.config, device=next(model.parameters()).device)
        table = pruning_table(model, layer, order, ld, wanted)
        images = sum(int(y.shape[0]) for _, y in ld)
        return {"layer": layer.removesuffix(".weight"), "percents": wanted, "kept": [int(k) for k in table["kept"]],
                "test_acc": [float(a) for a in table["test_acc"]], "test_images": images}

    def covers(data: Any) -> bool:
        return isinstance(data, dict) and set(wanted) <= {float(p) for p in data.get("percents", [])}

    data = derived(run, pruning_name(layer), compute, covers)
    rows = {float(p): (k, a) for p, k, a in zip(data["percents"], data["kept"], data["test_acc"])}
    return {**data, "percents": wanted, "kept": [rows[p][0] for p in wanted], "test_acc": [rows[p][1] for p in wanted]}


def pruning_results(run: Run, layer: str, percents: Sequence[float], loader=None,
                    reported: Mapping[float, float] | None = None):
    """:func:`pruning_data` as :func:`pruning_table`'s frame (index ``pruned %``; ``kept``, ``test_acc`` and,
    when given, ``reported``), in the order of ``percents``."""
    import pandas as pd

    data = pruning_data(run, layer, percents, loader)
    rows = []
    for p, kept, acc in zip(percents, data["kept"], data["test_acc"]):
        row = {"pruned %": p, "kept": kept, "test_acc": acc}
        if reported is not None:
            row["reported"] = reported.get(p)
        rows.append(row)
    return pd.DataFrame(rows).set_index("pruned %")


def pruning_accuracy(run: Run, layer: str, percent: float, loader=None) -> float:
    """Test accuracy of ``run`` with ``percent`` % of ``layer`` pruned (:func:`pruning_data`)."""
    return float(pruning_results(run, layer, [percent], loader).iloc[0]["test_acc"])
