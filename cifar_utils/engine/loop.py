"""The training loop: one plain function, extended only through callbacks.

:func:`run` trains a :class:`RunConfig` into the store, or loads it if the store already has it
finished, or resumes it from its last checkpoint if it was interrupted.

History: one dict per epoch, ``epoch`` counting from 1::

    epoch, train_loss, train_acc, test_loss, test_acc, [val_loss, val_acc,] lr,
    epoch_seconds, images_per_s

Accuracies are in percent. ``train_*`` are averaged over the epoch's batches as they were trained
(augmented data, model in train mode, weights changing), the usual running figures; ``test_*`` and
``val_*`` are measured after the epoch in eval mode. ``lr`` is the learning rate used during the
epoch (the scheduler steps after it). ``epoch_seconds`` is training plus evaluation wall time;
``images_per_s`` counts training images over training time only.

Reproducibility: the seed fixes model init and the data order/augmentation (the loaders derive
each epoch's randomness from ``(seed, epoch)``); a checkpoint stores model, optimizer, scheduler
and the torch / numpy / python RNG states after every epoch, so on CPU a run killed and resumed
ends with exactly the same losses and accuracies as one never interrupted. On CUDA cuDNN
autotuning (enabled for speed) and atomics make runs close but not bit-identical.

Divergence: a non-finite training loss, a non-finite test/val loss, or a non-finite weight or
buffer (checked after each epoch's evaluation, before anything of that epoch is recorded) ends
the run with status ``"diverged"``; the epochs completed before it stay in the history, the last
good (all-finite) checkpoint is kept and is what ``Run.model`` loads (None if the first epoch
diverged), and :func:`run` returns normally so a notebook can plot what there is.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from cifar_utils.progress import progress_bar

from . import store as st
from .callbacks import Callback, Callbacks, TrainState
from .config import RunConfig
from .datasets import load_for_config
from .batch import SHARE_ENV
from .losses import create_loss
# Re-exported: they lived here before runtime.py; `from cifar_utils.engine.loop import ...` still works.
from .runtime import (autocast, device_name, resolve_channels_last, resolve_device, resolve_precision,  # noqa: F401
                      rng_state, seed_everything, set_rng_state, step_model)

#: How often (in steps) the loop checks the running training loss for NaN/inf (a GPU sync).
NAN_CHECK_EVERY = 50
#: Evaluation batch size (fixed, so that test numbers do not depend on the training batch size).
EVAL_BATCH_SIZE = 512


class Diverged(Exception):
    """Raised inside the loop when the training loss stops being finite."""


# --- evaluation -------------------------------------------------------------------------------

@torch.no_grad()
def evaluate(model: torch.nn.Module, loader: Iterable, loss_fn, device: torch.device,
             precision: str = "fp32") -> tuple[float, float]:
    """Mean loss and accuracy (percent) of ``model`` (in eval mode) over ``loader``.

    The model's train/eval mode is restored afterwards, so a callback may evaluate mid-epoch."""
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), device=device, dtype=_acc_dtype(device))
    correct = torch.zeros((), device=device, dtype=torch.int64)
    seen = 0
    try:
        for x, y in loader:
            with autocast(device, precision):
                out = model(x)
            out = out.float()
            loss_sum += loss_fn(out, y).detach() * y.shape[0]
            correct += (out.argmax(1) == y).sum()
            seen += y.shape[0]
    finally:
        model.train(was_training)
    if seen == 0:
        return float("nan"), float("nan")
    return loss_sum.item() / seen, 100.0 * correct.item() / seen


def _acc_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64


def non_finite_tensors(model: torch.nn.Module) -> list[str]:
    """Names of the model's floating-point parameters and buffers holding NaN or inf (one sync)."""
    named = [(n, t) for n, t in (*model.named_parameters(), *model.named_buffers()) if t.is_floating_point()]
    if not named:
        return []
    finite = torch.stack([torch.isfinite(t.detach()).all() for _, t in named]).cpu()
    return [n for (n, _), ok in zip(named, finite.tolist()) if not ok]


# --- one step, one epoch: what _fit runs and what bench/ times -----------------------------------

@dataclass
class StepSetup:
    """What every training step uses, built once per run (by the loop, or by a benchmark).

    ``step_model`` is what the forward pass calls: ``model`` itself (the default) or its
    ``torch.compile`` wrapper; gradients are clipped on ``model``'s parameters. ``callbacks``'
    ``after_backward`` / ``after_step`` hooks run only when the step is given a :class:`TrainState`.
    """

    model: nn.Module
    optimizer: torch.optim.Optimizer
    loss_fn: Callable[[Tensor, Tensor], Tensor]
    device: torch.device
    precision: str = "fp32"
    step_model: nn.Module | None = None
    grad_clip: float | None = None
    callbacks: Callbacks | None = None
    _after_backward: bool = field(init=False, repr=False)
    _after_step: bool = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.step_model is None:
            self.step_model = self.model
        # Asked once: calling an empty hook list on every step costs time on a fast GPU.
        self._after_backward = self.callbacks is not None and self.callbacks.has("after_backward")
        self._after_step = self.callbacks is not None and self.callbacks.has("after_step")


@dataclass(frozen=True)
class EpochResult:
    """What :func:`train_epoch` measured: mean loss and accuracy (percent) over the ``images``
    trained, and the ``seconds`` it took (ending with one device sync)."""

    loss: float
    acc: float
    images: int
    seconds: float

    @property
    def images_per_s(self) -> float | None:
        return self.images / self.seconds if self.seconds > 0 else None


def train_step(setup: StepSetup, x: Tensor, y: Tensor, state: TrainState | None = None) -> tuple[Tensor, Tensor]:
    """One optimizer step on the batch ``(x, y)``: forward (under the precision's autocast), loss
    in fp32, backward, ``after_backward`` hooks, gradient clipping, ``optimizer.step()``,
    ``after_step`` hooks. Returns the batch's detached mean loss and its number of correct
    predictions, as device tensors (no sync). With a ``state``, counts ``state.step`` and runs the
    hooks with the batch in ``state.x / y / output / loss``."""
    with autocast(setup.device, setup.precision):
        out = setup.step_model(x)
    loss = setup.loss_fn(out.float(), y)
    setup.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if state is not None:
        state.x, state.y, state.output, state.loss = x, y, out, loss
        if setup._after_backward:
            setup.callbacks("after_backward", state)
    if setup.grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(setup.model.parameters(), setup.grad_clip)
    setup.optimizer.step()
    if state is not None:
        state.step += 1
        if setup._after_step:
            setup.callbacks("after_step", state)
    return loss.detach(), (out.detach().argmax(1) == y).sum()


def train_epoch(setup: StepSetup, batches: Iterable, state: TrainState | None = None) -> EpochResult:
    """:func:`train_step` on every ``(x, y)`` of ``batches`` (a loader's epoch, or any iterable of
    device batches, e.g. a benchmark's ``islice``). The running loss is checked for NaN/inf every
    :data:`NAN_CHECK_EVERY` steps and at the end (raising :class:`Diverged`); the result's figures
    cost one sync, at the end."""
    t0 = time.perf_counter()
    loss_sum = torch.zeros((), device=setup.device, dtype=_acc_dtype(setup.device))
    correct = torch.zeros((), device=setup.device, dtype=torch.int64)
    seen = 0
    where = f"epoch {state.epoch + 1}" if state is not None else "the benchmark"
    try:
        for i, (x, y) in enumerate(batches):
            if state is not None:
                state.batch_index = i
            loss, right = train_step(setup, x, y, state)
            n = y.shape[0]
            seen += n
            loss_sum += loss * n
            correct += right
            if (i + 1) % NAN_CHECK_EVERY == 0 and not torch.isfinite(loss_sum):
                raise Diverged(f"non-finite training loss in {where} (by step {i + 1})")
    finally:
        if state is not None:  # do not keep the last batch's tensors alive
            state.x = state.y = state.output = state.loss = None
    if seen == 0:
        raise RuntimeError("the training loader yielded no batches")
    result = EpochResult(loss=loss_sum.item() / seen, acc=100.0 * correct.item() / seen, images=seen,
                         seconds=time.perf_counter() - t0)
    if not math.isfinite(result.loss):
        raise Diverged(f"non-finite training loss ({result.loss}) in {where}")
    return result


# --- the entry point -----------------------------------------------------------------------------

def run(config: RunConfig, *, runs_dir: str | Path | st.RunStore | None = None, callbacks: Iterable[Callback] = (),
        progress: bool = True, resume: bool = True, retrain: bool = False, published: bool = True) -> st.Run:
    """Train ``config`` (or load / resume it) in the store at ``runs_dir``; return the :class:`Run`.

    * A run already **finished** or **diverged** in the store is loaded, not retrained: no hook is
      called, except :meth:`Callback.load_state_dict` with what the stored run's callbacks saved.
    * A run the local store lacks but a bundle of published runs beneath it holds, intact and done
      (``RunStore(..., published=...)`` / ``CIFAR_UTILS_PUBLISHED``, :mod:`cifar_utils.engine.bundle`), is
      loaded from there (with ``published=False``, bundles are not looked at). A damaged bundle run is not
      used (a warning names its files) and the run trains into the local store; nothing is ever written
      into a bundle.
    * An unfinished run (killed, failed, interrupted) **resumes** from its last checkpoint, or,
      with ``resume=False``, its folder is moved aside and training restarts from scratch.
    * ``retrain=True`` moves any existing folder aside (``<name>.old-<timestamp>``) and trains anew.
      Nothing in the store is ever deleted.
    * A **damaged** run (unreadable or edited files, see :mod:`cifar_utils.engine.store`) is
      repaired from its checkpoint when one is intact (loaded if it was done, else resumed), else
      moved aside and trained again; a :class:`~cifar_utils.engine.store.StoreWarning` says which.
    * The decision (load / resume / move aside) and the training happen under one hold of the
      run's lock: a second process asking for the same run meanwhile gets an error, never a
      second training of a run that has just finished.
    * A diverged run returns normally with ``run.status == "diverged"``; other exceptions mark the
      run ``failed`` (``interrupted`` for Ctrl-C) and propagate; calling again resumes it.
    """
    if not isinstance(config, RunConfig):
        raise TypeError(f"run() takes a RunConfig, got {type(config).__name__}")
    config.validate()
    st.check_settings()  # e.g. a bad CIFAR_UTILS_KEEP_CHECKPOINTS: now, not after training
    cbs = Callbacks(callbacks)
    store = runs_dir if isinstance(runs_dir, st.RunStore) else st.RunStore(runs_dir)
    if not published:
        store = store.local_only()
    path = store.path_for(config)
    if not retrain:  # fast path, no lock and no writes: works on a read-only store
        existing = _existing_run(path, config)
        if existing is None:
            existing = store.get_published(config)  # read-only; None if absent or not intact
        if existing is not None and existing.status in st.DONE:
            if cbs.items:
                cbs.load_state_dicts(existing.callback_states)
            return existing

    # Everything from here on is decided and done under one hold of the run's lock, so that no
    # other process can finish (or start) this run between our look at it and our training.
    with st.run_lock(path) as lock:
        existing = _existing_run(path, config)
        if existing is not None and existing.status == st.DAMAGED and not retrain:
            existing = st.repair_run(lock, existing, config)  # None: moved aside, train afresh
        if existing is not None and existing.status in st.DONE and not retrain:
            if cbs.items:
                cbs.load_state_dicts(existing.callback_states)
            return existing
        if existing is not None and (retrain or not resume):
            lock.move_aside()
        return _train(config, path, cbs, progress)


def _existing_run(path: Path, config: RunConfig) -> st.Run | None:
    if not (path / st.CONFIG_FILE).is_file():
        return None
    existing = st.load_run(path)
    if existing.config is not None and existing.config.to_dict() != config.to_dict():
        raise RuntimeError(f"{path} holds a different config (a key collision, or the config format changed); "
                           "use another runs_dir or move that folder away")
    return existing


def _train(config: RunConfig, path: Path, cbs: Callbacks, progress: bool) -> st.Run:
    """Mark the run as running, train it, and mark it failed/interrupted if anything raises."""
    st.remove_stale_temps(path)
    info = st.read_status(path)
    # The try covers writing the run's first files too: a Ctrl-C (or run_many stopping its
    # workers) right as a run starts must not leave it marked "running".
    try:
        if not (path / st.CONFIG_FILE).is_file() or not st.has_checkpoint(path):
            st.atomic_write_json(config.to_dict(), path / st.CONFIG_FILE)
            st.atomic_write_json([], path / st.HISTORY_FILE)
            info = {"created": info.get("created") or st.now_iso(), "sessions": info.get("sessions", 0)}
        for stale in ("error", "diverged_at", "finished", "history_sha256", "model_bytes"):
            info.pop(stale, None)
        info.update(status=st.RUNNING, updated=st.now_iso(), torch_version=torch.__version__,
                    sessions=int(info.get("sessions", 0)) + 1)
        st.atomic_write_json(info, path / st.STATUS_FILE)
        result = _fit(config, path, cbs, progress, info)
    except BaseException as exc:
        info.update(status=st.INTERRUPTED if isinstance(exc, KeyboardInterrupt) else st.FAILED,
                    updated=st.now_iso(), error="".join(traceback.format_exception_only(type(exc), exc)).strip())
        if (path / st.CONFIG_FILE).is_file():  # else there is no run here yet to mark
            with contextlib.suppress(Exception):
                st.atomic_write_json(info, path / st.STATUS_FILE)
        raise
    if result.status in st.DONE:  # checksum the history (checked on load), drop the previous checkpoint
        result.info.update(st.seal_run(path))
    return result


def _fit(config: RunConfig, path: Path, cbs: Callbacks, progress: bool, info: dict) -> st.Run:
    """Build the run, restore its checkpoint if there is one, train the remaining epochs, save it."""
    device = resolve_device(config.device)
    precision = resolve_precision(config.precision, device)
    channels_last = resolve_channels_last(config.channels_last, device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    loaders, model, model_args, optimizer, scheduler, data = _build(config, device, channels_last)
    stepper, compiled = step_model(model, device, config.compile, config.compile_mode)
    setup = StepSetup(model=model, optimizer=optimizer, loss_fn=create_loss(config.loss), device=device,
                      precision=precision, grad_clip=config.grad_clip, callbacks=cbs, step_model=stepper)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    # resume?
    history: list[dict] = []
    start_epoch, step, wall = 0, 0, 0.0
    resumed_from = None
    ckpt_path = path / st.CHECKPOINT_FILE
    ckpt = st.load_checkpoint(ckpt_path)  # the latest intact one (or the previous), else None
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        history = list(ckpt["history"])
        start_epoch, step, wall = int(ckpt["epoch"]), int(ckpt["step"]), float(ckpt["wall_seconds"])
        cbs.load_state_dicts(ckpt.get("callbacks"))
        set_rng_state(ckpt["rng"])
        resumed_from = start_epoch
    info.update(device=str(device), device_name=device_name(device), precision=precision,
                channels_last=channels_last, model_args=model_args, step_mode=compiled, data=data)
    share = os.environ.get(SHARE_ENV)
    if share:
        info["gpu_share"] = float(share)
    if resumed_from is not None:
        info["resumed_from"] = resumed_from
    _save_progress(path, info, history, wall)

    state = TrainState(config=config, model=model, optimizer=optimizer, scheduler=scheduler, loss_fn=setup.loss_fn,
                       loaders=loaders, device=device, path=path, history=history, step=step,
                       resumed_from=resumed_from)
    status, diverged = st.FINISHED, {}
    with progress_bar(total=config.epochs, desc=path.name, disable=not progress) as bar:
        if start_epoch:
            bar.update(start_epoch)
        try:
            cbs("on_fit_start", state)
            for epoch in range(start_epoch, config.epochs):
                if state.stop:
                    break
                record = _run_epoch(setup, state, epoch)
                history.append(record)
                wall += record["epoch_seconds"]
                cbs("on_epoch_end", state, record)
                st.atomic_save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                "scheduler": scheduler.state_dict(), "rng": rng_state(), "epoch": epoch + 1,
                                "step": state.step, "history": history, "wall_seconds": wall,
                                "callbacks": cbs.state_dicts(), "config": config.to_dict()}, ckpt_path)
                _save_progress(path, info, history, wall)
                bar.set_postfix(loss=f"{record['train_loss']:.3f}", acc=f"{record['train_acc']:.1f}",
                                test_err=f"{100.0 - record['test_acc']:.2f}",
                                img_s=f"{record['images_per_s'] or 0:.0f}")
                bar.update(1)
        except Diverged as exc:
            status, diverged = st.DIVERGED, {"diverged_at": len(history) + 1, "error": str(exc)}
            bar.set_postfix_str(f"diverged in epoch {len(history) + 1}")

    state.x = state.y = state.output = state.loss = None
    cbs("on_fit_end", state)
    if status == st.FINISHED:
        st.atomic_save(model.state_dict(), path / st.MODEL_FILE)
    callback_states = cbs.state_dicts()
    if callback_states:
        st.atomic_save(callback_states, path / st.CALLBACKS_FILE)
    _save_progress(path, info, history, wall, status=status, finished=st.now_iso(), **diverged)
    if status == st.FINISHED and not st.keep_checkpoints():
        ckpt_path.unlink(missing_ok=True)  # model.pt holds the final weights
    model.eval()
    return st.Run(config=config, path=path, history=list(history), status=status, wall_seconds=wall,
                  device=info["device_name"], info=dict(info),
                  _model=model if status == st.FINISHED else None, _callback_states=callback_states or None)


def _build(config: RunConfig, device: torch.device, channels_last: bool):
    """The run's loaders, model (with the arguments it was built with), optimizer and scheduler,
    each seeded as the config says, and what data copy was loaded (``status.json``'s ``data``: the
    dataset's name, its ``source`` and the number of images per split)."""
    from cifar_utils.data import make_loaders
    from cifar_utils.models import create_model, model_options
    from cifar_utils.optim import create_optimizer, create_scheduler, optimizer_options

    seed_everything(config.seed)
    ds = load_for_config(config)
    loaders = make_loaders(ds, batch_size=config.batch_size, eval_batch_size=EVAL_BATCH_SIZE, device=device,
                           augment=config.augment, cutout=config.cutout, seed=config.seed,
                           channels_last=channels_last)
    if config.monitor == "val" and loaders.val is None:
        raise ValueError("monitor='val' but the dataset has no validation split (val_size > 0?)")

    model_args: dict[str, Any] = {"num_classes": len(ds.classes)}
    if "in_channels" in model_options(config.model) and "in_channels" not in config.model_options:
        model_args["in_channels"] = int(ds.x_train.shape[1])
    seed_everything(config.seed)
    model = create_model(config.model, **model_args, **dict(config.model_options)).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    accepted = optimizer_options(config.optimizer)
    common = {k: getattr(config, k) for k in ("momentum", "weight_decay") if accepted is None or k in accepted}
    optimizer = create_optimizer(config.optimizer, model, lr=config.lr, **common, **dict(config.optimizer_options))
    scheduler = create_scheduler(config.scheduler, optimizer, epochs=config.epochs, **dict(config.scheduler_options))
    data = {"dataset": ds.name, "source": str(ds.source), "train_images": int(len(ds.y_train)),
            "test_images": int(len(ds.y_test)), "val_images": int(len(ds.y_val)) if ds.y_val is not None else 0,
            "num_classes": len(ds.classes)}
    return loaders, model, model_args, optimizer, scheduler, data


def _run_epoch(setup: StepSetup, state: TrainState, epoch: int) -> dict[str, Any]:
    """Train epoch ``epoch`` (0-based), evaluate, check that nothing diverged, step the scheduler;
    return the epoch's history record."""
    from cifar_utils.optim import scheduler_step

    t0 = time.perf_counter()
    loaders, cbs = state.loaders, setup.callbacks
    state.epoch = epoch
    loaders.train.set_epoch(epoch)
    setup.model.train()
    setup.step_model.train()
    cbs("on_epoch_start", state)
    lr = setup.optimizer.param_groups[0]["lr"]  # after the callbacks, which may set it
    train = train_epoch(setup, loaders.train, state)

    record: dict[str, Any] = {"epoch": epoch + 1, "train_loss": train.loss, "train_acc": train.acc}
    record["test_loss"], record["test_acc"] = evaluate(setup.step_model, loaders.test, setup.loss_fn, setup.device,
                                                       setup.precision)
    if loaders.val is not None:
        record["val_loss"], record["val_acc"] = evaluate(setup.step_model, loaders.val, setup.loss_fn, setup.device,
                                                         setup.precision)
    # The last steps of an epoch may have diverged after the loss checks above: never
    # record, schedule on or checkpoint such an epoch (the previous checkpoint stays).
    bad = [k for k in ("test_loss", "val_loss") if k in record and not math.isfinite(record[k])]
    if bad:
        raise Diverged(f"non-finite {' and '.join(bad)} after epoch {epoch + 1}")
    bad = non_finite_tensors(setup.model)
    if bad:
        shown = ", ".join(bad[:5]) + (f" (+{len(bad) - 5} more)" if len(bad) > 5 else "")
        raise Diverged(f"non-finite weights after epoch {epoch + 1}: {shown}")
    monitored = record["val_acc" if state.config.monitor == "val" else "test_acc"]
    scheduler_step(state.scheduler, 100.0 - monitored)
    record["lr"] = lr
    record["epoch_seconds"] = time.perf_counter() - t0
    record["images_per_s"] = train.images_per_s
    return record


def _save_progress(path: Path, info: dict, history: list[dict], wall: float, **fields: Any) -> None:
    """The one place where a training run writes its ``history.json`` and ``status.json`` (``_train``
    writes the first status and, when something raises, the failed/interrupted one). On CUDA it records the
    run's peak allocated memory so far (``peak_memory_bytes``: what the packing table holds)."""
    if str(info.get("device", "")).startswith("cuda") and torch.cuda.is_initialized():
        info["peak_memory_bytes"] = max(int(info.get("peak_memory_bytes") or 0),
                                        int(torch.cuda.max_memory_allocated(torch.device(info["device"]))))
    from .health import collapse

    st.atomic_write_json(history, path / st.HISTORY_FILE)
    found = collapse(history, num_classes=int((info.get("data") or {}).get("num_classes") or 10))
    info.update(updated=st.now_iso(), wall_seconds=wall, epochs_done=len(history),
                collapse=found.as_dict() if found else None, **fields)
    st.atomic_write_json(info, path / st.STATUS_FILE)
