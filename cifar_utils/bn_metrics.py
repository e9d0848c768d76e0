"""Chapter 5: how BatchNorm changes the optimisation landscape (VGG-A with and without BN).

Measured during training through the engine's callbacks (no second training loop), following the
report (per step, along the training trajectory) and Santurkar et al. 2018 (along the gradient):

:class:`StepMetrics` (key ``"bn_step_metrics"``) records at every optimizer step ``s`` (1-based,
counted across resumes), with ``g_s`` the mini-batch gradient of the whole parameter vector at the
weights ``w_s`` the step starts from (before weight decay, gradient clipping and the optimizer):

=========================  ======================================================================
``loss``                   the mini-batch training loss at ``w_s`` (the report's "loss landscape")
``grad_norm``              ``||g_s||``
``update_norm``            ``||w_{s+1} - w_s||``, the step the optimizer took
``grad_change``            ``||g_s - g_{s-1}||`` (whole parameter vector)
``grad_change_last``       the same for the last linear layer's weight only: the report's
                           "gradient predictiveness"
``beta``                   ``||g_s - g_{s-1}|| / ||w_s - w_{s-1}||``: the report's
                           "beta-smoothness", a finite-difference estimate of the gradient's
                           Lipschitz constant along the trajectory (for plain SGD the denominator
                           is ``lr * ||g_{s-1}||``)
=========================  ======================================================================

The first step of a run has no predecessor: its ``grad_change*`` and ``beta`` are NaN. Consecutive
steps use *different* mini-batches (as in the report), so these values mix the change of the
weights with the change of the batch.

:class:`GradientProbe` (key ``"bn_probe"``) is the paper's own measurement: every ``every`` steps,
on the step's own mini-batch, from ``w_s`` it steps to ``w_s - eta * g_s`` for ``eta = f * lr``,
``f`` in ``factors`` (default 1/4 ... 4: an order of magnitude around the learning rate), and
records the loss there and ``||g(w_s - eta g_s) - g_s||``. Summaries per probe: the loss *spread*
(max - min over the etas and eta = 0), the largest gradient change, and the effective beta
``max_eta ||g(w_s - eta g_s) - g_s|| / ||eta g_s||``. The probe uses ``torch.autograd.grad`` (the
gradients the optimizer is about to use stay in ``p.grad``) and restores the weights, every buffer
(BN running statistics and their batch counters) and the RNG states, and never touches the
optimizer: on a CPU a probed run trains bit for bit like an unprobed one.

Storage: the values stay on the device during an epoch (no ``.item()`` per step) and are copied to
the CPU once per epoch in ``on_epoch_end``, i.e. just before the engine saves the epoch's checkpoint
with the callbacks' :meth:`state_dict`; so after a kill the run resumes with exactly the steps of
its checkpointed epochs. While training, the state also holds what the next step compares with
(the previous gradient: one copy of the parameter vector in the checkpoint); ``on_fit_end`` drops
it, so ``callbacks.pt`` of a finished run holds only the per-step values.

Run identity: the callbacks do not change training, so they are not part of the run's key; a
config finished in the store *without* these metrics (or with other probe settings) would be
loaded without them. :meth:`MetricsFactory.has_records` says whether a stored run holds them, so
:func:`cifar_utils.engine.run_many` (given the factory as ``callbacks``) moves such runs aside (never
deleting) and trains them again with the metrics.

Display: :func:`smooth` is a centred moving average over ``window`` steps that skips NaNs (the
window shrinks at the ends; ``window=1`` leaves the values unchanged). Bands (:func:`band`) smooth
each run first, then take the minimum and maximum across the learning rates at each step, over the
steps every run has. Numbers in :func:`ratio_table` / :func:`probe_table` use the raw values.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from .engine import Callback, Run, RunConfig, TrainState

STEP_KEY = "bn_step_metrics"
PROBE_KEY = "bn_probe"
STEP_FIELDS = ("loss", "grad_norm", "update_norm", "grad_change", "grad_change_last", "beta")
#: Multiples of the learning rate the probe steps along the gradient.
DEFAULT_FACTORS: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0)
#: The chapter's two networks and their labels.
MODELS: dict[str, str] = {"vgg_a": "VGG-A", "vgg_a_bn": "VGG-A + BN"}
#: What the explorer and :func:`band` can show: per-step fields, plus ``loss_change`` = ``abs(loss_s - loss_{s-1})``.
METRICS: dict[str, str] = {
    "loss": "training loss",
    "loss_change": "|loss change| between steps",
    "grad_change_last": "gradient predictiveness: ||grad change||, last layer",
    "grad_change": "||grad change||, all parameters",
    "beta": "beta-smoothness",
    "grad_norm": "||gradient||",
    "update_norm": "||weight update||",
}
PROBE_METRICS: dict[str, str] = {
    "loss_spread": "loss spread along the gradient",
    "grad_change_max": "max ||g(w - eta g) - g||",
    "beta_eff": "effective beta",
}


# --- helpers ---------------------------------------------------------------------------------

def _trainable(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def last_linear(model: nn.Module) -> str:
    """Name of the weight of the model's last ``nn.Linear`` (the layer whose gradient change is the
    report's "gradient predictiveness")."""
    names = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not names:
        raise ValueError(f"{type(model).__name__} has no nn.Linear layer; pass layer=<parameter name>")
    return f"{names[-1]}.weight" if names[-1] else "weight"


def _norm(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """L2 norm of the concatenation of ``tensors`` (a 0-d tensor on their device, no sync)."""
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(list(tensors))))


def _grads(params: Sequence[nn.Parameter]) -> list[torch.Tensor]:
    return [p.grad.detach() if p.grad is not None else torch.zeros_like(p) for p in params]


# --- per-step metrics ------------------------------------------------------------------------

class StepMetrics(Callback):
    """Per-step loss, gradient predictiveness and beta-smoothness (see the module doc)."""

    key = STEP_KEY

    def __init__(self, layer: str | None = None) -> None:
        self.layer = layer  # the last linear layer's weight by default
        self._reset()

    def _reset(self) -> None:
        self._steps: list[int] = []
        self._values: list[torch.Tensor] = []  # CPU float64 [n, len(STEP_FIELDS)] chunks, one per epoch
        self._rows: list[torch.Tensor] = []    # this epoch's rows, on the device
        self._row_steps: list[int] = []
        self._pending: list[torch.Tensor] | None = None
        self._prev_grads: list[torch.Tensor] | None = None  # g_{s-1}
        self._prev_update: torch.Tensor | None = None       # ||w_s - w_{s-1}||
        self._before: list[torch.Tensor] | None = None      # w_s, to measure the update
        self._layer_name: str | None = None

    def on_fit_start(self, state: TrainState) -> None:
        if state.resumed_from is None:  # a fresh run (a loaded checkpoint has set our state otherwise)
            self._reset()
        names = [n for n, p in state.model.named_parameters() if p.requires_grad]
        self._params = _trainable(state.model)
        self._layer_name = self.layer or last_linear(state.model)
        if self._layer_name not in names:
            raise ValueError(f"layer {self._layer_name!r} is not a trainable parameter; choose one of "
                             f"{', '.join(names)}")
        self._layer_index = names.index(self._layer_name)

    def after_backward(self, state: TrainState) -> None:
        grads = _grads(self._params)
        device = grads[0].device
        grad_norm = _norm(grads)
        nan = torch.full((), math.nan, device=device)
        if self._prev_grads is None:
            change = last = beta = nan
        else:
            if self._prev_grads[0].device != device:  # restored from a checkpoint on the CPU
                self._prev_grads = [t.to(device) for t in self._prev_grads]
                self._prev_update = self._prev_update.to(device) if self._prev_update is not None else None
            torch._foreach_sub_(self._prev_grads, grads)  # g_{s-1} - g_s, in place
            norms = torch._foreach_norm(self._prev_grads)
            change = torch.linalg.vector_norm(torch.stack(norms))
            last = norms[self._layer_index]
            beta = change / self._prev_update if self._prev_update is not None else nan
        if self._prev_grads is None:
            self._prev_grads = [g.clone() for g in grads]
        else:
            torch._foreach_copy_(self._prev_grads, grads)
        params = [p.detach() for p in self._params]
        if self._before is None or self._before[0].device != device:
            self._before = [p.clone() for p in params]
        else:
            torch._foreach_copy_(self._before, params)
        self._pending = [state.loss.detach(), grad_norm, change, last, beta]

    def after_step(self, state: TrainState) -> None:
        if self._pending is None:
            return
        torch._foreach_sub_(self._before, [p.detach() for p in self._params])  # w_s - w_{s+1}
        update = _norm(self._before)
        self._prev_update = update
        loss, grad_norm, change, last, beta = self._pending
        self._rows.append(torch.stack([t.to(torch.float64) for t in (loss, grad_norm, update, change, last, beta)]))
        self._row_steps.append(state.step)
        self._pending = None

    def _flush(self) -> None:
        """Copy this epoch's rows to the CPU (one device sync)."""
        if self._rows:
            self._values.append(torch.stack(self._rows).to("cpu", torch.float64))
            self._steps.extend(self._row_steps)
        self._rows, self._row_steps = [], []

    def on_epoch_end(self, state: TrainState, record: dict) -> None:
        self._flush()

    def on_fit_end(self, state: TrainState) -> None:
        self._flush()  # a diverged run's last partial epoch too
        self._prev_grads = self._prev_update = self._before = None  # only needed to go on training

    def values(self) -> torch.Tensor:
        return torch.cat(self._values) if self._values else torch.zeros((0, len(STEP_FIELDS)), dtype=torch.float64)

    def state_dict(self) -> dict[str, Any]:
        carry = None
        if self._prev_grads is not None:
            carry = {"prev_grads": [t.detach().cpu().clone() for t in self._prev_grads],
                     "prev_update": None if self._prev_update is None else self._prev_update.detach().cpu()}
        return {"version": 1, "fields": STEP_FIELDS, "layer": self._layer_name,
                "step": torch.tensor(self._steps, dtype=torch.int64), "values": self.values(), "carry": carry}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._reset()
        self._layer_name = state.get("layer")
        self._steps = [int(s) for s in state["step"]]
        if len(state["values"]):
            self._values = [state["values"].to(torch.float64)]
        carry = state.get("carry")
        if carry is not None:
            self._prev_grads = [t.clone() for t in carry["prev_grads"]]
            self._prev_update = carry["prev_update"]


# --- the paper's probe along the gradient ------------------------------------------------------

class GradientProbe(Callback):
    """Every ``every`` steps, measure the landscape along ``-g`` on the step's mini-batch without
    disturbing training (see the module doc)."""

    key = PROBE_KEY

    def __init__(self, every: int, factors: Sequence[float] = DEFAULT_FACTORS) -> None:
        if not (isinstance(every, int) and every >= 1):
            raise ValueError(f"every must be an integer >= 1 (probe every that many steps), got {every!r}")
        factors = tuple(float(f) for f in factors)
        if not factors or any(not (f > 0 and math.isfinite(f)) for f in factors):
            raise ValueError(f"factors must be positive finite multiples of the learning rate, got {factors!r}")
        self.every, self.factors = every, factors
        self._reset()

    def _reset(self) -> None:
        self._records: list[dict[str, Any]] = []  # CPU, flushed epochs
        self._pending: list[dict[str, Any]] = []  # this epoch, tensors on the device

    def on_fit_start(self, state: TrainState) -> None:
        if state.resumed_from is None:
            self._reset()

    def after_backward(self, state: TrainState) -> None:
        step = state.step + 1  # the step being taken
        if step % self.every:
            return
        self._pending.append(self.probe(state, step))

    @torch.no_grad()
    def _set(self, params: list[torch.Tensor], start: list[torch.Tensor], grads: list[torch.Tensor],
             eta: float) -> None:
        torch._foreach_copy_(params, start)
        if eta:
            torch._foreach_add_(params, grads, alpha=-eta)

    def probe(self, state: TrainState, step: int) -> dict[str, Any]:
        """Losses and gradient changes at ``w - eta g`` for each eta; everything restored after."""
        from .engine.loop import autocast, resolve_precision

        model = state.model
        params = _trainable(model)
        data = [p.data for p in params]
        grads = [g.clone() for g in _grads(params)]
        start = [p.detach().clone() for p in params]
        buffers = [b for b in model.buffers()]
        saved_buffers = [b.clone() for b in buffers]
        cpu_rng = torch.get_rng_state()
        cuda_rng = torch.cuda.get_rng_state_all() if state.device.type == "cuda" else None
        precision = resolve_precision(state.config.precision, state.device)
        lr = float(state.optimizer.param_groups[0]["lr"])
        losses, changes = [], []
        try:
            for f in self.factors:
                self._set(data, start, grads, f * lr)
                with torch.enable_grad():
                    with autocast(state.device, precision):
                        out = model(state.x)
                    loss = state.loss_fn(out.float(), state.y)
                    new = torch.autograd.grad(loss, params, allow_unused=True)
                new = [n if n is not None else torch.zeros_like(p) for n, p in zip(new, params)]
                losses.append(loss.detach().to(torch.float64))
                changes.append(_norm(torch._foreach_sub(new, grads)).to(torch.float64))
        finally:
            self._set(data, start, grads, 0.0)
            with torch.no_grad():
                for b, s in zip(buffers, saved_buffers):
                    b.copy_(s)
            torch.set_rng_state(cpu_rng)
            if cuda_rng is not None:
                torch.cuda.set_rng_state_all(cuda_rng)
        return {"step": step, "lr": lr, "loss0": state.loss.detach().to(torch.float64), "grad_norm": _norm(grads),
                "losses": torch.stack(losses), "grad_changes": torch.stack(changes)}

    def _flush(self) -> None:
        for rec in self._pending:
            self._records.append({k: (v.detach().to("cpu", torch.float64) if torch.is_tensor(v) else v)
                                  for k, v in rec.items()})
        self._pending = []

    def on_epoch_end(self, state: TrainState, record: dict) -> None:
        self._flush()

    def on_fit_end(self, state: TrainState) -> None:
        self._flush()

    def state_dict(self) -> dict[str, Any]:
        return {"version": 1, "every": self.every, "factors": self.factors, "records": list(self._records)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._reset()
        self._records = list(state["records"])


@dataclass(frozen=True)
class MetricsFactory:
    """``run_many(configs, callbacks=MetricsFactory(...))``: the chapter's callbacks for each run.
    Picklable (a frozen dataclass of plain values), so it can be sent to worker processes.
    ``probe_every=0`` turns the probe off."""

    probe_every: int = 0
    probe_factors: tuple[float, ...] = DEFAULT_FACTORS
    layer: str | None = None

    def __call__(self, config: RunConfig) -> list[Callback]:
        cbs: list[Callback] = [StepMetrics(self.layer)]
        if self.probe_every:
            cbs.append(GradientProbe(self.probe_every, self.probe_factors))
        return cbs

    def has_records(self, run: Run) -> bool:
        """Whether ``run`` (finished or diverged) holds what these callbacks record, with these settings."""
        states = run.callback_states or {}
        if STEP_KEY not in states or len(states[STEP_KEY]["step"]) == 0 or int(states[STEP_KEY]["step"][0]) != 1:
            return False  # none, or recorded from a resume on only
        if self.layer is not None and states[STEP_KEY].get("layer") != self.layer:
            return False
        if not self.probe_every:
            return True
        probe = states.get(PROBE_KEY)
        return (probe is not None and probe.get("every") == self.probe_every
                and tuple(probe.get("factors", ())) == tuple(float(f) for f in self.probe_factors))


# --- reading the stored values -----------------------------------------------------------------

def step_metrics(run: Run) -> dict[str, np.ndarray]:
    """The run's per-step values: ``step`` and one float array per field of :data:`STEP_FIELDS`,
    plus ``loss_change`` (``abs(loss_s - loss_{s-1})``, NaN at the first step)."""
    states = run.callback_states or {}
    if STEP_KEY not in states:
        raise ValueError(f"run {run.name} has no per-step BN metrics (trained without StepMetrics); "
                         "train it with callbacks=MetricsFactory(...)")
    state = states[STEP_KEY]
    values = np.asarray(state["values"], dtype=np.float64).reshape(-1, len(state["fields"]))
    out = {"step": np.asarray(state["step"], dtype=np.int64)}
    for i, name in enumerate(state["fields"]):
        out[name] = values[:, i]
    loss = out["loss"]
    out["loss_change"] = np.concatenate([[np.nan], np.abs(np.diff(loss))]) if len(loss) else loss.copy()
    return out


def probe_metrics(run: Run) -> dict[str, np.ndarray]:
    """The run's probes: ``step``, ``lr``, ``grad_norm``, ``loss0``, ``losses`` / ``grad_changes``
    ([probes, etas]), ``etas`` ([probes, etas]), and the summaries ``loss_spread``,
    ``grad_change_max`` and ``beta_eff`` (one value per probe)."""
    states = run.callback_states or {}
    if PROBE_KEY not in states:
        raise ValueError(f"run {run.name} has no gradient probes (trained with probe_every=0?)")
    state = states[PROBE_KEY]
    recs = state["records"]
    k = len(state["factors"])
    factors = np.asarray(state["factors"], dtype=np.float64)

    def col(name):
        return np.asarray([float(r[name]) for r in recs], dtype=np.float64)

    out = {"step": np.asarray([int(r["step"]) for r in recs], dtype=np.int64), "lr": col("lr"),
           "grad_norm": col("grad_norm"), "loss0": col("loss0"),
           "losses": np.asarray([np.asarray(r["losses"]) for r in recs], dtype=np.float64).reshape(-1, k),
           "grad_changes": np.asarray([np.asarray(r["grad_changes"]) for r in recs], dtype=np.float64).reshape(-1, k)}
    out["etas"] = out["lr"][:, None] * factors[None, :]
    all_losses = np.concatenate([out["loss0"][:, None], out["losses"]], axis=1)
    out["loss_spread"] = all_losses.max(axis=1) - all_losses.min(axis=1) if len(recs) else np.zeros(0)
    out["grad_change_max"] = out["grad_changes"].max(axis=1) if len(recs) else np.zeros(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = out["grad_changes"] / (out["etas"] * out["grad_norm"][:, None])
    out["beta_eff"] = ratio.max(axis=1) if len(recs) else np.zeros(0)
    return out


def run_summary(runs: Mapping[str, Mapping[float, Run]]):
    """One row per run: model, learning rate, status, steps recorded, probes, the mean training loss
    over the last 10% of the steps, the final test error, the training time and the device."""
    import pandas as pd

    rows = []
    for model, by_lr in runs.items():
        for lr, r in by_lr.items():
            sm = step_metrics(r)
            tail = sm["loss"][-max(1, len(sm["loss"]) // 10):]
            probes = (r.callback_states or {}).get(PROBE_KEY)
            rows.append({"model": MODELS.get(model, model), "lr": lr, "status": r.status, "steps": len(sm["step"]),
                         "probes": len(probes["records"]) if probes else 0,
                         "final_train_loss": float(np.nanmean(tail)) if len(tail) else math.nan,
                         "final_test_error": r.final_test_error, "wall_s": round(r.wall_seconds, 1),
                         "device": r.device})
    return pd.DataFrame(rows)


def smooth(values: Sequence[float] | np.ndarray, window: int = 1) -> np.ndarray:
    """Centred moving average over ``window`` steps, skipping NaNs; the window shrinks at the ends.
    For display only (the tables use the raw values)."""
    x = np.asarray(values, dtype=np.float64)
    if not (isinstance(window, (int, np.integer)) and window >= 1):
        raise ValueError(f"window must be an integer >= 1, got {window!r}")
    if window == 1 or len(x) == 0:
        return x.copy()
    ok = np.isfinite(x)
    kernel = np.ones(window)
    sums = np.convolve(np.where(ok, x, 0.0), kernel, mode="full")
    counts = np.convolve(ok.astype(np.float64), kernel, mode="full")
    lo = (window - 1) // 2  # centre: output i averages x[i - (window-1)//2 ... i + window//2]
    sums, counts = sums[window - 1 - lo: window - 1 - lo + len(x)], counts[window - 1 - lo: window - 1 - lo + len(x)]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def _series(run: Run, metric: str, probe: bool = False) -> tuple[np.ndarray, np.ndarray]:
    if probe:
        if metric not in PROBE_METRICS:
            raise ValueError(f"unknown probe metric {metric!r}; choose one of {', '.join(PROBE_METRICS)}")
        data = probe_metrics(run)
    else:
        if metric not in METRICS:
            raise ValueError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
        data = step_metrics(run)
    return data["step"], data[metric]


def band(runs: Mapping[Any, Run], metric: str, window: int = 1, probe: bool = False) -> dict[str, np.ndarray]:
    """Across ``runs`` (e.g. one model's runs by learning rate): at each step every run has, the
    ``low`` and ``high`` of the (smoothed) ``metric``. Returns ``step``, ``low``, ``high`` and
    ``values`` ([runs, steps], smoothed). ``probe=True`` uses the probes' summaries instead."""
    if not runs:
        raise ValueError("no runs to make a band from")
    series = [_series(r, metric, probe) for r in runs.values()]
    common = series[0][0]
    for steps, _ in series[1:]:
        common = np.intersect1d(common, steps)
    rows = []
    for steps, vals in series:
        idx = np.searchsorted(steps, common)
        rows.append(smooth(vals, window)[idx] if not probe else vals[idx])
    values = np.vstack(rows) if rows else np.zeros((0, 0))
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: a gap in the band
        low = np.nanmin(values, axis=0) if values.size else np.zeros(0)
        high = np.nanmax(values, axis=0) if values.size else np.zeros(0)
    return {"step": common, "low": low, "high": high, "values": values}


def _ratio(a: np.ndarray, b: np.ndarray) -> float:
    with np.errstate(all="ignore"):
        r = a / b
    r = r[np.isfinite(r)]
    return float(np.median(r)) if len(r) else math.nan


#: The claims the tables test, as (row label, metric, probe?) with the report's / paper's wording.
CLAIMS: dict[str, tuple[str, bool]] = {
    "loss variation (|loss change| per step)": ("loss_change", False),
    "gradient predictiveness (last layer)": ("grad_change_last", False),
    "gradient change, all parameters": ("grad_change", False),
    "beta-smoothness": ("beta", False),
}
PROBE_CLAIMS: dict[str, tuple[str, bool]] = {
    "loss spread along the gradient": ("loss_spread", True),
    "max gradient change along the gradient": ("grad_change_max", True),
    "effective beta along the gradient": ("beta_eff", True),
}


def ratio_table(runs: Mapping[str, Mapping[float, Run]], probe: bool = False):
    """Median over steps of (no-BN value / BN value) at the same step, per learning rate, for each
    claim (:data:`CLAIMS`, or :data:`PROBE_CLAIMS` with ``probe=True``), plus a row per claim of the
    band across all learning rates (width for losses, upper edge otherwise). A ratio above 1 means the
    BN network has the lower (smoother) value, i.e. supports the claim. Raw values, no smoothing."""
    import pandas as pd

    plain, bn = runs["vgg_a"], runs["vgg_a_bn"]
    lrs = [lr for lr in plain if lr in bn]
    claims = PROBE_CLAIMS if probe else CLAIMS
    rows = []
    for label, (metric, is_probe) in claims.items():
        row: dict[str, Any] = {"quantity": label}
        for lr in lrs:
            s_a, v_a = _series(plain[lr], metric, is_probe)
            s_b, v_b = _series(bn[lr], metric, is_probe)
            common = np.intersect1d(s_a, s_b)
            row[f"lr {lr:g}"] = _ratio(v_a[np.searchsorted(s_a, common)], v_b[np.searchsorted(s_b, common)])
        band_a, band_b = band(plain, metric, 1, is_probe), band(bn, metric, 1, is_probe)
        common = np.intersect1d(band_a["step"], band_b["step"])
        ia, ib = np.searchsorted(band_a["step"], common), np.searchsorted(band_b["step"], common)
        row["all lrs: band upper edge"] = _ratio(band_a["high"][ia], band_b["high"][ib])
        per_lr = [row[f"lr {lr:g}"] for lr in lrs]
        finite = [v for v in per_lr if math.isfinite(v)]
        row["supported at"] = f"{sum(v > 1 for v in finite)} of {len(per_lr)} lrs"
        rows.append(row)
    if not probe:  # the report's Figure 15: the loss band across learning rates
        band_a, band_b = band(plain, "loss"), band(bn, "loss")
        common = np.intersect1d(band_a["step"], band_b["step"])
        ia, ib = np.searchsorted(band_a["step"], common), np.searchsorted(band_b["step"], common)
        width_a = band_a["high"][ia] - band_a["low"][ia]
        width_b = band_b["high"][ib] - band_b["low"][ib]
        rows.append({"quantity": "loss band width across lrs (Figure 15)", "all lrs: band upper edge": math.nan,
                     "band width": _ratio(width_a, width_b)})
    return pd.DataFrame(rows).set_index("quantity")


def findings(table) -> list[str]:
    """One sentence per row of a :func:`ratio_table`: what the numbers say about the claim."""
    out = []
    lr_cols = [c for c in table.columns if c.startswith("lr ")]
    for quantity, row in table.iterrows():
        vals = {c: row[c] for c in lr_cols if isinstance(row.get(c), float) and math.isfinite(row[c])}
        r = row.get("band width") if "band width" in table.columns else None
        if isinstance(r, float) and math.isfinite(r):
            out.append(f"{quantity}: no-BN / BN = {r:.2f} -> "
                       f"{'supports' if r > 1 else 'does not support'} \"BN reduces loss variance\".")
            continue
        if not vals:
            out.append(f"{quantity}: no finite values.")
            continue
        above = [c for c, v in vals.items() if v > 1]
        shown = ", ".join(f"{c[3:]}: {v:.2f}" for c, v in vals.items())
        verdict = ("supports the claim at every learning rate" if len(above) == len(vals)
                   else "contradicts the claim at every learning rate" if not above
                   else f"supports it at {len(above)} of {len(vals)} learning rates")
        out.append(f"{quantity}: median no-BN / BN ratio {shown}; {verdict}.")
    return out


# --- figures -----------------------------------------------------------------------------------

def _title(title: str, note: str | None) -> str:
    return f"{title}\n({note})" if note else title


def plot_band(runs: Mapping[str, Mapping[float, Run]], metric: str, window: int = 1, *, kind: str = "band",
              lrs: Sequence[float] | None = None, models: Sequence[str] | None = None, probe: bool = False,
              log: bool = False, ax=None, title: str | None = None, note: str | None = None):
    """For each model, the ``metric`` across the chosen learning rates at each step: ``kind="band"``
    fills between the minimum and maximum (the report's Figures 15 and 16), ``kind="max"`` draws the
    maximum (Figure 17). ``runs`` maps model name -> {lr: Run}."""
    import matplotlib.pyplot as plt

    if kind not in ("band", "max"):
        raise ValueError(f"unknown kind {kind!r}; choose band or max")
    if ax is None:
        fig, ax = plt.subplots(figsize=(8, 4))
    else:
        fig = ax.figure
    for i, model in enumerate(models or list(runs)):
        if model not in runs:
            raise ValueError(f"unknown model {model!r}; choose from {', '.join(runs)}")
        chosen = {lr: r for lr, r in runs[model].items() if lrs is None or lr in lrs}
        if not chosen:
            continue
        b = band(chosen, metric, window, probe)
        label = MODELS.get(model, model)
        marker = "o" if probe or len(b["step"]) <= 12 else None
        if kind == "band":
            ax.fill_between(b["step"], b["low"], b["high"], color=f"C{i}", alpha=0.35, label=label, lw=0)
            if probe:
                ax.plot(b["step"], b["high"], color=f"C{i}", marker=marker, lw=0.8)
        else:
            ax.plot(b["step"], b["high"], color=f"C{i}", label=label, lw=1.0, marker=marker)
    names = PROBE_METRICS if probe else METRICS
    smoothing = f", moving average over {window} steps" if window > 1 and not probe else ""
    ax.set(xlabel="step", ylabel=names.get(metric, metric), yscale="log" if log else "linear",
           title=_title(title or f"{names.get(metric, metric)}: "
                        f"{'max' if kind == 'max' else 'min-max band'} across learning rates{smoothing}", note))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def plot_loss_landscape(runs, window: int = 1, note: str | None = None):
    """Figure 15: the training-loss band across learning rates, both models."""
    return plot_band(runs, "loss", window, kind="band", note=note,
                     title=f"Loss landscape: min-max band of the training loss across learning rates"
                           f"{f' (moving average, {window} steps)' if window > 1 else ''}")


def plot_gradient_predictiveness(runs, window: int = 1, note: str | None = None):
    """Figure 16: band of the last layer's gradient change between consecutive steps."""
    return plot_band(runs, "grad_change_last", window, kind="band", log=True, note=note,
                     title=f"Gradient predictiveness: ||g_s - g_(s-1)|| of the last layer's weight"
                           f"{f' (moving average, {window} steps)' if window > 1 else ''}")


def plot_beta_smoothness(runs, window: int = 1, note: str | None = None):
    """Figure 17: the maximum beta across learning rates at each step, both models."""
    return plot_band(runs, "beta", window, kind="max", log=True, note=note,
                     title=f"beta-smoothness: max across learning rates of ||g_s - g_(s-1)|| / ||w_s - w_(s-1)||"
                           f"{f' (moving average, {window} steps)' if window > 1 else ''}")


def plot_probes(runs, note: str | None = None):
    """The paper's measurement: loss spread, gradient change and effective beta along the gradient at
    the probed steps; band across learning rates (max line for beta), both models."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for ax, (metric, kind, log) in zip(axes, (("loss_spread", "band", True), ("grad_change_max", "band", True),
                                             ("beta_eff", "max", True))):
        plot_band(runs, metric, kind=kind, probe=True, log=log, ax=ax, title=PROBE_METRICS[metric])
    fig.suptitle(_title("Along the gradient at the probed steps (Santurkar et al.'s measurement)", note))
    fig.tight_layout()
    return fig


# --- the explorer ------------------------------------------------------------------------------

class LandscapeExplorer:
    """Learning rates and models (multi-selects), a metric, band or max, a smoothing window and a
    log switch above a plot redrawn from the stored per-step values (nothing is retrained).

    ``explorer.widget`` is the ipywidgets box; ``explorer.figure`` the last drawn figure."""

    def __init__(self, runs: Mapping[str, Mapping[float, Run]], metric: str = "loss", window: int = 1,
                 note: str | None = None) -> None:
        import ipywidgets as w

        if not runs:
            raise ValueError("no runs to explore")
        if metric not in METRICS:
            raise ValueError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
        self.runs, self.note = {m: dict(v) for m, v in runs.items()}, note
        lrs = sorted({lr for v in self.runs.values() for lr in v}, reverse=True)
        self.lrs = w.SelectMultiple(options=[(f"{lr:g}", lr) for lr in lrs], value=tuple(lrs),
                                    description="lr", rows=min(len(lrs), 6))
        self.models = w.SelectMultiple(options=[(MODELS.get(m, m), m) for m in self.runs], value=tuple(self.runs),
                                       description="models", rows=min(len(self.runs), 4))
        self.metric = w.Dropdown(options=[(label, m) for m, label in METRICS.items()], value=metric,
                                 description="metric")
        self.kind = w.ToggleButtons(options=["band", "max"], value="band", description="show")
        # continuous_update=False: a drag over the range draws once, where it ends, not once per value
        self.window = w.IntSlider(value=window, min=1, max=200, description="smoothing", continuous_update=False)
        self.log = w.Checkbox(value=metric not in ("loss",), description="log scale")
        self.output = w.Output()
        self.figure = None
        self._rendered = self._built = False  # the output area is filled once the widget is used (see widget)
        for control in (self.lrs, self.models, self.metric, self.kind, self.window, self.log):
            control.observe(lambda _change: self.redraw(), names="value")
        self._box = w.VBox([w.HBox([self.lrs, self.models, w.VBox([self.metric, self.kind, self.window, self.log])]),
                            self.output])
        self.redraw()
        self._built = True

    @property
    def widget(self):
        """The ipywidgets box. Its plot area is filled on first access, not when the explorer is
        built, so that building one in a headless (papermill) run never writes into an Output widget."""
        if not self._rendered:
            self._render()
        return self._box

    def draw(self):
        """The figure for the current control values (not displayed)."""
        return plot_band(self.runs, self.metric.value, self.window.value, kind=self.kind.value,
                         lrs=list(self.lrs.value), models=list(self.models.value), log=self.log.value,
                         note=self.note)

    def redraw(self) -> None:
        import matplotlib.pyplot as plt

        if self.figure is not None:
            plt.close(self.figure)
        self.figure = self.draw()
        plt.close(self.figure)
        if self._built:  # a control changed: show it (the first figure waits for `widget`)
            self._render()

    def _render(self) -> None:
        self._rendered = True
        self.output.clear_output(wait=True)
        with self.output:
            from IPython.display import display

            display(self.figure)

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)


def landscape_explorer(runs: Mapping[str, Mapping[float, Run]], metric: str = "loss", window: int = 1,
                       note: str | None = None) -> LandscapeExplorer:
    """An explorer over the chapter's runs (model -> {lr: Run})."""
    return LandscapeExplorer(runs, metric, window, note)
