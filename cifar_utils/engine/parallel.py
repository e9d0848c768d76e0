"""``run_many``: several runs at once, each in its own process.

Worker processes are started with the ``spawn`` method (safe with CUDA and in notebooks); each
imports ``cifar_utils`` afresh, so a model, optimizer or dataset registered *outside* the
package (in a notebook or a test module) does not exist there. Name the module that registers it
in ``imports=`` (it must be importable, i.e. not a notebook); modules that registered optimizers
or engine datasets the configs use are added automatically.

Failures: every config is attempted; one that raises does not stop or lose the others (their
results are in the store as soon as they finish). When all are done, if any failed,
:class:`RunManyError` is raised; its ``runs`` holds the :class:`Run` of every config (None for
the failed ones, which keep status ``failed`` in the store), ``errors`` maps config index to
the error text, and the message names each failed run with its exception type and whole message.
Diverged runs are not failures. A damaged run in the store (see :mod:`cifar_utils.engine.store`)
is not loaded as it is: it goes to :func:`cifar_utils.engine.run`, which repairs it from its
checkpoint or moves it aside and trains it again, with a warning naming what was wrong.

Data: before the workers start, the parent loads each distinct data spec (``dataset``,
``source``, ``data_root``) of the runs to train once, so that a download (``source="auto"`` or
``"download"`` on a fresh machine) or the decoding of an image archive happens once, here, into
the cache, and the workers only read the finished files; without this, several workers would
download into the same cache folder at once and could corrupt each other's files. (Two separate
``run_many`` calls started at the same time on an empty cache are not protected.)

Callbacks: ``callbacks=factory`` gives every run the callbacks ``factory(config)`` returns,
built in the process that trains the run (this one for ``jobs=1``, else the worker). Callbacks
cannot be sent to a worker themselves (they hold state and may hold tensors), so the factory is
sent instead: it must be picklable *by reference*, i.e. a module-level function or an instance
of a module-level class in an importable module (not ``__main__``, not a lambda); a
``functools.partial`` of such a function works too. What the callbacks save comes back with the
run (:attr:`Run.callback_states`). Callbacks are not part of a run's identity: a config already
finished in the store is loaded, not retrained, whatever callbacks are asked for now. A factory whose
callbacks *record* data says whether a stored run holds it with a ``has_records(run)`` method (chapter 5's
:class:`cifar_utils.bn_metrics.MetricsFactory`), and ``run_many`` then moves runs stored without those
records aside and retrains them (see :mod:`cifar_utils.engine.batch`).

Ctrl-C (``KeyboardInterrupt``, also a notebook's "interrupt kernel", which reaches only this
process): queued runs are cancelled and the workers are stopped (SIGTERM, which a worker turns
into an interrupt of its run, so that the run is marked ``interrupted`` and resumes from its last
checkpoint next time), then the ``KeyboardInterrupt`` propagates.
"""

from __future__ import annotations

import importlib
import multiprocessing as mp
import os
import signal
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from contextlib import suppress
from multiprocessing.connection import wait as mp_wait
from pathlib import Path

from cifar_utils.progress import progress_bar

from . import store as st
from .batch import (SHARE_ENV, Queued, RunManyError, auto_imports, check_callback_factory, describe,  # noqa: F401
                    per_run_shares, prefetch_data, retry_alone, retry_note, split_done, startable)
from .config import RunConfig

#: Seconds a stopped worker gets to mark its run interrupted before it is killed.
STOP_GRACE_S = 10.0


# Worker-process state: whether a run is in progress, and whether the parent asked us to stop.
_IN_RUN = False
_STOPPING = False


def _unwinding_an_interrupt() -> bool:
    """Whether this (worker) process is already handling a KeyboardInterrupt, e.g. run() marking
    its run interrupted: a second one must not cut that short."""
    return isinstance(sys.exc_info()[1], KeyboardInterrupt)


def _on_sigint(signum, frame) -> None:
    """In a worker: Ctrl-C in a terminal reaches every process of the group."""
    if not _unwinding_an_interrupt():
        raise KeyboardInterrupt


def _on_sigterm(signum, frame) -> None:
    """In a worker: the parent stops the pool. Interrupt the run (run() then marks it
    ``interrupted``), or, between runs, just exit. The parent repeats the signal until the worker
    is gone, in case the KeyboardInterrupt was swallowed (raised inside a callback, say)."""
    global _STOPPING
    _STOPPING = True
    if not _IN_RUN:
        os._exit(128 + signum)
    if not _unwinding_an_interrupt():
        raise KeyboardInterrupt("run_many was stopped")


def _init_worker() -> None:
    signal.signal(signal.SIGTERM, _on_sigterm)
    signal.signal(signal.SIGINT, _on_sigint)


def _worker(config_dict: dict, runs_dir: str, imports: Sequence[str], threads: int | None,
            callbacks: Callable | None = None, share: float = 0.0) -> str:
    global _IN_RUN
    _IN_RUN = True
    os.environ[SHARE_ENV] = f"{share:g}"  # this run's GPU share (0: not counted), for the run and its model
    try:
        for module in imports:
            importlib.import_module(module)
        if threads:
            import torch

            torch.set_num_threads(threads)
        from .loop import run

        config = RunConfig.from_dict(config_dict)
        cbs = list(callbacks(config)) if callbacks is not None else []
        return str(run(config, runs_dir=runs_dir, callbacks=cbs, progress=False, published=False).path)
    except KeyboardInterrupt:
        if _STOPPING:  # the run is marked interrupted; do not go on to a queued one
            os._exit(128 + signal.SIGTERM)
        raise
    finally:
        _IN_RUN = False
        os.environ.pop(SHARE_ENV, None)
        _release_cuda_memory()


def _release_cuda_memory() -> None:
    """Hand the finished run's cached CUDA memory back (the worker process may train a run of another model
    next, beside other processes)."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        with suppress(Exception):
            torch.cuda.empty_cache()


def _usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask, e.g. under taskset, Slurm or a container
    cpuset), else ``os.cpu_count()``."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def _threads_per_worker(workers: int) -> int:
    return max(1, _usable_cpus() // max(1, workers))


def _stop_pool(pool: ProcessPoolExecutor, grace: float = STOP_GRACE_S) -> None:
    """Cancel queued runs and stop the worker processes now: SIGTERM, repeated every half second
    (a worker marks its run interrupted and exits), SIGKILL for any still alive after ``grace``
    seconds."""
    # shutdown() forgets both. Exits are awaited on the sentinels, which does not reap the
    # processes: the pool's manager thread reaps them, and two threads reaping the same child
    # race (the loser sees it as still running).
    procs = list((getattr(pool, "_processes", None) or {}).values())
    manager = getattr(pool, "_executor_manager_thread", None)
    sentinels = {}
    for proc in procs:
        with suppress(ValueError):  # a closed process object
            sentinels[proc.sentinel] = proc
    pool.shutdown(wait=False, cancel_futures=True)
    deadline = time.monotonic() + grace
    while sentinels and (left := deadline - time.monotonic()) > 0:
        for proc in sentinels.values():  # not exited, so not reaped: the pid is still theirs
            with suppress(ValueError, OSError):
                proc.terminate()
        for ready in mp_wait(list(sentinels), timeout=min(left, 0.5)):
            sentinels.pop(ready)
    for proc in sentinels.values():
        with suppress(ValueError, OSError):
            proc.kill()
    if manager is not None:
        manager.join(timeout=5.0)
    if manager is None or not manager.is_alive():
        for proc in procs:
            with suppress(ValueError):
                proc.join(timeout=1.0)


#: Where run_many trains: spawned processes on this machine, or Ray tasks (see ray_backend.py).
BACKENDS = ("local", "ray")



def run_many(configs: Iterable[RunConfig], *, jobs: int = 1, runs_dir: str | Path | st.RunStore | None = None,
             progress: bool = True, imports: Sequence[str] = (),
             callbacks: Callable[[RunConfig], Iterable] | None = None, backend: str = "local",
             ray_address: str | None = None, gpus_per_run: float | Sequence[float] | None = None,
             cpus_per_run: float | None = None) -> list[st.Run]:
    """Train (or load) every config; return their runs in order.

    ``jobs=1`` (or a single run left to train) runs them one after the other in this process,
    with per-run progress bars; ``jobs > 1`` uses up to that many spawned worker processes, all
    on the configs' device, with one bar counting finished runs. Runs already finished in the
    store are loaded without starting a process. Duplicate configs are trained once. Unless a
    config names a CUDA device explicitly, each worker gets ``usable CPUs // workers`` torch CPU
    threads, at least 1 (so workers do not fight over the cores; "usable" respects the process's
    CPU affinity). Before the workers start, each distinct data spec is loaded once here so that
    downloads happen once (see the module doc). Ctrl-C cancels the queued runs, stops the workers
    and raises ``KeyboardInterrupt``. ``callbacks``: a picklable factory ``config -> [Callback, ...]``
    called for each run that is trained (see the module doc; runs loaded from the store get none).

    ``gpus_per_run``: each run's share of the GPU (one number, or one per config, each in (0, 1];
    :mod:`cifar_utils.packing` chooses them): with ``jobs > 1`` a queued run starts only when its share
    fits beside the runs in flight (at most ``jobs`` at once), longest queued first as given. A run that
    fails with CUDA out of memory while it shared the GPU is queued again to run alone (share 1), once,
    and a line says so (see :mod:`cifar_utils.engine.batch`).

    ``backend="ray"`` runs each config as a Ray task (``jobs`` of them in flight at once), on a
    local Ray instance or the cluster at ``ray_address``, each asking for ``gpus_per_run`` GPUs
    and ``cpus_per_run`` CPUs: see :mod:`cifar_utils.engine.ray_backend`.
    """
    from .loop import run

    configs = list(configs)
    for c in configs:
        if not isinstance(c, RunConfig):
            raise TypeError(f"run_many takes RunConfigs, got {type(c).__name__}")
        c.validate()
    st.check_settings()  # a bad store setting fails now, not after the training
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    if callbacks is not None:  # checked for jobs=1 too, so that jobs never changes what works
        check_callback_factory(callbacks)
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(map(repr, BACKENDS))}, got {backend!r}")
    if backend == "ray":
        from .ray_backend import run_many_ray

        return run_many_ray(configs, jobs=jobs, runs_dir=runs_dir, progress=progress, imports=imports,
                            callbacks=callbacks, ray_address=ray_address, gpus_per_run=gpus_per_run,
                            cpus_per_run=cpus_per_run)
    ray_only = {k: v for k, v in dict(ray_address=ray_address, cpus_per_run=cpus_per_run).items() if v is not None}
    if ray_only:
        raise ValueError(f"{', '.join(ray_only)} only apply to backend='ray' (got backend={backend!r})")
    shares = per_run_shares(configs, gpus_per_run, most=1.0)
    store = runs_dir if isinstance(runs_dir, st.RunStore) else st.RunStore(runs_dir)
    runs, todo = split_done(store, configs, callbacks)  # runs of a bundle beneath the store count as done
    errors: dict[int, str] = {}
    failures: dict[int, tuple[str, str, str]] = {}

    def failed(indices: Sequence[int], exc: BaseException) -> None:
        import traceback

        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        for i in indices:
            errors[i] = text
            failures[i] = describe(configs[i], exc)

    if jobs == 1 or len(todo) == 1:
        for indices in todo.values():
            try:
                config = configs[indices[0]]
                cbs = list(callbacks(config)) if callbacks is not None else []
                result = run(config, runs_dir=store, callbacks=cbs, progress=progress, published=False)
                for i in indices:
                    runs[i] = result
            except Exception as exc:  # keep going; report at the end
                failed(indices, exc)
    elif todo:
        all_imports = list(dict.fromkeys([*imports, *auto_imports(configs)]))
        workers = min(jobs, len(todo))
        threads = None
        if not any(str(c.device).startswith("cuda") for c in configs):
            threads = _threads_per_worker(workers)
        prefetch_data(configs[idx[0]] for idx in todo.values())
        queue = [Queued(name, idx, shares[idx[0]] if shares else 0.0) for name, idx in todo.items()]
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"),
                                   initializer=_init_worker)
        try:
            with progress_bar(total=len(todo), desc=f"run_many ({jobs} jobs)", disable=not progress) as bar:
                inflight: dict = {}  # future -> Queued
                free = 1.0
                while queue or inflight:
                    for item in startable(queue, free, workers - len(inflight)):
                        queue.remove(item)
                        free -= item.share
                        inflight[pool.submit(_worker, configs[item.indices[0]].to_dict(), str(store.root),
                                             all_imports, threads, callbacks, item.share)] = item
                    done, _ = wait(list(inflight), return_when=FIRST_COMPLETED)
                    for fut in done:
                        item = inflight.pop(fut)
                        free += item.share
                        try:
                            result = st.load_run(fut.result())
                            for i in item.indices:
                                runs[i] = result
                        except Exception as exc:
                            again = retry_alone(item, exc, shared=item.share < 1 or bool(inflight))
                            if again is not None:
                                print(retry_note(item, "local"), flush=True)
                                queue.insert(0, again)
                                continue
                            failed(item.indices, exc)
                        bar.update(1)
        except BaseException:  # Ctrl-C above all: leaving a `with pool` would wait for every queued run
            _stop_pool(pool)
            raise
        pool.shutdown(wait=True)
    if errors:
        raise RunManyError(runs, errors, failures)
    return runs  # type: ignore[return-value]
