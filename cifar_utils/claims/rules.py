"""Judging a claim: the measures, the noise (seed spread, Welch's interval) and the verdict rules.

An :class:`Outcome` is an effect, a 95 % interval and a verdict, **supported**, **contradicted** or
**inconclusive** (with the reason). Noise, honestly:

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
training error. A rule takes the runs of each arm (``arm name -> [Run, ...]``, one per seed) and
``spread(metric)``, the store's seed spread of that metric (or None).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from ..engine import Run
from ..tables import epoch_errors

SUPPORTED, CONTRADICTED, INCONCLUSIVE = "supported", "contradicted", "inconclusive"
VERDICTS = (SUPPORTED, CONTRADICTED, INCONCLUSIVE)
#: "Reaches" / "does not differ" claims: the largest gap (points of test error) still read as equal. A
#: declared tolerance, not the report's; it is stated in every such claim's rule.
EQUIVALENCE_MARGIN = 0.3
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


Rule = Callable[[Mapping[str, Sequence[Run]], "Callable[[str], SeedSpread | None]"], Outcome]


# --- measures -------------------------------------------------------------------------------------

def test_error(run: Run) -> float | None:
    """The best epoch's test error, percent (the report's figure)."""
    return epoch_errors(run)["best"]


def train_error(run: Run) -> float | None:
    """The last epoch's training error, percent (100 - ``train_acc``)."""
    accs = [r["train_acc"] for r in run.history if r.get("train_acc") is not None]
    return 100.0 - accs[-1] if accs else None


METRICS: dict[str, Callable[[Run], float | None]] = {"test_error": test_error, "train_error": train_error}


def finished(run: Run | None) -> bool:
    return run is not None and run.config is not None and run.status == "finished"


def seed_spread(runs: Sequence[Run], metric: str = "test_error") -> SeedSpread | None:
    """The pooled seed-to-seed standard deviation of ``metric`` over every group of finished runs that
    differ only in their seed (None when no group has two). Pooled variance: sum of (n_i - 1) s_i^2
    over sum of (n_i - 1)."""
    measure = METRICS[metric]
    groups: dict[str, list[float]] = {}
    names: dict[str, str] = {}
    for r in runs:
        if not finished(r):
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
    from .. import bn_metrics

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
    (the trained model is pruned and restored: :func:`cifar_utils.sparsity.pruning_results`, the chapter's
    own tables, read from a published run without its data). The drop is measured on one fixed test set,
    so its uncertainty comes from seeds only: with one seed the noise is unknown and the verdict
    inconclusive."""

    def rule(runs, spread):
        from ..sparsity import pruning_results

        drops = []
        for run in runs["SLBI"]:
            table = pruning_results(run, layer, [0, percent])
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


