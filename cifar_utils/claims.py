"""The claims ledger: every conclusion of the report, declared once, with a verdict computed from the runs.

A :class:`Claim` names its chapter, the report's sentence, the runs it needs (built from the chapter's
parameters by the same :mod:`cifar_utils.experiments` functions the chapter calls, so the results store
finds them by their key) and a rule that turns those runs into an :class:`Outcome`: an effect, a 95 %
interval and a verdict, **supported**, **contradicted** or **inconclusive** (with the reason). Claims of
chapters whose code is not in the package yet read **not run yet**. :func:`evaluate` only *loads* runs
(:meth:`cifar_utils.engine.RunStore.get`); it never trains.

Noise, honestly:

* with several seeds per arm, the interval comes from those seeds (Welch's t interval for a difference
  of means);
* with one seed, from the seed-to-seed spread measured in the same store (:func:`seed_spread`: the
  pooled standard deviation over every group of finished runs that differ only in the seed, e.g. a
  chapter run with ``seeds: [0, 1, 2]``), stated beside the verdict;
* with neither, there is no interval and the verdict is *inconclusive (noise unknown)*: one run per
  model says nothing about whether a gap is larger than what changing the seed alone gives. No
  placeholder spread is assumed.

Errors are the best epoch's top-1 test error in percent (the report's figure, see
:func:`cifar_utils.tables.epoch_errors`); chapter 2's training-error claim uses the last epoch's
training error. In the smoke profile every verdict is *inconclusive (smoke profile)*, whatever the
numbers, so nobody mistakes a smoke build for evidence.

Cost: :func:`gpu_hours` estimates how many GPU hours settling a claim takes (every arm with
:data:`SETTLE_SEEDS` seeds under the full profile), from the models' FLOPs (the code) and
:data:`ASSUMED_TFLOPS` / :data:`ASSUMED_MAX_IMAGES_PER_S`, assumptions until ``bench/gpu_check.py``
measures the speeds.
"""

from __future__ import annotations

import functools
import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from .engine import Run, RunConfig, RunStore
from .tables import epoch_errors, run_device

SUPPORTED, CONTRADICTED, INCONCLUSIVE, NOT_RUN = "supported", "contradicted", "inconclusive", "not run yet"
VERDICTS = (SUPPORTED, CONTRADICTED, INCONCLUSIVE, NOT_RUN)
#: "Reaches" / "does not differ" claims: the largest gap (points of test error) still read as equal. A
#: declared tolerance, not the report's; it is stated in every such claim's rule.
EQUIVALENCE_MARGIN = 0.3
#: Seeds per arm the cost estimate assumes for settling a claim.
SETTLE_SEEDS = 3
#: Effective training throughput assumed for the GPU-hour estimates, in FLOP/s (x 1e12): about a tenth
#: of an H100/H200's dense bf16 peak (~990 TFLOPS). An assumption, NOT measured; replace it with the
#: speeds ``bench/gpu_check.py`` measures (its ``projection`` part) once it has run on a GPU.
ASSUMED_TFLOPS = 100.0
#: Upper bound on images/s for small models (data pipeline and kernel launches), same status: assumed.
ASSUMED_MAX_IMAGES_PER_S = 30_000.0
#: CIFAR-10's training / test images: an epoch of the full profile.
FULL_TRAIN_IMAGES, FULL_TEST_IMAGES = 50_000, 10_000

# two-sided 95 % Student t quantiles (df 1-30); beyond, the normal 1.96
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
         2.045, 2.042)


def t975(df: float) -> float:
    """The two-sided 95 % quantile of Student's t with ``df`` degrees of freedom (rounded down to an
    integer; 1.96 beyond 30)."""
    d = int(math.floor(df))
    if d < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df!r}")
    return _T975[d - 1] if d <= len(_T975) else 1.96


# --- what a claim computes ---------------------------------------------------------------------------

@dataclass(frozen=True)
class SeedSpread:
    """A seed-to-seed standard deviation (points) with its degrees of freedom and where it comes from."""

    sd: float
    df: int
    source: str


@dataclass(frozen=True)
class Outcome:
    """What a rule found: ``effect`` (oriented so that a larger value favours the claim, except for
    equivalence claims, where it is the signed gap), the 95 % interval ``low``-``high`` (None when the
    noise is unknown), the verdict, the reason, and where the interval comes from."""

    verdict: str
    reason: str
    effect: float | None = None
    low: float | None = None
    high: float | None = None
    noise: str = "-"


Arms = Mapping[str, Sequence[RunConfig]]
Builder = Callable[[Mapping[str, Any]], dict[str, list[RunConfig]]]
Rule = Callable[[Mapping[str, Sequence[Run]], "Callable[[str], SeedSpread | None]"], Outcome]


@dataclass(frozen=True)
class Claim:
    """One conclusion of the report. ``build(params)`` gives the runs it needs, arm -> configs (one per
    seed), from the chapter's parameters; ``rule(runs, spread)`` judges them (``spread(metric)`` is the
    store's seed-to-seed spread for that metric, or None). ``build=None``: the chapter's code is not in
    the package yet (``missing`` says what), the claim reads "not run yet"."""

    id: str
    chapter: str
    section: str
    sentence: str
    measure: str
    rule_text: str
    build: Builder | None = None
    rule: Rule | None = None
    missing: str = ""

    @property
    def link(self) -> str:
        """The chapter's page in the HTML book, relative to the other pages (a generated Markdown
        output is rendered as CommonMark, so a link to the notebook would not be resolved)."""
        return f"{self.chapter}.html"


@dataclass
class Result:
    """A claim evaluated on one store: the outcome plus the runs behind it."""

    claim: Claim
    outcome: Outcome
    runs: dict[str, list[Run | None]] = field(default_factory=dict)
    gpu_hours: float | None = None

    @property
    def verdict(self) -> str:
        return self.outcome.verdict

    def runs_text(self) -> str:
        """``model: seeds ..., N epochs, device`` per arm (``missing`` for runs not in the store)."""
        parts = []
        for arm, runs in self.runs.items():
            have = [r for r in runs if r is not None and r.config is not None]
            if not have:
                parts.append(f"{arm}: missing")
                continue
            seeds = ",".join(str(r.config.seed) for r in have)
            devices = "; ".join(sorted({run_device(r) for r in have if r.device})) or "-"
            epochs = max(len(r.history) for r in have)
            lost = len(runs) - len(have)
            parts.append(f"{arm}: seeds {seeds}, {epochs} ep, {devices}" + (f", {lost} missing" if lost else ""))
        return " | ".join(parts) or "-"


# --- measures -------------------------------------------------------------------------------------

def test_error(run: Run) -> float | None:
    """The best epoch's test error, percent (the report's figure)."""
    return epoch_errors(run)["best"]


def train_error(run: Run) -> float | None:
    """The last epoch's training error, percent (100 - ``train_acc``)."""
    accs = [r["train_acc"] for r in run.history if r.get("train_acc") is not None]
    return 100.0 - accs[-1] if accs else None


METRICS: dict[str, Callable[[Run], float | None]] = {"test_error": test_error, "train_error": train_error}


def _finished(run: Run | None) -> bool:
    return run is not None and run.config is not None and run.status == "finished"


def seed_spread(runs: Sequence[Run], metric: str = "test_error") -> SeedSpread | None:
    """The pooled seed-to-seed standard deviation of ``metric`` over every group of finished runs that
    differ only in their seed (None when no group has two). Pooled variance: sum of (n_i - 1) s_i^2
    over sum of (n_i - 1)."""
    measure = METRICS[metric]
    groups: dict[str, list[float]] = {}
    names: dict[str, str] = {}
    for r in runs:
        if not _finished(r):
            continue
        value = measure(r)
        if value is None:
            continue
        key = r.config.replace(seed=0).name
        groups.setdefault(key, []).append(value)
        names[key] = r.config.model
    used = {k: v for k, v in groups.items() if len(v) > 1}
    if not used:
        return None
    df = sum(len(v) - 1 for v in used.values())
    var = sum((len(v) - 1) * statistics.variance(v) for v in used.values()) / df
    which = ", ".join(f"{names[k]} x{len(v)}" for k, v in used.items())
    return SeedSpread(math.sqrt(var), df, f"seed spread {math.sqrt(var):.2f} pts pooled over {which} (df {df})")


def difference(a: Sequence[float], b: Sequence[float], spread: SeedSpread | None) -> tuple[float, float | None, str]:
    """``mean(a) - mean(b)``, the half-width of its 95 % interval (None: noise unknown) and the
    interval's source: Welch's t from the seeds when both sides have two or more, else ``spread``."""
    effect = statistics.fmean(a) - statistics.fmean(b)
    if len(a) > 1 and len(b) > 1:
        va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
        se = math.sqrt(va + vb)
        if se == 0:
            return effect, 0.0, f"seeds ({len(a)} and {len(b)}), identical values"
        df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
        return effect, t975(df) * se, f"from the seeds ({len(a)} and {len(b)}, Welch)"
    if spread is not None:
        return effect, t975(spread.df) * spread.sd * math.sqrt(1 / len(a) + 1 / len(b)), spread.source
    return effect, None, "noise unknown (one seed, no seed spread measured in this store)"


def judge(effect: float, half: float | None, noise: str, threshold: float = 0.0) -> Outcome:
    """The rule for a directional claim: the effect is claimed to exceed ``threshold``. Supported when
    the whole 95 % interval lies above it, contradicted when it lies wholly below, inconclusive when it
    straddles it or the noise is unknown."""
    if half is None:
        return Outcome(INCONCLUSIVE, "noise unknown: one seed per arm and no measured seed spread", effect,
                       noise=noise)
    low, high = effect - half, effect + half
    if low > threshold:
        return Outcome(SUPPORTED, f"the interval lies above {threshold:g}", effect, low, high, noise)
    if high < threshold:
        return Outcome(CONTRADICTED, f"the interval lies below {threshold:g}", effect, low, high, noise)
    return Outcome(INCONCLUSIVE, "effect within noise", effect, low, high, noise)


def judge_equivalent(effect: float, half: float | None, noise: str, margin: float = EQUIVALENCE_MARGIN) -> Outcome:
    """The rule for "A and B do not differ": supported when the 95 % interval of the gap lies within
    +-``margin``, contradicted when it lies wholly outside, inconclusive otherwise."""
    if half is None:
        return Outcome(INCONCLUSIVE, "noise unknown: one seed per arm and no measured seed spread", effect,
                       noise=noise)
    low, high = effect - half, effect + half
    if -margin < low and high < margin:
        return Outcome(SUPPORTED, f"the interval lies within +-{margin:g}", effect, low, high, noise)
    if low > margin or high < -margin:
        return Outcome(CONTRADICTED, f"the interval lies outside +-{margin:g}", effect, low, high, noise)
    return Outcome(INCONCLUSIVE, "effect within noise", effect, low, high, noise)


def _values(runs: Sequence[Run], metric: str) -> list[float]:
    measure = METRICS[metric]
    return [v for v in (measure(r) for r in runs) if v is not None]


def beats(worse: str, better: str | Sequence[str], metric: str = "test_error") -> Rule:
    """Rule: arm ``better`` has a lower ``metric`` than arm ``worse``; with several ``worse`` arms, than
    the best of them. Effect = error(worse) - error(better), points."""
    worse_arms = [worse] if isinstance(worse, str) else list(worse)

    def rule(runs, spread):
        b = _values(runs[better], metric)
        rivals = {arm: _values(runs[arm], metric) for arm in worse_arms}
        closest = min(rivals, key=lambda arm: statistics.fmean(rivals[arm]))
        return judge(*difference(rivals[closest], b, spread(metric)))
    return rule


def lags(laggard: str, metric: str = "test_error") -> Rule:
    """Rule: arm ``laggard`` has a higher ``metric`` than every other arm. Effect = error(laggard) -
    error(the worst of the others), points."""

    def rule(runs, spread):
        lag = _values(runs[laggard], metric)
        others = {arm: _values(rs, metric) for arm, rs in runs.items() if arm != laggard}
        worst = max(others, key=lambda arm: statistics.fmean(others[arm]))
        return judge(*difference(lag, others[worst], spread(metric)))
    return rule


def not_worse(model: str, reference: str, margin: float = EQUIVALENCE_MARGIN, metric: str = "test_error") -> Rule:
    """Rule: arm ``model`` "reaches" ``reference``: its error is at most ``margin`` points higher.
    Effect = error(reference) - error(model), claimed > -margin."""

    def rule(runs, spread):
        effect, half, noise = difference(_values(runs[reference], metric), _values(runs[model], metric), spread(metric))
        return judge(effect, half, noise, threshold=-margin)
    return rule


def ordered(order: Sequence[str], metric: str = "test_error") -> Rule:
    """Rule: the arms' errors increase in ``order``. Every adjacent gap is judged; supported when all
    are, contradicted when any is contradicted; the effect shown is the smallest gap."""

    def rule(runs, spread):
        outcomes = []
        for first, second in zip(order, order[1:]):
            outcomes.append(judge(*difference(_values(runs[second], metric), _values(runs[first], metric),
                                              spread(metric))))
        smallest = min(outcomes, key=lambda o: o.effect)
        if any(o.verdict == CONTRADICTED for o in outcomes):
            bad = [f"{a} vs {b}" for (a, b), o in zip(zip(order, order[1:]), outcomes) if o.verdict == CONTRADICTED]
            return Outcome(CONTRADICTED, f"reversed beyond noise: {', '.join(bad)}", smallest.effect, smallest.low,
                           smallest.high, smallest.noise)
        if all(o.verdict == SUPPORTED for o in outcomes):
            return Outcome(SUPPORTED, "every adjacent gap lies above 0", smallest.effect, smallest.low,
                           smallest.high, smallest.noise)
        return Outcome(INCONCLUSIVE, smallest.reason if smallest.verdict == INCONCLUSIVE else "some gap within noise",
                       smallest.effect, smallest.low, smallest.high, smallest.noise)
    return rule


def bn_rule(runs, spread) -> Outcome:
    """Chapter 5: ``cifar_utils.bn_metrics.ratio_table``'s median no-BN / BN ratios of the loss
    variation and of the gradient predictiveness. With one seed the learning rates are the replicates:
    supported when every ratio exceeds 1, contradicted when every one is below 1, else inconclusive. The
    effect is the smallest ratio and the "interval" the range over learning rates and both quantities."""
    from . import bn_metrics

    by_model: dict[str, dict[float, Run]] = {}
    for arm, rs in runs.items():
        model, lr = arm.split(" @ ")
        by_model.setdefault(model, {})[float(lr)] = rs[0]
    table = bn_metrics.ratio_table(by_model)
    rows = [q for q in table.index if q.startswith(("loss variation", "gradient predictiveness"))]
    values = [float(v) for q in rows for c, v in table.loc[q].items() if str(c).startswith("lr ")
              and isinstance(v, float) and math.isfinite(v)]
    if not values:
        return Outcome(INCONCLUSIVE, "no finite ratios", noise="learning rates as replicates")
    low, high = min(values), max(values)
    noise = f"range over {len(values)} ratios (learning rates x 2 quantities), one seed"
    if low > 1:
        return Outcome(SUPPORTED, "every ratio > 1", low, low, high, noise)
    if high < 1:
        return Outcome(CONTRADICTED, "every ratio < 1", low, low, high, noise)
    return Outcome(INCONCLUSIVE, f"mixed: {sum(v > 1 for v in values)} of {len(values)} ratios > 1", low, low, high,
                   noise)


# --- the chapters' runs, from their parameters ---------------------------------------------------

def _data(p: Mapping[str, Any]):
    from .experiments import DataChoice

    return DataChoice(source=p.get("source", "auto"), data_root=p.get("data_root"),
                      train_size=p.get("train_size"), test_size=p.get("test_size"))


def _seeds(p: Mapping[str, Any]) -> list[int]:
    """``seeds`` when the chapter has it, else its single ``seed``."""
    return list(p["seeds"]) if p.get("seeds") else [int(p.get("seed", 0))]


def protocol_arms(*models: str) -> Builder:
    """Chapters 1-2: each model under the report's protocol, one run per seed
    (:func:`cifar_utils.experiments.protocol_configs`, as the chapters call it)."""

    def build(p):
        from .experiments import protocol_configs

        return protocol_configs(models, epochs=p["epochs"], batch_size=p["batch_size"], seeds=_seeds(p), data=_data(p),
                                device=p.get("device", "auto"), precision=p.get("precision", "auto"),
                                val_size=p.get("val_size", 0))
    return build


def sweep_arms(sweep: str) -> Builder:
    """Chapter 3: one sweep's variants, labelled as in the chapter (:func:`cifar_utils.experiments.sweep_configs`
    on :func:`cifar_utils.experiments.training_choice_base`), one run per seed."""

    def build(p):
        from .experiments import DEFAULT_OPTIMIZER_LRS, sweep_configs, training_choice_base

        lrs = p.get("optimizer_lrs") or DEFAULT_OPTIMIZER_LRS
        variants = {"activation": p.get("activations"), "loss": p.get("losses"), "optimizer": p.get("optimizers")}[sweep]
        arms: dict[str, list[RunConfig]] = {}
        for seed in _seeds(p):
            base = training_choice_base(epochs=p["epochs"], batch_size=p["batch_size"],
                                        lr=lrs.get("adam", DEFAULT_OPTIMIZER_LRS["adam"]), data=_data(p), seed=seed,
                                        device=p.get("device", "auto"), precision=p.get("precision", "auto"))
            configs = sweep_configs(sweep, base, variants, lrs=lrs if sweep == "optimizer" else None)
            for label, cfg in configs.items():
                arms.setdefault(label, []).append(cfg)
        return arms
    return build


def cutout_arms(p: Mapping[str, Any]) -> dict[str, list[RunConfig]]:
    """Chapter 4: WRN-28-10 without and with Cutout (:func:`cifar_utils.experiments.best_model_configs`)."""
    from .experiments import best_model_configs

    arms: dict[str, list[RunConfig]] = {"wrn28_10": [], "wrn28_10_cutout": []}
    for seed in _seeds(p):
        c = best_model_configs(epochs=p["epochs"], batch_size=p["batch_size"], data=_data(p), seed=seed,
                               cutout=p.get("cutout", 16), device=p.get("device", "auto"),
                               precision=p.get("precision", "auto"))
        arms["wrn28_10"].append(c["wrn28_10"])
        arms["wrn28_10_cutout"].append(c["wrn28_10_cutout"])
    return arms


def batchnorm_arms(p: Mapping[str, Any]) -> dict[str, list[RunConfig]]:
    """Chapter 5: VGG-A and VGG-A-BN at each learning rate (:func:`cifar_utils.experiments.batchnorm_configs`),
    arms named ``"<model> @ <lr>"``."""
    from .experiments import BN_LRS, batchnorm_configs

    configs = batchnorm_configs(lrs=p.get("lrs", BN_LRS), epochs=p["epochs"], batch_size=p["batch_size"],
                                data=_data(p), seed=int(p.get("seed", 0)), weight_decay=p.get("weight_decay", 0.0),
                                augment=p.get("augment", True), device=p.get("device", "auto"))
    return {f"{m} @ {lr:g}": [c] for m, by_lr in configs.items() for lr, c in by_lr.items()}


#: Chapter 6's module; its claims read "not run yet" until the ledger builds their runs.
CHAPTER6_MODULE = "cifar_utils.sparsity"


def chapter6_missing() -> str:
    """Why chapter 6's claims are not evaluated: its code is not in this build, or not wired here yet."""
    import importlib.util

    try:
        found = importlib.util.find_spec(CHAPTER6_MODULE) is not None
    except (ImportError, ValueError):
        found = False
    return ("the ledger does not build chapter 6's runs yet" if found
            else f"chapter 6's code ({CHAPTER6_MODULE}) is not in this build")


def dessilbi_lenet_arms(p: Mapping[str, Any]) -> dict[str, list[RunConfig]]:
    """Chapter 6: the SLBI-trained LeNet on MNIST (:func:`cifar_utils.experiments.dessilbi_lenet_configs`,
    with the chapter's parameters), arm ``"SLBI"``."""
    from .experiments import dessilbi_lenet_configs

    configs = dessilbi_lenet_configs(epochs=p["epochs"], batch_size=p["batch_size"], lr=p["lr"], kappa=p["kappa"],
                                     mu=p["mu"], lam=p["lam"], lr_step=p["lr_step"], data=_data(p),
                                     seed=int(p.get("seed", 0)), device=p.get("device", "auto"),
                                     precision=p.get("precision", "auto"))
    return {"SLBI": [configs["SLBI"]]}


def dessilbi_resnet_arms(p: Mapping[str, Any]) -> dict[str, list[RunConfig]]:
    """Chapter 6, part 4: ResNet-18 with SLBI-Adam and chapter 3's Adam baseline, built as the chapter
    builds them (:func:`cifar_utils.experiments.dessilbi_resnet_configs`)."""
    from .experiments import DataChoice, dessilbi_resnet_configs, training_choice_base

    cifar = DataChoice(source=p.get("cifar_source", "auto"), data_root=p.get("cifar_data_root"),
                       train_size=p.get("cifar_train_size"), test_size=p.get("cifar_test_size"))
    base = training_choice_base(epochs=p["resnet_epochs"], batch_size=p["resnet_batch_size"], lr=p["resnet_lr"],
                                data=cifar, seed=int(p.get("seed", 0)), device=p.get("device", "auto"),
                                precision=p.get("precision", "auto"))
    configs = dessilbi_resnet_configs(base, kappa=p["resnet_kappa"], mu=p["resnet_mu"], lam=p["resnet_lam"])
    return {arm: [c] for arm, c in configs.items()}


def equivalent(a: str, b: str, margin: float = EQUIVALENCE_MARGIN, metric: str = "test_error") -> Rule:
    """Rule: arms ``a`` and ``b`` do not differ by more than ``margin`` points (:func:`judge_equivalent`).
    Effect = error(a) - error(b)."""

    def rule(runs, spread):
        return judge_equivalent(*difference(_values(runs[a], metric), _values(runs[b], metric), spread(metric)),
                                margin=margin)
    return rule


def pruning_safe(layer: str = "conv3", percent: float = 60, margin: float = EQUIVALENCE_MARGIN) -> Rule:
    """Rule: pruning ``percent`` % of ``layer`` by DessiLBI's order costs less than ``margin`` points of
    test accuracy. Effect = accuracy(unpruned) - accuracy(pruned), points, per seed of arm ``"SLBI"``
    (the trained model is pruned and restored, :func:`cifar_utils.sparsity.pruning_table`). The drop is
    measured on one fixed test set, so its uncertainty comes from seeds only: with one seed the noise
    is unknown and the verdict inconclusive."""

    def rule(runs, spread):
        from .sparsity import SLBIPath, pruning_table, test_loader

        drops = []
        for run in runs["SLBI"]:
            model = run.model
            order = SLBIPath.from_run(run).order(model, layer)
            loader = test_loader(run.config, device=next(model.parameters()).device)
            table = pruning_table(model, layer, order, loader, [0, percent])
            drops.append(float(table.loc[0, "test_acc"] - table.loc[percent, "test_acc"]))
        effect = statistics.fmean(drops)
        if len(drops) < 2:
            return Outcome(INCONCLUSIVE, "noise unknown: one seed (the drop is measured on one test set)", effect,
                           noise="one seed")
        half = t975(len(drops) - 1) * statistics.stdev(drops) / math.sqrt(len(drops))
        noise = f"from the seeds ({len(drops)})"
        low, high = effect - half, effect + half
        if high < margin:
            return Outcome(SUPPORTED, f"the drop's interval lies below {margin:g} points", effect, low, high, noise)
        if low > margin:
            return Outcome(CONTRADICTED, f"the drop's interval lies above {margin:g} points", effect, low, high, noise)
        return Outcome(INCONCLUSIVE, "effect within noise", effect, low, high, noise)
    return rule


# --- the ledger -------------------------------------------------------------------------------------

CH1, CH2, CH3, CH4, CH5, CH6 = ("01_architectures", "02_ablations", "03_training_choices", "04_gradcam_best_model",
                                "05_batchnorm", "06_dessilbi")
_ERR = "best-epoch test error, points"

#: Every claim of the report, declared once, in the book's order.
CLAIMS: tuple[Claim, ...] = (
    Claim("wrn_best", CH1, "Verdicts",
          "WRN-28-10 has the lowest error of the seven architectures.",
          f"error(best other) - error(WRN-28-10), {_ERR}", "supported if the 95 % interval lies above 0",
          protocol_arms("resnet18", "preact_resnet18", "wrn28_10", "resnext29_32x4d", "densenet121", "dpn26", "dla"),
          beats(["resnet18", "preact_resnet18", "resnext29_32x4d", "densenet121", "dpn26", "dla"], "wrn28_10")),
    Claim("resnext29_matches_resnet18", CH1, "Verdicts",
          "ResNeXt-29 32x4d reaches ResNet-18's error with less than half its parameters.",
          f"error(ResNet-18) - error(ResNeXt-29 32x4d), {_ERR}",
          f"supported if the interval lies above -{EQUIVALENCE_MARGIN:g} (at most {EQUIVALENCE_MARGIN:g} pts worse)",
          protocol_arms("resnet18", "resnext29_32x4d"), not_worse("resnext29_32x4d", "resnet18")),
    Claim("densenet_matches_resnet18", CH1, "Verdicts",
          "DenseNet-121 reaches ResNet-18's error with less than half its parameters.",
          f"error(ResNet-18) - error(DenseNet-121), {_ERR}",
          f"supported if the interval lies above -{EQUIVALENCE_MARGIN:g} (at most {EQUIVALENCE_MARGIN:g} pts worse)",
          protocol_arms("resnet18", "densenet121"), not_worse("densenet121", "resnet18")),
    Claim("depth", CH2, "Verdicts",
          "Deeper is not always better: ResNet-18 beats ResNet-50.",
          f"error(ResNet-50) - error(ResNet-18), {_ERR}", "supported if the 95 % interval lies above 0",
          protocol_arms("resnet18", "resnet50"), beats("resnet50", "resnet18")),
    Claim("width", CH2, "Verdicts",
          "Wider is better: ResNeXt-29 2x64d beats 2x32d.",
          f"error(2x32d) - error(2x64d), {_ERR}", "supported if the 95 % interval lies above 0",
          protocol_arms("resnext29_2x32d", "resnext29_2x64d"), beats("resnext29_2x32d", "resnext29_2x64d")),
    Claim("cardinality", CH2, "Verdicts",
          "More cardinality helps: ResNeXt-29 8x64d beats 2x64d.",
          f"error(2x64d) - error(8x64d), {_ERR}", "supported if the 95 % interval lies above 0",
          protocol_arms("resnext29_2x64d", "resnext29_8x64d"), beats("resnext29_2x64d", "resnext29_8x64d")),
    Claim("cardinality_over_width", CH2, "Verdicts",
          "More cardinality beats more width at equal complexity: ResNeXt-50 32x4d is the best of ResNet-50, "
          "ResNeXt-50 2x40d and 8x14d.",
          f"error(best other) - error(32x4d), {_ERR}", "supported if the 95 % interval lies above 0",
          protocol_arms("resnet50", "resnext50_2x40d", "resnext50_8x14d", "resnext50_32x4d"),
          beats(["resnet50", "resnext50_2x40d", "resnext50_8x14d"], "resnext50_32x4d")),
    Claim("representation_not_regularisation", CH2, "Verdicts",
          "ResNeXt-50 32x4d gains from representation, not regularisation: it also has the lowest training error.",
          "train error(best other) - train error(32x4d), last epoch, points",
          "supported if the 95 % interval lies above 0",
          protocol_arms("resnet50", "resnext50_2x40d", "resnext50_8x14d", "resnext50_32x4d"),
          beats(["resnet50", "resnext50_2x40d", "resnext50_8x14d"], "resnext50_32x4d", metric="train_error")),
    Claim("sigmoid_lags", CH3, "Verdicts",
          "Sigmoid lags far behind the other activations.",
          f"error(Sigmoid) - error(worst other activation), {_ERR}", "supported if the 95 % interval lies above 0",
          sweep_arms("activation"), lags("Sigmoid")),
    Claim("loss_order", CH3, "Verdicts",
          "CE > BCE > MSE > Huber.",
          f"smallest adjacent gap error(next) - error(previous), {_ERR}",
          "supported if every adjacent gap's interval lies above 0; contradicted if any lies below",
          sweep_arms("loss"), ordered(["CrossEntropy", "BCE", "MSE", "Huber"])),
    Claim("adagrad_worst", CH3, "Verdicts",
          "Adagrad is the worst optimizer.",
          f"error(Adagrad) - error(worst other optimizer), {_ERR}", "supported if the 95 % interval lies above 0",
          sweep_arms("optimizer"), lags("Adagrad")),
    Claim("cutout_helps", CH4, "Verdicts",
          "Cutout helps WRN-28-10 (3.35 % error with it against 4.27 % without).",
          f"error(WRN-28-10) - error(WRN-28-10 + Cutout), {_ERR}", "supported if the 95 % interval lies above 0",
          cutout_arms, beats("wrn28_10", "wrn28_10_cutout")),
    Claim("bn_smoother", CH5, "Verdicts",
          "BN reduces the loss variance and makes the gradients more predictive.",
          "smallest median no-BN / BN ratio (loss variation, last-layer gradient change) over the learning rates",
          "supported if every ratio > 1 (learning rates as replicates), contradicted if every ratio < 1",
          batchnorm_arms, bn_rule),
    Claim("prune_conv3_60", CH6, "Verdicts", "Pruning conv3 is safe up to about 60 %.",
          "test accuracy drop at 60 % of conv3 pruned, points",
          f"supported if the drop's 95 % interval lies below {EQUIVALENCE_MARGIN:g} points",
          dessilbi_lenet_arms, pruning_safe("conv3", 60)),
    Claim("slbi_adam_equal", CH6, "Verdicts", "SLBI-Adam and Adam do not differ significantly.",
          f"error(SLBI-Adam) - error(Adam), {_ERR}",
          f"supported if the 95 % interval lies within +-{EQUIVALENCE_MARGIN:g}",
          dessilbi_resnet_arms, equivalent("SLBI-Adam", "Adam")),
)


def claims(chapter: str | None = None) -> list[Claim]:
    """The declared claims, all or one chapter's (``"02_ablations"``...)."""
    return [c for c in CLAIMS if chapter is None or c.chapter == chapter]


def chapters() -> list[str]:
    """The chapters with claims, in order."""
    return list(dict.fromkeys(c.chapter for c in CLAIMS))


#: Every name a builder reads from a chapter's parameters.
PARAMETER_NAMES = ("profile", "models", "epochs", "batch_size", "seeds", "seed", "source", "data_root", "train_size",
                   "test_size", "device", "precision", "val_size", "optimizer_lrs", "activations", "losses",
                   "optimizers", "cutout", "lrs", "weight_decay", "augment", "lr", "lr_step", "kappa", "mu", "lam",
                   "resnet_epochs", "resnet_batch_size", "resnet_lr", "resnet_kappa", "resnet_mu", "resnet_lam",
                   "cifar_source", "cifar_data_root", "cifar_train_size", "cifar_test_size")


def chapter_params(namespace: Mapping[str, Any]) -> dict[str, Any]:
    """The parameters a ledger needs, picked from a chapter notebook's namespace (``globals()``)."""
    return {k: namespace[k] for k in PARAMETER_NAMES if k in namespace}


def _seed_free(config: RunConfig) -> str:
    return config.replace(seed=0).name


def evaluate(claim: Claim, params: Mapping[str, Any], store: RunStore | None = None,
             spreads: Mapping[str, SeedSpread | None] | None = None, cost_params: Mapping[str, Any] | None = None,
             stored: Sequence[Run] | None = None) -> Result:
    """Judge ``claim`` on the runs its chapter's ``params`` name, loaded from ``store`` (default: the
    store of ``$CIFAR_UTILS_RUNS``); never trains. Finished runs in the store that differ from those
    only in the seed (trained by a chapter run with more ``seeds``, or by :func:`settle`) join their
    arm, so every seed trained counts. ``spreads``: metric -> seed spread (default: measured in the
    store). ``cost_params``: the parameters the GPU-hour estimate uses (default ``params``).
    ``stored``: the store's runs, when the caller has listed them already."""
    if claim.build is None:
        return Result(claim, Outcome(NOT_RUN, claim.missing or chapter6_missing()))
    store = store if store is not None else RunStore()
    if stored is None:
        stored = store.list()
    arms = claim.build(params)
    by_seed_free: dict[str, list[Run]] = {}
    for r in stored:
        if _finished(r):
            by_seed_free.setdefault(_seed_free(r.config), []).append(r)
    loaded: dict[str, list[Run | None]] = {}
    for arm, configs in arms.items():
        runs: list[Run | None] = [store.get(c) for c in configs]
        seeds = {c.seed for c in configs}
        extra = {r.config.seed: r for c in configs for r in by_seed_free.get(_seed_free(c), [])
                 if r.config.seed not in seeds}
        loaded[arm] = runs + [extra[s] for s in sorted(extra)]
    cost = gpu_hours(arms if cost_params is None else claim.build(cost_params))
    missing: dict[str, list[str]] = {}  # why -> arms
    for arm, rs in loaded.items():
        for r in rs:
            if not _finished(r):
                arms_why = missing.setdefault("not in the store" if r is None else r.status, [])
                if arm not in arms_why:
                    arms_why.append(arm)
    reasons = []
    if params.get("profile") == "smoke":
        reasons.append("smoke profile")
    if missing:
        reasons.append("missing runs (" + "; ".join(f"{why}: {', '.join(a)}" for why, a in missing.items()) + ")")
        return Result(claim, Outcome(INCONCLUSIVE, "; ".join(reasons)), loaded, cost)
    if spreads is None:
        spreads = {m: seed_spread(stored, m) for m in METRICS}
    outcome = claim.rule(loaded, lambda metric: spreads.get(metric))
    if reasons:  # smoke: the numbers are shown, the verdict is not theirs to give
        outcome = Outcome(INCONCLUSIVE, "; ".join(reasons + [f"the rule alone: {outcome.verdict}"]), outcome.effect,
                          outcome.low, outcome.high, outcome.noise)
    return Result(claim, outcome, loaded, cost)


def evaluate_chapter(chapter: str, namespace: Mapping[str, Any], store: RunStore | None = None) -> list[Result]:
    """A chapter's claims judged with its own parameters (its notebook's ``globals()``); the GPU-hour
    estimates use the full profile's parameters."""
    params = chapter_params(namespace)
    store = store if store is not None else RunStore()
    every = store.list()
    spreads = {m: seed_spread(every, m) for m in METRICS}
    return [evaluate(c, params, store, spreads, cost_params=_full_params(c.chapter), stored=every)
            for c in claims(chapter)]


def _full_params(chapter: str) -> dict[str, Any] | None:
    """The chapter's parameters under the full profile (what the cost estimates use), None if unknown."""
    from .book.params import ProfileError, chapter_parameters

    try:
        return chapter_parameters(book_root(), chapter, "full")
    except (ProfileError, OSError, ValueError):
        return None


def book_root(start: Path | str | None = None) -> Path:
    """The folder with ``params/`` and ``book/``: ``start`` (default: the working directory) or a parent,
    else the folder above the package."""
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "params").is_dir() and (folder / "book").is_dir():
            return folder
    return Path(__file__).resolve().parent.parent


def ledger(profile: str = "full", root: Path | str | None = None, store: RunStore | None = None) -> list[Result]:
    """Every claim judged on ``store`` with each chapter's parameters under ``profile`` (the notebook's
    defaults updated by ``params/<profile>.yaml``, as the runner passes them); the GPU-hour estimates
    use the full profile's parameters."""
    from .book.params import chapter_parameters

    root = book_root(root)
    store = store if store is not None else RunStore()
    every = store.list()
    spreads = {m: seed_spread(every, m) for m in METRICS}
    out = []
    for c in CLAIMS:
        if c.build is None:
            out.append(evaluate(c, {}, store))
            continue
        params = chapter_parameters(root, c.chapter, profile)
        full = _full_params(c.chapter) if profile != "full" else None
        out.append(evaluate(c, params, store, spreads, cost_params=full, stored=every))
    return out


# --- cost ----------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def images_per_second(model: str) -> float:
    """Estimated training images/s of ``model`` on one GPU: :data:`ASSUMED_TFLOPS` over three times its
    forward FLOPs (forward + backward), capped at :data:`ASSUMED_MAX_IMAGES_PER_S`. An estimate."""
    from .models import model_summary

    gflops = float(model_summary([model]).iloc[0]["gflops"])
    return min(ASSUMED_MAX_IMAGES_PER_S, ASSUMED_TFLOPS * 1e12 / (3 * gflops * 1e9))


def gpu_hours(arms: Arms, seeds: int = SETTLE_SEEDS) -> float | None:
    """Estimated GPU hours to run every arm with ``seeds`` seeds at its configs' epochs and sizes (one
    epoch: the training images, plus a test pass at a third of the per-image cost). None for models the
    FLOP count does not know."""
    total, speeds = 0.0, {}
    for configs in arms.values():
        c = configs[0]
        try:
            speed = speeds[c.model] if c.model in speeds else speeds.setdefault(c.model, images_per_second(c.model))
        except Exception:
            return None
        train = c.train_size or FULL_TRAIN_IMAGES
        test = c.test_size or FULL_TEST_IMAGES
        total += seeds * c.epochs * (train + test / 3) / speed
    return total / 3600


# --- tables ------------------------------------------------------------------------------------------

def _num(v: float | None, digits: int = 2, signed: bool = True) -> str:
    if v is None or not math.isfinite(v):
        return "-"
    return f"{v:+.{digits}f}" if signed else f"{v:.{digits}f}"


def table(results: Sequence[Result]) -> pd.DataFrame:
    """One row per claim: id, chapter, the report's sentence, verdict, reason, effect, 95 % interval,
    what the effect measures, the interval's source, the runs behind it, estimated GPU hours to settle."""
    rows = []
    for r in results:
        o = r.outcome
        rows.append({"claim": r.claim.id, "chapter": r.claim.chapter, "report says": r.claim.sentence,
                     "verdict": o.verdict, "reason": o.reason, "effect": o.effect,
                     "interval": f"[{_num(o.low)}, {_num(o.high)}]" if o.low is not None else "-",
                     "measure": r.claim.measure, "noise": o.noise, "rule": r.claim.rule_text,
                     "runs": r.runs_text(),
                     f"GPU h to settle ({SETTLE_SEEDS} seeds, estimate)": r.gpu_hours})
    return pd.DataFrame(rows)


def _cell(text: Any) -> str:
    return str(text).replace("|", "/").replace("\n", " ")


def markdown(results: Sequence[Result], links: bool = True) -> str:
    """The ledger as a Markdown table (the verdict in bold, the chapter linked when ``links``)."""
    head = ["claim", "report says", "verdict", "effect", "95 % interval", "runs", "GPU h (est.)"]
    if links:
        head.insert(1, "chapter")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        o = r.outcome
        row = [f"`{r.claim.id}`", _cell(r.claim.sentence), f"**{o.verdict}** ({_cell(o.reason)})",
               _num(o.effect), f"[{_num(o.low)}, {_num(o.high)}]" if o.low is not None else "-",
               _cell(r.runs_text()), _num(r.gpu_hours, 1, signed=False)]
        if links:
            section = f", {r.claim.section}" if r.claim.section != "-" else ""
            chapter = f"[{r.claim.chapter}]({r.claim.link})" if r.claim.build is not None else r.claim.chapter
            row.insert(1, chapter + section)
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def sentences(results: Sequence[Result]) -> str:
    """One generated sentence per claim, citing the computed effect and interval (Markdown bullets)."""
    out = []
    for r in results:
        o = r.outcome
        if o.verdict == NOT_RUN:
            out.append(f"- *{r.claim.sentence}* Not run yet: {o.reason}.")
            continue
        number = f" The effect ({r.claim.measure}) is {_num(o.effect)}" if o.effect is not None else ""
        if number and o.low is not None:
            number += f", 95 % interval [{_num(o.low)}, {_num(o.high)}] ({o.noise})"
        elif number:
            number += f" ({o.noise})"
        out.append(f"- *{r.claim.sentence}* **{o.verdict.capitalize()}**: {o.reason}.{number + '.' if number else ''}")
    return "\n".join(out)


#: CSS class of each verdict's word (styled in book/_static/book.css; the word itself carries the meaning).
_VERDICT_CLASS = {SUPPORTED: "supported", CONTRADICTED: "contradicted", INCONCLUSIVE: "inconclusive",
                  NOT_RUN: "not-run"}


def _anchor(claim: Claim) -> str:
    """The id of a claim's details block on a page."""
    return f"claim-{claim.id}"


def _verdict_html(verdict: str, reason: str = "") -> str:
    """The verdict as a word in a ``<span>`` whose class colours it; ``reason`` becomes its tooltip."""
    from html import escape

    title = f' title="{escape(reason)}"' if reason else ""
    return (f'<span class="claim-verdict verdict-{_VERDICT_CLASS.get(verdict, "other")}"{title}>'
            f'{escape(verdict)}</span>')


def _chapter_html(claim: Claim, short: bool = False) -> str:
    """The chapter, linked when it is in the book (a chapter not in the book yet has no page to link);
    ``short``: only its number (``01``, the full id in the link's title), for the ledger's narrow column."""
    from html import escape

    number = claim.chapter.split("_", 1)[0]
    name = escape(number if short and number.isdigit() else claim.chapter)
    if claim.build is None:
        return name
    return f'<a href="{escape(claim.link)}" title="{escape(claim.chapter)}">{name}</a>'


def _interval(o: Outcome) -> str:
    return f"[{_num(o.low)}, {_num(o.high)}]" if o.low is not None else "-"


def html_details(results: Sequence[Result], links: bool = True) -> str:
    """Per claim, a ``<details>`` block (closed) with everything the ledger's table leaves out: the
    report's sentence, the chapter and section, the verdict's reason, what the effect measures, the
    rule, where the interval comes from, the runs behind it (each arm's seeds, epochs, device and
    precision) and the estimated GPU hours to settle it. Its id is ``claim-<id>``, which the table links."""
    from html import escape

    blocks = ['<p class="claim-details-intro">Each claim in detail (click to open): the reason for its verdict, '
              'the measure, the rule, where the interval comes from, the runs and the GPU hours to settle it.</p>']
    for r in results:
        c, o = r.claim, r.outcome
        runs = "".join(f"<li>{escape(part)}</li>" for part in r.runs_text().split(" | "))
        section = f", {escape(c.section)}" if c.section != "-" else ""
        chapter = (_chapter_html(c) if links else escape(c.chapter)) + section
        interval = f", 95 % interval {_interval(o)}" if o.low is not None else " (no interval)"
        items = [("verdict", f"{_verdict_html(o.verdict)}: {escape(o.reason)}"),
                 ("effect", _num(o.effect) + interval),
                 ("measure", escape(c.measure)),
                 ("rule", escape(c.rule_text)),
                 ("interval from", escape(o.noise)),
                 ("runs", f"<ul>{runs}</ul>"),
                 ("GPU h to settle", f"{_num(r.gpu_hours, 1, signed=False)} ({SETTLE_SEEDS} seeds per model, "
                                     "estimate)"),
                 ("chapter", chapter)]
        body = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in items)
        blocks.append(f'<details class="claim-details" id="{_anchor(c)}"><summary><code>{escape(c.id)}</code> '
                      f'{_verdict_html(o.verdict)} {escape(c.sentence)}</summary><dl>{body}</dl></details>')
    return "".join(blocks)


def html_table(results: Sequence[Result], links: bool = True, details: bool = True) -> str:
    """The ledger as HTML, narrow enough to scan on a laptop: a table with one row per claim (the
    report's sentence, linked to its details; the chapter's number, linked, when ``links``; the verdict as a
    word, coloured by the book's CSS; the effect and its 95 % interval), then, when ``details``,
    :func:`html_details`: one closed ``<details>`` block per claim with the rest (reason, measure, rule,
    noise source, runs, GPU hours to settle). The book renders a generated Markdown output as
    CommonMark, which has no tables, so pages show this. The classes (``claims-ledger``,
    ``claim-verdict verdict-<verdict>``, ``claim-details``) are styled in ``book/_static/book.css``;
    without it the same words show."""
    from html import escape

    head = ["claim", "verdict", "effect", "95 % interval"]
    if links:
        head.insert(1, "chapter")
    rows = []
    for r in results:
        c, o = r.claim, r.outcome
        claim = (f'<a href="#{_anchor(c)}" title="{escape(c.id)}: details below">{escape(c.sentence)}</a>'
                 if details else f'{escape(c.sentence)} <code>{escape(c.id)}</code>')
        cells = [(claim, "claim"), (_verdict_html(o.verdict, o.reason), "verdict"), (_num(o.effect), "num"),
                 (_interval(o), "num")]
        if links:
            cells.insert(1, (_chapter_html(c, short=True), "chapter"))
        rows.append("<tr>" + "".join(f'<td class="{cls}">{text}</td>' for text, cls in cells) + "</tr>")
    header = "<tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>"
    table = f'<table class="claims-ledger"><thead>{header}</thead><tbody>{"".join(rows)}</tbody></table>'
    return table + (html_details(results, links) if details else "")


def show(results: Sequence[Result], links: bool = False) -> None:
    """Display a chapter's (or the book's) claims: the narrow table and each claim's details (HTML, see
    :func:`html_table`), then one generated sentence each."""
    from IPython.display import HTML, Markdown, display

    display(HTML(html_table(results, links=links)))
    display(Markdown(sentences(results)))


def summary(results: Sequence[Result]) -> dict[str, int]:
    """How many claims have each verdict."""
    counts = {v: 0 for v in VERDICTS}
    for r in results:
        counts[r.verdict] += 1
    return counts


# --- chapter 3's qualitative checks (moved here from cifar_utils.tables) ------------------------------

def _order(table: pd.DataFrame, column: str, ascending: bool, among: Sequence[str] | None = None) -> list[str]:
    t = table.dropna(subset=[column])
    if among is not None:
        t = t[t["variant"].isin(among)]
    return list(t.sort_values(column, ascending=ascending)["variant"])


def check_findings(sweep: str, table: pd.DataFrame, accuracy: str = "best_test_acc") -> pd.DataFrame:
    """The report's observations for one sweep of chapter 3, each with the order the reproduced runs
    give and whether it holds there, by order alone (no noise: the ledger's verdicts, :func:`evaluate`,
    add that). A claim about variants that were not run is reported as 'not run'. ``accuracy`` is the
    column the accuracy orders use (``lr_grid_table``'s ``test_acc_at_val_best`` for the tuned
    optimizers)."""
    checks: list[tuple[str, str, bool | None]] = []

    def add(claim: str, order: list[str], holds: bool | None, needs: Sequence[str] = ()) -> None:
        ran = len(order) > 1 and all(v in order for v in needs)
        checks.append((claim, " > ".join(order) if order else "not run", bool(holds) if ran else None))

    if sweep == "activation":
        worst = _order(table, accuracy, ascending=False)
        add("Sigmoid lags far behind (lowest best test accuracy)", worst, worst and worst[-1] == "Sigmoid", ["Sigmoid"])
        family = ["ReLU", "LeakyReLU", "ELU", "GELU"]
        speed = _order(table, "mean_train_loss", ascending=True, among=family)
        add("LeakyReLU converges fastest among the ReLU family (lowest mean train loss)", speed,
            speed and speed[0] == "LeakyReLU", ["LeakyReLU"])
        add("ELU converges slowest among the ReLU family", speed, speed and speed[-1] == "ELU", ["ELU"])
        steady = _order(table, "test_jitter", ascending=True, among=family)
        add("GELU is the steadiest on test (lowest test-accuracy jitter)", steady, steady and steady[0] == "GELU",
            ["GELU"])
    elif sweep == "loss":
        order = _order(table, accuracy, ascending=False)
        expected = [v for v in ("CrossEntropy", "BCE", "MSE", "Huber") if v in order]
        add("CE > BCE > MSE > Huber (best test accuracy)", order, order == expected)
    elif sweep == "optimizer":
        order = _order(table, accuracy, ascending=False)
        holds = None
        accs = table.set_index("variant")[accuracy]
        others = [accs[v] for v in order if v != "Adagrad"]
        if "Adagrad" in order and others:
            holds = order[-1] == "Adagrad" and max(others) - min(others) < min(others) - accs["Adagrad"]
        add("Adagrad is the worst; the others are closer to each other than to Adagrad", order, holds, ["Adagrad"])
    else:
        raise ValueError(f"unknown sweep {sweep!r}; choose one of activation, loss, optimizer")
    frame = pd.DataFrame(checks, columns=["report says", "reproduced order", "holds here"])
    frame["holds here"] = frame["holds here"].map({True: "yes", False: "no", None: "not run"})
    return frame


# --- settling chosen claims with more seeds ----------------------------------------------------------

def claim_by_id(claim_id: str) -> Claim:
    """The declared claim ``claim_id``; an unknown id names the known ones."""
    for c in CLAIMS:
        if c.id == claim_id:
            return c
    raise ValueError(f"unknown claim {claim_id!r}; claims: {', '.join(c.id for c in CLAIMS)}")


def settle_configs(ids: Sequence[str], profile: str = "full", seeds: Sequence[int] = (0, 1, 2),
                   root: Path | str | None = None) -> list[RunConfig]:
    """The runs that settle the chosen claims: every arm of each, once per seed of ``seeds``, with its
    chapter's parameters under ``profile`` (so seed 0 is the chapter's own run). Runs shared by several
    claims are listed once. Chapter 5's claim is judged across learning rates, not seeds, and chapter 6's
    are not built yet: both are refused with the reason."""
    from .book.params import chapter_parameters

    if not seeds:
        raise ValueError("seeds is empty: give the seeds to run, e.g. 0,1,2")
    root = book_root(root)
    out: dict[str, RunConfig] = {}
    for cid in ids:
        claim = claim_by_id(cid)
        if claim.build is None:
            raise ValueError(f"claim {cid!r} is not run yet: {claim.missing or chapter6_missing()}")
        if claim.build is batchnorm_arms:
            raise ValueError(f"claim {cid!r} uses the learning rates as replicates (one seed, recorded with "
                             "chapter 5's callbacks); run chapter 5 instead")
        if claim.chapter == CH6:
            raise ValueError(f"claim {cid!r} needs chapter 6's runs trained with its SLBIPath callback; run "
                             "chapter 6 with another seed instead")
        params = {**chapter_parameters(root, claim.chapter, profile), "seeds": [int(s) for s in seeds]}
        for configs in claim.build(params).values():
            out.update({c.name: c for c in configs})
    return list(out.values())


def settle(ids: Sequence[str], profile: str = "full", seeds: Sequence[int] = (0, 1, 2), jobs: int = 1,
           runs_dir: Path | str | None = None, root: Path | str | None = None) -> list[Run]:
    """Train (or load) :func:`settle_configs` through :func:`cifar_utils.engine.run_many`, in the store the
    book runner gives the profile's chapters (``runs/<profile>`` under the book's root, or
    ``$CIFAR_UTILS_RUNS``); the ledger then finds the extra seeds beside the chapters' runs."""
    import os

    from .engine import run_many

    configs = settle_configs(ids, profile, seeds, root)
    if runs_dir is None:
        runs_dir = os.environ.get("CIFAR_UTILS_RUNS") or book_root(root) / "runs" / profile
    return run_many(configs, jobs=jobs, runs_dir=runs_dir)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m cifar_utils.claims [--profile full] [--settle ID,ID --seeds 0,1,2 --jobs N] [--dry-run]``:
    print the ledger, or train the runs that settle the chosen claims (``--dry-run``: list them and the
    estimated GPU hours only)."""
    import argparse
    import os

    ap = argparse.ArgumentParser(prog="python -m cifar_utils.claims", description=main.__doc__)
    ap.add_argument("--profile", default="full")
    ap.add_argument("--settle", default="", help=f"comma-separated claim ids: {', '.join(c.id for c in CLAIMS)}")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--dry-run", action="store_true")
    args = ap.parse_args(argv)
    root = book_root()
    runs_dir = os.environ.get("CIFAR_UTILS_RUNS") or str(root / "runs" / args.profile)
    if not args.settle:
        with pd.option_context("display.max_colwidth", 60, "display.width", 200):
            print(table(ledger(args.profile, root, RunStore(runs_dir)))[["claim", "verdict", "reason", "effect",
                                                                           "interval"]].to_string(index=False))
        return 0
    ids = [i.strip() for i in args.settle.split(",") if i.strip()]
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    configs = settle_configs(ids, args.profile, seeds, root)
    arms = {c.name: [c] for c in configs}
    print(f"{len(configs)} runs ({', '.join(sorted({c.model for c in configs}))}), seeds {seeds}, store {runs_dir}; "
          f"estimated {gpu_hours(arms, seeds=1) or float('nan'):.1f} GPU hours if none is stored yet (stored runs are "
          "loaded, not retrained)")
    if not args.dry_run:
        settle(ids, args.profile, seeds, args.jobs, runs_dir, root)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
