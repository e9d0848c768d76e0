"""Optimizer and scheduler registries (CPU, tiny tensors)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cifar_utils.optim import (
    create_optimizer,
    create_scheduler,
    list_optimizers,
    list_schedulers,
    optimizer_options,
    register_optimizer,
    scheduler_step,
)


def _tiny_problem(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(32, 6, generator=g)
    y = torch.randint(0, 3, (32,), generator=g)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))
    return model, x, y


def test_builtins_listed():
    assert {"sgd", "adam", "adagrad", "adadelta"} <= set(list_optimizers())
    assert {"plateau", "step", "cosine", "none"} <= set(list_schedulers())


@pytest.mark.parametrize("name,lr,options", [
    ("sgd", 0.1, {"momentum": 0.9, "weight_decay": 5e-4}),
    ("sgd", 0.1, {"momentum": 0.9, "nesterov": True}),
    ("adam", 1e-2, {"weight_decay": 5e-4}),
    ("adagrad", 0.1, {}),
    ("adadelta", 1.0, {}),
])
def test_each_optimizer_lowers_the_loss(name, lr, options):
    model, x, y = _tiny_problem()
    opt = create_optimizer(name, model, lr=lr, **options)
    loss_fn = nn.CrossEntropyLoss()
    with torch.no_grad():
        before = loss_fn(model(x), y).item()
    for _ in range(30):
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()
    with torch.no_grad():
        after = loss_fn(model(x), y).item()
    assert after < before * 0.9, (name, before, after)


def test_options_reach_torch():
    model, _, _ = _tiny_problem()
    opt = create_optimizer("sgd", model, lr=0.05, momentum=0.8, weight_decay=1e-3, nesterov=True)
    group = opt.param_groups[0]
    assert isinstance(opt, torch.optim.SGD)
    assert (group["lr"], group["momentum"], group["weight_decay"], group["nesterov"]) == (0.05, 0.8, 1e-3, True)
    opt = create_optimizer("adam", model.parameters(), lr=1e-3, weight_decay=5e-4)  # parameters work too
    assert isinstance(opt, torch.optim.Adam) and opt.param_groups[0]["weight_decay"] == 5e-4
    assert "momentum" not in optimizer_options("adam")
    assert {"momentum", "weight_decay", "nesterov"} <= set(optimizer_options("sgd"))


def test_unknown_optimizer_lists_choices():
    model, _, _ = _tiny_problem()
    with pytest.raises(ValueError, match=r"unknown optimizer 'lbfgsx'.*adadelta.*adagrad.*adam.*sgd"):
        create_optimizer("lbfgsx", model, lr=0.1)


def test_unknown_option_lists_allowed():
    model, _, _ = _tiny_problem()
    with pytest.raises(ValueError, match=r"'adam' got unknown option\(s\) 'momentum'; allowed: .*weight_decay.*betas"):
        create_optimizer("adam", model, lr=0.1, momentum=0.9)


def test_negative_lr_rejected():
    model, _, _ = _tiny_problem()
    with pytest.raises(ValueError, match="learning rate"):
        create_optimizer("sgd", model, lr=-0.1)


def test_registered_factory_gets_the_model():
    seen = {}

    @register_optimizer("_test_named_sgd")
    def _named(target, *, lr, weight_decay: float = 0.0):
        seen["names"] = [n for n, _ in target.named_parameters()]
        return torch.optim.SGD(target.parameters(), lr=lr, weight_decay=weight_decay)

    model, _, _ = _tiny_problem()
    opt = create_optimizer("_test_named_sgd", model, lr=0.1, weight_decay=1e-4)
    assert seen["names"] == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert opt.param_groups[0]["weight_decay"] == 1e-4
    with pytest.raises(ValueError, match="already registered"):
        register_optimizer("_test_named_sgd")(lambda target, *, lr: None)


def _sgd(lr=0.1):
    model, _, _ = _tiny_problem()
    return create_optimizer("sgd", model, lr=lr, momentum=0.9)


def test_plateau_halves_lr_when_error_stops_improving():
    opt = _sgd()
    sched = create_scheduler("plateau", opt, epochs=100, patience=2)
    lrs = []
    errors = [50, 40, 30, 30, 30, 30, 29, 29, 29, 29, 29, 29]
    for err in errors:
        scheduler_step(sched, err)
        lrs.append(opt.param_groups[0]["lr"])
    # improving: lr stays; 3 epochs without improvement (> patience=2) -> halve, then again.
    assert lrs[:5] == [0.1] * 5
    assert lrs[5] == pytest.approx(0.05)
    assert lrs[6] == pytest.approx(0.05)        # 29 is an improvement: counter resets
    assert lrs[9] == pytest.approx(0.025)       # three more flat epochs -> halved again
    assert lrs[-1] == pytest.approx(0.025)      # only two flat epochs since: not yet


def test_plateau_defaults_and_min_lr():
    opt = _sgd()
    sched = create_scheduler("plateau", opt, epochs=100)
    assert (sched.factor, sched.patience, sched.mode) == (0.5, 10, "min")
    opt = _sgd()
    sched = create_scheduler("plateau", opt, epochs=100, patience=0, min_lr=0.03)
    for _ in range(10):
        scheduler_step(sched, 10.0)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.03)


def test_other_schedulers():
    opt = _sgd()
    sched = create_scheduler("step", opt, epochs=9, step_size=3, gamma=0.5)
    lrs = []
    for _ in range(7):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()  # (no grads: a no-op, but torch wants a step before the scheduler's)
        scheduler_step(sched, 1.0)
    assert lrs == pytest.approx([0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.025])

    opt = _sgd()
    sched = create_scheduler("cosine", opt, epochs=4)
    for _ in range(4):
        opt.step()
        scheduler_step(sched)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)

    opt = _sgd()
    sched = create_scheduler("none", opt, epochs=4)
    for _ in range(4):
        opt.step()
        scheduler_step(sched)
    assert opt.param_groups[0]["lr"] == 0.1
    sched.load_state_dict(sched.state_dict())  # round-trips (checkpointing needs that)


def test_scheduler_errors_name_choices():
    opt = _sgd()
    with pytest.raises(ValueError, match=r"unknown scheduler 'exp'.*cosine.*none.*plateau.*step"):
        create_scheduler("exp", opt, epochs=3)
    with pytest.raises(ValueError, match=r"unknown option\(s\) 'gama'; allowed: step_size, gamma"):
        create_scheduler("step", opt, epochs=3, gama=0.5)
