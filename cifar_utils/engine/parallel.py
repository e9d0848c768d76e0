"""``run_many``: several runs at once, each in its own process.

Worker processes are started with the ``spawn`` method (safe with CUDA and in notebooks); each
imports ``cifar_utils`` afresh, so a model, optimizer or dataset registered *outside* the
package (in a notebook or a test module) does not exist there. Name the module that registers it
in ``imports=`` (it must be importable, i.e. not a notebook); modules that registered optimizers
or engine datasets the configs use are added automatically.

Failures: every config is attempted; one that raises does not stop or lose the others (their
results are in the store as soon as they finish). When all are done, if any failed,
:class:`RunManyError` is raised; its ``runs`` holds the :class:`Run` of every config (None for
the failed ones, which keep status ``failed`` in the store) and ``errors`` maps config index to
the error text. Diverged runs are not failures.
"""

from __future__ import annotations

import importlib
import multiprocessing as mp
import os
import sys
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from cifar_utils.progress import progress_bar

from . import store as st
from .config import RunConfig


class RunManyError(RuntimeError):
    """Some configs of :func:`run_many` failed; ``runs`` has the others' results."""

    def __init__(self, runs: list, errors: dict[int, str]) -> None:
        self.runs, self.errors = runs, errors
        lines = [f"  [{i}] {err.strip().splitlines()[-1] if err.strip() else err}" for i, err in errors.items()]
        super().__init__(f"{len(errors)} of {len(runs)} runs failed:\n" + "\n".join(lines))


def _worker(config_dict: dict, runs_dir: str, imports: Sequence[str], threads: int | None) -> str:
    for module in imports:
        importlib.import_module(module)
    if threads:
        import torch

        torch.set_num_threads(threads)
    from .loop import run

    return str(run(RunConfig.from_dict(config_dict), runs_dir=runs_dir, progress=False).path)


def _auto_imports(configs: Iterable[RunConfig]) -> list[str]:
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


def run_many(configs: Iterable[RunConfig], *, jobs: int = 1, runs_dir: str | Path | None = None,
             progress: bool = True, imports: Sequence[str] = ()) -> list[st.Run]:
    """Train (or load) every config; return their runs in order.

    ``jobs=1`` (or a single run left to train) runs them one after the other in this process,
    with per-run progress bars; ``jobs > 1`` uses up to that many spawned worker processes, all
    on the configs' device, with one bar counting finished runs. Runs already finished in the
    store are loaded without starting a process. Duplicate configs are trained once. Unless a
    config names a CUDA device explicitly, each worker gets ``cpu_count // workers`` torch CPU
    threads (so workers do not fight over the cores). Callbacks are not supported here: use
    :func:`run` for runs that need them.
    """
    from .loop import run

    configs = list(configs)
    for c in configs:
        if not isinstance(c, RunConfig):
            raise TypeError(f"run_many takes RunConfigs, got {type(c).__name__}")
        c.validate()
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    store = st.RunStore(runs_dir)
    runs: list[st.Run | None] = [None] * len(configs)
    errors: dict[int, str] = {}

    todo: dict[str, list[int]] = {}  # run name -> indices of configs with that run
    for i, c in enumerate(configs):
        existing = store.get(c)
        if existing is not None and existing.status in st.DONE:
            runs[i] = existing
        else:
            todo.setdefault(c.name, []).append(i)

    if jobs == 1 or len(todo) == 1:
        for indices in todo.values():
            try:
                result = run(configs[indices[0]], runs_dir=store.root, progress=progress)
                for i in indices:
                    runs[i] = result
            except Exception as exc:  # keep going; report at the end
                import traceback

                for i in indices:
                    errors[i] = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    elif todo:
        all_imports = list(dict.fromkeys([*imports, *_auto_imports(configs)]))
        threads = None
        if not any(str(c.device).startswith("cuda") for c in configs):
            threads = max(1, (os.cpu_count() or 1) // min(jobs, len(todo)))
        ctx = mp.get_context("spawn")
        with ProcessPoolExecutor(max_workers=min(jobs, len(todo)), mp_context=ctx) as pool, \
                progress_bar(total=len(todo), desc=f"run_many ({jobs} jobs)", disable=not progress) as bar:
            futures = {pool.submit(_worker, configs[idx[0]].to_dict(), str(store.root), all_imports, threads): idx
                       for idx in todo.values()}
            for fut in as_completed(futures):
                indices = futures[fut]
                try:
                    result = st.load_run(fut.result())
                    for i in indices:
                        runs[i] = result
                except Exception as exc:
                    import traceback

                    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
                    for i in indices:
                        errors[i] = text
                bar.update(1)
    if errors:
        raise RunManyError(runs, errors)
    return runs  # type: ignore[return-value]
