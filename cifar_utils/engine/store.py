"""The results store: one folder per run, readable without the engine (JSON) and crash-safe.

``<root>/<model>-<key8>/`` holds

=================  ===========================================================================
``config.json``    the :class:`RunConfig` (``RunConfig.from_dict`` reads it back)
``history.json``   a JSON list of per-epoch dicts (see :mod:`cifar_utils.engine.loop`)
``status.json``    ``status`` ("running", "finished", "diverged", "failed", "interrupted"),
                   ``created`` / ``updated`` / ``finished`` timestamps (UTC ISO), ``device``,
                   ``device_name``, ``torch_version``, ``wall_seconds`` (training time summed
                   over every session that worked on the run), ``epochs_done``, ``model_args``,
                   and ``error`` / ``diverged_at`` when relevant
``checkpoint.pt``  model, optimizer, scheduler, RNG states, epoch, history, callback states;
                   rewritten after every epoch
``model.pt``       the final weights (a plain ``state_dict``), written when the run finishes
``callbacks.pt``   saved callback states (only if a callback had any)
=================  ===========================================================================

JSON files are strict JSON: a non-finite number (a NaN or infinite loss) is written as ``null``.

Every file is written atomically: a temporary file in the same folder, flushed and fsynced, then
``os.replace``-d over the old one. A crash or kill mid-write leaves the previous version intact
(the stray ``.<name>.*.tmp`` file is removed the next time the run is opened for training).

The root is ``RunStore(root)``, else the ``CIFAR_UTILS_RUNS`` environment variable, else
``./runs``.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import RunConfig

ENV_VAR = "CIFAR_UTILS_RUNS"
RUNNING, FINISHED, DIVERGED, FAILED, INTERRUPTED = "running", "finished", "diverged", "failed", "interrupted"
#: Statuses of runs that are complete: asking for them again loads them instead of training.
DONE = (FINISHED, DIVERGED)

CONFIG_FILE, HISTORY_FILE, STATUS_FILE = "config.json", "history.json", "status.json"
CHECKPOINT_FILE, MODEL_FILE, CALLBACKS_FILE = "checkpoint.pt", "model.pt", "callbacks.pt"
KEEP_CHECKPOINTS_VAR = "CIFAR_UTILS_KEEP_CHECKPOINTS"


def keep_checkpoints() -> bool:
    """Whether a finished run keeps ``checkpoint.pt`` (weights + optimizer state, to train on from
    it) beside ``model.pt``. Default yes; ``CIFAR_UTILS_KEEP_CHECKPOINTS=0`` saves the disk space
    (about two thirds of a run folder with SGD momentum). Unfinished runs always keep theirs."""
    value = os.environ.get(KEEP_CHECKPOINTS_VAR, "1").strip().lower()
    if value in ("1", "true", "yes", ""):
        return True
    if value in ("0", "false", "no"):
        return False
    raise ValueError(f"{KEEP_CHECKPOINTS_VAR}={value!r}: use 1 (keep, the default) or 0 (drop once finished)")


# --- atomic files ----------------------------------------------------------------------------

def _fsync_dir(path: Path) -> None:
    if os.name != "posix":
        return
    with suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write(path: str | Path, write: Callable[[Any], None]) -> None:
    """Call ``write(binary_file)`` on a temp file next to ``path``, fsync it, then replace ``path``."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def atomic_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` made atomic."""
    import torch

    atomic_write(path, lambda f: torch.save(obj, f))


def json_safe(data: Any) -> Any:
    """A copy of ``data`` with every non-finite float (NaN, inf) replaced by None, recursively,
    so that it dumps as strict JSON (``null``) that any parser reads."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {k: json_safe(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [json_safe(v) for v in data]
    return data


def atomic_write_json(data: Any, path: str | Path) -> None:
    """Write ``data`` as strict JSON (non-finite floats become ``null``), atomically."""
    text = json.dumps(json_safe(data), indent=1, sort_keys=False, default=str, allow_nan=False)
    atomic_write(path, lambda f: f.write(text.encode()))


def remove_stale_temps(folder: Path) -> None:
    for tmp in folder.glob(".*.tmp"):
        with suppress(OSError):
            tmp.unlink()


def read_json(path: Path, default: Any = None) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        return default


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def move_aside(path: Path) -> Path:
    """Rename ``path`` to ``<path>.old-<UTC timestamp>`` (never deletes anything)."""
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S%f")
    target = path.with_name(f"{path.name}.old-{stamp}")
    os.replace(path, target)
    return target


@contextmanager
def run_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on a run folder while training it (POSIX; a no-op elsewhere)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    fd = os.open(path / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RuntimeError(f"{path} is being trained by another process right now; "
                               "wait for it (or use another runs_dir)") from None
        yield
    finally:
        os.close(fd)  # closing releases the lock


# --- runs ------------------------------------------------------------------------------------

@dataclass
class Run:
    """A stored (or just trained) run. ``model`` loads the weights on first access."""

    config: RunConfig
    path: Path
    history: list[dict] = field(default_factory=list)
    status: str = RUNNING
    wall_seconds: float = 0.0
    device: str | None = None
    info: dict = field(default_factory=dict, repr=False)  # status.json as read
    _model: Any = field(default=None, repr=False)
    _callback_states: Any = field(default=None, repr=False)

    def __repr__(self) -> str:
        best = self.best_test_error
        best = f"{best:.2f}%" if best is not None else "-"
        return (f"Run({self.name!r}, status={self.status!r}, epochs={len(self.history)}/{self.config.epochs}, "
                f"best_test_error={best}, path={str(self.path)!r})")

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def callback_states(self) -> dict | None:
        """What callbacks with a ``state_dict`` saved, by callback key (None if nothing)."""
        if self._callback_states is None:
            self._callback_states = load_callback_states(self.path)
        return self._callback_states

    @property
    def model(self):
        """The trained network (``model.pt``; a diverged run gives its last good checkpoint), or None."""
        if self._model is None:
            self._model = self.load_model()
        return self._model

    @model.setter
    def model(self, value) -> None:
        self._model = value

    def load_model(self, device: str | None = None):
        """Rebuild the network and load its stored weights onto ``device`` (default: the config's
        device resolved on this machine, CPU when that is CUDA and there is none). None when no
        weights were stored."""
        import torch

        from cifar_utils.models import create_model

        from .runtime import resolve_device

        state = None
        if (self.path / MODEL_FILE).is_file():
            state = torch.load(self.path / MODEL_FILE, map_location="cpu", weights_only=True)
        elif (self.path / CHECKPOINT_FILE).is_file():
            state = torch.load(self.path / CHECKPOINT_FILE, map_location="cpu", weights_only=False)["model"]
        if state is None:
            return None
        args = dict(self.info.get("model_args") or {})
        model = create_model(self.config.model, **args, **dict(self.config.model_options))
        model.load_state_dict(state)
        target = resolve_device(device or self.config.device)
        if device is None and target.type == "cuda" and not torch.cuda.is_available():
            target = torch.device("cpu")  # trained on a GPU, looked at on a CPU machine
        return model.to(target).eval()

    def history_frame(self):
        """The history as a pandas DataFrame indexed by epoch."""
        import pandas as pd

        frame = pd.DataFrame(self.history)
        return frame.set_index("epoch") if "epoch" in frame else frame

    @property
    def best_test_error(self) -> float | None:
        """Lowest test error over the epochs, in percent (None before the first epoch)."""
        accs = [r["test_acc"] for r in self.history if r.get("test_acc") is not None]
        return 100.0 - max(accs) if accs else None

    @property
    def final_test_error(self) -> float | None:
        """The last epoch's test error, in percent."""
        accs = [r["test_acc"] for r in self.history if r.get("test_acc") is not None]
        return 100.0 - accs[-1] if accs else None

    def summary(self) -> dict[str, Any]:
        """One flat row: name, status, epochs, errors, seconds, and the config fields."""
        return {"name": self.name, "status": self.status, "epochs_done": len(self.history),
                "best_test_error": self.best_test_error, "final_test_error": self.final_test_error,
                "wall_seconds": self.wall_seconds, "device": self.device, **self.config.to_dict()}


def load_run(path: str | Path) -> Run:
    """Read a run folder (no training, no weights loaded until ``Run.model`` is used)."""
    path = Path(path)
    data = read_json(path / CONFIG_FILE)
    if data is None:
        raise FileNotFoundError(f"{path} is not a run folder (no {CONFIG_FILE})")
    info = read_json(path / STATUS_FILE, {}) or {}
    return Run(config=RunConfig.from_dict(data), path=path, history=read_json(path / HISTORY_FILE, []) or [],
               status=info.get("status", RUNNING), wall_seconds=float(info.get("wall_seconds") or 0.0),
               device=info.get("device_name") or info.get("device"), info=info)


def load_callback_states(path: str | Path) -> dict | None:
    """What the run's callbacks saved (``callbacks.pt``), or None."""
    file = Path(path) / CALLBACKS_FILE
    if not file.is_file():
        return None
    import torch

    return torch.load(file, map_location="cpu", weights_only=False)  # written by this package


class RunStore:
    """A folder of runs (see the module doc for the layout)."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root if root is not None else os.environ.get(ENV_VAR) or "runs")

    def __repr__(self) -> str:
        return f"RunStore({str(self.root)!r})"

    def path_for(self, config: RunConfig) -> Path:
        return self.root / config.name

    def get(self, config: RunConfig) -> Run | None:
        """The stored run for ``config`` (any status), or None."""
        path = self.path_for(config)
        return load_run(path) if (path / CONFIG_FILE).is_file() else None

    def list(self, status: str | None = None) -> list[Run]:
        """All runs in the store (folders moved aside by ``retrain`` are skipped), by name."""
        if not self.root.is_dir():
            return []
        runs = []
        for path in sorted(self.root.iterdir()):
            if path.is_dir() and ".old-" not in path.name and (path / CONFIG_FILE).is_file():
                run = load_run(path)
                if status is None or run.status == status:
                    runs.append(run)
        return runs

    def frame(self, status: str | None = None):
        """:meth:`list` as a pandas DataFrame, one row per run (:meth:`Run.summary`)."""
        import pandas as pd

        return pd.DataFrame([r.summary() for r in self.list(status)])
