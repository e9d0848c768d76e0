"""Callbacks: the one way to extend the training loop (fastai-style hooks on a shared state).

The loop calls, in this order::

    on_fit_start(state)                     once, after model/optimizer/data exist (also on resume)
    for each epoch:
        on_epoch_start(state)
        for each batch:
            after_backward(state)           gradients are in p.grad; optimizer.step() not yet run
            after_step(state)               after optimizer.step()
        on_epoch_end(state, record)         record = the epoch's history dict (already appended)
    on_fit_end(state)                       after the last epoch, also when the run diverged

``state`` is the :class:`TrainState`. Setting ``state.stop = True`` ends training after the
current epoch (the run is then saved as finished with fewer epochs). Hooks run on every step, so
on CUDA avoid ``.item()`` in ``after_step`` unless you need it (it waits for the GPU).

A callback that collects data (chapter 5's per-step BatchNorm metrics) can make it survive an
interrupted-and-resumed run by implementing :meth:`Callback.state_dict` /
:meth:`Callback.load_state_dict`: the state is saved in every checkpoint and, when the run finishes,
in ``callbacks.pt`` in the run folder; when a finished run is *loaded from the store instead of
trained*, no hook runs but ``load_state_dict`` is called with the saved state (if the run that was
stored had a callback with the same :attr:`Callback.key`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor, nn


@dataclass
class TrainState:
    """What the hooks see. ``x, y, output, loss`` are the current batch's (on the device)."""

    config: Any
    model: nn.Module                # the model being trained (not the torch.compile wrapper)
    optimizer: Any
    scheduler: Any
    loss_fn: Any
    loaders: Any
    device: Any
    path: Path                      # the run folder: a callback may write its own files there
    history: list[dict] = field(default_factory=list)
    epoch: int = 0                  # 0-based index of the current epoch
    step: int = 0                   # global optimizer steps taken so far (counted across resumes)
    batch_index: int = 0            # index within the epoch
    x: Tensor | None = None
    y: Tensor | None = None
    output: Tensor | None = None
    loss: Tensor | None = None
    stop: bool = False
    resumed_from: int | None = None  # the epoch count restored from a checkpoint, else None


class Callback:
    """Base class: override the hooks you need; all default to doing nothing."""

    #: Key under which :meth:`state_dict` is saved; defaults to the class name.
    key: str | None = None

    def on_fit_start(self, state: TrainState) -> None: ...
    def on_epoch_start(self, state: TrainState) -> None: ...
    def after_backward(self, state: TrainState) -> None: ...
    def after_step(self, state: TrainState) -> None: ...
    def on_epoch_end(self, state: TrainState, record: dict) -> None: ...
    def on_fit_end(self, state: TrainState) -> None: ...

    def state_dict(self) -> Any:
        """Picklable data to save with the run (None: nothing to save)."""
        return None

    def load_state_dict(self, state: Any) -> None:
        """Restore what :meth:`state_dict` returned (on resume, and when a stored run is loaded)."""


def callback_key(cb: Callback) -> str:
    return getattr(cb, "key", None) or type(cb).__name__


class LambdaCallback(Callback):
    """Hooks from plain functions: ``LambdaCallback(after_step=lambda s: ...)``."""

    def __init__(self, **hooks: Any) -> None:
        allowed = ("on_fit_start", "on_epoch_start", "after_backward", "after_step", "on_epoch_end", "on_fit_end")
        unknown = sorted(set(hooks) - set(allowed))
        if unknown:
            raise ValueError(f"unknown hook(s) {', '.join(unknown)}; hooks: {', '.join(allowed)}")
        for name, fn in hooks.items():
            setattr(self, name, fn)


class Callbacks:
    """Fan a hook out to several callbacks, in order."""

    def __init__(self, callbacks) -> None:
        self.items = list(callbacks or ())
        for cb in self.items:
            if not isinstance(cb, Callback):
                raise TypeError(f"callbacks must be Callback instances, got {type(cb).__name__}")

    def __call__(self, hook: str, *args: Any) -> None:
        for cb in self.items:
            getattr(cb, hook)(*args)

    def has(self, hook: str) -> bool:
        return any(getattr(type(cb), hook, None) is not getattr(Callback, hook) or hook in vars(cb)
                   for cb in self.items)

    def state_dicts(self) -> dict[str, Any]:
        out = {}
        for cb in self.items:
            state = cb.state_dict()
            if state is not None:
                out[callback_key(cb)] = state
        return out

    def load_state_dicts(self, states: dict[str, Any] | None) -> None:
        for cb in self.items:
            key = callback_key(cb)
            if states and key in states:
                cb.load_state_dict(states[key])
