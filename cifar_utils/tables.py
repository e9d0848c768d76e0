"""The chapters' result tables: reported beside reproduced, with the facts needed to judge the gap."""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence

import pandas as pd

from .engine import Run

COLUMNS = ["model", "params_m", "gflops", "reported_error", "reproduced_error", "std", "difference",
           "best_error", "seeds", "epochs", "wall_time", "device", "status"]


def _hms(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def results_table(runs: Mapping[str, Sequence[Run]], reported: Mapping[str, float],
                  summary: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per model: parameters and GFLOPs (from the code), the report's error, the reproduced
    error (final epoch, mean over seeds), its standard deviation over seeds, the difference
    (reproduced - reported, percentage points), the best epoch's error, epochs, wall time, device.
    Only finished runs enter the error columns; ``seeds`` counts the finished runs of ``runs``.

    ``summary`` is :func:`cifar_utils.models.model_summary`'s frame (indexed or with a ``model``
    column); without it the size columns are empty. Errors are top-1 test errors in percent.
    """
    if summary is not None and "model" in summary.columns:
        summary = summary.set_index("model")
    rows = []
    for model, model_runs in runs.items():
        # only runs that completed their epochs count: a diverged or interrupted run's last error
        # is not the protocol's result (the status column says what happened to the others)
        finished = [r for r in model_runs if r.status == "finished" and r.final_test_error is not None]
        finals = [r.final_test_error for r in finished]
        bests = [r.best_test_error for r in finished]
        mean = statistics.fmean(finals) if finals else None
        rep = reported.get(model)
        statuses = sorted({r.status for r in model_runs})
        rows.append({
            "model": model,
            "params_m": float(summary.loc[model, "params"]) / 1e6 if summary is not None and model in summary.index else None,
            "gflops": float(summary.loc[model, "gflops"]) if summary is not None and model in summary.index else None,
            "reported_error": rep,
            "reproduced_error": mean,
            "std": statistics.stdev(finals) if len(finals) > 1 else None,
            "difference": mean - rep if mean is not None and rep is not None else None,
            "best_error": statistics.fmean(bests) if bests else None,
            "seeds": f"{len(finished)}/{len(model_runs)}" if len(finished) != len(model_runs) else len(model_runs),
            "epochs": max((len(r.history) for r in model_runs), default=0),
            "wall_time": _hms(sum(r.wall_seconds for r in model_runs)),
            "device": ", ".join(sorted({str(r.device) for r in model_runs if r.device})) or "-",
            "status": ", ".join(statuses),
        })
    table = pd.DataFrame(rows, columns=COLUMNS)
    if table["std"].isna().all():
        table = table.drop(columns="std")
    return table


def format_table(table: pd.DataFrame):
    """A pandas Styler with two decimals for errors and sizes, for display in a notebook."""
    numeric = {c: "{:.2f}" for c in ("params_m", "gflops", "reported_error", "reproduced_error", "std", "best_error",
                                     "reported spread", "reproduced spread")}
    if "difference" in table:
        numeric["difference"] = "{:+.2f}"
    return table.style.format({k: v for k, v in numeric.items() if k in table}, na_rep="-").hide(axis="index")


def _values(run: Run, key: str) -> list[float]:
    return [r[key] for r in run.history if r.get(key) is not None]


def sweep_table(runs: Mapping[str, Run]) -> pd.DataFrame:
    """One row per variant of a sweep, with the measures the report's observations are about:
    final and best test accuracy, mean train loss over the epochs (lower = converges faster), and
    test-accuracy jitter (mean absolute epoch-to-epoch change over the second half; lower = steadier)."""
    rows = []
    for label, run in runs.items():
        train_loss, test_acc = _values(run, "train_loss"), _values(run, "test_acc")
        half = test_acc[len(test_acc) // 2:]
        jitter = statistics.fmean(abs(b - a) for a, b in zip(half, half[1:])) if len(half) > 1 else None
        rows.append({"variant": label, "final_test_acc": test_acc[-1] if test_acc else None,
                     "best_test_acc": max(test_acc) if test_acc else None,
                     "final_train_loss": train_loss[-1] if train_loss else None,
                     "mean_train_loss": statistics.fmean(train_loss) if train_loss else None,
                     "test_jitter": jitter, "epochs": len(run.history), "status": run.status})
    return pd.DataFrame(rows)


def _order(table: pd.DataFrame, column: str, ascending: bool, among: Sequence[str] | None = None) -> list[str]:
    t = table.dropna(subset=[column])
    if among is not None:
        t = t[t["variant"].isin(among)]
    return list(t.sort_values(column, ascending=ascending)["variant"])


def check_findings(sweep: str, table: pd.DataFrame) -> pd.DataFrame:
    """The report's observations for one sweep, each with what the reproduced runs show and whether
    it holds there. A claim about variants that were not run is reported as 'not run'."""
    checks: list[tuple[str, str, bool | None]] = []

    def add(claim: str, order: list[str], holds: bool | None, needs: Sequence[str] = ()) -> None:
        ran = len(order) > 1 and all(v in order for v in needs)
        checks.append((claim, " > ".join(order) if order else "not run", bool(holds) if ran else None))

    if sweep == "activation":
        worst = _order(table, "best_test_acc", ascending=False)
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
        order = _order(table, "best_test_acc", ascending=False)
        expected = [v for v in ("CrossEntropy", "BCE", "MSE", "Huber") if v in order]
        add("CE > BCE > MSE > Huber (best test accuracy)", order, order == expected)
    elif sweep == "optimizer":
        order = _order(table, "best_test_acc", ascending=False)
        holds = None
        accs = table.set_index("variant")["best_test_acc"]
        others = [accs[v] for v in order if v != "Adagrad"]
        if "Adagrad" in order and others:
            holds = order[-1] == "Adagrad" and max(others) - min(others) < min(others) - accs["Adagrad"]
        add("Adagrad is the worst; the others are closer to each other than to Adagrad", order, holds, ["Adagrad"])
    else:
        raise ValueError(f"unknown sweep {sweep!r}; choose one of activation, loss, optimizer")
    frame = pd.DataFrame(checks, columns=["report says", "reproduced order", "holds here"])
    frame["holds here"] = frame["holds here"].map({True: "yes", False: "no", None: "not run"})
    return frame


def group_comparison(table: pd.DataFrame, groups: Mapping[str, Sequence[str]]) -> pd.DataFrame:
    """Per comparison group: the models ordered best-first by the report and by the reproduced runs,
    the spread (worst - best error, points) in each, and whether the two orders agree."""
    data = table.set_index("model")
    rows = []
    for group, members in groups.items():
        members = [m for m in members if m in data.index]
        got = data.loc[members, "reproduced_error"].dropna().sort_values()
        # compare like with like: the report's order over the models that have reproduced results
        rep = data.loc[list(got.index) if len(got) else members, "reported_error"].dropna().sort_values()
        rows.append({"group": group, "reported order": " < ".join(rep.index),
                     "reproduced order": " < ".join(got.index) or "not run",
                     "reported spread": float(rep.iloc[-1] - rep.iloc[0]) if len(rep) > 1 else None,
                     "reproduced spread": float(got.iloc[-1] - got.iloc[0]) if len(got) > 1 else None,
                     "same order": ("yes" if list(rep.index) == list(got.index) else "no") if len(got) > 1 else "not run"})
    return pd.DataFrame(rows)


# --- chapter 6 -------------------------------------------------------------------------------------

def run_comparison(runs: Mapping[str, Run], last: int = 5) -> pd.DataFrame:
    """Per run: final and best test accuracy, and the mean and standard deviation of the test accuracy
    over the ``last`` epochs (the spread says how much one epoch's number wobbles)."""
    if last < 1:
        raise ValueError(f"last must be >= 1, got {last!r}")
    rows = []
    for label, run in runs.items():
        accs = _values(run, "test_acc")
        tail = pd.Series(accs[-last:], dtype=float)
        rows.append({"run": label, "epochs": len(accs), "final_acc": accs[-1] if accs else None,
                     "best_acc": max(accs) if accs else None, f"mean_last_{last}": tail.mean() if accs else None,
                     f"std_last_{last}": tail.std(ddof=0) if accs else None})
    return pd.DataFrame(rows).set_index("run")


def difference_check(table: pd.DataFrame, a: str, b: str, last: int = 5, factor: float = 2.0) -> dict:
    """Whether runs ``a`` and ``b`` of :func:`run_comparison` differ by more than ``factor`` times their
    combined epoch-to-epoch spread over the last epochs (a one-seed yardstick, not a statistical test).

    Returns ``difference`` (a minus b, points of mean accuracy over the last epochs), ``spread``,
    ``significant`` (bool) and a one-line ``verdict``."""
    mean, std = f"mean_last_{last}", f"std_last_{last}"
    diff = float(table.loc[a, mean] - table.loc[b, mean])
    spread = float((table.loc[a, std] ** 2 + table.loc[b, std] ** 2) ** 0.5)
    significant = abs(diff) > factor * spread
    verdict = (f"{a} - {b} = {diff:+.2f} points (mean test accuracy of the last {last} epochs) against a "
               f"spread of {spread:.2f}: " + ("a difference beyond the epoch-to-epoch noise" if significant
                                               else "no difference beyond the epoch-to-epoch noise"))
    return {"difference": diff, "spread": spread, "significant": significant, "verdict": verdict}
