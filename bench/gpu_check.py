"""The GPU check: one command that measures what the full report will cost on one GPU, how many runs share it
best, whether CUDA graphs pay, and (with ``--data``) whether the fast path trains as well as fp32. Run it once
on a GPU machine; the time limits keep it within about 8 minutes without ``--data`` (one H200: throughput ~3
min, packing ~3 min, the compile cache ~1 min, the projection seconds), ~2 minutes more with it:

    PYTHONPATH=. python bench/gpu_check.py --out gpu_check_out [--data .data/cifar10_jpeg_q75.tar.gz]

It needs only torch, torchvision, numpy, pandas, pyyaml, tqdm and matplotlib (no install of this
package, no papermill). It writes ``<out>/gpu_check.json`` and ``<out>/gpu_check.md`` (a markdown
report with every table), rewritten after each part so that a part that dies leaves the others.

Parts (``--parts``, default all):

1. ``throughput``: training images/s at batch 128 of ResNet-18, WRN-28-10 and VGG-A, every step
   taken by the engine's :func:`cifar_utils.engine.train_epoch`, on synthetic CIFAR-shaped images:
   the report's setup (fp32, torchvision PIL DataLoader with 2 workers) / the engine's default
   (``precision="auto"``, ``channels_last``, data on the device) / the default + ``compile=True``
   (``--compile-mode``, default ``default``) / the default in CUDA graphs (``compile_mode="reduce-overhead"``,
   through the engine's own :func:`cifar_utils.engine.runtime.step_model`). Every figure is also given as a
   ratio to the report's setup measured in this same process.
2. ``packing``: each model of the plan (:mod:`cifar_utils.plan`, the profile's chapters 1-6), the models
   with the most GPU hours first, at 1, 2, 4 and 8 runs at once on the GPU: a pool of spawned processes,
   each training its own copy of the model (engine default mode, ``train_epoch`` on the engine's loader)
   through the same timed window after a warm-up; images/s in all (the sum over the processes) and the
   peak memory of one run (``torch.cuda.max_memory_allocated`` in each process, the largest). Models the
   part's time limit leaves out stay estimated. Its table is printed in the format of
   :mod:`cifar_utils.packing` (``MEASURED_TOTAL``, ``MEASURED_PEAK_BYTES``), to paste there.
3. ``compile_cache``: ResNet-18 in CUDA graphs (reduce-overhead) compiled in a fresh process with an empty
   inductor cache ("first run"), then in another fresh process with that cache ("later run", as a later run
   of the same model in the engine, which keeps the cache in one shared folder): warm-up seconds (the
   compilation) and images/s of each.
4. ``projection``: GPU hours of the profile (``params/full.yaml``): every run of its plan (chapters 1-6,
   each distinct run once; the claims' settling seeds apart), one run at a time (:func:`cifar_utils.projection.
   run_seconds`) and packed on one GPU (:func:`cifar_utils.packing.decide` on the packing table with this
   call's measured entries), per mode: the report's setup (one at a time), the engine's default, + compile,
   CUDA graphs. Speeds: what parts 1-2 measured, else the committed tables
   (:data:`cifar_utils.projection.MEASURED`, :mod:`cifar_utils.packing`'s estimates); a mode part 1 did not
   time for a model is its default speed scaled by part 1's mean ratio of that mode (estimated).
5. ``accuracy`` (needs ``--data``): ResNet-18, 15 epochs, cosine schedule, on the CIFAR-10 JPEG copy, fp32
   against the default mode, same seed, both through ``run_many(jobs=2)``: final test accuracies side by
   side (the goal: within about 0.5 point).
6. ``bn_overhead``: chapter 5's per-step BatchNorm metrics on VGG-A, with and without. Skipped
   until it is written: fill in :func:`part_bn_overhead` (see its docstring).

``--dry-run`` runs every part on the CPU with tiny sizes (``tiny_cnn``, a few steps, the embedded
data sample; ``torch.compile`` with the ``eager`` backend; the packing pool at 1 and 2 runs at once; the
graphs mode falls back to eager there, as in the engine), in a few minutes, so that CI keeps the
script working. Time limits (SIGALRM, see :class:`Sizes`) bound part 1, each compilation, each
packing measurement and the part as a whole, each compile-cache process, and the accuracy runs; the
report setup's DataLoader workers have a per-batch timeout.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import gc
import itertools
import json
import math
import multiprocessing as mp
import os
import platform
import shutil
import signal
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(HERE) not in sys.path:  # train_throughput, when imported from elsewhere (the tests)
    sys.path.insert(0, str(HERE))
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PARTS = ("throughput", "packing", "compile_cache", "projection", "accuracy", "bn_overhead")
#: CIFAR-10's training images: what one epoch of the full profile trains on.
CIFAR10_TRAIN = 50_000
#: The modes of part 1, in table order; "report" is the baseline of every ratio.
MODES = ("report", "default", "compile", "graphs")
MODE_LABELS = {"report": "report setup (fp32, PIL DataLoader, 2 workers)",
               "default": "engine default (precision auto, channels_last)",
               "compile": "engine default + compile", "graphs": "engine default in CUDA graphs (reduce-overhead)"}


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
    compile_mode: str = "default"       # the "compile" column (max-autotune did not compile in 150 s, 2026-12-01)
    graphs_mode: str = "reduce-overhead"
    compile_backend: str = "inductor"
    packing_ks: tuple[int, ...] = (1, 2, 4, 8)
    packing_warmup: int = 5             # steps before the timed window (the first includes cuDNN autotuning)
    packing_window: float = 2.0         # seconds every process of a measurement trains, timed
    packing_chunk: int = 10             # steps between looks at the clock (each look syncs the device)
    cache_model: str = "resnet18"
    cache_warmup: int = 5
    cache_steps: int = 20
    accuracy_model: str = "resnet18"
    accuracy_epochs: int = 15
    accuracy_jobs: int = 2
    accuracy_source: str = "local"
    accuracy_train_size: int | None = None
    accuracy_test_size: int | None = None
    proxy_model: str | None = None      # dry run: stands in for every model of the packing and the projection
    # time limits, seconds: with the start-up and the projection they keep the call within 8 minutes
    # (without --data): 10 + 190 + 170 + 90 + 10
    throughput_timeout: int = 190       # part 1 as a whole
    compile_timeout: int = 60           # one model's compilation + timing
    packing_timeout: int = 170          # part 2 as a whole
    packing_step_timeout: int = 60      # one model at one k (start-up of the pool included for the first)
    cache_timeout: int = 90             # part 3, both processes
    accuracy_timeout: int = 300         # the two accuracy runs


FULL = Sizes()
DRY = Sizes(device="cpu", models=("tiny_cnn",), batch_size=8, warmup=1, steps=2, images=64,
            compile_backend="eager", packing_ks=(1, 2), packing_warmup=1, packing_window=0.5, packing_chunk=2,
            cache_model="tiny_cnn", cache_warmup=1, cache_steps=2, accuracy_model="tiny_cnn", accuracy_epochs=2,
            accuracy_jobs=1, accuracy_source="sample", accuracy_train_size=64, accuracy_test_size=64,
            proxy_model="tiny_cnn", throughput_timeout=300, compile_timeout=120, packing_timeout=300,
            packing_step_timeout=200, cache_timeout=300, accuracy_timeout=200)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="folder for gpu_check.json and gpu_check.md")
    p.add_argument("--data", default=None,
                   help="the CIFAR-10 copy of the accuracy part (the JPEG tarball, or any local copy "
                        "load_dataset reads); default $CIFAR_UTILS_DATA; without it the accuracy part is skipped")
    p.add_argument("--dry-run", action="store_true", help="every part on the CPU with tiny sizes (CI)")
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {', '.join(PARTS)}")
    p.add_argument("--profile", default=str(ROOT / "params" / "full.yaml"), help="profile of the packing and projection")
    p.add_argument("--steps", type=int, help="timed steps per throughput setup (default 50)")
    p.add_argument("--warmup", type=int, help="untimed steps per throughput setup (default 10)")
    p.add_argument("--compile-mode", help="torch.compile mode of the compile column (default: default)")
    p.add_argument("--accuracy-epochs", type=int, help="epochs of the accuracy runs (default 15)")
    p.add_argument("--compile-timeout", type=int, help="seconds one model's compile + timing may take (default 60)")
    p.add_argument("--packing-timeout", type=int, help="seconds of the packing part (default 170)")
    p.add_argument("--packing-window", type=float, help="seconds each packing measurement is timed (default 2)")
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
    """Images/s per model and mode. Fills ``part`` as it goes (so a time-out keeps what was measured);
    the compiled modes, the slow and risky ones, last."""
    import torch

    import train_throughput as tt
    from cifar_utils.engine.runtime import resolve_channels_last, resolve_precision

    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as the engine does
    precision, channels_last = resolve_precision("auto", device), resolve_channels_last(None, device)
    ds = tt.synthetic_dataset("cifar10", sizes.images)
    part.update(precision=precision, channels_last=channels_last, batch_size=sizes.batch_size, steps=sizes.steps,
                warmup=sizes.warmup, compile_mode=sizes.compile_mode, graphs_mode=sizes.graphs_mode,
                compile_backend=sizes.compile_backend, rows=[])
    rows = part["rows"]
    base: dict[str, float] = {}

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
        b, v = base.get(model), row.get("img_s")
        row["vs_report"] = v / b if v and b else None
        row["epoch_s"] = CIFAR10_TRAIN / v if v else None
        rows.append(row)

    fast = dict(precision=precision, channels_last=channels_last)
    batches = lambda: tt.engine_batches(ds, sizes.batch_size, device, channels_last)  # noqa: E731
    for model in sizes.models:
        timed("report", model, lambda: tt.report_batches(ds, sizes.batch_size, sizes.workers, device))
        timed("default", model, batches, **fast)
    # CUDA graphs first: the compile column's default mode was measured on 2026-12-01 already
    for mode, compile_mode, backend in (("graphs", sizes.graphs_mode, "inductor"),
                                        ("compile", sizes.compile_mode, sizes.compile_backend)):
        for model in sizes.models:  # graphs: the engine's own step_model (eager where there is no CUDA)
            timed(mode, model, batches, limit_s=sizes.compile_timeout, compile=True, compile_mode=compile_mode,
                  compile_backend=backend, **fast)


# --- part 2: packing -----------------------------------------------------------------------------

class PackingError(RuntimeError):
    """A packing measurement that could not finish (a process died or did not answer in time)."""


def _packing_worker(conn, device_name: str, threads: int) -> None:
    """One process of the packing pool: on each request, trains its own copy of a model for a timed window
    (see :func:`_packing_measure`), sends the result; ``None`` ends it."""
    import torch

    import cifar_utils.engine.testing  # noqa: F401  tiny_cnn for the dry run

    torch.set_num_threads(max(1, threads))
    device = torch.device(device_name)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as the engine does
    while True:
        spec = conn.recv()
        if spec is None:
            return
        try:
            conn.send(_packing_measure(conn, spec, device))
        except torch.OutOfMemoryError as exc:
            conn.send({"error": f"out of memory: {_one_line(exc)[:200]}", "oom": True})
        except Exception as exc:
            conn.send({"error": _one_line(exc)})
        finally:
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()


def _packing_measure(conn, spec: dict, device) -> dict:
    """Build ``spec["model"]`` (engine default mode), warm up, say ready, wait for the common start, train
    for ``window`` seconds in chunks (each ending with a sync); images/s of this process and its peak
    memory."""
    import torch

    import train_throughput as tt
    from cifar_utils.engine import StepSetup, train_epoch
    from cifar_utils.engine.loop import Diverged
    from cifar_utils.engine.runtime import resolve_channels_last, resolve_precision
    from cifar_utils.models import create_model, model_options
    from cifar_utils.optim import create_optimizer

    precision, channels_last = resolve_precision("auto", device), resolve_channels_last(None, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    ds = tt.synthetic_dataset(spec["dataset"], spec["images"])
    args = {"in_channels": int(ds.x_train.shape[1])} if "in_channels" in model_options(spec["model"]) else {}
    net = create_model(spec["model"], num_classes=10, **args).to(device)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    setup = StepSetup(model=net, optimizer=create_optimizer("sgd", net, lr=0.01, momentum=0.9, weight_decay=5e-4),
                      loss_fn=torch.nn.functional.cross_entropy, device=device, precision=precision)
    batches = tt.engine_batches(ds, spec["batch_size"], device, channels_last)
    chunk = spec["chunk"]

    def steps(n: int) -> None:
        try:
            train_epoch(setup, itertools.islice(batches, n))  # ends with a sync
        except Diverged:  # random labels: the speed is what counts
            pass

    try:
        steps(spec["warmup"])
        conn.send({"ready": True})
        go = conn.recv()
        while time.monotonic() < go["start"]:
            time.sleep(0.001)
        t0 = time.monotonic()
        images = 0
        while True:
            steps(chunk)
            images += chunk * spec["batch_size"]
            if time.monotonic() >= go["start"] + go["window"]:
                break
        seconds = time.monotonic() - t0
    finally:
        batches.close()
    peak = int(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else None
    return {"img_s": images / seconds, "images": images, "seconds": seconds, "peak_bytes": peak}


class PackingPool:
    """``n`` spawned processes that train side by side on one device (see :func:`part_packing`)."""

    def __init__(self, n: int, device, threads: int) -> None:
        ctx = mp.get_context("spawn")
        self.conns, self.procs = [], []
        for _ in range(n):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_packing_worker, args=(child, str(device), threads), daemon=True)
            proc.start()
            self.conns.append(parent)
            self.procs.append(proc)

    def _recv(self, conn, deadline: float) -> dict:
        if not conn.poll(max(0.0, deadline - time.monotonic())):
            raise PackingError("a packing process did not answer in time")
        try:
            return conn.recv()
        except EOFError:
            raise PackingError("a packing process died") from None

    def measure(self, spec: dict, k: int, timeout: float) -> dict:
        """``k`` processes train ``spec["model"]`` through the same window: images/s in all, per process, and
        the largest peak memory of one process."""
        deadline = time.monotonic() + timeout
        conns = self.conns[:k]
        for conn in conns:
            conn.send(spec)
        answers = [self._recv(conn, deadline) for conn in conns]
        ready = [c for c, a in zip(conns, answers) if a.get("ready")]
        errors = [a for a in answers if not a.get("ready")]
        start = time.monotonic() + 0.2 if not errors else 0.0
        for conn in ready:  # after an error the others train one chunk and are ignored
            conn.send({"start": start, "window": spec["window"] if not errors else 0.0})
        results = [self._recv(conn, deadline + spec["window"]) for conn in ready]
        errors += [r for r in results if r.get("error")]
        if errors:
            return {"img_s": None, "error": errors[0]["error"], "oom": any(e.get("oom") for e in errors)}
        peaks = [r["peak_bytes"] for r in results if r.get("peak_bytes")]
        return {"img_s": sum(r["img_s"] for r in results), "per_run_img_s": [r["img_s"] for r in results],
                "peak_bytes": max(peaks) if peaks else None}

    def close(self) -> None:
        for conn in self.conns:
            with contextlib.suppress(Exception):
                conn.send(None)
        deadline = time.monotonic() + 10
        for proc in self.procs:
            proc.join(timeout=max(0.1, deadline - time.monotonic()))
        for proc in self.procs:
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=5)


def _plan_models(plan) -> list[tuple[str, str]]:
    """(model, dataset) of the plan's runs, the model with the most projected hours (one at a time) first."""
    hours: dict[tuple[str, str], float] = {}
    for r in plan.runs:
        key = (r.config.model, r.config.dataset)
        hours[key] = hours.get(key, 0.0) + r.seconds()
    return sorted(hours, key=lambda key: -hours[key])


def part_packing(sizes: Sizes, device, results: dict, part: dict, profile_path: Path) -> None:
    """Each model of the plan at ``packing_ks`` runs at once (see the module doc); fills ``part["rows"]``
    as it goes, and ``part["entries"]``: the measured entries as :mod:`cifar_utils.packing` holds them."""
    from cifar_utils import packing

    plan = chapter_plan(profile_path)
    models = _plan_models(plan)
    if sizes.proxy_model:  # the dry run: the tiny model stands in for all
        models = [(sizes.proxy_model, "cifar10")]
    threads = 1 if device.type == "cpu" else 2
    part.update(ks=list(sizes.packing_ks), window_s=sizes.packing_window, warmup=sizes.packing_warmup,
                batch_size=sizes.batch_size, rows=[], not_measured=[])
    print(f"[packing] {len(models)} models at {', '.join(map(str, sizes.packing_ks))} runs at once", flush=True)
    pool = PackingPool(max(sizes.packing_ks), device, threads)
    measured: dict[str, dict[int, dict]] = {}
    try:
        for i, (model, dataset) in enumerate(models):
            spec = {"model": model, "dataset": dataset, "images": sizes.images, "batch_size": sizes.batch_size,
                    "warmup": sizes.packing_warmup, "window": sizes.packing_window, "chunk": sizes.packing_chunk}
            for k in sizes.packing_ks:
                print(f"[packing] {model}: {k} at once", flush=True)
                row = pool.measure(spec, k, sizes.packing_step_timeout)
                row.update(model=model, k=k)
                one = measured.get(model, {}).get(1, {}).get("images_per_s")
                row["vs_one"] = row["img_s"] / one if row.get("img_s") and one else None
                part["rows"].append(row)
                if row.get("img_s"):
                    measured.setdefault(model, {})[k] = {"images_per_s": row["img_s"], "peak_bytes": row["peak_bytes"]}
                if row.get("oom"):  # more at once would not fit either
                    break
            part["entries"] = packing.entries_text(measured)
    except (PartTimeout, PackingError) as exc:
        left = [m for m, _ in models if m not in measured]
        part.update(not_measured=left, stopped=f"{type(exc).__name__}: {exc}")
        if isinstance(exc, PartTimeout):
            part["status"] = "timed out"  # what was measured stays; the others keep their estimates
    finally:
        pool.close()
    part["entries"] = packing.entries_text(measured)
    part["measured"] = {m: {str(k): v for k, v in by_k.items()} for m, by_k in measured.items()}


# --- part 3: the compile cache: a first and a later run ------------------------------------------------

def compile_probe(spec: dict, queue) -> None:
    """In a fresh process: time ``spec["model"]`` compiled in ``spec["mode"]`` with the inductor cache
    ``spec["cache"]`` (the engine's ``$CIFAR_UTILS_INDUCTOR_CACHE``); put the result (or the error) in
    ``queue``."""
    t0 = time.monotonic()
    os.environ["CIFAR_UTILS_INDUCTOR_CACHE"] = spec["cache"]
    try:
        import torch

        import cifar_utils.engine.testing  # noqa: F401
        import train_throughput as tt
        from cifar_utils.engine.runtime import resolve_channels_last, resolve_precision

        device = torch.device(spec["device"])
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        precision, channels_last = resolve_precision("auto", device), resolve_channels_last(None, device)
        ds = tt.synthetic_dataset("cifar10", spec["images"])
        row = tt.measure("graphs", tt.engine_batches(ds, spec["batch_size"], device, channels_last),
                         model=spec["model"], device=device, batch_size=spec["batch_size"], steps=spec["steps"],
                         warmup=spec["warmup"], precision=precision, channels_last=channels_last, compile=True,
                         compile_mode=spec["mode"], compile_backend="inductor")
        row["process_s"] = time.monotonic() - t0
        queue.put(row)
    except Exception as exc:
        queue.put({"img_s": None, "error": _one_line(exc), "process_s": time.monotonic() - t0})


#: Seconds of the compile-cache part kept for the later run (a fresh process on a warm cache).
LATER_RUN_S = 25.0


def part_compile_cache(sizes: Sizes, device, results: dict, part: dict) -> None:
    """The model compiled in CUDA graphs by a first process (empty cache) and a later one (the cache the first
    filled): what a first and a later run of a model pay before they train at full speed."""
    ctx = mp.get_context("spawn")
    cache = tempfile.mkdtemp(prefix="gpu_check_inductor_")
    spec = {"model": sizes.cache_model, "mode": sizes.graphs_mode, "cache": cache, "device": str(device),
            "images": sizes.images, "batch_size": sizes.batch_size, "warmup": sizes.cache_warmup,
            "steps": sizes.cache_steps}
    part.update(model=sizes.cache_model, mode=sizes.graphs_mode, warmup=sizes.cache_warmup, steps=sizes.cache_steps,
                rows=[])
    end = time.monotonic() + sizes.cache_timeout - 5  # the part's own limit stops it 5 s later
    try:
        for run, keep in (("first", LATER_RUN_S), ("later", 0.0)):  # the first leaves the later its seconds
            print(f"[compile_cache] {sizes.cache_model}, {sizes.graphs_mode}: {run} run", flush=True)
            queue = ctx.Queue()
            proc = ctx.Process(target=compile_probe, args=(spec, queue), daemon=True)
            proc.start()
            wait_s = max(1.0, end - keep - time.monotonic())
            try:
                row = queue.get(timeout=wait_s)
            except Exception:
                row = {"img_s": None, "error": f"no answer within {wait_s:.0f} s"}
            finally:
                proc.join(timeout=10)
                if proc.is_alive():
                    proc.kill()
                    proc.join(timeout=5)
            row["run"] = run
            part["rows"].append(row)
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    first, later = part["rows"][0], part["rows"][-1]
    if first.get("warmup_s") is not None and later.get("warmup_s") is not None and len(part["rows"]) == 2:
        part["saved_s"] = first["warmup_s"] - later["warmup_s"]


# --- part 4: projection --------------------------------------------------------------------------

def chapter_plan(profile_path: Path):
    """The plan of the profile (:func:`cifar_utils.plan.for_profile`): every run of chapters 1-6, and the
    claims' settling seeds apart. The one list of runs; this script keeps none of its own."""
    from cifar_utils import plan

    profile_path = Path(profile_path)
    return plan.for_profile(profile_path.stem, root=profile_path.resolve().parent.parent)


#: The projection's modes: "report" one run at a time; the engine's modes one at a time and packed.
PROJECTION_MODES = ("report", "default", "compile", "graphs")
PACKED_MODES = ("default", "compile", "graphs")


def part_projection(sizes: Sizes, device, results: dict, part: dict, profile_path: Path) -> None:
    """GPU hours of the profile's plan per chapter and mode, one at a time and packed, the book's total over
    its distinct runs, and the claims' settling seeds apart (see the module doc)."""
    from cifar_utils import packing
    from cifar_utils.projection import MEASURED, run_seconds, speed

    thr = results["parts"].get("throughput") or {}
    timed: dict[str, dict[str, float]] = {}
    for r in thr.get("rows", []):
        if r.get("img_s"):
            timed.setdefault(r["model"], {})[r["mode"]] = r["img_s"]
    packed_measured = {m: {int(k): v for k, v in by_k.items()}
                       for m, by_k in ((results["parts"].get("packing") or {}).get("measured") or {}).items()}
    # mean speed ratio of each mode to "default", over the models part 1 timed in both
    scale: dict[str, float | None] = {"default": 1.0}
    for mode in ("report", "compile", "graphs"):
        ratios = [m[mode] / m["default"] for m in timed.values() if m.get(mode) and m.get("default")]
        scale[mode] = statistics.mean(ratios) if ratios else None

    plan = chapter_plan(profile_path)
    ks = sizes.packing_ks if sizes.proxy_model else packing.KS
    speeds: dict[str, dict] = {}  # model -> {"modes": {mode: img/s one run}, "rows": {k: Row}, "how": ...}
    for model in dict.fromkeys(r.config.model for r in [*plan.runs, *plan.settling]):
        source = sizes.proxy_model or model  # the dry run: the tiny model stands in for every model
        mine, pk = timed.get(source, {}), packed_measured.get(source, {})
        if mine.get("default"):
            default, how = mine["default"], "default measured here (part 1)"
        elif pk.get(1):
            default, how = pk[1]["images_per_s"], "default measured here (part 2, one at a time)"
        else:
            s = speed(source)
            default, how = s.images_per_s, ("default from cifar_utils.projection.MEASURED (2026-12-01)"
                                             if source in MEASURED else f"default {s.how}")
        modes = {mode: mine.get(mode) or (default * scale[mode] if scale.get(mode) else None) for mode in PROJECTION_MODES}
        scaled = [mode for mode in PROJECTION_MODES if modes[mode] and not mine.get(mode) and mode != "default"]
        if scaled:
            how += f"; {', '.join(scaled)} scaled by part 1's mean ratios (estimated)"
        rows = {}  # on the same single-run speed as the one-at-a-time column: part 2's ratios, else the estimate's
        one = pk[1]["images_per_s"] if pk.get(1) else None
        for k in ks:
            est = packing.row(source, k)
            got = pk.get(k)
            if got and one:
                peak = got.get("peak_bytes")
                rows[k] = packing.Row(model, k, default * got["images_per_s"] / one, peak or est.peak_bytes, True,
                                      peak is not None)
            else:
                rows[k] = packing.Row(model, k, est.images_per_s * default / packing.row(source, 1).images_per_s,
                                      est.peak_bytes, False, est.memory_measured)
        measured_ks = sorted(k for k in ks if pk.get(k))
        how += (f"; packed: measured here at {', '.join(map(str, measured_ks))} at once" if measured_ks
                else "; packed: estimated (cifar_utils.packing)")
        speeds[model] = {"modes": modes, "rows": rows, "how": how}

    def mode_rows(mode: str) -> dict:
        return {m: {k: replace(r, images_per_s=r.images_per_s * s["modes"][mode] / s["modes"]["default"])
                    for k, r in s["rows"].items()} for m, s in speeds.items() if s["modes"].get(mode)}

    tables = {mode: mode_rows(mode) for mode in PACKED_MODES}

    def row(name: str, runs) -> dict:
        configs = [r.config for r in runs]
        hours: dict[str, float | None] = {}
        for mode in PROJECTION_MODES:
            rates = [speeds[c.model]["modes"].get(mode) for c in configs]
            hours[mode] = sum(run_seconds(c, v) for c, v in zip(configs, rates)) / 3600 if all(rates) else None
        for mode in PACKED_MODES:
            ok = configs and all(c.model in tables[mode] for c in configs)
            hours[f"{mode} packed"] = packing.decide(configs, tables[mode]).wall_seconds / 3600 if ok else None
        packed = [v for m, v in hours.items() if m.endswith("packed") and v]
        hours["best"] = min(packed) if packed else None
        return {"chapter": name, "runs": len(runs), "epochs": sum(c.epochs for c in configs), "hours": hours,
                "best_vs_report": hours["report"] / hours["best"] if hours["report"] and hours["best"] else None}

    rows = [row(name, [r for r in plan.runs if name in r.chapters]) for name in plan.chapters]
    total = row("total", plan.runs)
    settling = row("claims (settling seeds)", plan.settling) if plan.settling else None
    part.update(profile=str(profile_path), rows=rows, total=total, settling=settling, totals=total["hours"],
                speeds={m: {"modes": s["modes"], "how": s["how"],
                            "packed": {str(k): r.images_per_s for k, r in s["rows"].items()}} for m, s in speeds.items()},
                scale_vs_default=scale, distinct_runs=len(plan.runs), chapter_uses=sum(r["runs"] for r in rows))


# --- part 5: accuracy ----------------------------------------------------------------------------

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


# --- part 6: BatchNorm metrics overhead ----------------------------------------------------------

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


def _gib(value) -> str:
    return _f(value / 2**30 if value else None, ".2f")


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
                  f"compile mode {thr['compile_mode']} (backend {thr['compile_backend']}); CUDA graphs = compile "
                  f"mode {thr['graphs_mode']} through the engine's step_model. warmup s includes the compilation. "
                  "s/epoch = 50,000 images / images/s.", "",
                  "| model | setup | images/s | s/epoch | vs report setup | warmup s |", "|---|---|---|---|---|---|"]
        for r in thr["rows"]:
            label = MODE_LABELS.get(r["mode"], r["mode"]) + (f" -- {r['error']}" if r.get("error") else "")
            lines.append(f"| {r['model']} | {label} | {_f(r.get('img_s'))} | {_f(r.get('epoch_s'))} | "
                         f"{_f(r.get('vs_report'), '.2f', 'x')} | {_f(r.get('warmup_s'))} |")
        lines.append("")
    if not thr or thr.get("status") != "done":
        lines += [_status_line(thr), ""]
    pk = parts.get("packing")
    lines += ["## 2. Packing: runs of a model at once on one GPU", ""]
    if pk and pk.get("rows"):
        lines += [f"Each model of the plan, most GPU hours first, at {', '.join(map(str, pk['ks']))} runs at once: "
                  f"that many processes, each training its own copy (engine default mode, batch {pk['batch_size']}, "
                  f"{pk['warmup']} warm-up steps), timed through the same {pk['window_s']:g} s window. images/s in "
                  "all = the sum over the processes; peak = torch.cuda.max_memory_allocated of one process (the "
                  "largest).", "", "| model | at once | images/s in all | vs one run | peak GiB per run |",
                  "|---|---|---|---|---|"]
        for r in pk["rows"]:
            err = f" -- {r['error']}" if r.get("error") else ""
            lines.append(f"| {r['model']} | {r['k']}{err} | {_f(r.get('img_s'))} | {_f(r.get('vs_one'), '.2f', 'x')} | "
                         f"{_gib(r.get('peak_bytes'))} |")
        if pk.get("not_measured"):
            lines += ["", f"Not measured ({pk.get('stopped', '')}): {', '.join(pk['not_measured'])}: their entries "
                          "stay estimated."]
        lines += ["", "The measured entries, in the format of `cifar_utils/packing.py` (paste them there with this "
                      "file's date, device and command as its `SOURCE`):", "", "```python", pk.get("entries", ""),
                  "```", ""]
    if not pk or pk.get("status") != "done":
        lines += [_status_line(pk), ""]
    cc = parts.get("compile_cache")
    lines += ["## 3. Compile cache: a first and a later run", ""]
    if cc and cc.get("rows"):
        lines += [f"{cc['model']} compiled in mode {cc['mode']} in a fresh process with an empty inductor cache "
                  "(first), then in another with the cache the first filled (later); warm-up = "
                  f"{cc['warmup']} steps including the compilation, then {cc['steps']} timed steps.", "",
                  "| run | warm-up s | images/s | process s |", "|---|---|---|---|"]
        for r in cc["rows"]:
            err = f" -- {r['error']}" if r.get("error") else ""
            lines.append(f"| {r['run']}{err} | {_f(r.get('warmup_s'))} | {_f(r.get('img_s'))} | "
                         f"{_f(r.get('process_s'))} |")
        if cc.get("saved_s") is not None:
            lines += ["", f"The cache saves a later run {cc['saved_s']:.1f} s of warm-up."]
        lines.append("")
    if not cc or cc.get("status") != "done":
        lines += [_status_line(cc), ""]
    proj = parts.get("projection")
    lines += ["## 4. Projected GPU hours of the full profile", ""]
    if proj and proj.get("rows"):
        lines += [f"The plan of `{Path(proj['profile']).name}` (`cifar_utils.plan`): each run's epochs x (training "
                  "images + a third of the evaluated images) / its model's speed in the mode, one run at a time; "
                  "packed: the runs sharing one GPU as `cifar_utils.packing.decide` chooses on the packing table "
                  "(part 2's measured speed-ups over one run and peak memory, the module's estimates elsewhere, on "
                  "the one-at-a-time column's single-run speed), its simulated wall time. best = "
                  "the fastest packed mode. A run shared by chapters counts in each chapter's row; the total counts "
                  f"the {proj['distinct_runs']} distinct runs once ({proj['chapter_uses']} chapter uses). Hours of "
                  "one GPU.", "",
                  "| chapter | runs | epochs | report setup h | default h | default packed h | compile packed h | "
                  "graphs packed h | best h | report / best |", "|---|---|---|---|---|---|---|---|---|---|"]

        def table_row(r: dict, bold: bool = False) -> str:
            h = r["hours"]
            name = f"**{r['chapter']}**" if bold else r["chapter"]
            return (f"| {name} | {r['runs']} | {r['epochs']} | {_f(h['report'], '.2f')} | {_f(h['default'], '.2f')} | "
                    f"{_f(h['default packed'], '.2f')} | {_f(h['compile packed'], '.2f')} | "
                    f"{_f(h['graphs packed'], '.2f')} | {_f(h['best'], '.2f')} | {_f(r['best_vs_report'], '.2f', 'x')} |")

        lines += [table_row(r) for r in proj["rows"]] + [table_row(proj["total"], bold=True)]
        if proj.get("settling"):
            lines += ["", "Apart, not part of the book's total: the claims' optional settling seeds "
                          "(`python -m cifar_utils.train --settle`).", "", lines[-len(proj["rows"]) - 3],
                      lines[-len(proj["rows"]) - 2], table_row(proj["settling"])]
        lines += ["", "Speeds used: " + "; ".join(f"{m}: {s['how']}" for m, s in proj["speeds"].items()), ""]
    if not proj or proj.get("status") != "done":
        lines += [_status_line(proj), ""]
    acc = parts.get("accuracy")
    lines += ["## 5. Accuracy: fp32 against the default mode", ""]
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
    lines += ["## 6. BatchNorm metrics overhead", "", _status_line(parts.get("bn_overhead")), ""]
    lines += ["## Part times", "", "| part | status | seconds |", "|---|---|---|"]
    for name in PARTS:
        p = parts.get(name)
        if p:
            lines.append(f"| {name} | {p.get('status')} | {_f(p.get('seconds'))} |")
    return "\n".join(lines) + "\n"


def _status_line(part: dict | None) -> str:
    if not part:
        return "Not run."
    return f"**{part.get('status')}**: {part.get('note') or part.get('error') or part.get('stopped') or ''}".rstrip(": ")


def write(results: dict, out: Path) -> None:
    (out / "gpu_check.json").write_text(json.dumps(results, indent=2, default=str))
    (out / "gpu_check.md").write_text(markdown(results))


def main(argv=None) -> int:
    args = parse_args(argv)
    sizes = DRY if args.dry_run else FULL
    overrides = {k: v for k, v in {"steps": args.steps, "warmup": args.warmup, "compile_mode": args.compile_mode,
                                   "accuracy_epochs": args.accuracy_epochs, "compile_timeout": args.compile_timeout,
                                   "packing_timeout": args.packing_timeout,
                                   "packing_window": args.packing_window}.items() if v is not None}
    sizes = replace(sizes, **overrides)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        raise SystemExit(f"unknown part(s) {', '.join(unknown)}; parts: {', '.join(PARTS)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    import torch

    import cifar_utils.engine.testing  # noqa: F401  tiny_cnn / tiny_random (dry run)
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
               "packing": lambda part: part_packing(sizes, device, results, part, Path(args.profile)),
               "compile_cache": lambda part: part_compile_cache(sizes, device, results, part),
               "projection": lambda part: part_projection(sizes, device, results, part, Path(args.profile)),
               "accuracy": lambda part: part_accuracy(sizes, device, results, part, args.data),
               "bn_overhead": lambda part: part_bn_overhead(sizes, device, results, part)}
    # Parts 1-3 as a whole have a limit (each keeps what it measured); the accuracy part bounds itself.
    limits = {"throughput": sizes.throughput_timeout, "packing": sizes.packing_timeout,
              "compile_cache": sizes.cache_timeout}
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
