"""``python -m cifar_utils.train --profile P``: train every unfinished run of the plan before the book renders.

The plan (:mod:`cifar_utils.plan`) lists every run of every chapter of profile ``P``; this trains those the
store lacks, longest first (projected time, :mod:`cifar_utils.projection`), resuming partial ones, each
with the callbacks whose records its chapter reads, into the store the book runner gives the profile
(``$CIFAR_UTILS_RUNS``, else ``runs/<profile>``). Then ``make book PROFILE=P`` trains nothing: every
chapter loads its runs from the store. Runs that the profile's bundles of published runs hold (its
``published:`` key, :mod:`cifar_utils.engine.bundle`) count as done and are not trained.

While it trains it prints, every ``--every`` seconds, one line per active run (epoch, seconds per epoch,
time left) and an overall ETA (the projection, scaled by how the runs in flight compare with it). A run
that fails is reported and the others go on; Ctrl-C stops cleanly (the runs in flight are marked
interrupted) and a second call resumes them. At the end: trained / loaded / failed, and the wall time;
the exit status is 1 when a run failed, 130 when interrupted.

``--dry-run`` prints what would be trained, its projected GPU time one run at a time and packed on one
GPU (the packing decision, :mod:`cifar_utils.packing`), and trains nothing. ``--settle`` adds the claims'
optional settling seeds (all, or those of the claims named: ``--settle depth,width``). ``--backend ray``
sends the runs to Ray (:mod:`cifar_utils.engine.ray_backend`; ``--gpus-per-run 0.25`` lets four share a
GPU).

``--jobs auto`` (the default): on a CUDA machine several runs share the GPU as :func:`cifar_utils.packing.decide`
says (each run's share of the GPU; the local scheduler starts a run when its share is free, Ray gets it as
``num_gpus``; a run that runs out of memory beside others is retried alone); on a machine without CUDA one
run at a time, as before. ``--jobs N``: N runs at once, no shares (``--gpus-per-run`` sets one for all).
A profile whose runs ask for ``device: cuda`` is refused, in one line, on a machine without CUDA.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from . import packing as _packing
from . import plan as _plan
from .engine import RunManyError, RunStore
from .engine import store as st
from .projection import hours

#: ``--jobs auto`` at most this many runs at once (the packing table's largest k).
AUTO_MAX_JOBS = max(_packing.KS)


@dataclass
class Summary:
    """What :func:`train_runs` did: run names trained, loaded (already done), failed (name -> error line),
    whether it was interrupted, and the wall time."""

    trained: list[str] = field(default_factory=list)
    loaded: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    interrupted: bool = False
    seconds: float = 0.0

    def text(self) -> str:
        line = (f"trained {len(self.trained)}, loaded {len(self.loaded)} (already in the store), "
                f"failed {len(self.failed)}; wall time {_clock(self.seconds)}")
        if self.interrupted:
            line += "; INTERRUPTED: run the same command again to resume"
        return "\n".join([line, *(f"  FAILED {name}: {error}" for name, error in self.failed.items())])

    @property
    def exit_code(self) -> int:
        return 130 if self.interrupted else (1 if self.failed else 0)


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h}h {rest // 60:02d}m" if h else f"{rest // 60}m {rest % 60:02d}s"


def pending(runs: Sequence[_plan.PlannedRun], store: RunStore) -> tuple[list[_plan.PlannedRun], list[_plan.PlannedRun]]:
    """(runs left to train, longest projected first; runs already done in the store)."""
    todo, done = [], []
    for r in runs:
        existing = store.get(r.config)
        (done if existing is not None and existing.status in st.DONE else todo).append(r)
    return sorted(todo, key=lambda r: -r.seconds()), done


class Monitor:
    """Prints the runs in flight and an ETA every ``every`` seconds, read from the store's status files
    (so it works for every backend), on a daemon thread."""

    def __init__(self, runs: Sequence[_plan.PlannedRun], store: RunStore, jobs: float, every: float,
                 say: Callable[[str], None]) -> None:
        """``jobs``: how many times faster than one run at a time the runs are expected to train together
        (the number of runs at once, or the packing's projected gain)."""
        self.runs, self.store, self.jobs, self.every, self.say = list(runs), store, max(1.0, jobs), every, say
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="train-monitor", daemon=True)
        self.t0 = time.monotonic()

    def __enter__(self) -> "Monitor":
        if self.every > 0:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            try:
                self.say(self.report())
            except Exception as exc:  # a status file being replaced: next time
                self.say(f"[train] (progress unavailable: {exc})")

    def report(self) -> str:
        """The progress block: a header with counts and the ETA, one line per active run."""
        active, waiting, done, failed = [], [], 0, 0
        ratios = []
        for r in self.runs:
            info = st.read_status(self.store.path_for(r.config))
            status, epochs = info.get("status"), int(info.get("epochs_done") or 0)
            if status in st.DONE:
                done += 1
            elif status == st.FAILED:
                failed += 1
            elif status == st.RUNNING and epochs:
                per_epoch = float(info.get("wall_seconds") or 0) / epochs
                ratios.append(per_epoch * r.config.epochs / r.seconds())
                active.append((r, epochs, per_epoch))
            elif status == st.RUNNING:
                active.append((r, 0, None))
            else:
                waiting.append(r)
        scale = sum(ratios) / len(ratios) if ratios else 1.0
        left = sum((r.config.epochs - e) * p if p else r.seconds() * scale for r, e, p in active)
        left += sum(r.seconds() * scale for r in waiting)
        eta = _clock(left / self.jobs)
        lines = [f"[train {_clock(time.monotonic() - self.t0)}] {done}/{len(self.runs)} done, {len(active)} training, "
                 f"{len(waiting)} waiting, {failed} failed; ETA {eta}"
                 + (f" (projection x{scale:.2g}, from the runs in flight)" if ratios else " (projected)")]
        for r, epochs, per_epoch in active:
            timing = f"{per_epoch:6.1f} s/epoch, {_clock((r.config.epochs - epochs) * per_epoch)} left" if per_epoch \
                else "starting"
            lines.append(f"  {r.name:<26} {r.uses[0][:48]:<48} epoch {epochs:>4}/{r.config.epochs:<4} {timing}")
        return "\n".join(lines)


def train_runs(runs: Sequence[_plan.PlannedRun], *, runs_dir: str | Path | RunStore | None = None, jobs: int = 1,
               backend: str = "local", ray_address: str | None = None,
               gpus_per_run: float | Sequence[float] | None = None, cpus_per_run: float | None = None,
               every: float = 60.0, say: Callable[[str], None] | None = None, pack: bool = False) -> Summary:
    """Train the planned ``runs`` the store lacks (longest first, with their records), report progress, and
    return the :class:`Summary` (a failed run does not stop the others; Ctrl-C ends the call with
    ``interrupted=True`` after the runs in flight are marked interrupted). ``pack``: the runs share the GPU
    as :func:`cifar_utils.packing.decide` says (in its start order, each with its share as
    ``gpus_per_run``, at most ``jobs`` at once)."""
    say = say or (lambda line: print(line, flush=True))
    store = runs_dir if isinstance(runs_dir, RunStore) else RunStore(runs_dir)
    todo, done = pending(runs, store)
    summary = Summary(loaded=[r.name for r in done])
    if not todo:
        return summary
    t0 = time.monotonic()
    serial = sum(r.seconds() for r in todo)
    how, gain = f"{jobs} at a time", float(jobs)
    if pack:
        packed = _packing.decide([r.config for r in todo])
        by_key = {r.config.key(): r for r in todo}
        todo = [by_key[p.config.key()] for p in packed.runs]
        gpus_per_run = [p.share for p in packed.runs]
        gain = serial / packed.wall_seconds if packed.wall_seconds > 0 else 1.0
        how = (f"packed, at most {jobs} at once ({hours(packed.wall_seconds)} projected on one GPU):\n"
               + "\n".join(packed.lines()))
    say(f"[train] {len(todo)} runs to train ({hours(serial)} projected on one GPU one at a time), "
        f"{len(done)} already in {store.root}; backend {backend}, {how}")
    records = {r.config.key(): r.records for r in todo if r.records is not None}
    try:
        with Monitor(todo, store, gain, every, say):
            _plan.train_configs([r.config for r in todo], records, jobs=jobs, runs_dir=store, progress=False,
                                backend=backend, ray_address=ray_address, gpus_per_run=gpus_per_run,
                                cpus_per_run=cpus_per_run)
    except RunManyError as exc:
        for i, text in exc.errors.items():
            name, kind, message = exc.failures.get(i, (todo[i].name, "", text.strip().splitlines()[-1]))
            summary.failed[name] = f"{kind}: {message.splitlines()[0] if message else ''}".strip(": ")
    except KeyboardInterrupt:
        summary.interrupted = True
    summary.seconds = time.monotonic() - t0
    for r in todo:
        existing = store.get(r.config)
        if existing is not None and existing.status in st.DONE:
            summary.trained.append(r.name)
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    """The command line (see the module doc)."""
    ap = argparse.ArgumentParser(prog="python -m cifar_utils.train", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="full", help="params/<profile>.yaml (default: full)")
    ap.add_argument("--chapters", default="", help="comma-separated chapters (01,03 or full ids; default: all)")
    ap.add_argument("--backend", default="local", choices=("local", "ray"))
    ap.add_argument("--jobs", default="auto", help="runs trained at once, or auto (default): on a CUDA machine "
                    "the packing decides how many runs share the GPU, elsewhere one at a time")
    ap.add_argument("--runs-dir", default=None, help="the store (default: $CIFAR_UTILS_RUNS, else runs/<profile>)")
    ap.add_argument("--settle", nargs="?", const="all", default=None, metavar="CLAIMS",
                    help="also train the claims' settling seeds (all, or comma-separated claim ids)")
    ap.add_argument("--ray-address", default=None)
    ap.add_argument("--gpus-per-run", type=float, default=None)
    ap.add_argument("--cpus-per-run", type=float, default=None)
    ap.add_argument("--every", type=float, default=60.0, help="seconds between progress reports (0: none)")
    ap.add_argument("--dry-run", action="store_true", help="print what would be trained; train nothing")
    args = ap.parse_args(argv)
    if args.jobs != "auto" and not (args.jobs.isdigit() and int(args.jobs) >= 1):
        ap.error(f"--jobs must be auto or an integer >= 1, got {args.jobs!r}")
    chapters = _plan.expand_chapters(args.chapters)
    try:
        plan = _plan.for_profile(args.profile, chapters=chapters)
        runs = plan.select(chapters, settle=False)
        if args.settle is not None:
            runs += settling(plan, chapters, args.settle)
    except ValueError as exc:  # a bad profile, parameter or claim id: one line naming what is allowed
        print(f"train: {exc}", file=sys.stderr)
        return 2
    try:
        store = _plan.store_for(args.profile, args.runs_dir)  # with the profile's published runs beneath
    except ValueError as exc:
        print(f"train: {exc}", file=sys.stderr)
        return 2
    cuda = cuda_available()
    if args.dry_run:
        todo, done = pending(runs, store)
        print(f"dry run: profile {args.profile!r}, store {store.root}: {len(todo)} runs to train, {len(done)} "
              f"already done; nothing is trained")
        for r in todo:
            print(f"  {r.name:<26} {r.config.epochs:>4} epochs  {hours(r.seconds()):>9}  {'; '.join(r.uses)}")
        print(f"projected: {hours(sum(r.seconds() for r in todo))} of one GPU, one run at a time "
              "(python -m cifar_utils.plan shows the source of the speeds)")
        if todo:
            packed = _packing.decide([r.config for r in todo])
            print(f"packed on one GPU (what --jobs auto does on a CUDA machine{'' if cuda else '; this one has none'}): "
                  f"{hours(packed.wall_seconds)} projected wall time (cifar_utils.packing; each line says what is "
                  "measured and what estimated):")
            print("\n".join(packed.lines()))
        return 0
    wanted = sorted({r.config.device for r in runs if str(r.config.device).startswith("cuda")})
    if wanted and not cuda and args.backend == "local":
        print(f"train: the runs ask for device {', '.join(map(repr, wanted))} and this machine has no CUDA GPU; "
              "run on a GPU machine (or use a profile with device auto/cpu)", file=sys.stderr)
        return 2
    on_gpu = cuda and any(not str(r.config.device).startswith("cpu") for r in runs)  # runs pinned to cpu: no shares
    jobs, pack = resolve_jobs(args.jobs, args.backend, on_gpu, len(runs), args.gpus_per_run)
    summary = train_runs(runs, runs_dir=store, jobs=jobs, backend=args.backend, ray_address=args.ray_address,
                         gpus_per_run=args.gpus_per_run, cpus_per_run=args.cpus_per_run, every=args.every, pack=pack)
    print(f"[train] {summary.text()}", flush=True)
    return summary.exit_code


def cuda_available() -> bool:
    """Whether this machine has a CUDA GPU torch can use."""
    import torch

    return bool(torch.cuda.is_available())


def resolve_jobs(jobs: str | int, backend: str, cuda: bool, runs: int, gpus_per_run: float | None) -> tuple[int, bool]:
    """``--jobs`` as (runs at once, whether the packing gives each run its GPU share). ``auto``: packed (at
    most :data:`AUTO_MAX_JOBS` at once locally, every run in flight on Ray) on a CUDA machine or on Ray
    without ``--gpus-per-run``; else one at a time. A number: that many at once, no shares."""
    if jobs != "auto":
        return int(jobs), False
    if backend == "ray":
        return max(1, runs), gpus_per_run is None
    return (AUTO_MAX_JOBS, gpus_per_run is None) if cuda else (1, False)


def settling(plan: _plan.Plan, chapters: Sequence[str] | None, which: str) -> list[_plan.PlannedRun]:
    """The plan's settling seeds of ``chapters``' claims: all (``which="all"``) or those of the named claims."""
    from .claims import claim_by_id

    runs = [r for r in plan.settling if chapters is None or set(chapters) & set(r.chapters)]
    if which == "all":
        return runs
    ids = [claim_by_id(i.strip()).id for i in which.split(",") if i.strip()]  # an unknown id names the known ones
    return [r for r in runs if any(u.startswith(f"{_plan.CLAIMS}: {i} (") for u in r.uses for i in ids)]


if __name__ == "__main__":
    raise SystemExit(main())
