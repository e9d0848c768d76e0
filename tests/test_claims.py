"""The claims ledger (cifar_utils.claims): each verdict rule on synthetic runs, the declared claims, smoke."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from cifar_utils import claims as cl
from cifar_utils import plan, tables
from cifar_utils.book.params import chapter_parameters
from cifar_utils.engine import Run, RunConfig, RunStore

ROOT = Path(__file__).resolve().parent.parent
SMALL = {"profile": "full", "epochs": 2, "batch_size": 8, "seeds": [0, 1, 2], "source": "sample",
         "train_size": 16, "test_size": 16}


def params(chapter: str = "02_ablations", **changes) -> dict:
    """A chapter's full-profile parameters with small sizes (and ``changes``)."""
    p = {**chapter_parameters(ROOT, chapter, "full"), **SMALL, **changes}
    if chapter not in ("01_architectures", "02_ablations"):
        p.pop("seeds") if chapter != "06_dessilbi" else None
    return p


PARAMS = params()


def arms(claim_id: str, p=None) -> dict[str, list[RunConfig]]:
    """The claim's arms under ``p`` (default :data:`PARAMS`): arm name -> configs, one per seed."""
    c = claim(claim_id)
    return {name: list(arm.configs) for name, arm in c.arms(plan.chapter(c.chapter, p or PARAMS)).items()}


def fake_run(config, test_error: float, train_error: float = 10.0, status: str = "finished") -> Run:
    history = [{"epoch": 1, "test_acc": 100.0 - test_error - 5, "train_acc": 100.0 - train_error - 5},
               {"epoch": 2, "test_acc": 100.0 - test_error, "train_acc": 100.0 - train_error}]
    return Run(config=config, path=Path("/nonexistent") / config.name, history=history, status=status,
               device="cpu", info={"precision": "fp32"})


class FakeStore:
    """What the ledger uses of a RunStore: get(config) and list()."""

    def __init__(self, runs=()):
        self.runs = {r.config.name: r for r in runs}

    def get(self, config):
        return self.runs.get(config.name)

    def list(self, status=None):
        return list(self.runs.values())


def claim(claim_id: str) -> cl.Claim:
    return next(c for c in cl.CLAIMS if c.id == claim_id)


def depth_store(errors: dict[str, list[float]], params=PARAMS, **kw) -> FakeStore:
    return FakeStore(fake_run(c, e, **kw) for arm, cfgs in arms("depth", params).items()
                     for c, e in zip(cfgs, errors[arm]))


def test_clear_win_is_supported_with_an_interval_from_the_seeds():
    store = depth_store({"resnet18": [5.0, 5.1, 4.9], "resnet50": [6.0, 6.1, 5.9]})
    r = cl.evaluate(claim("depth"), PARAMS, store)
    assert r.verdict == cl.SUPPORTED
    assert r.outcome.effect == pytest.approx(1.0)
    # Welch: se = sqrt(0.01/3 + 0.01/3); df = 4 -> t 2.776
    half = 2.776 * math.sqrt(0.01 / 3 * 2)
    assert (r.outcome.low, r.outcome.high) == (pytest.approx(1.0 - half), pytest.approx(1.0 + half))
    assert "seeds" in r.outcome.noise
    assert "seeds 0,1,2" in r.runs_text() and "cpu, fp32" in r.runs_text()


def test_clear_loss_is_contradicted():
    store = depth_store({"resnet18": [6.0, 6.1, 5.9], "resnet50": [5.0, 5.1, 4.9]})
    r = cl.evaluate(claim("depth"), PARAMS, store)
    assert r.verdict == cl.CONTRADICTED
    assert r.outcome.effect == pytest.approx(-1.0) and r.outcome.high < 0


def test_a_gap_inside_the_noise_is_inconclusive():
    store = depth_store({"resnet18": [5.0, 5.6, 4.4], "resnet50": [5.2, 5.8, 4.6]})
    r = cl.evaluate(claim("depth"), PARAMS, store)
    assert r.verdict == cl.INCONCLUSIVE and r.outcome.reason == "effect within noise"
    assert r.outcome.low < 0 < r.outcome.high


def test_one_seed_without_a_measured_spread_is_inconclusive_noise_unknown():
    params = {**PARAMS, "seeds": [0]}
    store = depth_store({"resnet18": [5.0], "resnet50": [9.0]}, params)
    r = cl.evaluate(claim("depth"), params, store)
    assert r.verdict == cl.INCONCLUSIVE and r.outcome.reason.startswith("noise unknown")
    assert r.outcome.effect == pytest.approx(4.0) and r.outcome.low is None


def test_one_seed_uses_the_seed_spread_measured_in_the_store():
    one_seed = {**PARAMS, "seeds": [0]}
    store = depth_store({"resnet18": [5.0], "resnet50": [9.0]}, one_seed)
    # three seeds of another model in the same store: spread sd 0.5 (df 2)
    other = plan.chapter("01_architectures", params("01_architectures")).arm((), "wrn28_10").configs
    for c, e in zip(other, [4.5, 5.0, 5.5]):
        store.runs[c.name] = fake_run(c, e)
    spread = cl.seed_spread(store.list())
    assert spread.sd == pytest.approx(0.5) and spread.df == 2 and "wrn28_10 x3" in spread.source
    r = cl.evaluate(claim("depth"), one_seed, store)
    half = 4.303 * 0.5 * math.sqrt(2)
    assert r.verdict == cl.SUPPORTED and r.outcome.high == pytest.approx(4.0 + half)
    assert r.outcome.noise == spread.source


def test_a_missing_or_unfinished_run_is_inconclusive_missing_runs():
    store = depth_store({"resnet18": [5.0, 5.1, 4.9], "resnet50": [6.0, 6.1, 5.9]})
    first50 = arms("depth")["resnet50"][0]
    del store.runs[first50.name]
    r = cl.evaluate(claim("depth"), PARAMS, store)
    assert r.verdict == cl.INCONCLUSIVE and "missing runs" in r.outcome.reason
    assert "(not in the store: resnet50)" in r.outcome.reason and "1 missing" in r.runs_text()
    store = depth_store({"resnet18": [5.0, 5.1, 4.9], "resnet50": [6.0, 6.1, 5.9]}, status="diverged")
    assert "diverged" in cl.evaluate(claim("depth"), PARAMS, store).outcome.reason


def test_a_damaged_run_without_config_counts_as_missing():
    store = depth_store({"resnet18": [5.0, 5.1, 4.9], "resnet50": [6.0, 6.1, 5.9]})
    c = arms("depth")["resnet18"][1]
    store.runs[c.name] = Run(config=None, path=Path("/x") / c.name, status="damaged")
    r = cl.evaluate(claim("depth"), PARAMS, store)
    assert r.verdict == cl.INCONCLUSIVE and "(damaged: resnet18)" in r.outcome.reason


def test_smoke_profile_is_always_inconclusive_but_shows_the_numbers():
    params = {**PARAMS, "profile": "smoke"}
    store = depth_store({"resnet18": [5.0, 5.1, 4.9], "resnet50": [6.0, 6.1, 5.9]})
    r = cl.evaluate(claim("depth"), params, store)
    assert r.verdict == cl.INCONCLUSIVE
    assert r.outcome.reason.startswith("smoke profile") and "rule alone: supported" in r.outcome.reason
    assert r.outcome.effect == pytest.approx(1.0)


def test_lags_ordered_and_not_worse_rules():
    configs = arms("cardinality_over_width")
    runs = {"A": [fake_run(c, e) for c, e in zip(configs["resnet50"], [5, 5.1, 4.9])],
            "B": [fake_run(c, e) for c, e in zip(configs["resnext50_2x40d"], [6, 6.1, 5.9])],
            "C": [fake_run(c, e) for c, e in zip(configs["resnext50_8x14d"], [9, 9.1, 8.9])]}
    none = lambda metric: None  # noqa: E731
    assert cl.lags("C")(runs, none).verdict == cl.SUPPORTED
    assert cl.lags("C")(runs, none).effect == pytest.approx(3.0)
    assert cl.lags("A")(runs, none).verdict == cl.CONTRADICTED
    assert cl.ordered(["A", "B", "C"])(runs, none).verdict == cl.SUPPORTED
    assert cl.ordered(["A", "C", "B"])(runs, none).verdict == cl.CONTRADICTED
    assert cl.beats(["B", "C"], "A")(runs, none).effect == pytest.approx(1.0)  # against the closer rival
    assert cl.not_worse("B", "A")(runs, none).verdict == cl.CONTRADICTED  # 1 point worse > margin
    assert cl.not_worse("A", "B")(runs, none).verdict == cl.SUPPORTED


def test_equivalence_rule():
    assert cl.judge_equivalent(0.05, 0.1, "n").verdict == cl.SUPPORTED
    assert cl.judge_equivalent(1.0, 0.1, "n").verdict == cl.CONTRADICTED
    assert cl.judge_equivalent(0.2, 0.3, "n").verdict == cl.INCONCLUSIVE
    assert cl.judge_equivalent(0.0, None, "n").verdict == cl.INCONCLUSIVE


def test_training_error_claim_reads_the_training_error():
    p = {**PARAMS, "seeds": [0, 1]}
    runs = [fake_run(c, 5.0, train_error=(1.0 if arm == "resnext50_32x4d" else 3.0) + 0.1 * c.seed)
            for arm, cfgs in arms("representation_not_regularisation", p).items() for c in cfgs]
    r = cl.evaluate(claim("representation_not_regularisation"), p, FakeStore(runs))
    assert r.verdict == cl.SUPPORTED and r.outcome.effect == pytest.approx(2.0)


def test_bn_rule_uses_the_ratio_table(monkeypatch):
    from cifar_utils import bn_metrics

    def table(values):
        return pd.DataFrame({"lr 0.001": [values[0], values[1], 0.1], "lr 0.002": [values[2], values[3], 0.1]},
                            index=["loss variation (|loss change| per step)", "gradient predictiveness (last layer)",
                                   "beta-smoothness"])
    runs = {"vgg_a @ 0.001": [None], "vgg_a_bn @ 0.001": [None]}
    monkeypatch.setattr(bn_metrics, "ratio_table", lambda r: table([1.5, 2.0, 1.2, 3.0]))
    o = cl.bn_rule(runs, None)
    assert o.verdict == cl.SUPPORTED and o.effect == pytest.approx(1.2) and o.high == pytest.approx(3.0)
    monkeypatch.setattr(bn_metrics, "ratio_table", lambda r: table([0.5, 0.9, 0.2, 0.3]))
    assert cl.bn_rule(runs, None).verdict == cl.CONTRADICTED
    monkeypatch.setattr(bn_metrics, "ratio_table", lambda r: table([0.5, 1.9, 1.2, 0.3]))
    assert cl.bn_rule(runs, None).verdict == cl.INCONCLUSIVE


def test_the_ledger_lists_every_claim_of_the_issue():
    ids = {c.id: c for c in cl.CLAIMS}
    issue = {"depth": "ResNet-18 beats ResNet-50", "width": "Wider is better",
             "cardinality_over_width": "equal complexity", "representation_not_regularisation": "training error",
             "sigmoid_lags": "Sigmoid lags", "loss_order": "CE > BCE > MSE > Huber", "adagrad_worst": "Adagrad",
             "cutout_helps": "Cutout helps WRN-28-10", "bn_smoother": "BN reduces the loss variance",
             "prune_conv3_60": "Pruning conv3", "slbi_adam_equal": "SLBI-Adam and Adam"}
    for cid, words in issue.items():
        assert words in ids[cid].sentence, cid
    assert len(ids) == len(cl.CLAIMS)  # declared once
    assert all(c.arms is not None and c.rule is not None for c in cl.CLAIMS)
    assert cl.chapters() == list(plan.CHAPTERS)
    # every claim's arms are among its chapter's planned runs, under the full profile
    for c in cl.CLAIMS:
        chosen = c.arms(plan.chapter(c.chapter, chapter_parameters(ROOT, c.chapter, "full")))
        assert chosen and all(arm is not None for arm in chosen.values()), c.id


def test_a_claim_whose_arm_the_chapter_does_not_train_is_inconclusive():
    p = {**PARAMS, "models": ["resnet18", "resnext29_2x32d"]}  # no ResNet-50 in this build
    r = cl.evaluate(claim("depth"), p, FakeStore())
    assert r.verdict == cl.INCONCLUSIVE and "not in this build's plan of 02_ablations: resnet50" in r.outcome.reason


def test_chapter6_claims_build_the_chapters_runs_and_judge_equivalence():
    from cifar_utils import experiments

    p = chapter_parameters(ROOT, "06_dessilbi", "smoke")
    mnist = experiments.DataChoice(source=p["source"], train_size=p["train_size"], test_size=p["test_size"])
    lenet = [experiments.dessilbi_lenet_configs(epochs=p["epochs"], batch_size=p["batch_size"], lr=p["lr"],
                                                kappa=p["kappa"], mu=p["mu"], lam=p["lam"], lr_step=p["lr_step"],
                                                data=mnist, seed=seed, device=p["device"],
                                                precision=p["precision"])["SLBI"] for seed in p["seeds"]]
    assert arms("prune_conv3_60", p) == {"SLBI": lenet}  # one run per seed of the chapter
    pair = arms("slbi_adam_equal", p)
    assert set(pair) == {"SLBI-Adam", "Adam"} and pair["SLBI-Adam"][0].optimizer == "slbi_adam"
    assert pair["Adam"][0].replace(optimizer="slbi_adam", optimizer_options=pair["SLBI-Adam"][0].optimizer_options) \
        == pair["SLBI-Adam"][0]
    # chapter 6's Adam run is chapter 3's baseline: one run in the plan
    p3 = chapter_parameters(ROOT, "03_training_choices", "smoke")
    assert pair["Adam"][0] == plan.chapter("03_training_choices", p3).arm(("optimizer",), "Adam").configs[0]
    rule = cl.equivalent("a", "b", margin=0.3)
    cfg = RunConfig(model="resnet18", epochs=2)
    close = {"a": [fake_run(cfg, e) for e in (5.0, 5.1, 4.9)], "b": [fake_run(cfg, e) for e in (5.05, 4.95, 5.0)]}
    assert rule(close, lambda m: None).verdict == cl.SUPPORTED
    apart = {"a": [fake_run(cfg, e) for e in (8.0, 8.1, 7.9)], "b": close["b"]}
    assert rule(apart, lambda m: None).verdict == cl.CONTRADICTED


def test_the_ledger_judges_the_runs_the_chapters_train():
    """The claims' arms are the plan's arms: the same configs (store keys) the chapters train."""
    from cifar_utils import experiments

    p = chapter_parameters(ROOT, "02_ablations", "smoke")
    assert p["profile"] == "smoke" and p["epochs"] == 1
    chapter = plan.chapter("02_ablations", p)
    assert arms("depth", p)["resnet50"] == list(chapter.arm((), "resnet50").configs)
    data = experiments.DataChoice(source=p["source"], train_size=p["train_size"], test_size=p["test_size"])
    assert arms("depth", p)["resnet50"] == experiments.protocol_configs(
        ["resnet50"], epochs=1, batch_size=p["batch_size"], seeds=p["seeds"], data=data)["resnet50"]
    p3 = chapter_parameters(ROOT, "03_training_choices", "smoke")
    base = experiments.training_choice_base(epochs=p3["epochs"], batch_size=p3["batch_size"], lr=0.001,
                                            data=experiments.DataChoice(source="sample", train_size=32, test_size=32),
                                            device=p3["device"], precision=p3["precision"])
    assert arms("adagrad_worst", p3)["Adagrad"] == [
        experiments.sweep_configs("optimizer", base, lrs=p3["optimizer_lrs"])["Adagrad"]]


def test_smoke_ledger_on_an_empty_store_reads_inconclusive(tmp_path):
    results = cl.ledger("smoke", root=ROOT, store=RunStore(tmp_path / "runs"))
    assert len(results) == len(cl.CLAIMS)
    for r in results:
        assert r.verdict == cl.INCONCLUSIVE and "smoke profile" in r.outcome.reason
        assert r.gpu_hours is not None and r.gpu_hours > 0  # the full profile's cost
    md = cl.markdown(results)
    assert md.count("\n") == len(results) + 1 and "[02_ablations](02_ablations.html)" in md
    page = cl.html_table(results)
    assert page.count("<tr>") == len(results) + 1 and '<a href="02_ablations.html" title="02_ablations">02</a>' in page
    assert '<a href="02_ablations.html" title="02_ablations">02_ablations</a>, Verdicts' in page  # in the details
    assert "CE &gt; BCE &gt; MSE &gt; Huber" in page and "06_dessilbi.html" in page
    assert set(cl.table(results)["verdict"]) == {cl.INCONCLUSIVE}


def test_gpu_hours_project_every_arm_with_the_settling_seeds():
    from cifar_utils.projection import MEASURED

    full = chapter_parameters(ROOT, "02_ablations", "full")
    hours = cl.gpu_hours(claim("depth"), plan.chapter("02_ablations", full))
    one_epoch = (50_000 + 10_000 / 3) / 3600
    expected = 3 * 200 * one_epoch * (1 / MEASURED["resnet18"] + 1 / MEASURED["resnet50"])
    assert hours == pytest.approx(expected)
    bn = cl.gpu_hours(claim("bn_smoother"), plan.chapter("05_batchnorm", chapter_parameters(ROOT, "05_batchnorm", "full")))
    assert bn == pytest.approx(4 * 20 * one_epoch * (1 / MEASURED["vgg_a"] + 1 / MEASURED["vgg_a_bn"]))  # runs once


def test_html_ledger_is_a_narrow_table_with_every_detail_one_click_away(tmp_path):
    """#27: the table holds only short cells (claim, chapter, verdict, effect, interval); everything else the
    old wide table showed (reason, rule, measure, noise, runs, GPU hours, section) is in a <details> per claim."""
    import re
    from html import escape

    results = cl.ledger("smoke", root=ROOT, store=RunStore(tmp_path / "runs"))
    page = cl.html_table(results)
    table, rest = page.split("</table>", 1)
    assert re.findall(r"<th>(.*?)</th>", table) == ["claim", "chapter", "verdict", "effect", "95 % interval"]
    assert rest.count('<details class="claim-details"') == len(results) == table.count('<tr>') - 1
    for r in results:
        o, c = r.outcome, r.claim
        assert f'href="#claim-{c.id}"' in table
        assert f'<span class="claim-verdict verdict-inconclusive" title="{escape(o.reason)}">inconclusive</span>' in table
        shown = re.sub(r"<[^>]+>", "", table)  # the text a reader sees (the reason is the verdict's tooltip)
        assert escape(o.reason) not in shown and escape(c.rule_text) not in shown  # the long texts: below
        block = rest.split(f'id="claim-{c.id}"', 1)[1].split("</details>", 1)[0]
        for text in (c.sentence, o.reason, c.rule_text, c.measure, o.noise, c.section, c.id, c.chapter,
                     *r.runs_text().split(" | ")):
            assert escape(text) in block, (c.id, text)
        assert f"{r.gpu_hours:.1f} ({len(plan.SETTLE_SEEDS)} seeds per model, projected)" in block
    # a chapter's Verdicts (links=False): no chapter column; without details the id stays in the table
    short = cl.html_table(results[:2], links=False, details=False)
    assert re.findall(r"<th>(.*?)</th>", short) == ["claim", "verdict", "effect", "95 % interval"]
    assert "<details" not in short and f"<code>{results[0].claim.id}</code>" in short
    from cifar_utils.claims.render import _verdict_html

    words = {v: _verdict_html(v) for v in cl.VERDICTS}  # the word itself is always there, colour or not
    assert all(f">{v}</span>" in html and "verdict-" in html for v, html in words.items())


def test_check_findings_live_in_tables_only():
    t = pd.DataFrame({"variant": ["SGD", "Adam", "Adagrad"], "best_test_acc": [90.0, 91.0, 50.0]})
    checks = tables.check_findings("optimizer", t)
    assert list(checks["holds here"]) == ["yes"] and checks["reproduced order"][0] == "Adam > SGD > Adagrad"
    assert not hasattr(cl, "check_findings")


def test_extra_seeds_in_the_store_join_their_arm():
    """A chapter run with seeds [0] still sees seeds 1 and 2 trained later (settle, or more seeds)."""
    store = depth_store({"resnet18": [5.0, 5.1, 4.9], "resnet50": [6.0, 6.1, 5.9]})
    r = cl.evaluate(claim("depth"), {**PARAMS, "seeds": [0]}, store)
    assert r.verdict == cl.SUPPORTED and "seeds 0,1,2" in r.runs_text() and "from the seeds (3 and 3" in r.outcome.noise


def test_the_plans_settling_seeds_add_seeds_to_the_claims_arms():
    from cifar_utils.train import settling

    p = plan.for_profile("smoke", ROOT)
    runs = settling(p, None, "depth,cutout_helps")
    assert sorted((r.config.model, r.config.seed, r.config.cutout) for r in runs) == sorted(
        (m, s, cut) for m, cut in (("resnet18", 0), ("resnet50", 0), ("wrn28_10", 0), ("wrn28_10", 16))
        for s in (1, 2))  # seed 0 is each chapter's own run, in the book's part of the plan
    assert all(r.settling and r.config.epochs in (1, 2) for r in runs)
    book = {r.config.key() for r in p.runs}
    assert all(r.config.replace(seed=0).key() in book for r in runs)
    # chapter 5's claim is judged across learning rates: no settling seeds; chapter 6's SLBI runs keep their records
    assert not settling(p, None, "bn_smoother")
    slbi = settling(p, None, "slbi_adam_equal")
    assert {r.config.optimizer for r in slbi} == {"slbi_adam", "adam"}
    assert all((r.records is not None) == (r.config.optimizer == "slbi_adam") for r in slbi)
    with pytest.raises(ValueError, match="unknown claim 'nope'; claims: wrn_best"):
        settling(p, None, "nope")


def test_bn_claim_end_to_end_on_recorded_step_metrics():
    """Chapter 5's claim from per-step values as StepMetrics stores them (no monkeypatching)."""
    import numpy as np

    from cifar_utils import bn_metrics

    p = params("05_batchnorm", lrs=[0.001, 0.002])
    bn = arms("bn_smoother", p)
    assert sorted(bn) == ["vgg_a @ 0.001", "vgg_a @ 0.002", "vgg_a_bn @ 0.001", "vgg_a_bn @ 0.002"]
    steps = np.arange(1, 11)

    def recorded(config, wiggle: float, grad_change: float) -> Run:
        values = np.zeros((len(steps), len(bn_metrics.STEP_FIELDS)))
        values[:, bn_metrics.STEP_FIELDS.index("loss")] = 2.0 + wiggle * (-1.0) ** steps
        values[:, bn_metrics.STEP_FIELDS.index("grad_change_last")] = grad_change
        values[:, bn_metrics.STEP_FIELDS.index("beta")] = 1.0
        run = fake_run(config, 50.0)
        run._callback_states = {bn_metrics.STEP_KEY: {"fields": bn_metrics.STEP_FIELDS, "step": steps, "values": values}}
        return run

    def store(bn_wiggle: float) -> FakeStore:
        return FakeStore(recorded(c, 0.5, 2.0) if arm.startswith("vgg_a @") else recorded(c, bn_wiggle, 1.0)
                         for arm, cfgs in bn.items() for c in cfgs)
    r = cl.evaluate(claim("bn_smoother"), p, store(0.1))
    # loss variation: |change| 1.0 vs 0.2 -> 5; gradient change 2 vs 1 -> 2: the smallest ratio is 2
    assert r.verdict == cl.SUPPORTED and r.outcome.effect == pytest.approx(2.0) and r.outcome.high == pytest.approx(5.0)
    r = cl.evaluate(claim("bn_smoother"), p, store(1.0))  # BN wiggles more: loss ratio 0.5, gradient 2
    assert r.verdict == cl.INCONCLUSIVE and r.outcome.reason.startswith("mixed: 2 of 4")


@pytest.mark.parametrize("chapter", plan.CHAPTERS)
def test_each_chapters_verdict_cell_builds_from_its_parameters(chapter, tmp_path):
    """What the chapter's last cell does, with the names its parameters cell defines (empty store)."""
    namespace = {**chapter_parameters(ROOT, chapter, "smoke"), "data": object(), "tables": []}  # shadowed names
    results = cl.evaluate_chapter(chapter, namespace, store=RunStore(tmp_path))
    assert [r.claim.id for r in results] == [c.id for c in cl.claims(chapter)] and results
    assert all(r.verdict == cl.INCONCLUSIVE and "missing runs" in r.outcome.reason for r in results)
    assert "| claim |" in cl.markdown(results, links=False)
