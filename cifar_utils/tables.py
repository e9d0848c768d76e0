"""The chapters' result tables: reported beside reproduced, with the facts needed to judge the gap."""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence

import pandas as pd

from . import replicates
from .engine import Run

COLUMNS = ["model", "params_m", "gflops", "reported_error", "reproduced_error", "std", "difference",
           "final_error", "val_selected_error", "best_epoch", "seeds", "epochs", "wall_time", "device", "status"]


def _hms(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def _best_index(history: Sequence[Mapping], key: str) -> int | None:
    """Index of the first epoch with the highest ``key`` (an accuracy), or None if never recorded."""
    best = None
    for i, row in enumerate(history):
        value = row.get(key)
        if value is not None and (best is None or value > history[best][key]):
            best = i
    return best


def epoch_errors(run: Run) -> dict[str, float | int | None]:
    """The test errors (percent) a run gives, by which epoch they are read at:

    * ``best``: the epoch with the highest test accuracy (first one on ties) -- the report's figure
      ("the optimal test accuracy"); optimistic, since the test set chooses the epoch;
    * ``final``: the last epoch;
    * ``val_selected``: the epoch with the highest *held-out* accuracy (``val_acc``; first on ties),
      None without a validation split -- the honest figure: the test set chooses nothing;
    * ``best_epoch`` / ``val_epoch``: those epochs (counting from 1).
    """
    history = [r for r in run.history if r.get("test_acc") is not None]
    out: dict[str, float | int | None] = {"best": None, "final": None, "val_selected": None,
                                          "best_epoch": None, "val_epoch": None}
    if not history:
        return out
    b = _best_index(history, "test_acc")
    out.update(best=100.0 - history[b]["test_acc"], final=100.0 - history[-1]["test_acc"],
               best_epoch=int(history[b].get("epoch", b + 1)))
    v = _best_index(history, "val_acc")
    if v is not None:
        out.update(val_selected=100.0 - history[v]["test_acc"], val_epoch=int(history[v].get("epoch", v + 1)))
    return out


def run_device(run: Run) -> str:
    """Where a run trained and at what precision (``status.json``'s resolved ``precision``; the
    config's when that is missing and not ``auto``), e.g. ``"NVIDIA H200, bf16"``."""
    name = str(run.device) if run.device else "-"
    precision = (run.info or {}).get("precision") or (run.config.precision if run.config.precision != "auto" else None)
    return f"{name}, {precision}" if precision else name


def results_table(runs: Mapping[str, Sequence[Run]], reported: Mapping[str, float],
                  summary: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per model: parameters and GFLOPs (from the code), the report's error, and the
    reproduced errors, each a mean over the finished seeds (see :func:`epoch_errors`):

    * ``reproduced_error``: the best epoch's test error, the figure the report quotes ("the optimal
      test accuracy"); ``std`` its standard deviation over seeds; ``difference`` = reproduced -
      reported (percentage points). Optimistic: the test set picks the epoch (as in the report);
    * ``final_error``: the last epoch's test error;
    * ``val_selected_error``: the test error at the epoch best on the held-out split (runs with
      ``val_size > 0`` only; the column is dropped when no run has one);
    * ``best_epoch``: the epoch(s) the reproduced error was read at, one per seed.

    Only finished runs enter the error columns; ``seeds`` counts the finished runs of ``runs``.
    ``device`` says where the runs trained and at which precision (:func:`run_device`).
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
        errors = [epoch_errors(r) for r in finished]
        bests = [e["best"] for e in errors]
        finals = [e["final"] for e in errors]
        selected = [e["val_selected"] for e in errors if e["val_selected"] is not None]
        mean = statistics.fmean(bests) if bests else None
        rep = reported.get(model)
        statuses = sorted({replicates.status(r) for r in model_runs})  # names a collapsed run as such
        rows.append({
            "model": model,
            "params_m": float(summary.loc[model, "params"]) / 1e6 if summary is not None and model in summary.index else None,
            "gflops": float(summary.loc[model, "gflops"]) if summary is not None and model in summary.index else None,
            "reported_error": rep,
            "reproduced_error": mean,
            "std": statistics.stdev(bests) if len(bests) > 1 else None,
            "difference": mean - rep if mean is not None and rep is not None else None,
            "final_error": statistics.fmean(finals) if finals else None,
            "val_selected_error": statistics.fmean(selected) if selected and len(selected) == len(finished) else None,
            "best_epoch": ", ".join(str(e["best_epoch"]) for e in errors) or None,
            "seeds": f"{len(finished)}/{len(model_runs)}" if len(finished) != len(model_runs) else len(model_runs),
            "epochs": max((len(r.history) for r in model_runs), default=0),
            "wall_time": _hms(sum(r.wall_seconds for r in model_runs)),
            "device": "; ".join(sorted({run_device(r) for r in model_runs if r.device})) or "-",
            "status": ", ".join(statuses),
        })
    table = pd.DataFrame(rows, columns=COLUMNS)
    for optional in ("std", "val_selected_error"):
        if table[optional].isna().all():
            table = table.drop(columns=optional)
    return table


def format_table(table: pd.DataFrame):
    """A pandas Styler for display in a notebook: two decimals for every float column (errors, sizes,
    ratios), a sign on differences."""
    numeric = {c: "{:.2f}" for c in table.columns if pd.api.types.is_float_dtype(table[c])}
    for c in table.columns:
        if c == "difference" or str(c).startswith(("reported - ", "reproduced - ")):
            numeric[c] = "{:+.2f}"
    return table.style.format(numeric, na_rep="-").hide(axis="index")


def _values(run: Run, key: str) -> list[float]:
    return [r[key] for r in run.history if r.get(key) is not None]


def sweep_table(runs: Mapping[str, Run]) -> pd.DataFrame:
    """One row per variant of a sweep, with its learning rate and the measures the report's
    observations are about: final and best test accuracy, mean train loss over the epochs (lower =
    converges faster), and test-accuracy jitter (mean absolute epoch-to-epoch change over the second
    half; lower = steadier)."""
    rows = []
    for label, run in runs.items():
        train_loss, test_acc = _values(run, "train_loss"), _values(run, "test_acc")
        half = test_acc[len(test_acc) // 2:]
        jitter = statistics.fmean(abs(b - a) for a, b in zip(half, half[1:])) if len(half) > 1 else None
        rows.append({"variant": label, "lr": run.config.lr, "final_test_acc": test_acc[-1] if test_acc else None,
                     "best_test_acc": max(test_acc) if test_acc else None,
                     "final_train_loss": train_loss[-1] if train_loss else None,
                     "mean_train_loss": statistics.fmean(train_loss) if train_loss else None,
                     "test_jitter": jitter, "epochs": len(run.history), "status": replicates.status(run)})
    return pd.DataFrame(rows)


def _findings_order(table: pd.DataFrame, column: str, ascending: bool, among: Sequence[str] | None = None) -> list[str]:
    t = table.dropna(subset=[column])
    if among is not None:
        t = t[t["variant"].isin(among)]
    return list(t.sort_values(column, ascending=ascending)["variant"])


def check_findings(sweep: str, table: pd.DataFrame, accuracy: str = "best_test_acc") -> pd.DataFrame:
    """The report's observations for one sweep of chapter 3, each with the order the reproduced runs
    give and whether it holds there, by order alone (no noise: the ledger's verdicts, :func:`cifar_utils.claims.evaluate`,
    add that). A claim about variants that were not run is reported as 'not run'. ``accuracy`` is the
    column the accuracy orders use (``lr_grid_table``'s ``test_acc_at_val_best`` for the tuned
    optimizers)."""
    checks: list[tuple[str, str, bool | None]] = []

    def add(claim: str, order: list[str], holds: bool | None, needs: Sequence[str] = ()) -> None:
        ran = len(order) > 1 and all(v in order for v in needs)
        checks.append((claim, " > ".join(order) if order else "not run", bool(holds) if ran else None))

    if sweep == "activation":
        worst = _findings_order(table, accuracy, ascending=False)
        add("Sigmoid lags far behind (lowest best test accuracy)", worst, worst and worst[-1] == "Sigmoid", ["Sigmoid"])
        family = ["ReLU", "LeakyReLU", "ELU", "GELU"]
        speed = _findings_order(table, "mean_train_loss", ascending=True, among=family)
        add("LeakyReLU converges fastest among the ReLU family (lowest mean train loss)", speed,
            speed and speed[0] == "LeakyReLU", ["LeakyReLU"])
        add("ELU converges slowest among the ReLU family", speed, speed and speed[-1] == "ELU", ["ELU"])
        steady = _findings_order(table, "test_jitter", ascending=True, among=family)
        add("GELU is the steadiest on test (lowest test-accuracy jitter)", steady, steady and steady[0] == "GELU",
            ["GELU"])
    elif sweep == "loss":
        order = _findings_order(table, accuracy, ascending=False)
        expected = [v for v in ("CrossEntropy", "BCE", "MSE", "Huber") if v in order]
        add("CE > BCE > MSE > Huber (best test accuracy)", order, order == expected)
    elif sweep == "optimizer":
        order = _findings_order(table, accuracy, ascending=False)
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


def _ordered(errors: pd.Series) -> str:
    """Models joined best-first by ``<``, or ``=`` between equal errors."""
    names, values = list(errors.index), list(errors.values)
    return "".join(n if i == 0 else (" = " if values[i] == values[i - 1] else " < ") + n for i, n in enumerate(names))


def group_comparison(table: pd.DataFrame, groups: Mapping[str, Sequence[str]],
                     claims: Mapping[str, str] | None = None) -> pd.DataFrame:
    """Per comparison group: the models ordered best-first by the report and by the reproduced runs
    (``reproduced_error``: best epoch, as the report), the spread (worst - best error, points) in
    each, and whether the two orders agree; with ``claims`` (group -> the report's conclusion, e.g.
    :data:`cifar_utils.reported.ABLATION_CLAIMS`) that conclusion comes first, beside its check."""
    data = table.set_index("model")
    rows = []
    for group, members in groups.items():
        members = [m for m in members if m in data.index]
        got = data.loc[members, "reproduced_error"].dropna().sort_values()
        # compare like with like: the report's order over the models that have reproduced results
        rep = data.loc[list(got.index) if len(got) else members, "reported_error"].dropna().sort_values()
        # equal reproduced errors (common in a smoke build) give no order: say "tie", never "yes"
        tied = got.duplicated().any()
        same = "not run" if len(got) < 2 else "tie" if tied else "yes" if list(rep.index) == list(got.index) else "no"
        rows.append({"group": group, **({"report's claim": claims.get(group, "-")} if claims is not None else {}),
                     "reported order": " < ".join(rep.index),
                     "reproduced order": _ordered(got) or "not run",
                     "reported spread": float(rep.iloc[-1] - rep.iloc[0]) if len(rep) > 1 else None,
                     "reproduced spread": float(got.iloc[-1] - got.iloc[0]) if len(got) > 1 else None,
                     "same order": same})
    return pd.DataFrame(rows)


def best_model_table(runs: Mapping[str, Run], labels: Mapping[str, str], reported: Mapping[str, float],
                     paper: Mapping[str, float]) -> pd.DataFrame:
    """Chapter 4: one row per run (key -> Run): the report's accuracy and error, the Cutout paper's
    error, and the reproduced final-epoch and best-epoch errors and final accuracy (percent), epochs,
    wall time, device, status."""
    rows = []
    for key, run in runs.items():
        final = run.final_test_error if run.status == "finished" else None
        rep = reported.get(key)
        rows.append({"run": labels.get(key, key), "reported_accuracy": 100.0 - rep if rep is not None else None,
                     "reported_error": rep, "paper_error": paper.get(key),
                     "reproduced_error": final, "best_error": run.best_test_error,
                     "reproduced_accuracy": 100.0 - final if final is not None else None,
                     "epochs": len(run.history), "wall_time": _hms(run.wall_seconds),
                     "device": str(run.device or "-"), "status": replicates.status(run)})
    return pd.DataFrame(rows)


def format_numbers(table: pd.DataFrame, digits: int = 2, signed: Sequence[str] = ()):
    """A pandas Styler showing every float column with ``digits`` decimals (``signed`` columns with a
    sign), missing values as '-', without the index."""
    fmt = {c: f"{{:.{digits}f}}" for c in table.columns if pd.api.types.is_float_dtype(table[c])}
    fmt.update({c: f"{{:+.{digits}f}}" for c in signed if c in table})
    return table.style.format(fmt, na_rep="-").hide(axis="index")


def compare_with_reference(table: pd.DataFrame, reference: str, claims: Mapping[str, str]) -> pd.DataFrame:
    """The report's claims about models measured against a ``reference`` model, each beside the
    computed comparison: parameter and GFLOP ratios (from the code) and the error differences
    (model - reference, points) in the report and in the reproduced runs (best epoch).
    ``claims``: model -> the report's claim, e.g. :data:`cifar_utils.reported.ARCHITECTURE_CLAIMS`."""
    data = table.set_index("model")
    if reference not in data.index:
        raise ValueError(f"reference model {reference!r} is not in the table; models: {', '.join(data.index)}")
    ref = data.loc[reference]

    def ratio(model: str, column: str) -> float | None:
        a, b = data.loc[model, column], ref[column]
        return float(a / b) if pd.notna(a) and pd.notna(b) and b else None

    def diff(model: str, column: str) -> float | None:
        a, b = data.loc[model, column], ref[column]
        return float(a - b) if pd.notna(a) and pd.notna(b) else None

    rows = [{"model": m, "report's claim": claim, "params ratio": ratio(m, "params_m"),
             "gflops ratio": ratio(m, "gflops"), "reported vs reference": diff(m, "reported_error"),
             "reproduced vs reference": diff(m, "reproduced_error")}
            for m, claim in claims.items() if m in data.index]
    frame = pd.DataFrame(rows, columns=["model", "report's claim", "params ratio", "gflops ratio",
                                        "reported vs reference", "reproduced vs reference"])
    return frame.rename(columns={"reported vs reference": f"reported - {reference}",
                                 "reproduced vs reference": f"reproduced - {reference}"})


def lr_grid_table(grid: Mapping[str, Mapping[float, Run]]) -> pd.DataFrame:
    """The opt-in learning-rate grid, one row per optimizer: every learning rate tried with its
    best held-out accuracy, the learning rate chosen on the held-out split alone, and the chosen
    run's test accuracy at its best held-out epoch (``test_acc_at_val_best``: the test set chose
    nothing). Only finished runs can be chosen. Feed the result to :func:`check_findings` with
    ``accuracy="test_acc_at_val_best"`` to see whether the report's ranking survives tuning."""
    rows = []
    for label, runs in grid.items():
        tried, best_lr, best_val, chosen = [], None, None, None
        for lr, run in sorted(runs.items()):
            v = _best_index(run.history, "val_acc")
            val = run.history[v]["val_acc"] if v is not None else None
            tried.append(f"{lr:g}: {val:.1f}" if val is not None else f"{lr:g}: -")
            if run.status == "finished" and val is not None and (best_val is None or val > best_val):
                best_lr, best_val, chosen = lr, val, run
        err = epoch_errors(chosen) if chosen is not None else {"val_selected": None, "val_epoch": None}
        rows.append({"variant": label, "val_acc by lr": ", ".join(tried), "chosen_lr": best_lr,
                     "best_val_acc": best_val, "val_epoch": err["val_epoch"],
                     "test_acc_at_val_best": 100.0 - err["val_selected"] if err["val_selected"] is not None else None})
    return pd.DataFrame(rows, columns=["variant", "val_acc by lr", "chosen_lr", "best_val_acc", "val_epoch",
                                       "test_acc_at_val_best"])


# --- chapter 6 -------------------------------------------------------------------------------------

def run_comparison(runs: Mapping[str, Run], last: int = 5) -> pd.DataFrame:
    """Per run: final and best test accuracy, the mean and standard deviation of the test accuracy over the
    ``last`` epochs (the spread says how much one epoch's number wobbles), and its ``status`` (a collapsed run
    is named so, see :func:`cifar_utils.replicates.status`)."""
    if last < 1:
        raise ValueError(f"last must be >= 1, got {last!r}")
    rows = []
    for label, run in runs.items():
        accs = _values(run, "test_acc")
        tail = pd.Series(accs[-last:], dtype=float)
        rows.append({"run": label, "epochs": len(accs), "final_acc": accs[-1] if accs else None,
                     "best_acc": max(accs) if accs else None, f"mean_last_{last}": tail.mean() if accs else None,
                     f"std_last_{last}": tail.std(ddof=0) if accs else None, "status": replicates.status(run)})
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
