"""Chapter 5's measurements (cifar_utils.bn_metrics): the callbacks, their storage, the analysis."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import torch
from torch import nn

matplotlib.use("agg")

import cifar_utils.engine.testing as testing  # noqa: E402
from cifar_utils import bn_metrics as bm  # noqa: E402
from cifar_utils.engine import LambdaCallback, Run, RunConfig, TrainState, load_run, run, run_many  # noqa: E402


# --- a hand-driven loop for losses whose gradients we know ---------------------------------------

def drive(model: nn.Module, optimizer, callbacks, steps: int, loss_fn=lambda out, y: out.mean()) -> TrainState:
    """The engine's hook order (after_backward before optimizer.step, after_step after it), on a
    fixed batch, for a model whose forward *is* the loss (so its gradient is known in closed form)."""
    x, y = torch.zeros(1, 2), torch.zeros(1, dtype=torch.int64)
    state = TrainState(config=RunConfig(device="cpu", precision="fp32"), model=model, optimizer=optimizer,
                       scheduler=None, loss_fn=loss_fn, loaders=None, device=torch.device("cpu"), path=Path("."))
    for cb in callbacks:
        cb.on_fit_start(state)
    for _ in range(steps):
        loss = loss_fn(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        state.x, state.y, state.output, state.loss = x, y, None, loss
        for cb in callbacks:
            cb.after_backward(state)
        optimizer.step()
        state.step += 1
        for cb in callbacks:
            cb.after_step(state)
    for cb in callbacks:
        cb.on_epoch_end(state, {})
        cb.on_fit_end(state)
    return state


class Quadratic(nn.Module):
    """f(w) = 1/2 w^T A w with A = diag(eigenvalues): gradient A w, gradient Lipschitz constant max(eig)."""

    def __init__(self, eigenvalues, w0) -> None:
        super().__init__()
        self.linear = nn.Linear(len(eigenvalues), 1, bias=False)
        self.register_buffer("A", torch.diag(torch.tensor(eigenvalues, dtype=torch.float64)))
        with torch.no_grad():
            self.linear.weight.copy_(torch.tensor([w0]))
        self.double()

    def forward(self, x):
        w = self.linear.weight[0]
        return (0.5 * w @ self.A @ w).expand(x.shape[0], 1)


def test_beta_on_a_quadratic_equals_its_gradient_lipschitz_constant():
    L = 4.0
    model = Quadratic([L, 1.5, 0.4], [1.0, 0.0, 0.0])  # start on the top eigenvector: every step stays on it
    cb, probe = bm.StepMetrics(), bm.GradientProbe(every=1, factors=(0.5, 1.0, 2.0))
    drive(model, torch.optim.SGD(model.parameters(), lr=0.1), [cb, probe], steps=6)
    state = cb.state_dict()
    beta = state["values"][:, bm.STEP_FIELDS.index("beta")].numpy()
    assert math.isnan(beta[0])
    np.testing.assert_allclose(beta[1:], L, rtol=1e-9)
    # the paper's effective beta along the gradient, at every probed step
    runs = Run(config=RunConfig(), path=Path("/nonexistent"), _callback_states={
        bm.STEP_KEY: state, bm.PROBE_KEY: probe.state_dict()})
    np.testing.assert_allclose(bm.probe_metrics(runs)["beta_eff"], L, rtol=1e-9)


def test_beta_from_any_start_lies_between_the_extreme_curvatures_and_approaches_the_top_with_adam():
    model = Quadratic([3.0, 1.0, 0.5], [0.3, -1.0, 2.0])
    cb = bm.StepMetrics()
    drive(model, torch.optim.Adam(model.parameters(), lr=0.05), [cb], steps=30)
    beta = cb.state_dict()["values"][1:, bm.STEP_FIELDS.index("beta")].numpy()
    assert np.all(beta <= 3.0 * (1 + 1e-9)) and np.all(beta >= 0.5 * (1 - 1e-9))


class TwoPart(nn.Module):
    """loss = 1/2 (w . x)^2 + v^2 with x = (1, 2): ``head`` (w, the last linear layer) and ``first`` (v)."""

    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Parameter(torch.tensor([1.0], dtype=torch.float64))
        self.head = nn.Linear(2, 1, bias=False).double()
        with torch.no_grad():
            self.head.weight.copy_(torch.tensor([[1.0, 0.0]]))

    def forward(self, x):
        z = self.head(torch.tensor([[1.0, 2.0]], dtype=torch.float64))
        return 0.5 * z**2 + self.first**2


def test_gradient_predictiveness_on_a_hand_computed_two_step_example():
    # step 1: w=(1,0), v=1: loss 1.5, g_w = (w.x) x = (1,2), g_v = 2v = 2
    # SGD lr 0.1: w=(0.9,-0.2), v=0.8; update norm sqrt(0.01+0.04+0.04) = 0.3
    # step 2: w.x = 0.5: loss 0.125 + 0.64 = 0.765, g_w = (0.5, 1), g_v = 1.6
    #   last layer change ||(0.5,1) - (1,2)|| = sqrt(1.25); all parameters sqrt(1.25 + 0.16)
    model = TwoPart()
    cb = bm.StepMetrics()
    drive(model, torch.optim.SGD(model.parameters(), lr=0.1), [cb], steps=2)
    state = cb.state_dict()
    assert state["layer"] == "head.weight" and state["step"].tolist() == [1, 2]
    v = dict(zip(bm.STEP_FIELDS, state["values"].T.numpy()))
    np.testing.assert_allclose(v["loss"], [1.5, 0.765], rtol=1e-12)
    np.testing.assert_allclose(v["grad_norm"], [3.0, math.sqrt(0.25 + 1 + 2.56)], rtol=1e-12)
    np.testing.assert_allclose(v["update_norm"][0], 0.3, rtol=1e-12)
    assert math.isnan(v["grad_change_last"][0]) and math.isnan(v["grad_change"][0])
    np.testing.assert_allclose(v["grad_change_last"][1], math.sqrt(1.25), rtol=1e-12)
    np.testing.assert_allclose(v["grad_change"][1], math.sqrt(1.41), rtol=1e-12)
    np.testing.assert_allclose(v["beta"][1], math.sqrt(1.41) / 0.3, rtol=1e-12)
    assert state["carry"] is None  # dropped at the end of training: callbacks.pt keeps only the values


def test_probe_restores_weights_gradients_and_bn_statistics_exactly():
    torch.manual_seed(0)
    model = testing.tiny_cnn()
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    grads = [p.grad.clone() for p in model.parameters()]
    state = TrainState(config=RunConfig(device="cpu", precision="fp32"), model=model,
                       optimizer=torch.optim.SGD(model.parameters(), lr=0.1), scheduler=None,
                       loss_fn=nn.functional.cross_entropy, loaders=None, device=torch.device("cpu"),
                       path=Path("."), x=x, y=y, loss=loss)
    rng = torch.get_rng_state()
    rec = bm.GradientProbe(every=1).probe(state, 1)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), grads))
    assert torch.equal(torch.get_rng_state(), rng)
    assert rec["losses"].shape == (len(bm.DEFAULT_FACTORS),) and bool((rec["grad_changes"] > 0).all())


def test_probe_rejects_bad_settings():
    with pytest.raises(ValueError, match="every must be an integer >= 1"):
        bm.GradientProbe(every=0)
    with pytest.raises(ValueError, match="positive finite multiples"):
        bm.GradientProbe(every=5, factors=(1.0, -2.0))


# --- through the engine ---------------------------------------------------------------------------

def _config(**changes):
    base = dict(optimizer="adam", lr=1e-2, weight_decay=0.0, scheduler="none", epochs=3, seed=5)
    base.update(changes)
    return testing.tiny_config(**base)


def _numbers(history):
    return [{k: v for k, v in r.items() if k not in ("epoch_seconds", "images_per_s")} for r in history]


def test_a_probed_run_trains_bit_for_bit_like_an_unprobed_one(tmp_path):
    cfg = _config()
    plain = run(cfg, runs_dir=tmp_path / "plain", callbacks=bm.MetricsFactory()(cfg), progress=False)
    probed = run(cfg, runs_dir=tmp_path / "probed", callbacks=bm.MetricsFactory(probe_every=2)(cfg), progress=False)
    assert _numbers(probed.history) == _numbers(plain.history)
    for (name, a), b in zip(plain.model.state_dict().items(), probed.model.state_dict().values()):
        assert torch.equal(a, b), name
    a, b = bm.step_metrics(plain), bm.step_metrics(probed)
    assert all(np.array_equal(a[k], b[k], equal_nan=True) for k in a)
    probes = bm.probe_metrics(probed)
    assert probes["step"].tolist() == [2, 4, 6, 8, 10, 12] and probes["losses"].shape == (6, 5)
    assert bm.PROBE_KEY not in plain.callback_states


def test_per_step_values_survive_a_crash_and_resume_and_load_from_the_store(tmp_path):
    cfg = _config()
    factory = bm.MetricsFactory(probe_every=3)
    ref = run(cfg, runs_dir=tmp_path / "ref", callbacks=factory(cfg), progress=False)

    class Crash(Exception):
        pass

    def crash(state):
        if state.step == 6:  # mid epoch 2 (4 steps per epoch): after epoch 1's checkpoint
            raise Crash("killed")

    with pytest.raises(Crash):
        run(cfg, runs_dir=tmp_path / "b", callbacks=[*factory(cfg), LambdaCallback(after_step=crash)], progress=False)
    assert load_run(tmp_path / "b" / cfg.name).status == "failed"
    resumed = run(cfg, runs_dir=tmp_path / "b", callbacks=factory(cfg), progress=False)  # fresh callbacks
    assert resumed.info["sessions"] == 2 and _numbers(resumed.history) == _numbers(ref.history)
    a, b = bm.step_metrics(ref), bm.step_metrics(resumed)
    assert a["step"].tolist() == list(range(1, 13))
    for k in a:
        assert np.array_equal(a[k], b[k], equal_nan=True), k  # the step after the resume compares too
    pa, pb = bm.probe_metrics(ref), bm.probe_metrics(resumed)
    assert all(np.array_equal(pa[k], pb[k]) for k in pa)

    # loaded from the store (not trained): the callbacks get their state, the Run has it
    again = factory(cfg)
    loaded = run(cfg, runs_dir=tmp_path / "b", callbacks=again, progress=False)
    assert np.array_equal(again[0].values().numpy(), np.stack([a[f] for f in bm.STEP_FIELDS], 1), equal_nan=True)
    assert np.array_equal(bm.step_metrics(load_run(loaded.path))["beta"], a["beta"], equal_nan=True)


def test_run_many_retrains_runs_stored_without_the_metrics(tmp_path):
    from cifar_utils.engine.store import StoreWarning

    cfg = _config(epochs=1)
    run(cfg, runs_dir=tmp_path, progress=False)  # no callbacks
    factory = bm.MetricsFactory(probe_every=2)
    with pytest.warns(StoreWarning, match="moved aside"):
        [r] = run_many([cfg], runs_dir=tmp_path, progress=False, callbacks=factory)
    assert factory.has_records(r)
    assert len(list(tmp_path.glob(f"{cfg.name}.old-*"))) == 1
    [again] = run_many([cfg], runs_dir=tmp_path, progress=False, callbacks=factory)  # now loaded, not retrained
    assert again.info["finished"] == r.info["finished"]
    assert not bm.MetricsFactory(probe_every=3).has_records(again)  # other probe settings: retrain


def test_run_many_sends_a_callback_factory_to_worker_processes(tmp_path):
    cfgs = [_config(epochs=1, lr=lr) for lr in (1e-2, 1e-3)]
    runs = run_many(cfgs, jobs=2, runs_dir=tmp_path, progress=False, callbacks=bm.MetricsFactory(probe_every=2))
    for r in runs:
        assert bm.step_metrics(r)["step"].tolist() == [1, 2, 3, 4]
        assert bm.probe_metrics(r)["step"].tolist() == [2, 4]
    with pytest.raises(ValueError, match="importable by the worker"):
        run_many(cfgs, runs_dir=tmp_path, callbacks=lambda c: [])


# --- analysis, figures, explorer --------------------------------------------------------------

def fake_run(model: str, lr: float, values: np.ndarray, probes: list[dict] | None = None) -> Run:
    """A Run whose stored per-step values are ``values`` ([steps, fields])."""
    cfg = RunConfig(model=model, lr=lr, optimizer="adam")
    states = {bm.STEP_KEY: {"fields": bm.STEP_FIELDS, "layer": "x", "step": torch.arange(1, len(values) + 1),
                            "values": torch.as_tensor(values, dtype=torch.float64), "carry": None}}
    if probes is not None:
        states[bm.PROBE_KEY] = {"every": 5, "factors": (0.5, 1.0, 2.0), "records": probes}
    return Run(config=cfg, path=Path("/nonexistent") / cfg.name, status="finished", _callback_states=states)


LRS = (2e-3, 1e-3, 5e-4, 1e-4)


def fake_chapter(steps: int = 40, scale: float = 2.0) -> dict:
    """vgg_a's values are ``scale`` times vgg_a_bn's at every step; probes every 5 steps."""
    rng = np.random.default_rng(0)
    out = {"vgg_a": {}, "vgg_a_bn": {}}
    for i, lr in enumerate(LRS):
        base = rng.uniform(0.5, 1.5, size=(steps, len(bm.STEP_FIELDS))) + i
        base[0, 3:] = np.nan
        probes = [{"step": s, "lr": lr, "loss0": 2.0, "grad_norm": 1.0,
                   "losses": torch.tensor([2.0 - 0.1 * i, 2.1, 2.3]),
                   "grad_changes": torch.tensor([0.1, 0.3, 0.5]) * (i + 1)}
                  for s in range(5, steps + 1, 5)]
        bn_probes = [dict(p, losses=2.0 + (p["losses"] - 2.0) / scale, grad_changes=p["grad_changes"] / scale)
                     for p in probes]
        out["vgg_a"][lr] = fake_run("vgg_a", lr, base * scale, probes)
        out["vgg_a_bn"][lr] = fake_run("vgg_a_bn", lr, base, bn_probes)
    return out


def test_smooth_is_a_centred_nan_skipping_moving_average():
    x = np.array([np.nan, 1.0, 2.0, 3.0, 10.0])
    np.testing.assert_allclose(bm.smooth(x, 1)[1:], x[1:])
    np.testing.assert_allclose(bm.smooth(x, 3), [1.0, 1.5, 2.0, 5.0, 6.5])
    np.testing.assert_allclose(bm.smooth(np.arange(6.0), 4), [1.0, 1.5, 2.5, 3.5, 4.0, 4.5])
    with pytest.raises(ValueError, match="window must be an integer >= 1"):
        bm.smooth(x, 0)


def test_band_is_min_and_max_across_learning_rates_on_common_steps():
    runs = fake_chapter()
    b = bm.band(runs["vgg_a"], "loss")
    vals = np.stack([bm.step_metrics(r)["loss"] for r in runs["vgg_a"].values()])
    assert b["values"].shape == (4, 40) and b["step"].tolist() == list(range(1, 41))
    np.testing.assert_array_equal(b["low"], vals.min(0))
    np.testing.assert_array_equal(b["high"], vals.max(0))
    short = dict(runs["vgg_a"], extra=fake_run("vgg_a", 1.0, np.ones((10, len(bm.STEP_FIELDS)))))
    assert bm.band(short, "loss")["step"].tolist() == list(range(1, 11))
    with pytest.raises(ValueError, match="unknown metric 'accuracy'; choose one of loss"):
        bm.band(runs["vgg_a"], "accuracy")


def test_ratio_tables_and_findings_read_the_claims_from_the_numbers():
    runs = fake_chapter(scale=2.0)
    t = bm.ratio_table(runs)
    for lr in LRS:
        assert t.loc["beta-smoothness", f"lr {lr:g}"] == pytest.approx(2.0)
        assert t.loc["gradient predictiveness (last layer)", f"lr {lr:g}"] == pytest.approx(2.0)
    assert t.loc["beta-smoothness", "supported at"] == "4 of 4 lrs"
    assert t.loc["loss band width across lrs (Figure 15)", "band width"] == pytest.approx(2.0)
    text = bm.findings(t)
    assert any("supports the claim at every learning rate" in s for s in text)
    assert any("supports \"BN reduces loss variance\"" in s for s in text)
    p = bm.ratio_table(runs, probe=True)
    assert p.loc["effective beta along the gradient", "lr 0.002"] == pytest.approx(2.0)
    assert p.loc["loss spread along the gradient", "lr 0.0001"] == pytest.approx(2.0)
    reverse = bm.findings(bm.ratio_table({"vgg_a": runs["vgg_a_bn"], "vgg_a_bn": runs["vgg_a"]}))
    assert any("contradicts the claim at every learning rate" in s for s in reverse)


def test_figures_have_one_band_or_line_per_model_over_every_step():
    runs = fake_chapter()
    fig = bm.plot_loss_landscape(runs, window=5, note="smoke")
    ax = fig.axes[0]
    assert len(ax.collections) == 2 and [t.get_text() for t in ax.get_legend().get_texts()] == ["VGG-A", "VGG-A + BN"]
    b = bm.band(runs["vgg_a_bn"], "loss", 5)
    path = ax.collections[1].get_paths()[0].vertices
    assert np.isclose(path[:, 1].max(), b["high"].max()) and np.isclose(path[:, 1].min(), b["low"].min())
    fig = bm.plot_gradient_predictiveness(runs)
    assert len(fig.axes[0].collections) == 2 and fig.axes[0].get_yscale() == "log"
    fig = bm.plot_beta_smoothness(runs)
    lines = fig.axes[0].lines
    assert len(lines) == 2 and all(len(line.get_xdata()) == 40 for line in lines)
    np.testing.assert_allclose(lines[0].get_ydata()[1:], bm.band(runs["vgg_a"], "beta")["high"][1:])
    fig = bm.plot_probes(runs)
    assert len(fig.axes) == 3
    assert all(len(ax.collections) == 2 or len(ax.lines) == 2 for ax in fig.axes)
    assert len(fig.axes[2].lines[0].get_xdata()) == 8  # probes at steps 5, 10, ..., 40


def test_landscape_explorer_redraws_from_its_controls():
    runs = fake_chapter()
    ex = bm.landscape_explorer(runs)
    assert not ex._rendered  # built headless: nothing written into the Output widget yet
    ax = ex.figure.axes[0]
    assert len(ax.collections) == 2 and ax.get_ylabel() == "training loss"
    ex.models.value = ("vgg_a_bn",)
    assert len(ex.figure.axes[0].collections) == 1
    ex.metric.value = "beta"
    ex.kind.value = "max"
    ax = ex.figure.axes[0]
    assert ax.get_ylabel() == "beta-smoothness" and len(ax.lines) == 1
    full = ax.lines[0].get_ydata().copy()
    ex.lrs.value = (2e-3,)  # the fake runs' lowest values: the max line drops
    one = ex.figure.axes[0].lines[0].get_ydata()
    np.testing.assert_allclose(one[1:], bm.step_metrics(runs["vgg_a_bn"][2e-3])["beta"][1:])
    assert not np.allclose(one[1:], full[1:])
    assert ex.window.continuous_update is False  # a drag over 1-200 draws once, not 200 times
    ex.window.value = 9
    assert "moving average over 9 steps" in ex.figure.axes[0].get_title()
    assert ex._rendered and ex.widget is not None
