"""What :func:`cifar_utils.engine.run_many`'s two backends (local processes, Ray tasks) share: which
runs are left to train, the data prefetch, the modules a worker must import, the callback-factory
check and the error that reports failed runs. Both backends import this module; neither imports
the other's internals.

Records: a callbacks factory may also say whether a stored run holds what its callbacks record,
with a method ``has_records(run) -> bool`` (chapter 5's :class:`cifar_utils.bn_metrics.MetricsFactory`,
chapter 6's :class:`cifar_utils.sparsity.SLBIPathRecords`). A finished run that lacks them (trained
without those callbacks, or with other settings) is moved aside (``<name>.old-<time>``, nothing
deleted) and trained again, with a :class:`~cifar_utils.engine.store.StoreWarning` naming it, so
that every run ``run_many`` returns carries the records its caller asked for.

GPU shares: ``gpus_per_run`` may give each run its share of a GPU (one number for all, or one per config:
:func:`per_run_shares`). The local scheduler starts a queued run only when its share fits in what the runs
in flight leave free (:func:`startable`, the one rule, which :mod:`cifar_utils.packing` also simulates);
Ray gives each task its share as ``num_gpus``. Out of memory: a run that fails with a CUDA out-of-memory
error (``torch.OutOfMemoryError``) while other runs shared its GPU is not lost: it is queued again to run
alone (share 1), once (:func:`retry_alone`), and a line says so.

Published runs: a published run (read from a bundle beneath the store, :mod:`cifar_utils.engine.bundle`)
that lacks the records cannot be moved: it is ignored, with a warning, and the run is trained into the
local store. :func:`split_done` counts an intact, done run of a bundle beneath the store as done (it is
loaded, never trained); the runs it leaves to train are trained into the local store only
(``run(..., published=False)``).
"""

from __future__ import annotations

import numbers
import pickle
import sys
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from . import store as st
from .config import RunConfig
from .datasets import load_for_config


class RunManyError(RuntimeError):
    """Some configs of :func:`run_many` failed; ``runs`` has the others' results.

    ``errors`` maps config index to the full error text (traceback included); ``failures`` maps it
    to ``(run name, exception type, whole message)``, which is what the message shows, one block
    per failed run, so that the cause (e.g. where the data was looked for) is never cut off."""

    def __init__(self, runs: list, errors: dict[int, str],
                 failures: dict[int, tuple[str, str, str]] | None = None) -> None:
        self.runs, self.errors = runs, errors
        self.failures = dict(failures or {})
        blocks = []
        for i, err in errors.items():
            if i in self.failures:
                name, kind, message = self.failures[i]
                text = f"{name}: {kind}: {message}" if message else f"{name}: {kind}"
            else:
                text = err.strip()
            first, *rest = text.splitlines() or [""]
            blocks.append("\n".join([f"  [{i}] {first}", *(f"      {line}" for line in rest)]))
        super().__init__(f"{len(errors)} of {len(runs)} runs failed:\n" + "\n".join(blocks))


def describe(config: RunConfig, exc: BaseException) -> tuple[str, str, str]:
    """(run name, exception type, whole message) of a failed run."""
    return config.name, type(exc).__name__, str(exc).strip()


def data_spec(config: RunConfig) -> tuple:
    return (config.dataset, config.source, config.data_root)


def split_done(store: st.RunStore, configs: Sequence[RunConfig], callbacks: Callable | None = None
               ) -> tuple[list[st.Run | None], dict[str, list[int]]]:
    """The runs the store already has done (finished or diverged; None elsewhere), and what is left to
    train: run name -> the indices of the configs with that run (identical configs train once). With a
    ``callbacks`` factory that has ``has_records``, a done run lacking its records is moved aside and
    left to train (see the module doc)."""
    runs: list[st.Run | None] = [None] * len(configs)
    todo: dict[str, list[int]] = {}
    check = getattr(callbacks, "has_records", None)
    for i, c in enumerate(configs):
        existing = store.get(c)
        if existing is not None and existing.status in st.DONE and check is not None and c.name not in todo \
                and existing.config is not None and not check(existing):
            if existing.published is not None:  # a bundle is read-only: never moved, never written
                warnings.warn(f"{c.name}: the published run {existing.path} lacks the records its callbacks keep; "
                              "it is not used, and the run is trained into the local store", st.StoreWarning,
                              stacklevel=3)
            else:
                moved = st.move_aside(existing.path)
                warnings.warn(f"{c.name}: stored without the records its callbacks keep (trained without them, or "
                              f"with other settings); moved aside to {moved.name} and trained again", st.StoreWarning,
                              stacklevel=3)
            existing = None
        if existing is not None and existing.status in st.DONE:
            runs[i] = existing
        else:
            todo.setdefault(c.name, []).append(i)
    return runs, todo


def prefetch_data(configs: Iterable[RunConfig]) -> None:
    """Load each distinct data spec once in this process (see the module doc), so that workers
    started afterwards find the downloaded / decoded files in the cache. Errors are left for the
    workers to report, per run."""
    seen = set()
    for c in configs:
        spec = data_spec(c)
        if spec in seen:
            continue
        seen.add(spec)
        try:
            load_for_config(c)
        except Exception:  # e.g. no data: each worker fails with the full message
            pass


def auto_imports(configs: Iterable[RunConfig]) -> list[str]:
    """Modules outside the package that registered what the configs use (importable ones only)."""
    from cifar_utils.optim import get_optimizer_factory

    from .datasets import _EXTRA

    found = []
    for c in configs:
        candidates = []
        try:
            candidates.append(get_optimizer_factory(c.optimizer).__module__)
        except ValueError:
            pass
        if c.dataset in _EXTRA:
            candidates.append(_EXTRA[c.dataset].__module__)
        try:
            from cifar_utils.models import registry

            fn = registry._REGISTRY.get(c.model)
            if fn is not None:
                candidates.append(fn.__module__)
        except (ImportError, AttributeError):
            pass
        for module in candidates:
            # "__main__" (a notebook or script) cannot be imported by a worker: the worker will
            # then fail with "unknown model/optimizer", naming the choices it does know.
            if module and module != "__main__" and module in sys.modules and module not in found:
                found.append(module)
    return found


def check_callback_factory(factory: Callable) -> None:
    """A clear error now, rather than an unpicklable-object error from a worker later."""
    if not callable(factory):
        raise TypeError(f"callbacks must be a function config -> list of Callbacks, got {type(factory).__name__}")
    target = getattr(factory, "func", factory)  # functools.partial
    module = getattr(target, "__module__", None) or getattr(type(target), "__module__", None)
    if module == "__main__" or "<lambda>" in getattr(target, "__qualname__", "") \
            or "<locals>" in getattr(target, "__qualname__", ""):
        raise ValueError("callbacks= must be importable by the worker processes: define the factory at module "
                         "level in a module (not in a notebook, not a lambda or local function)")
    try:
        pickle.dumps(factory)
    except Exception as exc:
        raise ValueError(f"callbacks= factory cannot be sent to a worker process: {exc}") from exc




# --- GPU shares and the out-of-memory retry: what both backends' schedulers share -------------------------

#: The environment variable a worker sets to its run's GPU share while it trains (1: the GPU alone).
SHARE_ENV = "CIFAR_UTILS_GPU_SHARE"
#: Shares are compared with this slack (eight shares of 1/8 may not add up to exactly 1.0).
EPS = 1e-9


@dataclass
class Queued:
    """A run waiting for (or holding) its GPU share: its name, the config indices with that run, the share
    (0: not counted), and whether it is the out-of-memory retry."""

    name: str
    indices: list[int]
    share: float = 0.0
    retried: bool = False


def per_run_shares(configs: Sequence[RunConfig], gpus_per_run: float | Sequence[float] | None,
                   most: float | None = None) -> list[float] | None:
    """``gpus_per_run`` as one number per config (None when not given). ``most``: the largest share allowed
    (the local backend: 1, the one GPU). A clear error names a bad value and what is allowed."""
    if gpus_per_run is None:
        return None
    if isinstance(gpus_per_run, numbers.Real) and not isinstance(gpus_per_run, bool):
        values = [float(gpus_per_run)] * len(configs)
    else:
        values = list(gpus_per_run)
        if len(values) != len(configs):
            raise ValueError(f"gpus_per_run has {len(values)} values for {len(configs)} configs: give one number, "
                             "or one per config")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not v > 0 or (most is not None and v > most + EPS):
            allowed = f"in (0, {most:g}]" if most is not None else "> 0"
            raise ValueError(f"gpus_per_run must be numbers {allowed} (a run's share of a GPU), got {v!r}")
    return [float(v) for v in values]


def startable(queue: Sequence, free: float, slots: int, share: Callable = lambda q: q.share) -> list:
    """The queued items to start now, in queue order: each whose share fits in what is ``free`` (after the
    ones chosen before it), at most ``slots``; an item that needs the GPU alone (share 1) and does not fit
    stops the look, so that nothing overtakes (and starves) it."""
    chosen = []
    for item in queue:
        if len(chosen) >= slots:
            break
        s = share(item)
        if s <= free + EPS:
            chosen.append(item)
            free -= s
        elif s >= 1 - EPS:
            break
    return chosen


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is (or wraps, as a Ray task error does) torch's CUDA out-of-memory error."""
    import torch

    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, torch.OutOfMemoryError) or type(exc).__name__ == "OutOfMemoryError":
            return True
        exc = getattr(exc, "cause", None) or exc.__cause__
    return False


def retry_alone(item: Queued, exc: BaseException, shared: bool) -> Queued | None:
    """The out-of-memory retry of ``item`` (share 1, alone), or None: only a run that ran out of CUDA memory
    while it ``shared`` the GPU, and only once."""
    if item.retried or not shared or not is_out_of_memory(exc):
        return None
    return Queued(item.name, item.indices, share=1.0, retried=True)


def retry_note(item: Queued, backend: str) -> str:
    """The line that says a run is retried alone."""
    share = f"share {item.share:g}" if item.share else "beside other runs"
    return (f"[run_many {backend}] {item.name}: out of CUDA memory ({share}); queued again to run alone "
            "(share 1), once")
