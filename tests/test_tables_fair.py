"""Chapters 1-3 compare like with like (#10): best-epoch errors beside final and held-out-chosen ones,
each optimizer at its own learning rate (and the opt-in grid), MSE / Huber on logits, precision shown."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib
import pytest
import torch

matplotlib.use("agg")

from cifar_utils import experiments, plots, tables  # noqa: E402
from cifar_utils.engine import Run, RunConfig, create_loss  # noqa: E402
from cifar_utils.reported import (ABLATION_CLAIMS, ABLATION_ERRORS, ABLATION_GROUPS,  # noqa: E402
                                  ARCHITECTURE_CLAIMS, ARCHITECTURE_ERRORS)

ROOT = Path(__file__).resolve().parents[1]


def fake_run(model: str, test_accs: list[float], val_accs: list[float] | None = None, seed: int = 0,
             info: dict | None = None, status: str = "finished", device: str | None = "cpu", **config) -> Run:
    history = []
    for i, a in enumerate(test_accs):
        row = {"epoch": i + 1, "train_loss": 1.0 / (i + 1), "train_acc": 50.0 + i, "test_loss": 1.0,
               "test_acc": a, "lr": 0.1}
        if val_accs is not None:
            row["val_acc"] = val_accs[i]
        history.append(row)
    cfg = RunConfig(model=model, seed=seed, **config)
    return Run(config=cfg, path=Path("/nonexistent") / cfg.name, history=history, status=status,
               wall_seconds=60.0, device=device, info=dict(info or {}))


# --- which epoch each column takes --------------------------------------------------------------

# test accuracy peaks at epoch 2 (error 4), ends at epoch 4 (error 7); the held-out accuracy peaks
# at epoch 3, where the test error is 6
TEST = [90.0, 96.0, 94.0, 93.0]
VAL = [80.0, 85.0, 88.0, 86.0]


def test_epoch_errors_read_best_final_and_held_out_chosen_epochs():
    e = tables.epoch_errors(fake_run("resnet18", TEST, VAL, val_size=8))
    assert e["best"] == pytest.approx(4.0) and e["best_epoch"] == 2
    assert e["final"] == pytest.approx(7.0)
    assert e["val_selected"] == pytest.approx(6.0) and e["val_epoch"] == 3
    tie = tables.epoch_errors(fake_run("resnet18", [90.0, 95.0, 95.0], [70.0, 70.0, 60.0]))
    assert (tie["best_epoch"], tie["val_epoch"]) == (2, 1), "ties go to the first epoch"
    assert tables.epoch_errors(fake_run("resnet18", TEST))["val_selected"] is None


def test_results_table_columns_take_best_final_and_held_out_epochs():
    runs = {"resnet18": [fake_run("resnet18", TEST, VAL, val_size=8)]}
    t = tables.results_table(runs, ARCHITECTURE_ERRORS).set_index("model")
    row = t.loc["resnet18"]
    assert row["reproduced_error"] == pytest.approx(4.0), "reproduced = best epoch (the report's figure)"
    assert row["difference"] == pytest.approx(4.0 - 4.89)
    assert row["final_error"] == pytest.approx(7.0)
    assert row["val_selected_error"] == pytest.approx(6.0)
    assert row["best_epoch"] == "2"
    cols = list(t.reset_index().columns)
    assert cols.index("reported_error") + 1 == cols.index("reproduced_error") < cols.index("final_error")


def test_results_table_means_over_seeds_and_drops_held_out_column_without_split():
    runs = {"dla": [fake_run("dla", [90.0, 96.0, 93.0], seed=0), fake_run("dla", [92.0, 93.0, 94.0], seed=1)]}
    t = tables.results_table(runs, ARCHITECTURE_ERRORS).set_index("model")
    assert t.loc["dla", "reproduced_error"] == pytest.approx((4.0 + 6.0) / 2)
    assert t.loc["dla", "std"] == pytest.approx(1.41421, abs=1e-4)
    assert t.loc["dla", "final_error"] == pytest.approx((7.0 + 6.0) / 2)
    assert t.loc["dla", "best_epoch"] == "2, 3"
    assert "val_selected_error" not in t.columns
    html = tables.format_table(t.reset_index()).to_html()
    assert "5.00" in html and "6.50" in html  # best-epoch mean, final-epoch mean
    assert f"{5.0 - ARCHITECTURE_ERRORS['dla']:+.2f}" in html


def test_device_column_shows_the_precision_each_run_used():
    gpu = fake_run("resnet18", [90.0], device="NVIDIA H200", info={"precision": "bf16"})
    cpu = fake_run("resnet18", [91.0], seed=1, device="cpu: x86_64, 2 threads", precision="fp32")
    assert tables.run_device(gpu) == "NVIDIA H200, bf16"
    assert tables.run_device(cpu) == "cpu: x86_64, 2 threads, fp32", "config precision when status.json has none"
    assert tables.run_device(fake_run("resnet18", [90.0])) == "cpu", "auto and unrecorded: not guessed"
    t = tables.results_table({"resnet18": [gpu, cpu]}, ARCHITECTURE_ERRORS)
    assert t.loc[0, "device"] == "NVIDIA H200, bf16; cpu: x86_64, 2 threads, fp32"


def test_group_orders_use_the_best_epoch():
    # resnet18: best 4, final 9; resnet50: best 5, final 6 -> the report's order by best epoch
    runs = {"resnet18": [fake_run("resnet18", [96.0, 91.0])], "resnet50": [fake_run("resnet50", [95.0, 94.0])]}
    t = tables.results_table(runs, ABLATION_ERRORS)
    row = tables.group_comparison(t, {"depth": ["resnet18", "resnet50"]}, claims=ABLATION_CLAIMS).iloc[0]
    assert row["reproduced order"] == "resnet18 < resnet50" and row["same order"] == "yes"
    assert row["report's claim"] == ABLATION_CLAIMS["depth"]
    assert set(ABLATION_CLAIMS) == set(ABLATION_GROUPS)


def test_compare_with_reference_puts_the_claim_beside_computed_numbers():
    import pandas as pd

    runs = {"resnet18": [fake_run("resnet18", [95.0, 94.0])], "densenet121": [fake_run("densenet121", [96.0])]}
    summary = pd.DataFrame({"model": ["resnet18", "densenet121"], "params": [11_173_962, 6_956_298],
                            "gflops": [1.11, 1.78]})
    t = tables.results_table(runs, ARCHITECTURE_ERRORS, summary)
    c = tables.compare_with_reference(t, "resnet18", ARCHITECTURE_CLAIMS).set_index("model")
    assert list(c.index) == ["densenet121"], "claims about models not run are left out"
    assert c.loc["densenet121", "report's claim"] == ARCHITECTURE_CLAIMS["densenet121"]
    assert c.loc["densenet121", "params ratio"] == pytest.approx(6_956_298 / 11_173_962)
    assert c.loc["densenet121", "reported - resnet18"] == pytest.approx(4.78 - 4.89)
    assert c.loc["densenet121", "reproduced - resnet18"] == pytest.approx(4.0 - 5.0)
    with pytest.raises(ValueError, match="reference model 'vgg'"):
        tables.compare_with_reference(t, "vgg", ARCHITECTURE_CLAIMS)


# --- losses ----------------------------------------------------------------------------------

def test_mse_and_huber_on_logits_are_the_torch_losses_on_the_output():
    logits = torch.randn(6, 10) * 5
    y = torch.randint(0, 10, (6,))
    onehot = torch.nn.functional.one_hot(y, 10).float()
    assert torch.allclose(create_loss("mse_logits")(logits, y), torch.nn.MSELoss()(logits, onehot))
    assert torch.allclose(create_loss("huber_logits")(logits, y), torch.nn.HuberLoss(delta=1.0)(logits, onehot))


def test_mse_and_huber_give_different_gradients_on_large_logits():
    torch.manual_seed(0)
    logits = (torch.randn(8, 10) * 10).requires_grad_()
    y = torch.randint(0, 10, (8,))
    grads = {}
    for name in ("mse_logits", "huber_logits", "mse", "huber"):
        logits.grad = None
        create_loss(name)(logits, y).backward()
        grads[name] = logits.grad.clone()
    # on logits: Huber's gradient is capped at 1/(B*K) per entry, MSE's grows with the residual
    assert grads["huber_logits"].abs().max() <= 1.0 / 80 + 1e-7
    assert grads["mse_logits"].abs().max() > 5 * grads["huber_logits"].abs().max()
    cos = torch.nn.functional.cosine_similarity(grads["mse_logits"].flatten(), grads["huber_logits"].flatten(), dim=0)
    assert cos < 0.99, "not merely a rescaling of one another"
    # on probabilities (the old definitions, kept under their names) Huber is exactly MSE / 2
    assert torch.allclose(grads["huber"], grads["mse"] / 2, atol=1e-9)


def test_logit_losses_have_new_names_so_stored_runs_keep_their_meaning():
    base = RunConfig(model="resnet18", loss="mse")
    assert base.replace(loss="mse_logits").key() != base.key()
    RunConfig(loss="huber_logits").validate()
    loss = experiments.sweep_configs("loss", RunConfig(optimizer="adam", lr=1e-3))
    assert {label: c.loss for label, c in loss.items()} == {"CrossEntropy": "ce", "BCE": "bce", "MSE": "mse_logits",
                                                           "Huber": "huber_logits"}
    old = experiments.sweep_configs("loss", RunConfig(), ["mse", "huber"])
    assert list(old) == ["MSE (softmax)", "Huber (softmax)"]


# --- optimizers at their own learning rates ----------------------------------------------------

def _base(**kw) -> RunConfig:
    return experiments.training_choice_base(epochs=2, batch_size=8, lr=experiments.DEFAULT_OPTIMIZER_LRS["adam"],
                                            data=experiments.DataChoice(source="sample"), **kw)


def test_optimizer_sweep_uses_each_optimizers_lr_without_adding_runs():
    base = _base()
    opt = experiments.sweep_configs("optimizer", base, lrs=experiments.DEFAULT_OPTIMIZER_LRS)
    assert {k: (c.optimizer, c.lr) for k, c in opt.items()} == {
        "SGD": ("sgd", 0.1), "Adagrad": ("adagrad", 0.01), "Adadelta": ("adadelta", 1.0), "Adam": ("adam", 0.001)}
    assert opt["SGD"].momentum == 0.9 and opt["Adam"].name == base.name, "Adam is the shared baseline"
    act = experiments.sweep_configs("activation", base)
    loss = experiments.sweep_configs("loss", base)
    assert len({c.name for s in (act, loss, opt) for c in s.values()}) == 11
    assert experiments.sweep_configs("optimizer", base)["SGD"].lr == 1e-3, "no lrs: the shared rate"
    with pytest.raises(ValueError, match="optimizer_lrs has no learning rate for adadelta"):
        experiments.sweep_configs("optimizer", base, lrs={"sgd": 0.1, "adagrad": 0.01, "adam": 1e-3})
    with pytest.raises(ValueError, match="optimizer sweep only"):
        experiments.sweep_configs("loss", base, lrs=experiments.DEFAULT_OPTIMIZER_LRS)


def test_optimizer_lrs_appear_in_legend_and_table():
    opt = {"SGD": fake_run("resnet18", [80.0, 85.0], optimizer="sgd", lr=0.1),
           "Adadelta": fake_run("resnet18", [70.0, 75.0], optimizer="adadelta", lr=1.0)}
    fig = plots.plot_sweep(opt, "t", lr_in_legend=True)
    labels = [t.get_text() for t in fig.axes[1].get_legend().get_texts()]
    assert labels == ["SGD (lr 0.1)", "Adadelta (lr 1)"]
    assert list(tables.sweep_table(opt)["lr"]) == [0.1, 1.0]
    plain = plots.plot_sweep(opt, "t")
    assert [t.get_text() for t in plain.axes[1].get_legend().get_texts()] == ["SGD", "Adadelta"]


def test_chapter_parameters_and_profiles_state_lrs_and_precision():
    import yaml

    from cifar_utils.book.params import notebook_parameters

    ch3 = notebook_parameters(ROOT / "book" / "03_training_choices.ipynb")
    assert ch3["optimizer_lrs"].default == experiments.DEFAULT_OPTIMIZER_LRS
    assert ch3["lr_grid"].default == [] and "lr" not in ch3
    for profile in ("smoke", "full"):
        chapters = yaml.safe_load((ROOT / "params" / f"{profile}.yaml").read_text())["chapters"]
        for chapter in ("01_architectures", "02_ablations", "03_training_choices"):
            params = notebook_parameters(ROOT / "book" / f"{chapter}.ipynb")
            assert params["precision"].default == "auto" and "fp32" in params["precision"].help
            assert chapters[chapter]["precision"] in ("auto", "fp32", "bf16"), (profile, chapter)
        assert chapters["03_training_choices"].get("lr_grid", []) == [], f"{profile}: the grid is opt-in"
    explorer_cells = [c for c in json.loads((ROOT / "book" / "03_training_choices.ipynb").read_text())["cells"]
                      if "history_explorer(" in "".join(c["source"])]
    assert len(explorer_cells) == 1


def test_protocol_configs_pass_precision_and_hold_out_with_val_monitor():
    data = experiments.DataChoice(source="sample")
    plain = experiments.protocol_configs(["resnet18"], epochs=1, batch_size=8, seeds=[0], data=data)["resnet18"][0]
    assert plain.key() == RunConfig(model="resnet18", epochs=1, batch_size=8, source="sample").key(), \
        "defaults keep the stored runs' keys"
    held = experiments.protocol_configs(["resnet18"], epochs=1, batch_size=8, seeds=[0], data=data,
                                        precision="fp32", val_size=100)["resnet18"][0]
    assert (held.precision, held.val_size, held.monitor) == ("fp32", 100, "val")
    assert _base(precision="bf16").precision == "bf16"


# --- the opt-in learning-rate grid -----------------------------------------------------------

def test_lr_grid_configs_hold_out_and_scale_each_rate():
    grid = experiments.lr_grid_configs(_base(), experiments.DEFAULT_OPTIMIZER_LRS, val_size=500)
    assert list(grid) == ["SGD", "Adagrad", "Adadelta", "Adam"]
    assert list(grid["Adagrad"]) == [0.001, 0.01, 0.1] and list(grid["Adadelta"]) == [0.1, 1.0, 10.0]
    cfg = grid["Adam"][0.001]
    assert (cfg.optimizer, cfg.lr, cfg.val_size, cfg.monitor) == ("adam", 0.001, 500, "val")
    assert sum(len(r) for r in grid.values()) == 12
    with pytest.raises(ValueError, match="val_size must be > 0"):
        experiments.lr_grid_configs(_base(), experiments.DEFAULT_OPTIMIZER_LRS, val_size=0)
    with pytest.raises(ValueError, match="non-empty list of factors > 0"):
        experiments.lr_grid_configs(_base(), experiments.DEFAULT_OPTIMIZER_LRS, factors=[0, 1])


def test_lr_grid_table_chooses_on_held_out_accuracy_only():
    grid = {
        # the test-best run (lr 1) is not chosen: lr 0.1 is better on the held-out split
        "SGD": {0.1: fake_run("resnet18", [80.0, 82.0, 81.0], [70.0, 75.0, 74.0], optimizer="sgd", lr=0.1),
                1.0: fake_run("resnet18", [90.0, 91.0, 92.0], [72.0, 73.0, 74.0], optimizer="sgd", lr=1.0)},
        "Adagrad": {0.01: fake_run("resnet18", [60.0, 70.0], [50.0, 55.0], optimizer="adagrad", lr=0.01),
                    0.1: fake_run("resnet18", [10.0], [99.0], optimizer="adagrad", lr=0.1, status="diverged")},
    }
    t = tables.lr_grid_table(grid).set_index("variant")
    assert t.loc["SGD", "chosen_lr"] == 0.1 and t.loc["SGD", "val_epoch"] == 2
    assert t.loc["SGD", "test_acc_at_val_best"] == pytest.approx(82.0)
    assert t.loc["SGD", "val_acc by lr"] == "0.1: 75.0, 1: 74.0"
    assert t.loc["Adagrad", "chosen_lr"] == 0.01, "a diverged run is never chosen"
    check = tables.check_findings("optimizer", t.reset_index(), accuracy="test_acc_at_val_best").iloc[0]
    assert check["reproduced order"] == "SGD > Adagrad"


def test_lr_grid_trains_through_the_engine(tmp_path):
    import cifar_utils.engine.testing as testing
    from cifar_utils.engine import run

    base = testing.tiny_config(epochs=2, optimizer="adam", lr=1e-2, train_size=48, test_size=16)
    grid = experiments.lr_grid_configs(base, {"sgd": 0.05, "adam": 1e-2}, ["sgd", "adam"], factors=[0.1, 1.0],
                                       val_size=16)
    runs = {label: {lr: run(c, runs_dir=tmp_path, progress=False) for lr, c in rates.items()}
            for label, rates in grid.items()}
    t = tables.lr_grid_table(runs).set_index("variant")
    assert set(t.index) == {"SGD", "Adam"}
    for label in t.index:
        assert t.loc[label, "chosen_lr"] in grid[label]
        assert 0.0 <= t.loc[label, "test_acc_at_val_best"] <= 100.0
        assert all("val_acc" in r for r in runs[label][t.loc[label, "chosen_lr"]].history)


def test_group_comparison_calls_equal_errors_a_tie_not_an_agreement():
    runs = {"resnet18": [fake_run("resnet18", [90.0])], "resnet50": [fake_run("resnet50", [90.0])]}
    row = tables.group_comparison(tables.results_table(runs, ABLATION_ERRORS), {"depth": ["resnet18", "resnet50"]}).iloc[0]
    assert row["same order"] == "tie" and row["reproduced order"] == "resnet18 = resnet50"
