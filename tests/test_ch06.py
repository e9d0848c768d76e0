"""Chapter 6's toolbox (cifar_utils.sparsity): W*, the path bookkeeping, the pruning order and
prune/restore, the configs, the comparison check, the explorer, and the executed smoke chapter."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from cifar_utils import experiments, plots, sparsity, tables
from cifar_utils.reported import SLBI_LENET_PRUNING_ACC

ROOT = Path(__file__).resolve().parents[1]


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).mean((2, 3)))


def net():
    torch.manual_seed(0)
    return Net()


def test_masked_is_w_star_and_restores_the_weights():
    model = net()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    support = {"conv.weight": torch.tensor([True, False, True, False]),
               "fc.weight": torch.tensor([[True, False, False, True]] * 3)}
    with sparsity.masked(model, support):
        w = model.conv.weight
        assert torch.equal(w[1], torch.zeros_like(w[1])) and torch.equal(w[0], before["conv.weight"][0])
        assert torch.equal(model.fc.weight[:, 1:3], torch.zeros(3, 2))
        assert torch.equal(model.fc.weight[:, 0], before["fc.weight"][:, 0])
        assert torch.equal(model.conv.bias, before["conv.bias"])  # W* masks weights only
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    with pytest.raises(RuntimeError):  # restored on an exception too
        with sparsity.masked(model, support):
            raise RuntimeError
    assert torch.equal(model.conv.weight, before["conv.weight"])
    copy = sparsity.sparse_model(model, support)
    assert torch.equal(copy.conv.weight[3], torch.zeros(1, 3, 3)) and torch.equal(model.conv.weight, before["conv.weight"])
    assert sparsity.support_fractions(support) == {"conv.weight": 0.5, "fc.weight": 0.5}
    with pytest.raises(ValueError, match="one flag per filter"):
        with sparsity.masked(model, {"conv": torch.tensor([True])}):
            pass
    with pytest.raises(ValueError, match="no layer 'nope'"):
        sparsity.pruning_order(torch.zeros(2, 2), torch.zeros(2, 2)) is None or sparsity._param(model, "nope")


def test_pruning_order_is_norm_minus_first_epoch():
    w = torch.zeros(3, 2, 1, 2)
    w[0, 0, 0] = torch.tensor([3.0, 4.0])   # norm 5
    w[1, 1, 0] = torch.tensor([0.0, 1.0])   # norm 1
    w[2, 0, 0] = torch.tensor([6.0, 8.0])   # norm 10
    first = torch.tensor([4, 1, sparsity.NEVER], dtype=torch.int32)
    order = sparsity.pruning_order(w, first)
    assert order.tolist() == pytest.approx([5 - 4, 1 - 1, 10 - sparsity.NEVER])
    fc = torch.tensor([[-2.0, 0.5], [1.0, -3.0]])
    fc_order = sparsity.pruning_order(fc, torch.tensor([[1, 2], [3, sparsity.NEVER]]))
    assert fc_order.flatten().tolist() == pytest.approx([1.0, -1.5, -2.0, 3.0 - sparsity.NEVER])
    with pytest.raises(ValueError, match="expected"):
        sparsity.pruning_order(w, torch.zeros(2))
    # filters never selected keep their size order exactly (no float32 ties at norm - 2000)
    never = torch.full((256,), sparsity.NEVER)
    w = (0.6 + 1e-5 * torch.arange(256.0))[:, None, None, None] * torch.ones(256, 1, 1, 1)
    assert int(sparsity.keep_mask(sparsity.pruning_order(w, never), 50).sum()) == 128


def test_keep_mask_uses_numpys_percentile():
    order = torch.tensor([5.0, 1.0, 9.0, 3.0, 7.0, 2.0, 8.0, 4.0, 6.0, 10.0])
    assert sparsity.keep_mask(order, 0).all()
    for p in (10, 20, 40, 60, 80):
        keep = sparsity.keep_mask(order, p)
        threshold = np.percentile(order.numpy(), p)
        assert keep.tolist() == [v >= threshold for v in order.tolist()]
    assert int(sparsity.keep_mask(order, 40).sum()) == 6  # 1..4 pruned (threshold 4.6)
    with pytest.raises(ValueError, match=r"percent must be in \[0, 100\]"):
        sparsity.keep_mask(order, 120)


def test_pruned_zeroes_filters_and_their_biases_then_restores():
    model = net()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    order = torch.tensor([3.0, -1990.0, 2.0, 1.0])  # filter 1 never selected, then 3, 2, 0
    with sparsity.pruned(model, "conv", 50, order) as keep:
        assert keep.tolist() == [True, False, True, False]
        for f in (1, 3):
            assert torch.equal(model.conv.weight[f], torch.zeros(1, 3, 3)) and model.conv.bias[f] == 0
        for f in (0, 2):
            assert torch.equal(model.conv.weight[f], before["conv.weight"][f])
            assert model.conv.bias[f] == before["conv.bias"][f]
        assert torch.equal(model.fc.weight, before["fc.weight"])
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    fc_order = torch.arange(12.0).reshape(3, 4)
    with sparsity.pruned(model, "fc.weight", 25, fc_order):
        assert int((model.fc.weight == 0).sum()) == 3 and torch.equal(model.fc.bias, before["fc.bias"])
    assert torch.equal(model.fc.weight, before["fc.weight"])


def test_pruning_table_measures_each_percentage():
    model = net()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(40, 1, 5, 5, generator=g)
    with torch.no_grad():
        y = model(x).argmax(1)  # labels the unpruned model gets right
    table = sparsity.pruning_table(model, "conv", torch.tensor([4.0, 3.0, 2.0, 1.0]), [(x, y)], [0, 50, 100],
                                   reported={0: 99.0})
    assert list(table.index) == [0, 50, 100] and table.loc[0, "test_acc"] == 100.0
    assert list(table["kept"]) == [4, 2, 1] and table.loc[0, "reported"] == 99.0
    manual = net()
    with torch.no_grad():
        manual.conv.weight[2:] = 0
        manual.conv.bias[2:] = 0
        expected = 100.0 * float((manual(x).argmax(1) == y).float().mean())
    assert table.loc[50, "test_acc"] == pytest.approx(expected)


class FakeSLBI:
    """An optimizer whose Gamma support follows a script, one entry per epoch."""

    def __init__(self, supports):
        self.supports, self.epoch = supports, 0

    def support(self):
        return self.supports[min(self.epoch, len(self.supports) - 1)]


def test_slbipath_records_first_selected_epochs_and_fractions():
    s = [{"conv.weight": torch.tensor([False, False, False, False])},
         {"conv.weight": torch.tensor([False, True, False, False])},
         {"conv.weight": torch.tensor([True, True, False, False])},
         {"conv.weight": torch.tensor([True, False, False, False])}]  # filter 1 leaves again
    opt = FakeSLBI(s)
    cb = sparsity.SLBIPath(evaluate_sparse=False)
    state = SimpleNamespace(optimizer=opt)
    cb.on_fit_start(state)
    for e in range(4):
        opt.epoch = e
        cb.on_epoch_end(state, {"epoch": e + 1})
    assert cb.first_epoch["conv.weight"].tolist() == [3, 2, sparsity.NEVER, sparsity.NEVER]
    assert [p["fractions"]["conv.weight"] for p in cb.path] == [0.0, 0.25, 0.5, 0.25]
    assert cb.frame()["conv.weight"].tolist() == [0.0, 0.25, 0.5, 0.25]
    copy = sparsity.SLBIPath()
    copy.load_state_dict(cb.state_dict())
    assert copy.path == cb.path and torch.equal(copy.first_epoch["conv.weight"], cb.first_epoch["conv.weight"])
    model = net()
    assert cb.order(model, "conv").shape == (4,)
    with pytest.raises(ValueError, match="no path recorded"):
        sparsity.SLBIPath().order(model, "conv")
    with pytest.raises(TypeError, match="needs an SLBI optimizer"):
        sparsity.SLBIPath().on_fit_start(SimpleNamespace(optimizer=torch.optim.SGD(model.parameters(), lr=0.1)))


def test_chapter6_configs():
    data = experiments.DataChoice(source="sample", train_size=100)
    cfgs = experiments.dessilbi_lenet_configs(epochs=60, batch_size=128, lr=0.1, kappa=1, mu=20, lam=1, lr_step=20,
                                              data=data)
    assert list(cfgs) == ["SLBI", "SGD"]
    slbi, sgd = cfgs["SLBI"], cfgs["SGD"]
    assert (slbi.model, slbi.dataset, slbi.optimizer, slbi.weight_decay, slbi.augment) == ("lenet", "mnist", "slbi", 0, False)
    assert slbi.optimizer_options == {"kappa": 1, "lam": 1, "mu": 20} and sgd.optimizer == "sgd"
    assert slbi.scheduler == "step" and slbi.scheduler_options == {"gamma": 0.1, "step_size": 20}
    assert slbi.replace(optimizer="sgd", optimizer_options={}) == sgd
    for cfg in cfgs.values():
        cfg.validate()
    base = experiments.training_choice_base(epochs=50, batch_size=128, lr=1e-3, data=data)
    resnet = experiments.dessilbi_resnet_configs(base, kappa=1, mu=20, lam=0.1)
    assert resnet["Adam"].key() == base.key()  # chapter 3's baseline, shared through the store
    assert resnet["SLBI-Adam"].optimizer == "slbi_adam" and resnet["SLBI-Adam"].validate()
    with pytest.raises(ValueError, match="Adam baseline"):
        experiments.dessilbi_resnet_configs(base.replace(optimizer="sgd"), kappa=1, mu=20, lam=1)
    assert SLBI_LENET_PRUNING_ACC[80] == 98.30


def fake_run(accs, losses=None):
    from cifar_utils.engine import RunConfig, Run

    history = [{"epoch": i + 1, "test_acc": a, "test_loss": 1.0 / (i + 1), "train_acc": a, "train_loss": 1.0}
               for i, a in enumerate(accs)]
    return Run(config=RunConfig(), path=Path("/nonexistent"), history=history, status="finished")


def test_run_comparison_and_difference_check():
    runs = {"SLBI-Adam": fake_run([80, 90, 91, 90, 91, 90]), "Adam": fake_run([70, 90, 90, 91, 90, 91])}
    t = tables.run_comparison(runs, last=5)
    assert t.loc["SLBI-Adam", "final_acc"] == 90 and t.loc["Adam", "best_acc"] == 91
    assert t.loc["SLBI-Adam", "mean_last_5"] == pytest.approx(90.4)
    check = tables.difference_check(t, "SLBI-Adam", "Adam", last=5)
    assert check["significant"] is False and "no difference beyond" in check["verdict"]
    far = tables.run_comparison({"a": fake_run([95, 95.2, 95.1]), "b": fake_run([90, 90.1, 90.0])}, last=3)
    assert tables.difference_check(far, "a", "b", last=3)["significant"] is True


def test_chapter6_figures():
    import pandas as pd

    frame = pd.DataFrame({"conv1.weight": [0.0, 0.5, 1.0], "fc1.weight": [0.0, 0.1, 0.2],
                          "sparse_test_acc": [10.0, 50.0, 90.0]}, index=pd.Index([1, 2, 3], name="epoch"))
    fig = plots.plot_regularization_path(frame, {"SLBI": fake_run([20, 60, 95])}, note="smoke profile")
    assert [len(ax.lines) for ax in fig.axes] == [2, 2] and "smoke" in fig._suptitle.get_text()
    assert list(fig.axes[0].lines[0].get_ydata()) == [0.0, 50.0, 100.0]
    before = np.arange(12.0).reshape(4, 3) + 1
    after = before.copy()
    after[1] = 0
    fig = plots.plot_pruned_weights(before, after, "t", accuracy=(98.0, 97.5))
    assert "3/4 rows non-zero" in fig.axes[1].get_title() and "test accuracy 97.50%" in fig.axes[1].get_title()


def test_pruning_explorer_updates_accuracy_and_picture():
    from cifar_utils.widgets import PruningExplorer

    model = net()
    x = torch.randn(64, 1, 5, 5, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        y = model(x).argmax(1)
    orders = {"conv": torch.tensor([4.0, 3.0, 2.0, 1.0]), "fc": torch.arange(12.0).reshape(3, 4)}
    ex = PruningExplorer(model, orders, [(x, y)])
    assert ex.accuracy == 100.0
    image = ex.axes[1].images[0].get_array()
    assert int((np.abs(np.asarray(image)).sum(1) == 0).sum()) == 0
    ex.percent.value = 75
    manual = net()
    with torch.no_grad():
        manual.conv.weight[1:] = 0
        manual.conv.bias[1:] = 0
        expected = 100.0 * float((manual(x).argmax(1) == y).float().mean())
    assert ex.accuracy == pytest.approx(expected) and "1/4 rows non-zero" in ex.axes[1].get_title()
    assert f"conv 75% pruned: <b>{ex.accuracy:.2f}%</b> (unpruned: 100.00%)" in ex.summary.value
    assert ex.percent.continuous_update is False  # every step evaluates the model: draw where a drag ends
    image = np.asarray(ex.axes[1].images[0].get_array())
    assert int((np.abs(image).sum(1) == 0).sum()) == 3  # three of four filters zeroed in the picture
    ex.layer.value = "fc"
    assert np.asarray(ex.axes[1].images[0].get_array()).shape == (3, 4)
    assert int((np.asarray(ex.axes[1].images[0].get_array()) == 0).sum()) == 9
    assert torch.equal(model.conv.weight, net().conv.weight)  # the model is restored


@pytest.mark.slow
def test_smoke_chapter6_executes_with_every_figure(smoke_book):
    out, _, _ = smoke_book
    nb = json.loads((out / "_build" / "src" / "book" / "06_dessilbi.ipynb").read_text())
    outputs = [o for c in nb["cells"] for o in c.get("outputs", [])]
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 7  # Figures 18-21, the two paths, explorer
    text = json.dumps(outputs)
    assert "Table 3" in text and "98.65" in text and "seed(s)" in text  # Table 3 over the seeds
    assert "no difference beyond" in text or "a difference beyond" in text
    from cifar_utils import plan
    from cifar_utils.book.params import load_profile

    if load_profile(ROOT / "params" / "smoke.yaml").get("published"):  # parts 1-3 from the bundle, part 4 smoke
        lenet = plan.for_profile("smoke", ROOT).chapters["06_dessilbi"].arm(("lenet",), "SLBI").configs
        assert "Parts 1-3 (LeNet on MNIST): full-profile runs published in" in text
        assert f"x {len(lenet)} seeds" in text and "60 epochs on 60,000 MNIST training images" in text
        assert "Part 4 (ResNet-18 on CIFAR-10): smoke profile" in text and "smoke profile; the rule alone" not in \
            text.split("Pruning conv3 is safe")[1].split("SLBI-Adam")[0]  # the LeNet claim is judged, not smoke
    else:
        assert "Smoke results" in text
