"""``run_many(..., backend="ray")``: the runs as Ray tasks, on one machine or a whole cluster.

Ray (an optional extra: ``pip install -e '.[ray]'``) schedules each run as one task asking for
``gpus_per_run`` GPUs (a fraction, e.g. 0.25, lets four small runs share a GPU) and
``cpus_per_run`` CPUs; at most ``jobs`` runs are in flight at once. The driver (the notebook or
script calling ``run_many``) connects to ``ray_address`` (``"auto"``, ``"ray://host:10001"``,
``"host:6379"``...), else to ``$RAY_ADDRESS``, else starts a local Ray instance for the call and
shuts it down afterwards. A Ray session already started in this process (``ray.init(...)``) is
used as it is and left running.

The results store: every task writes into ``runs_dir`` resolved to an absolute path, so that path
must be the same shared filesystem on every node (NFS, Lustre, GPFS, CephFS...); the driver reads
the results back from it. A run finished by any node is then loaded, not retrained, by every later
call. The store's per-run lock is an ``fcntl.flock`` on ``<run>/.lock``: on Linux NFS clients it
becomes an NFS byte-range lock, which holds across nodes as long as the mount has locking (not
``nolock`` / ``local_lock=all``); Lustre locks across nodes with the ``flock`` mount option, per
node only with ``localflock``, not at all with ``noflock`` (the run then fails); with node-local locks two nodes could train the same run at the same time (the
files stay whole, being replaced atomically, but the work is done twice). A lock held by a node
that died is released by the server only after its lease runs out (NFSv4: about 90 s), so a
task that finds its run locked waits up to :data:`LOCK_WAIT_S` before it gives up.

Faults: a task whose worker process dies (killed, out of memory, node lost) is retried by Ray up
to :data:`MAX_RETRIES` times, and the retry resumes the run from its last checkpoint (status.json
``sessions`` counts the attempts). An exception raised by the run itself is not retried: the run
is marked ``failed`` in the store and reported in :class:`RunManyError`; except CUDA out of memory in
a task that shared its GPU (``gpus_per_run`` < 1): that run is submitted again with a whole GPU, once,
and resumes from its checkpoint (see :mod:`cifar_utils.engine.batch`). Ctrl-C cancels the tasks
in flight (a running one is interrupted, marked ``interrupted`` and resumes next time; after
:data:`STOP_GRACE_S` its worker is killed) and submits no more, then ``KeyboardInterrupt``
propagates.

Progress: one line per run when it starts (again when a retry resumes it) and when it ends, and an
overall bar counting finished runs.
"""

from __future__ import annotations

import importlib
import logging
import os
import socket
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cifar_utils.progress import progress_bar

from . import store as st
from .batch import (SHARE_ENV, Queued, RunManyError, auto_imports, per_run_shares, prefetch_data, retry_alone,
                    retry_note, split_done)
from .config import RunConfig

#: How often Ray retries a run whose worker process died (not a run that raised).
MAX_RETRIES = 3
#: Seconds a task waits for a run folder locked by another process (a dead node's NFS lock).
LOCK_WAIT_S = 180.0
#: Seconds cancelled tasks get to mark their runs interrupted before their workers are killed.
STOP_GRACE_S = 10.0
#: Seconds between looks at the runs in flight (for the "start" lines).
POLL_S = 1.0
#: Seconds to wait for a cluster's address to answer (Ray itself would keep trying for minutes).
CONNECT_TIMEOUT_S = 15.0
#: Environment variables of the driver that the tasks get too (data root, checkpoint policy...).
FORWARDED_ENV_PREFIX = "CIFAR_UTILS_"

EXTRA_HINT = "pip install -e '.[ray]'  (or: pip install 'cifar_utils[ray]')"


def import_ray():
    """The ``ray`` module, or an ImportError that says which extra installs it."""
    try:
        import ray
    except ImportError as exc:
        raise ImportError(f"backend='ray' needs Ray, which is not installed here ({exc}); install the "
                          f"optional extra: {EXTRA_HINT}") from exc
    return ray


def _lock_busy(exc: BaseException) -> bool:
    return isinstance(exc, RuntimeError) and "by another process" in str(exc)


def _task(config_dict: dict, runs_dir: str, imports: Sequence[str], threads: int, env: dict[str, str],
          lock_wait_s: float, callbacks: Any = None, share: float = 0.0) -> dict[str, Any]:
    """The body of one Ray task: train (or resume, or load) one run into the shared store."""
    os.environ.update(env)
    os.environ[SHARE_ENV] = f"{share:g}"
    for module in imports:
        importlib.import_module(module)
    import torch

    torch.set_num_threads(max(1, threads))
    from .loop import run

    config = RunConfig.from_dict(config_dict)
    deadline = time.monotonic() + lock_wait_s
    while True:
        try:
            result = run(config, runs_dir=runs_dir, progress=False, published=False,
                         callbacks=callbacks(config) if callbacks is not None else ())
            break
        except RuntimeError as exc:
            if not _lock_busy(exc) or time.monotonic() > deadline:
                raise
            time.sleep(5.0)
    return {"path": str(result.path), "host": socket.gethostname(), "pid": os.getpid()}


def resolve_resources(configs: Sequence[RunConfig], cluster: dict[str, float], gpus_per_run: float | None,
                      cpus_per_run: float | None) -> tuple[float, float]:
    """``(gpus, cpus)`` each task asks for, checked against the cluster's totals.

    ``gpus_per_run=None``: 1 when the cluster has GPUs and a config may use one (device ``auto``
    or ``cuda``), else 0. ``cpus_per_run=None``: 1."""
    total_gpus, total_cpus = float(cluster.get("GPU", 0)), float(cluster.get("CPU", 0))
    wants_cuda = any(str(c.device).startswith("cuda") for c in configs)
    if gpus_per_run is None:
        gpus_per_run = 1.0 if total_gpus > 0 and (wants_cuda or any(c.device == "auto" for c in configs)) else 0.0
    cpus_per_run = 1.0 if cpus_per_run is None else cpus_per_run
    gpus, cpus = float(gpus_per_run), float(cpus_per_run)
    problems = []
    if gpus < 0 or (gpus > 1 and not gpus.is_integer()):
        problems.append(f"gpus_per_run must be a fraction in [0, 1] or a whole number, got {gpus_per_run!r}")
    if cpus <= 0:
        problems.append(f"cpus_per_run must be > 0, got {cpus_per_run!r}")
    if gpus > total_gpus:
        problems.append(f"gpus_per_run={gpus:g} but the Ray cluster has {total_gpus:g} GPUs in all "
                        "(a task asking for more would wait forever)")
    if cpus > total_cpus:
        problems.append(f"cpus_per_run={cpus:g} but the Ray cluster has {total_cpus:g} CPUs in all")
    explicit = sorted({c.device for c in configs if str(c.device).startswith("cuda:")})
    if explicit:
        problems.append(f"device {', '.join(explicit)}: with backend='ray' Ray picks each run's GPU; "
                        "use device 'cuda' or 'auto'")
    if wants_cuda and gpus == 0:
        problems.append("configs ask for device 'cuda' but gpus_per_run is 0 (Ray would hide the GPUs)")
    if problems:
        raise ValueError("backend='ray': " + "; ".join(problems))
    return gpus, cpus


def _check_reachable(address: str, timeout: float | None = None) -> None:
    """Fail fast, with a clear message, when ``host:port`` (or ``ray://host:port``) does not
    answer within :data:`CONNECT_TIMEOUT_S`: ``ray.init`` would retry for minutes."""
    timeout = CONNECT_TIMEOUT_S if timeout is None else timeout
    rest = address.split("://", 1)[-1]
    host, _, port = rest.rpartition(":")
    if not host or not port.isdigit():
        return  # "auto" and the like: Ray resolves them (and says when there is no cluster)
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        raise RuntimeError(f"backend='ray': no Ray cluster answers at {address!r} ({exc}; waited {timeout:g} s); "
                           "start one (`ray start --head`) or fix ray_address / $RAY_ADDRESS") from None


def _connect(ray, ray_address: str | None) -> bool:
    """Connect this process to Ray; True when this call started (and must shut down) the session."""
    if ray.is_initialized():
        return False
    address = ray_address or os.environ.get("RAY_ADDRESS") or "local"
    kwargs: dict[str, Any] = {"address": address, "logging_level": logging.WARNING}
    if address == "local":
        kwargs["include_dashboard"] = False
    else:
        _check_reachable(address)
    try:
        ray.init(**kwargs)
    except Exception as exc:
        where = "start a local Ray instance" if address == "local" else f"connect to the Ray cluster at {address!r}"
        raise RuntimeError(f"backend='ray': could not {where}: {type(exc).__name__}: {exc}"
                           + ("" if address == "local" else "; is it up (`ray status`)?")) from exc
    return True


def _status(path: Path) -> dict:
    try:
        return st.read_json(path / st.STATUS_FILE, {}) or {}
    except ValueError:  # being replaced right now: look again next time
        return {}


def _error_text(exc: BaseException) -> str:
    import traceback

    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


def _cancel(ray, refs: list, grace: float = STOP_GRACE_S) -> None:
    """Interrupt the tasks in flight (their runs are marked interrupted), kill those still going
    after ``grace`` seconds."""
    for ref in refs:
        try:
            ray.cancel(ref, force=False)
        except Exception:  # already finished, or the cluster is gone
            pass
    left = list(refs)
    if left:
        try:
            _, left = ray.wait(left, num_returns=len(left), timeout=grace)
        except Exception:
            pass
    for ref in left:
        try:
            ray.cancel(ref, force=True)
        except Exception:
            pass


def run_many_ray(configs: Sequence[RunConfig], *, jobs: int, runs_dir: str | Path | None, progress: bool,
                 imports: Sequence[str], ray_address: str | None = None, gpus_per_run: float | None = None,
                 cpus_per_run: float | None = None, callbacks: Any = None) -> list[st.Run]:
    """:func:`cifar_utils.engine.run_many` with ``backend="ray"`` (see the module doc); ``configs``
    are validated RunConfigs."""
    published = runs_dir.published if isinstance(runs_dir, st.RunStore) else None
    root = runs_dir.root if isinstance(runs_dir, st.RunStore) else runs_dir
    store = st.RunStore(Path(root if root is not None else st.RunStore().root).resolve(), published=published)
    per_run = per_run_shares(configs, gpus_per_run) if not isinstance(gpus_per_run, (int, float)) else None
    runs, todo = split_done(store, configs, callbacks)
    errors: dict[int, str] = {}
    if todo:  # Ray is needed only to train: a finished store loads without it
        ray = import_ray()
        prefetch_data(configs[idx[0]] for idx in todo.values())
        owned = _connect(ray, ray_address)
        try:
            _run_tasks(ray, configs, todo, store, runs, errors, jobs=jobs, progress=progress,
                       imports=list(dict.fromkeys([*imports, *auto_imports(configs)])),
                       gpus_per_run=gpus_per_run, cpus_per_run=cpus_per_run, callbacks=callbacks, per_run=per_run)
        finally:
            if owned:
                ray.shutdown()
    if errors:
        raise RunManyError(runs, errors)
    return runs  # type: ignore[return-value]


def _run_tasks(ray, configs, todo, store, runs, errors, *, jobs, progress, imports, gpus_per_run,
               cpus_per_run, callbacks=None, per_run=None) -> None:
    """``per_run``: one GPU share per config (``gpus_per_run`` given per config), else None."""
    most = max((per_run[idx[0]] for idx in todo.values()), default=None) if per_run else gpus_per_run
    gpus, cpus = resolve_resources([configs[idx[0]] for idx in todo.values()], ray.cluster_resources(),
                                   most, cpus_per_run)
    env = {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_ENV_PREFIX)}
    remote = ray.remote(_task)
    options = dict(num_cpus=cpus, max_retries=MAX_RETRIES, retry_exceptions=False)
    queue = deque(Queued(name, idx, per_run[idx[0]] if per_run else gpus) for name, idx in todo.items())
    inflight: dict[Any, tuple[Queued, int]] = {}  # ref -> the run, sessions seen
    with progress_bar(total=len(todo), desc=f"run_many (ray, {gpus:g} GPU + {cpus:g} CPU per run)",
                      disable=not progress) as bar:
        say = getattr(bar, "write", None) or (lambda line: print(line, flush=True))
        if not progress:
            say = lambda line: None  # noqa: E731
        try:
            while queue or inflight:
                while queue and len(inflight) < jobs:
                    item = queue.popleft()
                    name, config = item.name, configs[item.indices[0]]
                    seen = int(_status(store.root / name).get("sessions", 0))
                    ref = remote.options(name=f"run {name}", num_gpus=item.share, **options).remote(
                        config.to_dict(), str(store.root), imports, int(cpus), env, LOCK_WAIT_S, callbacks, item.share)
                    inflight[ref] = (item, seen)
                ready, _ = ray.wait(list(inflight), num_returns=1, timeout=POLL_S)
                for ref, (item, seen) in list(inflight.items()):  # runs that (re)started
                    info = _status(store.root / item.name)
                    sessions = int(info.get("sessions", 0))
                    if sessions > seen and info.get("status") == st.RUNNING:
                        resumed = f", resumed from epoch {info['resumed_from']}" if info.get("resumed_from") else ""
                        on = f" on {info['device_name']}" if info.get("device_name") else ""
                        say(f"[ray] start  {item.name} (session {sessions}{resumed}){on}")
                        inflight[ref] = (item, sessions)
                for ref in ready:
                    item, _ = inflight.pop(ref)
                    name, indices = item.name, item.indices
                    try:
                        done = ray.get(ref, timeout=60)
                        result = st.load_run(done["path"])
                        for i in indices:
                            runs[i] = result
                        best = result.best_test_error
                        say(f"[ray] done   {name}: {result.status}, {len(result.history)} epochs"
                            + (f", best test error {best:.2f}%" if best is not None else "")
                            + f" ({done['host']}, pid {done['pid']})")
                    except Exception as exc:
                        again = retry_alone(item, exc, shared=0 < item.share < 1)
                        if again is not None and again.share <= ray.cluster_resources().get("GPU", 0):
                            print(retry_note(item, "ray"), flush=True)
                            queue.appendleft(again)
                            continue
                        text = _error_text(exc)
                        for i in indices:
                            errors[i] = text
                        last = text.strip().splitlines()[-1] if text.strip() else type(exc).__name__
                        say(f"[ray] FAILED {name}: {last}")
                    bar.update(1)
        except BaseException:  # Ctrl-C above all: stop what is running, submit nothing more
            _cancel(ray, list(inflight))
            raise
