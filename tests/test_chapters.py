"""Chapters 1-3: their experiment configs, tables, figures, and the executed smoke notebooks."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("agg")

from cifar_utils import experiments, plots, tables  # noqa: E402
from cifar_utils.engine import Run, RunConfig, RunStore  # noqa: E402
from cifar_utils.reported import ABLATION_ERRORS, ARCHITECTURE_ERRORS  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def fake_run(model: str, test_accs: list[float], seed: int = 0, train_losses: list[float] | None = None,
             **config) -> Run:
    losses = train_losses or [1.0 / (i + 1) for i in range(len(test_accs))]
    history = [{"epoch": i + 1, "train_loss": losses[i], "train_acc": 50.0 + i, "test_loss": 1.0,
                "test_acc": a, "lr": 0.1} for i, a in enumerate(test_accs)]
    cfg = RunConfig(model=model, seed=seed, **config)
    return Run(config=cfg, path=Path("/nonexistent") / cfg.name, history=history, status="finished",
               wall_seconds=3725.0, device="cpu")


def test_protocol_configs_follow_the_report_and_vary_only_model_and_seed():
    data = experiments.DataChoice(source="sample", train_size=32)
    cfgs = experiments.protocol_configs(["resnet18", "dla"], epochs=3, batch_size=16, seeds=[0, 1], data=data)
    assert list(cfgs) == ["resnet18", "dla"] and [c.seed for c in cfgs["dla"]] == [0, 1]
    c = cfgs["resnet18"][0]
    assert (c.optimizer, c.lr, c.momentum, c.weight_decay, c.scheduler, c.augment) == ("sgd", 0.1, 0.9, 5e-4, "plateau", True)
    assert (c.source, c.train_size, c.epochs, c.batch_size) == ("sample", 32, 3, 16)
    with pytest.raises(ValueError, match="seeds is empty"):
        experiments.protocol_configs(["resnet18"], epochs=1, batch_size=1, seeds=[], data=data)


def test_sweeps_share_the_baseline_run_and_reject_unknown_variants():
    base = experiments.training_choice_base(epochs=2, batch_size=8, lr=1e-3, data=experiments.DataChoice())
    assert (base.model, base.optimizer, base.lr, base.loss) == ("resnet18", "adam", 1e-3, "ce")
    act = experiments.sweep_configs("activation", base)
    loss = experiments.sweep_configs("loss", base)
    opt = experiments.sweep_configs("optimizer", base)
    assert list(act) == ["ReLU", "Sigmoid", "LeakyReLU", "ELU", "GELU"]
    assert act["ReLU"].name == loss["CrossEntropy"].name == opt["Adam"].name == base.name
    assert act["GELU"].model_options == {"activation": "gelu"} and opt["Adagrad"].optimizer == "adagrad"
    assert len({c.name for s in (act, loss, opt) for c in s.values()}) == 11
    with pytest.raises(ValueError, match="unknown loss variant.*choose from ce, bce, mse_logits, huber_logits, mse, huber"):
        experiments.sweep_configs("loss", base, ["ce", "hinge"])


def test_results_note_labels_reduced_runs_only():
    full = experiments.DataChoice()
    assert experiments.results_note("full", full, 200, 200) is None
    note = experiments.results_note("smoke", experiments.DataChoice(source="sample", train_size=32), 2, 200)
    assert note == "smoke profile: 32 training images, embedded sample, 2 of 200 epochs; not comparable with the report"


def test_results_table_puts_reported_beside_reproduced_with_seed_spread():
    import pandas as pd

    runs = {"resnet18": [fake_run("resnet18", [80.0, 95.0], seed=0), fake_run("resnet18", [81.0, 94.0], seed=1)],
            "dla": [fake_run("dla", [70.0, 90.0])]}
    summary = pd.DataFrame({"model": ["resnet18", "dla"], "params": [11173962, 16291386], "gflops": [1.11, 2.06]})
    t = tables.results_table(runs, ARCHITECTURE_ERRORS, summary).set_index("model")
    assert t.loc["resnet18", "reported_error"] == 4.89 and t.loc["dla", "reported_error"] == 5.02
    assert t.loc["resnet18", "reproduced_error"] == pytest.approx(5.5)
    assert t.loc["resnet18", "std"] == pytest.approx(0.7071, abs=1e-4)
    assert t.loc["resnet18", "difference"] == pytest.approx(0.61)
    assert t.loc["resnet18", "final_error"] == pytest.approx(5.5)
    assert t.loc["dla", "params_m"] == pytest.approx(16.291386) and t.loc["resnet18", "seeds"] == 2
    assert t.loc["resnet18", "wall_time"] == "2:04:10" and t.loc["dla", "epochs"] == 2
    html_table = tables.format_table(t.reset_index()).to_html()
    assert "4.89" in html_table and "+0.61" in html_table


def test_group_comparison_reports_order_agreement():
    runs = {m: [fake_run(m, [100 - e])] for m, e in [("resnet18", 5.0), ("resnet50", 6.0),
                                                       ("resnext29_2x32d", 5.0), ("resnext29_2x64d", 7.0)]}
    t = tables.results_table(runs, ABLATION_ERRORS)
    g = tables.group_comparison(t, {"depth": ["resnet18", "resnet50"], "width": ["resnext29_2x32d", "resnext29_2x64d"]})
    rows = g.set_index("group")
    assert rows.loc["depth", "same order"] == "yes" and rows.loc["width", "same order"] == "no"
    assert rows.loc["depth", "reported spread"] == pytest.approx(0.48)
    assert rows.loc["width", "reproduced order"] == "resnext29_2x32d < resnext29_2x64d"


def test_check_findings_say_whether_each_observation_holds():
    runs = {"ReLU": fake_run("resnet18", [80, 85, 86, 87], train_losses=[1, .5, .4, .3]),
            "Sigmoid": fake_run("resnet18", [20, 30, 40, 50]),
            "LeakyReLU": fake_run("resnet18", [81, 86, 87, 88], train_losses=[.8, .4, .3, .2]),
            "ELU": fake_run("resnet18", [79, 84, 80, 86], train_losses=[2, 1, .9, .8]),
            "GELU": fake_run("resnet18", [80, 85, 85.5, 85.6], train_losses=[1.2, .6, .5, .4])}
    checks = tables.check_findings("activation", tables.sweep_table(runs)).set_index("report says")["holds here"]
    assert list(checks) == ["yes", "yes", "yes", "yes"]
    loss = {"CrossEntropy": fake_run("resnet18", [90]), "BCE": fake_run("resnet18", [91]),
            "MSE": fake_run("resnet18", [85]), "Huber": fake_run("resnet18", [80])}
    row = tables.check_findings("loss", tables.sweep_table(loss)).iloc[0]
    assert row["holds here"] == "no" and row["reproduced order"] == "BCE > CrossEntropy > MSE > Huber"
    opt = {"SGD": fake_run("resnet18", [90]), "Adagrad": fake_run("resnet18", [80]),
           "Adadelta": fake_run("resnet18", [89]), "Adam": fake_run("resnet18", [91])}
    assert tables.check_findings("optimizer", tables.sweep_table(opt)).iloc[0]["holds here"] == "yes"


def test_figures_have_a_line_per_series():
    a, b = fake_run("resnet18", [50, 60, 70]), fake_run("dla", [40, 55, 65])
    fig = plots.plot_training(a, note="smoke")
    assert len(fig.axes[0].lines) == 2 and "smoke" in fig._suptitle.get_text()
    assert len(plots.plot_test_error({"a": a, "b": b}).axes[0].lines) == 2
    sweep = plots.plot_sweep({"a": a, "b": b}, "t")
    assert [len(ax.lines) for ax in sweep.axes] == [2, 2, 2, 2]
    assert list(sweep.axes[3].lines[1].get_ydata()) == [40, 55, 65]


# --- the executed smoke chapters ------------------------------------------------------------

def _html_outputs(nb: dict) -> str:
    return "\n".join("".join(o.get("data", {}).get("text/html", "")) for c in nb["cells"] for o in c.get("outputs", []))


# smoke_book (the executed smoke book, built once per session) is in conftest.py


@pytest.mark.slow
@pytest.mark.parametrize("chapter,reported", [("01_architectures", ARCHITECTURE_ERRORS), ("02_ablations", ABLATION_ERRORS)])
def test_smoke_chapter_table_has_reported_and_reproduced_errors(smoke_book, chapter, reported):
    out, runs_dir, _ = smoke_book
    nb = json.loads((out / "_build" / "src" / "book" / f"{chapter}.ipynb").read_text())
    text = html.unescape(_html_outputs(nb))
    import yaml

    params = yaml.safe_load((ROOT / "params" / "smoke.yaml").read_text())["chapters"][chapter]
    stored = {r.config.model: r for r in RunStore(runs_dir).list()
              if r.config.model in reported and r.config.optimizer == "sgd"
              and (r.config.epochs, r.config.batch_size, r.config.train_size)
              == (params["epochs"], params["batch_size"], params["train_size"])}
    assert set(stored) == set(reported), "every model of the chapter was trained into the store"
    for model, err in reported.items():
        row = re.search(rf"<td[^>]*>{model}</td>(.*?)</tr>", text, re.S)
        assert row, f"{chapter}: no table row for {model}"
        cells = re.findall(r"<td[^>]*>([^<]*)</td>", row.group(1))
        assert f"{err:.2f}" == cells[2], f"{model}: reported column"
        assert f"{stored[model].best_test_error:.2f}" == cells[3], f"{model}: reproduced column (best epoch)"
        assert f"{stored[model].final_test_error:.2f}" == cells[5], f"{model}: final-epoch column"
    assert "Smoke results" in json.dumps(nb["cells"])
    assert sum("image/png" in o.get("data", {}) for c in nb["cells"] for o in c.get("outputs", [])) >= 1


@pytest.mark.slow
def test_smoke_chapter3_sweeps_and_the_built_html(smoke_book):
    out, runs_dir, result = smoke_book
    nb = json.loads((out / "_build" / "src" / "book" / "03_training_choices.ipynb").read_text())
    assert "13 variants, 11 distinct runs" in json.dumps(nb["cells"])
    pngs = sum("image/png" in o.get("data", {}) for c in nb["cells"] for o in c.get("outputs", []))
    assert pngs == 4  # the three sweeps and the explorer's static figure
    assert "holds here" in _html_outputs(nb)
    import yaml

    params = yaml.safe_load((ROOT / "params" / "smoke.yaml").read_text())["chapters"]["03_training_choices"]
    # chapter 6's SLBI-Adam run shares these sizes (its Adam baseline is chapter 3's): not a sweep variant
    ch3 = [r for r in RunStore(runs_dir).list() if (r.config.epochs, r.config.train_size) == (params["epochs"], params["train_size"])
           and r.config.optimizer in experiments.SWEEPS["optimizer"]]
    assert len(ch3) >= 11
    assert {r.config.optimizer: r.config.lr for r in ch3 if r.config.loss == "ce"
            and not r.config.model_options} == experiments.DEFAULT_OPTIMIZER_LRS
    index = out / "_build" / "html" / "index.html"
    assert result.html_index == index and index.exists()
    for page in ("01_architectures", "02_ablations", "03_training_choices", "status"):
        assert "<img" in (out / "_build" / "html" / "book" / f"{page}.html").read_text() or page == "status"


def test_history_explorer_redraws_on_each_control():
    from cifar_utils.widgets import history_explorer

    runs = {"a": fake_run("resnet18", [50, 60, 70]), "b": fake_run("dla", [40, 55, 65])}
    ex = history_explorer(runs)
    assert [list(l.get_ydata()) for l in ex.figure.axes[0].lines] == [[50, 60, 70], [40, 55, 65]]
    ex.select.value = ("b",)
    assert len(ex.figure.axes[0].lines) == 1
    ex.metric.value = "train_loss"
    assert ex.figure.axes[0].get_ylabel() == "train loss"
    ex.log.value = True
    assert ex.figure.axes[0].get_yscale() == "log"
    with pytest.raises(ValueError, match="unknown metric 'acc'; choose one of train_loss"):
        history_explorer(runs, metric="acc")


def test_results_table_counts_only_finished_runs():
    ok = fake_run("resnet18", [80.0, 95.0], seed=0)
    bad = fake_run("resnet18", [80.0, 20.0], seed=1)
    bad.status = "diverged"
    t = tables.results_table({"resnet18": [ok, bad]}, ARCHITECTURE_ERRORS).set_index("model")
    assert t.loc["resnet18", "reproduced_error"] == pytest.approx(5.0)
    assert t.loc["resnet18", "seeds"] == "1/2" and t.loc["resnet18", "status"] == "diverged, finished"


def test_findings_about_variants_not_run_say_not_run():
    only = {"ReLU": fake_run("resnet18", [80, 85, 80, 85]), "GELU": fake_run("resnet18", [81, 86, 87, 87.5])}
    holds = list(tables.check_findings("activation", tables.sweep_table(only))["holds here"])
    assert holds == ["not run", "not run", "not run", "yes"]
    alone = tables.check_findings("optimizer", tables.sweep_table({"Adagrad": fake_run("resnet18", [70])}))
    assert list(alone["holds here"]) == ["not run"]


def test_group_comparison_compares_only_models_with_results():
    runs = {m: [fake_run(m, [100 - e])] for m, e in [("resnet50", 6.0), ("resnext50_8x14d", 5.0)]}
    runs["resnext50_2x40d"] = []
    t = tables.results_table(runs, ABLATION_ERRORS)
    row = tables.group_comparison(t, {"g": ["resnet50", "resnext50_2x40d", "resnext50_8x14d"]}).iloc[0]
    assert row["reported order"] == "resnext50_8x14d < resnet50" and row["same order"] == "yes"
    assert row["reported spread"] == pytest.approx(0.57)
