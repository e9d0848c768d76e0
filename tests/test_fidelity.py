"""Collapsed runs (the engine's detector, the tables that name them) and the fidelity bench's comparison of the
engine with a plain loop (chapter 6's LeNet)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from cifar_utils import fidelity, replicates, tables
from cifar_utils.engine import Run, RunConfig, run
from cifar_utils.engine.health import Collapse, at_chance, collapse

ROOT = Path(__file__).resolve().parent.parent
LN10 = math.log(10)


def history(accs, losses=None):
    losses = losses or [0.3] * len(accs)
    return [{"epoch": i + 1, "test_acc": a, "train_loss": l} for i, (a, l) in enumerate(zip(accs, losses))]


def fake(accs, losses=None, seed=0, status="finished"):
    return Run(config=RunConfig(seed=seed), path=Path("/nonexistent"), history=history(accs, losses), status=status)


# --- the detector ----------------------------------------------------------------------------------------

def test_a_run_at_chance_to_the_end_is_collapsed_from_its_first_epoch_there():
    h = history([89.3, 11.35, 11.35, 11.35, 11.35], [0.5, LN10, 2.3026, 2.301, 2.302])
    found = collapse(h)
    assert found == Collapse(first_epoch=2, epochs=4, to_end=True, accuracy=11.35)
    assert found.describe() == "collapsed (at chance, 11.35 %, from epoch 2 to the end)"


def test_one_or_two_bad_epochs_or_a_low_but_learning_run_are_not_a_collapse():
    assert collapse(history([95, 11.35, 11.35, 96, 97, 98], [0.3, LN10, LN10, 0.2, 0.1, 0.1])) is None
    # at chance but the loss moves: the network is learning something (not "loss stuck at ln 10")
    assert collapse(history([12, 12, 12, 50], [1.5, 1.4, 1.3, 1.0])) is None
    assert collapse(history([97.2, 97.3, 97.2])) is None  # low, not collapsed
    assert collapse(history([11.35])) is None  # one epoch says nothing
    assert collapse(history([11.35, 11.35], [LN10, LN10])) is None  # a smoke run that has not learned yet


def test_a_recovered_stretch_is_named_with_its_length():
    h = history([11.35] * 4 + [96, 97], [LN10] * 4 + [0.2, 0.1])
    found = collapse(h)
    assert found.first_epoch == 1 and found.epochs == 4 and not found.to_end
    assert found.describe() == "recovered from a collapse (at chance for 4 epochs from epoch 1)"
    run = fake([r["test_acc"] for r in h], [r["train_loss"] for r in h])
    assert replicates.status(run) == "finished; recovered from a collapse (at chance for 4 epochs from epoch 1)"
    assert replicates.included(run)  # its final accuracy is a result like any other


def test_chance_depends_on_the_number_of_classes_and_bad_input_is_refused():
    assert at_chance({"test_acc": 14.9, "train_loss": LN10}) and not at_chance({"test_acc": 15.1, "train_loss": LN10})
    assert not at_chance({"test_acc": 11.0, "train_loss": LN10}, num_classes=100)
    assert at_chance({"test_acc": 10.0, "train_loss": float("nan")})  # a NaN loss is not learning either
    with pytest.raises(ValueError, match="num_classes"):
        collapse([], num_classes=1)


def test_the_tables_name_a_collapsed_run_and_leave_it_out_of_the_means():
    good = [fake([97, 98.5, 98.9], seed=0), fake([97, 98.7, 99.1], seed=1)]
    bad = fake([89.3, 11.35, 11.35, 11.35], [0.5, LN10, LN10, LN10], seed=2)
    runs = {"SGD": [*good, bad]}
    assert replicates.status(bad).startswith("collapsed (at chance, 11.35 %, from epoch 2")
    assert not replicates.included(bad) and replicates.included(good[0])
    summary = replicates.summary(runs)
    assert summary.loc["SGD", "seeds"] == "2 of 3"
    assert summary.loc["SGD", "final_mean"] == pytest.approx(99.0)
    assert "seed 2: collapsed" in summary.loc["SGD", "left out"]
    per = replicates.per_seed(runs)
    assert per.loc[("SGD", 2), "status"].endswith("; left out of the means")
    assert per.loc[("SGD", 0), "status"] == "finished"
    comparison = tables.run_comparison({"a": bad, "b": good[0]}, last=2)
    assert comparison.loc["a", "status"].startswith("collapsed")


def test_the_engine_records_a_collapse_in_status_json(tmp_path):
    """Every status.json the engine writes says whether the run collapsed (None when it did not), and the data's
    number of classes the detector judges chance by."""
    from cifar_utils.engine import testing

    done = run(testing.tiny_config(epochs=2), runs_dir=tmp_path, progress=False)
    status = json.loads((done.path / "status.json").read_text())
    assert "collapse" in status and (status["collapse"] is None) == (done.collapse is None)
    assert status["data"]["num_classes"] == 10


# --- the comparison --------------------------------------------------------------------------------------

def test_compare_gives_welch_interval_over_runs_that_did_not_collapse():
    engine = {s: fidelity.outcome(history([95, a])) for s, a in enumerate([98.0, 98.4, 98.8, 99.0])}
    loop = {s: fidelity.outcome(history([95, a])) for s, a in enumerate([98.6, 98.8, 99.0, 99.2])}
    loop[4] = fidelity.outcome(history([11.35, 11.35, 11.35], [LN10] * 3))
    c = fidelity.compare(engine, loop)
    assert c["engine"]["mean"] == pytest.approx(98.55) and c["loop"]["mean"] == pytest.approx(98.9)
    assert c["loop"]["collapsed"] == [4] and c["loop"]["used"] == 4 and c["loop"]["n"] == 5
    assert c["difference"] == pytest.approx(-0.35)
    assert c["low"] < c["difference"] < c["high"] and c["high"] > 0
    assert c["verdict"] == "no significant difference"
    assert "Welch" in c["noise"]
    worse = fidelity.compare({s: fidelity.outcome(history([a])) for s, a in enumerate([96.0, 96.1, 96.2])},
                             {s: fidelity.outcome(history([a])) for s, a in enumerate([99.0, 99.1, 99.2])})
    assert worse["verdict"] == "engine worse" and worse["high"] < 0


def test_low_runs_are_a_point_below_the_median():
    arm = fidelity.arm_summary({s: fidelity.outcome(history([a])) for s, a in enumerate([99.1, 99.0, 97.3, 98.9])})
    assert arm["median"] == pytest.approx(98.95) and arm["low"] == [2] and arm["collapsed"] == []


def test_rates_sentence_states_the_bench_numbers_and_says_when_there_are_none():
    assert "no committed result" in fidelity.rates_sentence(None)
    engine = {s: fidelity.outcome(history([a])) for s, a in enumerate([98.0, 98.9, 99.0])}
    loop = {0: fidelity.outcome(history([11.35] * 3, [LN10] * 3)), 1: fidelity.outcome(history([99.0])),
            2: fidelity.outcome(history([98.8]))}
    result = {"optimizers": {"SGD": fidelity.compare(engine, loop)}, "seeds_per_side": 3, "epochs": 60,
              "device": "CPU", "finished_at": "2026-12-01T12:00:00"}
    assert fidelity.rates(result) == {"SGD": {"runs": 6, "collapsed": 1, "low": 0}}
    text = fidelity.rates_sentence(result)
    assert "SGD: 1 of 6 (17 %) runs collapsed" in text and "3 seeds a side" in text and "interval" in text


def test_the_committed_bench_result_is_complete_and_consistent():
    """The result chapter 6 quotes: 8+ seeds a side for both optimizers, finished, and its summary figures are
    what its per-seed outcomes give."""
    result = fidelity.load_result(ROOT)
    if result is None:
        pytest.skip("no committed bench/results/slbi_fidelity/slbi_fidelity.json")
    assert result["finished"] and result["epochs"] == 60
    for name in ("SLBI", "SGD"):
        comp = result["optimizers"][name]
        per = {side: {int(s): o for s, o in comp["per_seed"][side].items()} for side in ("engine", "loop")}
        assert len(per["engine"]) >= 8 and len(per["loop"]) >= 8
        again = fidelity.compare(per["engine"], per["loop"])
        assert again["difference"] == pytest.approx(comp["difference"])
        assert again["engine"]["collapsed"] == comp["engine"]["collapsed"]


# --- the plain loop and the bench --------------------------------------------------------------------------

def test_plain_loop_trains_lenet_on_the_sample_and_follows_the_step_schedule():
    config = RunConfig(model="lenet", dataset="mnist", optimizer="sgd", lr=0.05, momentum=0.9, batch_size=64,
                       epochs=3, scheduler="step", scheduler_options={"step_size": 2, "gamma": 0.1}, augment=False,
                       source="sample", train_size=256, test_size=128, seed=3)
    h = fidelity.plain_loop(config)
    assert [r["epoch"] for r in h] == [1, 2, 3]
    assert [r["lr"] for r in h] == pytest.approx([0.05, 0.05, 0.005])
    assert all(0 <= r["test_acc"] <= 100 and math.isfinite(r["train_loss"]) for r in h)
    assert fidelity.plain_loop(config)[-1]["test_acc"] == h[-1]["test_acc"]  # seeded
    with pytest.raises(ValueError, match="step schedule"):
        fidelity.plain_loop(config.replace(scheduler="cosine", scheduler_options={}))


def test_the_bench_lists_chapter_6s_full_protocol_runs(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "slbi_fidelity.py"), "--dry-run", "--seeds", "0-1",
                          "--out", str(tmp_path)], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    lines = [line.split() for line in out.stdout.splitlines()[1:]]
    assert [(w[0], w[1], w[3]) for w in lines] == [
        (side, opt, str(seed)) for seed in (0, 1) for opt in ("SLBI", "SGD") for side in ("engine", "loop")]
    from cifar_utils import plan

    full = plan.for_profile("full", ROOT, ["06_dessilbi"]).chapters["06_dessilbi"]
    keys = {c.key() for c in full.configs() if c.model == "lenet" and c.seed in (0, 1)}
    assert {w[4] for w in lines} == keys  # the very runs chapter 6 of the full profile trains (and publishes)
