"""Results over seeds: each label of a comparison has several runs that differ only in their seed (chapter 6's
LeNet, SLBI and SGD), and one seed says little (SLBI's final accuracy varies by up to two points from seed
to seed at the report's settings). These tables give each run, then the mean, standard deviation and range
over the runs that enter the means, and say which runs are left out and why.

Which runs enter the means: :func:`status` names what happened to a run and :func:`included` decides. A run
enters when it finished and did not collapse; a run stuck at chance for several epochs (the engine's detector,
:mod:`cifar_utils.engine.health`) is named "collapsed ..." in the ``status`` column and left out of the means,
so that a bad seed is not mistaken for a bad method (or hidden in an average).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence

import pandas as pd

from .engine import Run


def status(run: Run) -> str:
    """What happened to a run, in a table's words (``finished``, ``diverged``, ``failed``...; ``collapsed (at
    chance, ... from epoch k to the end)`` for a run that ended collapsed, ``finished; recovered from a
    collapse (...)`` for one that sat at chance for a while and then learned: see
    :func:`cifar_utils.engine.health.collapse`)."""
    found = run.collapse if run.status in ("finished", "diverged") else None
    if found is None:
        return run.status
    return found.describe() if found.to_end else f"{run.status}; {found.describe()}"


def included(run: Run) -> bool:
    """Whether the run enters the means over seeds: it finished and did not end collapsed (see the module doc);
    a run that recovered from a collapse enters (its status says so)."""
    found = run.collapse if run.status == "finished" else None
    return (run.status == "finished" and not (found is not None and found.to_end)
            and any(r.get("test_acc") is not None for r in run.history))


def included_runs(runs: Sequence[Run]) -> list[Run]:
    return [r for r in runs if included(r)]


def _accs(run: Run) -> list[float]:
    return [float(r["test_acc"]) for r in run.history if r.get("test_acc") is not None]


def _sd(values: Sequence[float]) -> float | None:
    return statistics.stdev(values) if len(values) > 1 else None


def _seed(run: Run) -> int | str:
    return run.config.seed if run.config is not None else "?"


def source(run: Run) -> str:
    """``published`` for a run read from a bundle of published runs, else ``this build``."""
    return "published" if getattr(run, "published", None) else "this build"


def per_seed(runs: Mapping[str, Sequence[Run]]) -> pd.DataFrame:
    """One row per run (label, seed): epochs, final and best test accuracy (percent), ``status`` and where the
    run comes from (``source``)."""
    rows = []
    for label, group in runs.items():
        for r in group:
            accs = _accs(r)
            rows.append({"run": label, "seed": _seed(r), "epochs": len(accs),
                         "final_acc": accs[-1] if accs else None, "best_acc": max(accs) if accs else None,
                         "status": status(r) + ("" if included(r) else "; left out of the means"),
                         "source": source(r)})
    return pd.DataFrame(rows, columns=["run", "seed", "epochs", "final_acc", "best_acc", "status", "source"]
                        ).set_index(["run", "seed"])


def summary(runs: Mapping[str, Sequence[Run]]) -> pd.DataFrame:
    """One row per label, over the runs that enter the means (:func:`included`): ``seeds`` ("5 of 5"), the
    mean, standard deviation (over seeds, ``ddof=1``), minimum and maximum of the final test accuracy, the mean
    and standard deviation of the best epoch's, and ``left out`` naming the runs that do not enter and why."""
    rows = []
    for label, group in runs.items():
        used = included_runs(group)
        finals = [_accs(r)[-1] for r in used]
        bests = [max(_accs(r)) for r in used]
        out = [f"seed {_seed(r)}: {status(r)}" for r in group if not included(r)]
        rows.append({"run": label, "seeds": f"{len(used)} of {len(group)}",
                     "final_mean": statistics.fmean(finals) if finals else None, "final_std": _sd(finals),
                     "final_min": min(finals) if finals else None, "final_max": max(finals) if finals else None,
                     "best_mean": statistics.fmean(bests) if bests else None, "best_std": _sd(bests),
                     "left out": "; ".join(out) or "-"})
    return pd.DataFrame(rows).set_index("run")


def pruning_over_seeds(tables: Mapping[int, pd.DataFrame], reported: Mapping[float, float] | None = None
                       ) -> pd.DataFrame:
    """Table 3 over seeds: per pruned percentage (the index of each seed's
    :func:`cifar_utils.sparsity.pruning_results` table), the filters kept, the number of seeds, the mean,
    standard deviation, minimum and maximum of the pruned test accuracy, and with ``reported`` the report's
    number and ``difference`` = mean - reported (points)."""
    if not tables:
        raise ValueError("no pruning tables: no SLBI run entered the means (see the per-seed table's status)")
    frames = list(tables.values())
    rows = []
    for percent in frames[0].index:
        accs = [float(t.loc[percent, "test_acc"]) for t in frames]
        row = {"pruned %": percent, "kept": int(frames[0].loc[percent, "kept"]), "seeds": len(accs),
               "mean": statistics.fmean(accs), "std": _sd(accs), "min": min(accs), "max": max(accs)}
        if reported is not None:
            rep = reported.get(percent)
            row["reported"] = rep
            row["difference"] = row["mean"] - rep if rep is not None else None
        rows.append(row)
    return pd.DataFrame(rows).set_index("pruned %")


def _pm(mean: float, sd: float | None) -> str:
    return f"{mean:.2f} ± {sd:.2f}" if sd is not None and math.isfinite(sd) else f"{mean:.2f}"


def pruning_sentence(table: pd.DataFrame, layer: str) -> str:
    """What Table 3 says, in words, with its own numbers: the unpruned and most pruned accuracies (mean ± std
    over seeds) beside the report's, and the largest gap to the report."""
    first, last = table.index[0], table.index[-1]
    n = int(table["seeds"].iloc[0])
    seeds = f"{n} seed{'s' if n != 1 else ''}"

    def at(p) -> str:
        row = table.loc[p]
        text = f"{_pm(row['mean'], row['std'])} % at {p} % pruned"
        if "reported" in table and row.get("reported") is not None and not pd.isna(row["reported"]):
            text += f" (report: {row['reported']:.2f} %)"
        return text

    out = f"Over {seeds}, the SLBI-trained LeNet with {layer} pruned scores {at(first)} and {at(last)}."
    if "difference" in table and table["difference"].notna().any():
        gap = table["difference"].abs().idxmax()
        out += (f" The largest gap to the report is {table.loc[gap, 'difference']:+.2f} points, at {gap} %"
                + (f"; the seeds' standard deviation there is {table.loc[gap, 'std']:.2f} points."
                   if table.loc[gap, "std"] is not None and not pd.isna(table.loc[gap, "std"]) else "."))
    return out


def spread_sentence(runs: Mapping[str, Sequence[Run]]) -> str:
    """How much the final test accuracy varies from seed to seed, per label, in words (from the runs)."""
    parts = []
    for label, group in runs.items():
        finals = [_accs(r)[-1] for r in included_runs(group)]
        if len(finals) > 1:
            parts.append(f"{label}'s final test accuracy ranges from {min(finals):.2f} to {max(finals):.2f} % over "
                         f"{len(finals)} seeds (standard deviation {statistics.stdev(finals):.2f} points)")
        elif finals:
            parts.append(f"{label} has one seed ({finals[0]:.2f} %), which says nothing about the seed-to-seed spread")
    if not parts:
        return "No run entered the means (see the per-seed table's status)."
    return "; ".join(parts)[:1].upper() + "; ".join(parts)[1:] + (
        ". A difference between two single runs smaller than that spread says little." if any(
            len(included_runs(g)) > 1 for g in runs.values()) else ".")
