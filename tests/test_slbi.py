"""SLBI and SLBI-Adam (cifar_utils.optim.slbi): the step against the equations, written out here
independently on small hand-built tensors, and the registry / engine integration with resume."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import cifar_utils.engine.testing as testing
from cifar_utils.engine import LambdaCallback, RunConfig, load_run, run
from cifar_utils.optim import SLBI, SLBIAdam, create_optimizer, list_optimizers, optimizer_options
from cifar_utils.sparsity import SLBIPath

F64 = torch.float64  # the hand-built tensors: exact comparisons without float32 round-off noise


# --- the equations, written out independently ----------------------------------------------------

def ref_prox(v: torch.Tensor, lam: float) -> torch.Tensor:
    out = torch.zeros_like(v)
    if v.dim() == 2:
        for i in range(v.shape[0]):
            for j in range(v.shape[1]):
                x = float(v[i, j])
                out[i, j] = math.copysign(max(abs(x) - lam, 0.0), x)
    else:
        for f in range(v.shape[0]):
            norm = float(v[f].pow(2).sum().sqrt())
            out[f] = v[f] * (max(0.0, 1 - lam / norm) if norm > 0 else 0.0)
    return out


class RefSLBI:
    """One coupled weight, step by step as the issue states the method."""

    def __init__(self, w, *, lr, kappa, mu, lam, momentum=0.9, dampening=0.0, wd=0.0, adam=False,
                 betas=(0.9, 0.999), eps=1e-8):
        self.w = w.clone()
        self.v = torch.zeros_like(w)
        self.gamma = torch.zeros_like(w)
        self.buf = None
        self.m = torch.zeros_like(w)
        self.s = torch.zeros_like(w)
        self.t = 0
        self.__dict__.update(lr=lr, kappa=kappa, mu=mu, lam=lam, momentum=momentum, dampening=dampening, wd=wd,
                             adam=adam, betas=betas, eps=eps)

    def step(self, g):
        g = g + self.wd * self.w
        if self.adam:
            self.t += 1
            b1, b2 = self.betas
            self.m = b1 * self.m + (1 - b1) * g
            self.s = b2 * self.s + (1 - b2) * g * g
            d = (self.m / (1 - b1 ** self.t)) / ((self.s / (1 - b2 ** self.t)).sqrt() + self.eps)
        else:
            self.buf = g.clone() if self.buf is None else self.momentum * self.buf + (1 - self.dampening) * g
            d = self.buf
        w_old, gamma_old = self.w, self.gamma
        self.w = w_old - self.kappa * self.lr * d - (self.kappa * self.lr / self.mu) * (w_old - gamma_old)
        self.v = self.v - (self.lr / self.mu) * (gamma_old - w_old)
        self.gamma = self.kappa * ref_prox(self.v, self.lam)


def grads(shape, steps, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=g, dtype=F64) for _ in range(steps)]


SHAPES = {"fc": (4, 5), "conv": (6, 2, 3, 3)}


@pytest.mark.parametrize("kind", ["fc", "conv"])
@pytest.mark.parametrize("adam", [False, True], ids=["slbi", "slbi_adam"])
def test_coupled_step_follows_the_equations(kind, adam):
    torch.manual_seed(1)
    w0 = torch.randn(SHAPES[kind], dtype=F64)
    opts = dict(lr=0.3, kappa=2.0, mu=2.0, lam=0.4 if kind == "fc" else 0.9)
    param = nn.Parameter(w0.clone())
    if adam:
        opt = SLBIAdam([param], betas=(0.8, 0.99), eps=1e-8, **opts)
        ref = RefSLBI(w0, adam=True, betas=(0.8, 0.99), **opts)
    else:
        opt = SLBI([param], momentum=0.9, dampening=0.1, **opts)
        ref = RefSLBI(w0, momentum=0.9, dampening=0.1, **opts)
    supports = []
    for g in grads(w0.shape, 6):
        param.grad = g.clone()
        opt.step()
        ref.step(g)
        state = opt.state[param]
        torch.testing.assert_close(param.detach(), ref.w, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(state["V"], ref.v, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(state["gamma"], ref.gamma, rtol=1e-12, atol=1e-12)
        supports.append(float(opt.support()["p0"].double().mean()))
    # the test means something: Gamma's support grows and is partial on the way
    assert supports[0] < max(supports) and any(0.0 < s < 1.0 for s in supports), supports
    if kind == "conv":  # whole filters: a filter of Gamma is all zero or has no zero
        flat = state["gamma"].reshape(w0.shape[0], -1)
        assert all(bool((row == 0).all()) or bool((row != 0).all()) for row in flat)


def test_weight_decay_is_added_to_coupled_weights_not_to_biases():
    torch.manual_seed(2)
    w0, b0 = torch.randn(3, 4, dtype=F64), torch.randn(3, dtype=F64)
    w, b = nn.Parameter(w0.clone()), nn.Parameter(b0.clone())
    opt = SLBI([("fc.weight", w), ("fc.bias", b)], lr=0.1, kappa=1.0, mu=2.0, lam=0.5, weight_decay=0.05)
    ref = RefSLBI(w0, lr=0.1, kappa=1.0, mu=2.0, lam=0.5, wd=0.05)
    sgd_b = nn.Parameter(b0.clone())
    sgd = torch.optim.SGD([sgd_b], lr=0.1, momentum=0.9)
    for g in grads((3, 4), 4, seed=3):
        gb = g[:, 0].clone()
        w.grad, b.grad, sgd_b.grad = g.clone(), gb.clone(), gb.clone()
        opt.step(), ref.step(g), sgd.step()
    torch.testing.assert_close(w.detach(), ref.w, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(b.detach(), sgd_b.detach(), rtol=0, atol=0)


@pytest.mark.parametrize("momentum,dampening,kappa", [(0.9, 0.0, 1.0), (0.5, 0.2, 2.0), (0.0, 0.0, 1.0)])
def test_non_coupled_parameters_follow_momentum_sgd_exactly(momentum, dampening, kappa):
    torch.manual_seed(3)
    model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), nn.Flatten(), nn.Linear(12, 2))
    twin = nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), nn.Flatten(), nn.Linear(12, 2))
    twin.load_state_dict(model.state_dict())
    opt = SLBI(model, lr=0.05, kappa=kappa, mu=10.0, momentum=momentum, dampening=dampening)
    rest = [p for n, p in twin.named_parameters() if p.dim() == 1]
    ref = torch.optim.SGD(rest, lr=0.05 * kappa, momentum=momentum, dampening=dampening)
    assert opt.coupled_names() == ["0.weight", "3.weight"]
    g = torch.Generator().manual_seed(7)
    for _ in range(5):  # the same hand-built gradients for both (a forward pass would differ: W does)
        for p, q in zip(model.parameters(), twin.parameters()):
            p.grad = torch.randn(p.shape, generator=g)
            q.grad = p.grad.clone()
        opt.step()
        ref.step()
    for (name, p), q in zip(model.named_parameters(), twin.parameters()):
        if p.dim() == 1:
            assert torch.equal(p, q), name
        else:
            assert not torch.equal(p, q), name  # coupled: these did not take plain SGD


def test_slbi_adam_non_coupled_parameters_follow_adam():
    torch.manual_seed(4)
    b0 = torch.randn(5, dtype=F64)
    b, twin = nn.Parameter(b0.clone()), nn.Parameter(b0.clone())
    opt = SLBIAdam([b], lr=1e-2, betas=(0.9, 0.999))
    ref = torch.optim.Adam([twin], lr=1e-2, betas=(0.9, 0.999))
    for g in grads((5,), 6, seed=5):
        b.grad, twin.grad = g.clone(), g.clone()
        opt.step(), ref.step()
    torch.testing.assert_close(b.detach(), twin.detach(), rtol=1e-12, atol=1e-14)


def test_registry_and_runconfig():
    assert {"slbi", "slbi_adam"} <= set(list_optimizers())
    assert "momentum" in optimizer_options("slbi") and "momentum" not in optimizer_options("slbi_adam")
    model = testing.tiny_cnn()
    opt = create_optimizer("slbi", model, lr=0.1, momentum=0.9, weight_decay=0.0, kappa=1, mu=20)
    assert isinstance(opt, SLBI) and opt.param_groups[0]["mu"] == 20
    assert opt.coupled_names() == ["block1.0.weight", "block2.0.weight", "linear.weight"]
    assert isinstance(create_optimizer("slbi_adam", model, lr=1e-3, mu=20), SLBIAdam)
    RunConfig(optimizer="slbi", optimizer_options={"kappa": 1, "mu": 20, "lam": 1}).validate()
    with pytest.raises(ValueError, match="unknown optimizer_options lambda"):
        RunConfig(optimizer="slbi", optimizer_options={"lambda": 1}).validate()
    with pytest.raises(ValueError, match="kappa and mu must be > 0"):
        SLBI(model, lr=0.1, mu=0)
    with pytest.raises(ValueError, match="only 2-D .fc. and 4-D .conv. weights can be coupled"):
        SLBI(model, lr=0.1, coupled=["linear.bias"])


# --- the engine: checkpoints, resume, the store --------------------------------------------------

def slbi_config(**changes):
    base = dict(optimizer="slbi", lr=0.05, weight_decay=0.0, epochs=4, scheduler="none",
                optimizer_options={"kappa": 1.0, "mu": 1.0, "lam": 0.2})
    base.update(changes)
    return testing.tiny_config(**base)


class Boom(Exception):
    pass


@pytest.mark.parametrize("optimizer", ["slbi", "slbi_adam"])
def test_resume_with_slbi_state_equals_uninterrupted(tmp_path, monkeypatch, optimizer):
    monkeypatch.setenv("CIFAR_UTILS_KEEP_CHECKPOINTS", "1")  # V and Gamma are compared in the final checkpoints
    cfg = slbi_config(optimizer=optimizer) if optimizer == "slbi" else \
        slbi_config(optimizer=optimizer, lr=0.01, optimizer_options={"kappa": 1.0, "mu": 1.0, "lam": 0.02})
    ref_path = SLBIPath()
    ref = run(cfg, runs_dir=tmp_path / "ref", callbacks=[ref_path], progress=False)
    fractions = [sum(e["fractions"].values()) for e in ref_path.path]
    assert fractions[0] < fractions[-1] < len(ref_path.support), fractions  # grown, not everything

    def boom(state, record):
        if record["epoch"] == 3:
            raise Boom("simulated crash")

    with pytest.raises(Boom):
        run(cfg, runs_dir=tmp_path / "b", callbacks=[SLBIPath(), LambdaCallback(on_epoch_end=boom)],
            progress=False)
    resumed_path = SLBIPath()
    resumed = run(cfg, runs_dir=tmp_path / "b", callbacks=[resumed_path], progress=False)
    assert resumed.info["sessions"] == 2
    assert [r["test_loss"] for r in resumed.history] == [r["test_loss"] for r in ref.history]
    for (name, a), b in zip(ref.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
    a_opt = torch.load(ref.path / "checkpoint.pt", weights_only=False)["optimizer"]["state"]
    b_opt = torch.load(resumed.path / "checkpoint.pt", weights_only=False)["optimizer"]["state"]
    for i, st in a_opt.items():
        for key in ("V", "gamma"):
            if key in st:
                assert torch.equal(st[key], b_opt[i][key]), (i, key)
    assert resumed_path.path == ref_path.path
    for name in ref_path.first_epoch:
        assert torch.equal(ref_path.first_epoch[name], resumed_path.first_epoch[name]), name
        assert torch.equal(ref_path.support[name], resumed_path.support[name]), name


def test_finished_run_keeps_the_bookkeeping_without_its_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setenv("CIFAR_UTILS_KEEP_CHECKPOINTS", "0")
    cfg = slbi_config(epochs=3)
    trained = SLBIPath()
    r = run(cfg, runs_dir=tmp_path, callbacks=[trained], progress=False)
    assert not (r.path / "checkpoint.pt").exists() and (r.path / "callbacks.pt").exists()
    stored = SLBIPath.from_run(load_run(r.path))
    assert stored.path == trained.path and len(stored.path) == 3
    assert all(torch.equal(stored.support[n], trained.support[n]) for n in trained.support)
    loaded = SLBIPath()
    again = run(cfg, runs_dir=tmp_path, callbacks=[loaded], progress=False)  # loaded, not retrained
    assert again.info["sessions"] == 1 and loaded.path == trained.path
    plain = run(testing.tiny_config(epochs=1), runs_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match="train SLBI runs with callbacks"):
        SLBIPath.from_run(plain)
