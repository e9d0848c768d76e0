"""The GPU check: one command that measures what the full report will cost, and whether the fast
path trains as well as fp32. Run it once on a GPU machine (7-10 minutes expected on one H100; the time limits stop a part that hangs):

    PYTHONPATH=. python bench/gpu_check.py --out gpu_check_out --data .data/cifar10_jpeg_q75.tar.gz

It needs only torch, torchvision, numpy, pandas, pyyaml, tqdm and matplotlib (no install of this
package, no papermill). It writes ``<out>/gpu_check.json`` and ``<out>/gpu_check.md`` (a markdown
report with every table), rewritten after each part so that a part that dies leaves the others.

Parts (``--parts``, default all):

1. ``throughput``: training images/s at batch 128 of ResNet-18, WRN-28-10 and VGG-A, every step
   taken by the engine's :func:`cifar_utils.engine.train_epoch`, on synthetic CIFAR-shaped images:
   the report's setup (fp32, torchvision PIL DataLoader with 2 workers) / the engine's default
   (``precision="auto"``, ``channels_last``, data on the device) / the default + ``compile=True``;
   and for ResNet-18, 4 runs at once through ``run_many(jobs=4)`` (total images/s, the sum of the
   four runs' median epoch speeds, epoch 1 left out). Every figure is also given as a ratio to the
   report's setup measured in this same process.
2. ``projection``: GPU hours of the full profile (``params/full.yaml``): every run of its plan
   (:mod:`cifar_utils.plan`, chapters 1-6, each distinct run once; the claims' settling seeds apart),
   each run's projected time (:func:`cifar_utils.projection.run_seconds`) at the speed of its model in a
   mode. Speeds: part 1's where it measured the model; else the model is timed here in the engine's
   default mode (``--project-steps``; else the committed table :data:`cifar_utils.projection.MEASURED`)
   and the other modes are scaled by the mean ratio part 1 measured for them (marked as estimated).
   "4 at once" is used only for ResNet-18, where it was measured.
3. ``accuracy``: ResNet-18, 15 epochs, cosine schedule, on the CIFAR-10 JPEG copy (``--data``),
   fp32 against the default mode, same seed, both through ``run_many(jobs=2)``: final test accuracies
   side by side (the goal: within about 0.5 point).
4. ``bn_overhead``: chapter 5's per-step BatchNorm metrics on VGG-A, with and without. Skipped
   until chapter 5's callback exists: fill in :func:`part_bn_overhead` (see its docstring).

``--dry-run`` runs every part on the CPU with tiny sizes (``tiny_cnn``, a few steps, the embedded
data sample; ``torch.compile`` with the ``eager`` backend), in about a minute, so that CI keeps the
script working. Time limits (SIGALRM, see :class:`Sizes`) bound part 1, each compilation, the
``run_many`` calls (which stop their workers when interrupted) and each projection timing; the
report setup's DataLoader workers have a per-batch timeout.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import json
import math
import os
import platform
import shutil
import signal
import statistics
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(HERE) not in sys.path:  # train_throughput, when imported from elsewhere (the tests)
    sys.path.insert(0, str(HERE))
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PARTS = ("throughput", "projection", "accuracy", "bn_overhead")
#: CIFAR-10's training images: what one epoch of the full profile trains on.
CIFAR10_TRAIN = 50_000
#: The modes of part 1, in table order; "report" is the baseline of every ratio.
MODES = ("report", "default", "compile")
MODE_LABELS = {"report": "report setup (fp32, PIL DataLoader, 2 workers)",
               "default": "engine default (precision auto, channels_last)",
               "compile": "engine default + compile", "concurrent4": "4 runs at once (run_many jobs=4)"}


@dataclass(frozen=True)
class Sizes:
    """Everything that makes the real check long and the dry run short."""

    device: str = "cuda"
    models: tuple[str, ...] = ("resnet18", "wrn28_10", "vgg_a")
    batch_size: int = 128
    warmup: int = 10
    steps: int = 50
    images: int = 128 * 16              # synthetic images behind the throughput timings
    workers: int = 2                    # the report's DataLoader workers
    compile_mode: str = "max-autotune"  # the engine's default RunConfig.compile_mode
    compile_backend: str = "inductor"
    concurrent_model: str = "resnet18"
    concurrent_jobs: int = 4
    concurrent_train_size: int = 12_800
    concurrent_epochs: int = 6
    project_warmup: int = 3
    project_steps: int = 10
    accuracy_model: str = "resnet18"
    accuracy_epochs: int = 15
    accuracy_jobs: int = 2
    accuracy_source: str = "local"
    accuracy_train_size: int | None = None
    accuracy_test_size: int | None = None
    proxy_model: str | None = None      # dry run: stands in for every model of the projection
    # time limits, seconds: they bound a run that goes wrong at about 15 minutes; expected: 7-10
    throughput_timeout: int = 420       # part 1 as a whole
    compile_timeout: int = 100          # one model's compilation + timing
    concurrent_timeout: int = 120       # the N-at-once run_many call
    project_budget: int = 45            # timing the models part 1 did not measure
    accuracy_timeout: int = 300         # the two accuracy runs


FULL = Sizes()
DRY = Sizes(device="cpu", models=("tiny_cnn",), batch_size=8, warmup=1, steps=2, images=64,
            compile_backend="eager", concurrent_model="tiny_cnn", concurrent_jobs=2, concurrent_train_size=64,
            concurrent_epochs=2, project_steps=0, accuracy_model="tiny_cnn", accuracy_epochs=2,
            accuracy_jobs=1, accuracy_source="sample", accuracy_train_size=64, accuracy_test_size=64,
            proxy_model="tiny_cnn", throughput_timeout=300, compile_timeout=120, concurrent_timeout=200,
            accuracy_timeout=200)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="folder for gpu_check.json and gpu_check.md")
    p.add_argument("--data", default=None,
                   help="the CIFAR-10 copy of the accuracy part (the JPEG tarball, or any local copy "
                        "load_dataset reads); default $CIFAR_UTILS_DATA; not needed with --dry-run")
    p.add_argument("--dry-run", action="store_true", help="every part on the CPU with tiny sizes (CI)")
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {', '.join(PARTS)}")
    p.add_argument("--profile", default=str(ROOT / "params" / "full.yaml"), help="profile of the projection")
    p.add_argument("--steps", type=int, help="timed steps per throughput setup (default 50)")
    p.add_argument("--warmup", type=int, help="untimed steps per throughput setup (default 10)")
    p.add_argument("--compile-mode", help="torch.compile mode (default: the engine's, max-autotune)")
    p.add_argument("--accuracy-epochs", type=int, help="epochs of the accuracy runs (default 15)")
    p.add_argument("--project-steps", type=int, help="timed steps per unmeasured model in the projection "
                                                     "(default 10; 0: do not time them)")
    p.add_argument("--compile-timeout", type=int, help="seconds one model's compile + timing may take (default 100)")
    return p.parse_args(argv)


# --- time limits ---------------------------------------------------------------------------------

class PartTimeout(Exception):
    """A time limit expired; ``limit`` is the :class:`Limit` that did."""

    def __init__(self, limit: Limit) -> None:
        super().__init__(f"ran past its limit of {limit.seconds:.0f} s")
        self.limit = limit


@dataclass(eq=False)
class Limit:
    seconds: float
    deadline: float


_LIMITS: list[Limit] = []


def _arm() -> None:
    """Set the timer for the soonest active limit (or clear it)."""
    if _LIMITS:
        soonest = min(_LIMITS, key=lambda lim: lim.deadline)
        signal.setitimer(signal.ITIMER_REAL, max(0.01, soonest.deadline - time.monotonic()))
    else:
        signal.setitimer(signal.ITIMER_REAL, 0)


def _expired(signum, frame) -> None:
    now = time.monotonic()
    due = [lim for lim in _LIMITS if lim.deadline <= now + 0.005]
    if not due:  # woken early: re-arm
        _arm()
        return
    raise PartTimeout(min(due, key=lambda lim: lim.deadline))


@contextlib.contextmanager
def time_limit(seconds: float):
    """Raise :class:`PartTimeout` in this (main) thread after ``seconds`` (SIGALRM, Unix; limits may
    nest: an inner one that expires raises with itself as ``limit``, so its caller can tell)."""
    if seconds <= 0 or not hasattr(signal, "setitimer"):
        yield None
        return
    limit = Limit(seconds, time.monotonic() + seconds)
    previous = signal.signal(signal.SIGALRM, _expired) if not _LIMITS else None
    _LIMITS.append(limit)
    _arm()
    try:
        yield limit
    finally:
        _LIMITS.remove(limit)
        _arm()
        if previous is not None:
            signal.signal(signal.SIGALRM, previous)


def limited(limit_s: float, function: Callable[[], dict], what: str) -> dict:
    """``function()``, or a row saying it ran past ``limit_s`` seconds or failed (the part goes on).
    ``run_many`` stops its workers when the time-out interrupts it."""
    try:
        with time_limit(limit_s) as limit:
            return function()
    except PartTimeout as exc:
        if limit is None or exc.limit is not limit:
            raise
        return {"img_s": None, "error": f"{what}: timed out after {limit_s:.0f} s"}
    except Exception as exc:
        traceback.print_exc()
        return {"img_s": None, "error": f"{what}: {_one_line(exc)}"}


# --- part 1: throughput --------------------------------------------------------------------------

def part_throughput(sizes: Sizes, device, results: dict, part: dict) -> None:
    """Images/s per model and mode, and the N-at-once total for the concurrent model. Fills ``part``
    as it goes (so a time-out keeps what was measured); torch.compile, the slow and risky one, last."""
    import torch

    import train_throughput as tt
    from cifar_utils.engine.runtime import resolve_channels_last, resolve_precision

    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as the engine does
    precision, channels_last = resolve_precision("auto", device), resolve_channels_last(None, device)
    ds = tt.synthetic_dataset("cifar10", sizes.images)
    part.update(precision=precision, channels_last=channels_last, batch_size=sizes.batch_size, steps=sizes.steps,
                warmup=sizes.warmup, compile_mode=sizes.compile_mode, compile_backend=sizes.compile_backend,
                rows=[], concurrent=None)
    rows = part["rows"]
    base: dict[str, float] = {}

    def add(row: dict) -> None:
        b, v = base.get(row["model"]), row.get("img_s")
        row["vs_report"] = v / b if v and b else None
        row["epoch_s"] = CIFAR10_TRAIN / v if v else None
        if row["mode"] == "concurrent4":
            part["concurrent"] = row
        else:
            rows.append(row)

    def timed(mode: str, model: str, batches, limit_s: float = 0, **options) -> None:
        print(f"[throughput] {model}: {MODE_LABELS[mode]}", flush=True)
        try:
            with time_limit(limit_s) as limit:
                row = tt.measure(mode, batches(), model=model, device=device, batch_size=sizes.batch_size,
                                 steps=sizes.steps, warmup=sizes.warmup, **options)
        except PartTimeout as exc:
            if limit is None or exc.limit is not limit:
                raise
            row = {"img_s": None, "error": f"timed out after {limit_s:.0f} s"}
        except Exception as exc:  # e.g. compile failing: keep the other figures
            row = {"img_s": None, "error": _one_line(exc)}
        row.update(mode=mode, model=model)
        if mode == "report" and row.get("img_s"):
            base[model] = row["img_s"]
        add(row)

    fast = dict(precision=precision, channels_last=channels_last)
    for model in sizes.models:
        timed("report", model, lambda: tt.report_batches(ds, sizes.batch_size, sizes.workers, device))
        timed("default", model, lambda: tt.engine_batches(ds, sizes.batch_size, device, channels_last), **fast)
    if sizes.concurrent_jobs > 1:
        print(f"[throughput] {sizes.concurrent_model}: {sizes.concurrent_jobs} runs at once", flush=True)
        spec = {"model": sizes.concurrent_model, "jobs": sizes.concurrent_jobs, "device": sizes.device,
                "train_size": sizes.concurrent_train_size, "epochs": sizes.concurrent_epochs,
                "batch_size": sizes.batch_size}
        row = limited(sizes.concurrent_timeout, lambda: concurrent_runs(spec), "run_many")
        row.update(mode="concurrent4", model=sizes.concurrent_model)
        add(row)
    for model in sizes.models:
        timed("compile", model, lambda: tt.engine_batches(ds, sizes.batch_size, device, channels_last),
              limit_s=sizes.compile_timeout, compile=True, compile_mode=sizes.compile_mode,
              compile_backend=sizes.compile_backend, **fast)


def concurrent_runs(spec: dict) -> dict:
    """``jobs`` runs, identical but for the seed, at once through ``run_many`` (a throw-away store)."""
    import cifar_utils.engine.testing  # noqa: F401  registers tiny_random (and tiny_cnn), also in the workers
    from cifar_utils.engine import RunConfig, run_many

    configs = [RunConfig(model=spec["model"], dataset="tiny_random", train_size=spec["train_size"], test_size=256,
                         epochs=spec["epochs"], batch_size=spec["batch_size"], seed=seed, device=spec["device"],
                         scheduler="none") for seed in range(spec["jobs"])]
    runs_dir = tempfile.mkdtemp(prefix="gpu_check_runs_")
    try:
        t0 = time.perf_counter()
        runs = run_many(configs, jobs=spec["jobs"], runs_dir=runs_dir, progress=False)
        wall = time.perf_counter() - t0
    finally:
        shutil.rmtree(runs_dir, ignore_errors=True)
    per_run = []
    for r in runs:
        speeds = [h["images_per_s"] for h in r.history if h.get("images_per_s")]
        per_run.append(statistics.median(speeds[1:] if len(speeds) > 1 else speeds))
    return {"setup": f"{spec['jobs']} x run_many", "jobs": spec["jobs"], "img_s": sum(per_run),
            "per_run_img_s": per_run, "wall_s": wall, "epochs": spec["epochs"], "train_size": spec["train_size"]}


# --- part 2: projection --------------------------------------------------------------------------

def chapter_plan(profile_path: Path):
    """The plan of the profile (:func:`cifar_utils.plan.for_profile`): every run of chapters 1-6, and the
    claims' settling seeds apart. The one list of runs; this script keeps none of its own."""
    from cifar_utils import plan

    profile_path = Path(profile_path)
    return plan.for_profile(profile_path.stem, root=profile_path.resolve().parent.parent)


def _model_datasets(runs) -> dict[str, str]:
    """Each model of the runs and the dataset it trains on (the synthetic images take its shape)."""
    return {r.config.model: r.config.dataset for r in runs}


def _mode_hours(runs, speeds: dict, mode: str, jobs_at_once: int) -> float | None:
    """GPU hours of ``runs`` in ``mode``: each run's projected time (:func:`cifar_utils.projection.run_seconds`)
    at its model's speed in the mode; None when a model has no speed for it. "concurrent4": the models part 1
    measured N at a time run at that total speed when there are at least N of them, the others at default;
    "best": the fastest engine mode per run."""
    from cifar_utils.projection import run_seconds

    counts = Counter(r.config.model for r in runs)
    total = 0.0
    for r in runs:
        modes = dict(speeds.get(r.config.model, {}).get("modes", {}))
        if counts[r.config.model] < jobs_at_once:  # not enough such runs to fill N processes
            modes.pop("concurrent4", None)
        if mode == "best":
            v = max((v for m, v in modes.items() if m != "report"), default=None)
        elif mode == "concurrent4":
            v = modes.get("concurrent4") or modes.get("default")
        else:
            v = modes.get(mode)
        if not v:
            return None
        total += run_seconds(r.config, images_per_s=v)
    return total / 3600


PROJECTION_MODES = (*MODES, "concurrent4", "best")


def part_projection(sizes: Sizes, device, results: dict, part: dict, profile_path: Path) -> None:
    """GPU hours of the profile's plan per chapter and mode, the book's total over its distinct runs, and the
    claims' settling seeds apart (see the module doc)."""
    import train_throughput as tt
    from cifar_utils.engine.runtime import resolve_channels_last, resolve_precision
    from cifar_utils.projection import MEASURED, SOURCE

    thr = results["parts"].get("throughput") or {}
    measured: dict[str, dict[str, float]] = {}
    for r in thr.get("rows", []):
        if r.get("img_s"):
            measured.setdefault(r["model"], {})[r["mode"]] = r["img_s"]
    conc = thr.get("concurrent") or {}
    if conc.get("img_s"):
        measured.setdefault(conc["model"], {})["concurrent4"] = conc["img_s"]
    # mean speed ratio of each mode to "default", over the models part 1 measured in both
    scale = {}
    for mode in ("report", "compile"):
        ratios = [m[mode] / m["default"] for m in measured.values() if m.get(mode) and m.get("default")]
        scale[mode] = statistics.mean(ratios) if ratios else None

    plan = chapter_plan(profile_path)
    jobs_at_once = int(conc.get("jobs") or sizes.concurrent_jobs)
    speeds: dict[str, dict] = {}  # model -> {"modes": {mode: img/s}, "how": ...}
    precision, channels_last = resolve_precision("auto", device), resolve_channels_last(None, device)
    data: dict[str, object] = {}
    budget_end = time.monotonic() + sizes.project_budget
    for model, dataset in _model_datasets([*plan.runs, *plan.settling]).items():
        if model in measured:
            speeds[model] = {"modes": dict(measured[model]), "how": "measured (part 1)"}
            continue
        default = None
        if sizes.proxy_model:  # the dry run: every mode of the tiny model stands in
            speeds[model] = {"modes": dict(measured.get(sizes.proxy_model, {})), "how": f"proxy ({sizes.proxy_model})"}
            continue
        if sizes.project_steps > 0 and time.monotonic() > budget_end:
            how = f"not timed: the projection's {sizes.project_budget} s for timing models were spent"
        elif sizes.project_steps > 0:
            if dataset not in data:
                data[dataset] = tt.synthetic_dataset(dataset, sizes.images)
            print(f"[projection] timing {model} in the default mode", flush=True)
            try:
                with time_limit(max(10.0, budget_end - time.monotonic() + 30)):
                    default = tt.measure("default", tt.engine_batches(data[dataset], sizes.batch_size, device,
                                                                      channels_last),
                                         model=model, device=device, batch_size=sizes.batch_size,
                                         steps=sizes.project_steps, warmup=sizes.project_warmup,
                                         precision=precision, channels_last=channels_last)["img_s"]
                how = "default timed here; other modes scaled by part 1's mean ratios (estimated)"
            except Exception as exc:  # its own time limit included
                print(f"[projection] {model}: {_one_line(exc)}", flush=True)
                how = f"timing failed: {_one_line(exc)}"
        else:
            how = "not measured"
        if default is None and model in MEASURED:
            default = MEASURED[model]
            how += f"; default from cifar_utils.projection ({SOURCE.split(';')[0]}), other modes scaled (estimated)"
        modes = {"default": default} if default else {}
        for mode, factor in scale.items():
            if default and factor:
                modes[mode] = default * factor
        speeds[model] = {"modes": modes, "how": how}

    def row(name: str, runs) -> dict:
        hours = {mode: _mode_hours(runs, speeds, mode, jobs_at_once) for mode in PROJECTION_MODES}
        return {"chapter": name, "runs": len(runs), "epochs": sum(r.config.epochs for r in runs), "hours": hours,
                "no_speed": sorted({r.config.model for r in runs if not speeds.get(r.config.model, {}).get("modes")}),
                "best_vs_report": hours["report"] / hours["best"] if hours["report"] and hours["best"] else None}

    rows = [row(name, [r for r in plan.runs if name in r.chapters]) for name in plan.chapters]
    total = row("total", plan.runs)
    settling = row("claims (settling seeds)", plan.settling) if plan.settling else None
    part.update(profile=str(profile_path), rows=rows, total=total, settling=settling, totals=total["hours"],
                speeds=speeds, scale_vs_default=scale, concurrent_jobs=jobs_at_once,
                distinct_runs=len(plan.runs), chapter_uses=sum(r["runs"] for r in rows))


# --- part 3: accuracy ----------------------------------------------------------------------------

def part_accuracy(sizes: Sizes, device, results: dict, part: dict, data: str | None) -> None:
    """fp32 against the default mode, same seed, same everything else."""
    if sizes.accuracy_source == "local" and not (data or os.environ.get("CIFAR_UTILS_DATA")):
        part.update(status="skipped", note="no --data given (the CIFAR-10 JPEG tarball) and no $CIFAR_UTILS_DATA")
        return
    spec = {"model": sizes.accuracy_model, "epochs": sizes.accuracy_epochs, "device": sizes.device,
            "source": sizes.accuracy_source, "data_root": str(Path(data).resolve()) if data else None,
            "train_size": sizes.accuracy_train_size, "test_size": sizes.accuracy_test_size,
            "batch_size": sizes.batch_size if sizes.proxy_model else 128, "jobs": sizes.accuracy_jobs}
    print(f"[accuracy] {spec['model']}, {spec['epochs']} epochs, fp32 and default", flush=True)
    with time_limit(sizes.accuracy_timeout):
        out = accuracy_runs(spec)
    acc = {r["precision"]: r["test_acc"] for r in out["runs"]}
    out["difference"] = acc.get("auto", math.nan) - acc.get("fp32", math.nan)
    part.update(out)


def accuracy_runs(spec: dict) -> dict:
    """The two accuracy runs through ``run_many`` (a throw-away store)."""
    import cifar_utils.engine.testing  # noqa: F401  tiny_cnn for the dry run
    from cifar_utils.engine import RunConfig, run_many

    base = RunConfig(model=spec["model"], epochs=spec["epochs"], scheduler="cosine", batch_size=spec["batch_size"],
                     source=spec["source"], data_root=spec["data_root"], train_size=spec["train_size"],
                     test_size=spec["test_size"], device=spec["device"], seed=0)
    configs = [base.replace(precision="fp32"), base.replace(precision="auto")]
    runs_dir = tempfile.mkdtemp(prefix="gpu_check_runs_")
    try:
        runs = run_many(configs, jobs=spec["jobs"], runs_dir=runs_dir, progress=False)
    finally:
        shutil.rmtree(runs_dir, ignore_errors=True)
    return {"model": spec["model"], "epochs": spec["epochs"], "data": spec["data_root"] or spec["source"],
            "runs": [{"precision": r.config.precision, "resolved": r.info.get("precision"), "status": r.status,
                      "test_acc": r.history[-1]["test_acc"] if r.history else None,
                      "best_test_acc": max((h["test_acc"] for h in r.history), default=None),
                      "wall_s": r.wall_seconds} for r in runs]}


# --- part 4: BatchNorm metrics overhead ----------------------------------------------------------

def part_bn_overhead(sizes: Sizes, device, results: dict, part: dict) -> None:
    """Images/s of VGG-A with and without chapter 5's per-step BatchNorm metrics callback.

    The hook: when chapter 5 lands, time ``vgg_a`` (``vgg_a_bn``) in the default mode with
    ``train_throughput.measure`` twice, once as it is and once with the callback passed to
    :class:`cifar_utils.engine.StepSetup` (``callbacks=Callbacks([...])``, with a ``TrainState``
    given to ``train_epoch``), and put both rows and their ratio in ``part``."""
    part.update(status="skipped", note="chapter 5's BatchNorm metrics callback is not in this branch yet; "
                                       "see part_bn_overhead in bench/gpu_check.py")


# --- the report -----------------------------------------------------------------------------------

def _one_line(exc: BaseException) -> str:
    return "".join(traceback.format_exception_only(type(exc), exc)).strip().splitlines()[-1]


def _f(value, fmt: str = ".1f", suffix: str = "") -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:{fmt}}{suffix}"


def markdown(results: dict) -> str:
    meta, parts = results["meta"], results["parts"]
    lines = [f"# GPU check ({'DRY RUN on the CPU: tiny sizes, numbers meaningless' if meta['dry_run'] else 'measured'})",
             "", f"- date: {meta['date']}", f"- device: {meta['device_name']} ({meta['device']})",
             f"- torch {meta['torch']}, python {meta['python']}", f"- command: `{meta['command']}`", ""]
    thr = parts.get("throughput")
    lines += ["## 1. Training throughput", ""]
    if thr and thr.get("rows"):
        lines += [f"Batch {thr['batch_size']}, {thr['warmup']} warmup + {thr['steps']} timed steps, synthetic "
                  f"CIFAR-shaped images; default = {thr['precision']}, channels_last={thr['channels_last']}; "
                  f"compile mode {thr['compile_mode']} (backend {thr['compile_backend']}). "
                  "s/epoch = 50,000 images / images/s.", "",
                  "| model | setup | images/s | s/epoch | vs report setup |", "|---|---|---|---|---|"]
        extra = [thr["concurrent"]] if thr.get("concurrent") else []
        for r in thr["rows"] + extra:
            label = MODE_LABELS.get(r["mode"], r["mode"])
            if r["mode"] == "concurrent4":
                label = f"{r.get('jobs', '?')} runs at once (run_many), total"
            label += f" -- {r['error']}" if r.get("error") else ""
            lines.append(f"| {r['model']} | {label} | {_f(r.get('img_s'))} | {_f(r.get('epoch_s'))} | "
                         f"{_f(r.get('vs_report'), '.2f', 'x')} |")
        lines.append("")
    if not thr or thr.get("status") != "done":
        lines += [_status_line(thr), ""]
    proj = parts.get("projection")
    lines += ["## 2. Projected GPU hours of the full profile", ""]
    if proj and proj.get("rows"):
        n = proj["concurrent_jobs"]
        lines += [f"The plan of `{Path(proj['profile']).name}` (`cifar_utils.plan`): each run's epochs x (training "
                  "images + a third of the evaluated images) / its model's speed in the mode, one run at a time, "
                  f"except the {n}-at-once column: runs of the model part 1 measured {n} at a time (when there are "
                  f"at least {n} of them) at that total speed, the others at their default speed. best = the fastest "
                  "engine mode per run. A run shared by chapters counts in each chapter's row; the total counts "
                  f"the {proj['distinct_runs']} distinct runs once ({proj['chapter_uses']} chapter uses). "
                  "Hours of one GPU.", "",
                  f"| chapter | runs | epochs | report setup h | default h | compile h | {n} at once h | best h | "
                  "report / best |", "|---|---|---|---|---|---|---|---|---|"]

        def table_row(r: dict, bold: bool = False) -> str:
            h = r["hours"]
            name = f"**{r['chapter']}**" if bold else r["chapter"]
            name += f" (no speed for {', '.join(r['no_speed'])})" if r.get("no_speed") else ""
            return (f"| {name} | {r['runs']} | {r['epochs']} | {_f(h['report'])} | {_f(h['default'])} | "
                    f"{_f(h['compile'])} | {_f(h['concurrent4'])} | {_f(h['best'])} | "
                    f"{_f(r['best_vs_report'], '.2f', 'x')} |")

        lines += [table_row(r) for r in proj["rows"]] + [table_row(proj["total"], bold=True)]
        if proj.get("settling"):
            lines += ["", "Apart, not part of the book's total: the claims' optional settling seeds "
                          "(`python -m cifar_utils.train --settle`).", "", lines[-len(proj["rows"]) - 3],
                      lines[-len(proj["rows"]) - 2], table_row(proj["settling"])]
        lines += ["", "Speeds used: " + "; ".join(f"{m}: {s['how']}" for m, s in proj["speeds"].items()), ""]
    else:
        lines += [_status_line(proj), ""]
    acc = parts.get("accuracy")
    lines += ["## 3. Accuracy: fp32 against the default mode", ""]
    if acc and acc.get("runs"):
        lines += [f"{acc['model']}, {acc['epochs']} epochs, cosine, seed 0, data: {acc['data']}.", "",
                  "| precision (resolved) | status | final test acc % | best test acc % | train+eval s |",
                  "|---|---|---|---|---|"]
        for r in acc["runs"]:
            lines.append(f"| {r['precision']} ({r['resolved']}) | {r['status']} | {_f(r['test_acc'], '.2f')} | "
                         f"{_f(r['best_test_acc'], '.2f')} | {_f(r['wall_s'])} |")
        lines += ["", f"Difference (default - fp32): {_f(acc['difference'], '+.2f')} points (goal: within about 0.5).",
                  ""]
    if not acc or acc.get("status") != "done":
        lines += [_status_line(acc), ""]
    lines += ["## 4. BatchNorm metrics overhead", "", _status_line(parts.get("bn_overhead")), ""]
    if proj and proj.get("status") != "done":
        lines += [_status_line(proj), ""]
    lines += ["## Part times", "", "| part | status | seconds |", "|---|---|---|"]
    for name in PARTS:
        p = parts.get(name)
        if p:
            lines.append(f"| {name} | {p.get('status')} | {_f(p.get('seconds'))} |")
    return "\n".join(lines) + "\n"


def _status_line(part: dict | None) -> str:
    if not part:
        return "Not run."
    return f"**{part.get('status')}**: {part.get('note') or part.get('error') or ''}".rstrip(": ")


def write(results: dict, out: Path) -> None:
    (out / "gpu_check.json").write_text(json.dumps(results, indent=2, default=str))
    (out / "gpu_check.md").write_text(markdown(results))


def main(argv=None) -> int:
    args = parse_args(argv)
    sizes = DRY if args.dry_run else FULL
    overrides = {k: v for k, v in {"steps": args.steps, "warmup": args.warmup, "compile_mode": args.compile_mode,
                                   "accuracy_epochs": args.accuracy_epochs, "project_steps": args.project_steps,
                                   "compile_timeout": args.compile_timeout}.items() if v is not None}
    sizes = replace(sizes, **overrides)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        raise SystemExit(f"unknown part(s) {', '.join(unknown)}; parts: {', '.join(PARTS)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    import torch

    import cifar_utils.engine.testing  # noqa: F401  tiny_cnn / tiny_random (dry run, concurrency part)
    from cifar_utils.engine.runtime import device_name, resolve_device

    device = resolve_device(sizes.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA GPU here: run on a GPU machine, or pass --dry-run for the CPU check")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as the engine does
    results = {"meta": {"date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                        "dry_run": args.dry_run, "device": str(device), "device_name": device_name(device),
                        "torch": torch.__version__, "python": platform.python_version(),
                        "command": "PYTHONPATH=. python bench/gpu_check.py " + " ".join(
                            sys.argv[1:] if argv is None else argv), "sizes": asdict(sizes)},
               "parts": {}}
    runners = {"throughput": lambda part: part_throughput(sizes, device, results, part),
               "projection": lambda part: part_projection(sizes, device, results, part, Path(args.profile)),
               "accuracy": lambda part: part_accuracy(sizes, device, results, part, args.data),
               "bn_overhead": lambda part: part_bn_overhead(sizes, device, results, part)}
    # Part 1 as a whole has a limit; the projection and the accuracy part bound themselves inside.
    limits = {"throughput": sizes.throughput_timeout}
    failed = False
    for name in PARTS:
        if name not in parts:
            continue
        t0 = time.perf_counter()
        part = results["parts"][name] = {"status": "running"}
        try:
            with time_limit(limits.get(name, 0)):
                runners[name](part)
            if part["status"] == "running":
                part["status"] = "done"
        except Exception as exc:  # PartTimeout included: what the part measured stays, the others run
            traceback.print_exc()
            part.update(status="timed out" if isinstance(exc, PartTimeout) else "failed",
                        error=_one_line(exc))
            failed = True
        part["seconds"] = time.perf_counter() - t0
        write(results, out)
        print(f"[{name}] {part['status']} in {part['seconds']:.0f} s", flush=True)
    print(f"wrote {out / 'gpu_check.json'} and {out / 'gpu_check.md'}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
