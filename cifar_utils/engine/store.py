"""The results store: one folder per run, readable without the engine (JSON) and crash-safe.

``<root>/<model>-<key8>/`` holds

======================  ======================================================================
``config.json``         the :class:`RunConfig` (``RunConfig.from_dict`` reads it back)
``history.json``        a JSON list of per-epoch dicts (see ``cifar_utils.engine.loop``)
``status.json``         ``status`` ("running", "finished", "diverged", "failed", "interrupted"),
                        ``created`` / ``updated`` / ``finished`` timestamps (UTC ISO), ``device``,
                        ``device_name``, ``torch_version``, ``wall_seconds`` (training time
                        summed over every session that worked on the run), ``epochs_done``,
                        ``model_args``, ``data`` (the data copy loaded: dataset, ``source``, images
                        per split), ``error`` / ``diverged_at`` when relevant, and, once the
                        run is done, ``history_sha256`` / ``model_bytes`` (see "Damage" below)
``checkpoint.pt``       model, optimizer, scheduler, RNG states, epoch, history, callback states;
                        rewritten after every epoch; removed when the run finishes unless
                        ``CIFAR_UTILS_KEEP_CHECKPOINTS=1`` (a diverged run keeps its last good one)
``checkpoint.prev.pt``  the checkpoint before the latest, kept while the run trains (a fallback
                        if the latest is found damaged); removed when the run is done
``model.pt``            the final weights (a plain ``state_dict``), written when the run finishes
``callbacks.pt``        saved callback states (only if a callback had any)
``.lock``               locked (``flock``) by the process training the run
======================  ======================================================================

JSON files are strict JSON: a non-finite number (a NaN or infinite loss) is written as ``null``.

Every file is written atomically: a temporary file in the same folder, flushed and fsynced, then
``os.replace``-d over the old one. A crash or kill mid-write leaves the previous version intact
(the stray ``.<name>.*.tmp`` file is removed the next time the run is opened for training).
Files get the usual permissions for the process's umask (0644 under umask 022), so a shared
``runs/`` folder stays readable by the group.

Damage (a file truncated, edited or overwritten by something else): :func:`load_run` never
raises a bare JSON/Unicode error. A run with an unreadable or invalid ``config.json`` /
``status.json`` / ``history.json``, a history that no longer matches the checksum recorded when
the run finished, or a ``model.pt`` of the wrong size is returned with status ``"damaged"``,
its problems (each naming the file) in ``Run.problems``, and a :class:`StoreWarning`. Asking
:func:`cifar_utils.engine.run` for such a run repairs it from its checkpoint when one is intact,
else moves the folder aside and trains it again, saying which (:func:`repair_run`). Runs finished
before checksums were recorded load as before (unverified). A run whose status says
``"running"`` but whose lock no process holds (its process was killed) is reported as
``"interrupted"``.

The root is ``RunStore(root)``, else the ``CIFAR_UTILS_RUNS`` environment variable, else
``./runs``. Beneath it, read-only, a store may read bundles of published runs (``RunStore(root,
published=[...])``, else ``CIFAR_UTILS_PUBLISHED``): see :mod:`cifar_utils.engine.bundle`.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import os
import shutil
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import RunConfig

ENV_VAR = "CIFAR_UTILS_RUNS"
RUNNING, FINISHED, DIVERGED, FAILED, INTERRUPTED = "running", "finished", "diverged", "failed", "interrupted"
#: Status of a run whose files are unreadable or inconsistent (never written to status.json).
DAMAGED = "damaged"
#: The statuses status.json may hold.
STATUSES = (RUNNING, FINISHED, DIVERGED, FAILED, INTERRUPTED)
#: Statuses of runs that are complete: asking for them again loads them instead of training.
DONE = (FINISHED, DIVERGED)

CONFIG_FILE, HISTORY_FILE, STATUS_FILE = "config.json", "history.json", "status.json"
CHECKPOINT_FILE, MODEL_FILE, CALLBACKS_FILE = "checkpoint.pt", "model.pt", "callbacks.pt"
PREVIOUS_CHECKPOINT_FILE = "checkpoint.prev.pt"
LOCK_FILE = ".lock"
KEEP_CHECKPOINTS_VAR = "CIFAR_UTILS_KEEP_CHECKPOINTS"
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")
#: Seconds run_lock retries a lock held by someone else (a reader's momentary probe) before failing.
LOCK_WAIT_S = 1.0
#: Keys every checkpoint written by the loop has.
CHECKPOINT_KEYS = ("model", "optimizer", "scheduler", "rng", "epoch", "step", "history", "wall_seconds")


class StoreWarning(UserWarning):
    """Something in the store is damaged, and what was done about it."""


class DamagedFileError(ValueError):
    """A store file exists but cannot be read (truncated, not UTF-8, not JSON, not a torch file).
    ``path`` names it, ``problem`` says what is wrong."""

    def __init__(self, path: str | os.PathLike, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path, self.problem = str(path), problem


def keep_checkpoints() -> bool:
    """Whether a finished run keeps ``checkpoint.pt`` (weights + optimizer state, to train on from
    it) beside ``model.pt``. Default no: the checkpoint is about two thirds of a run folder with
    SGD momentum, and ``model.pt`` holds the final weights. ``CIFAR_UTILS_KEEP_CHECKPOINTS=1``
    (or on/true/yes) keeps it; 0/off/false/no is the default. Unfinished runs always keep theirs
    (kill and resume work either way)."""
    value = os.environ.get(KEEP_CHECKPOINTS_VAR, "").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE or value == "":
        return False
    raise ValueError(f"{KEEP_CHECKPOINTS_VAR}={value!r}: use 1/on/true/yes (a finished run keeps its "
                     f"checkpoint) or 0/off/false/no (it is removed once the run finishes, the default)")


def check_settings() -> None:
    """Raise now, before any training, if a store setting from the environment is invalid."""
    keep_checkpoints()


# --- atomic files ----------------------------------------------------------------------------

_umask_lock = threading.Lock()


def current_umask() -> int:
    """The process's umask, read without changing it where the OS allows (Linux /proc), else by
    setting and restoring it under a lock."""
    with suppress(OSError, ValueError):
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    with _umask_lock:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def _fsync_dir(path: Path) -> None:
    if os.name != "posix":
        return
    with suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write(path: str | Path, write: Callable[[Any], None],
                 before_replace: Callable[[], None] | None = None) -> None:
    """Call ``write(binary_file)`` on a temp file next to ``path``, fsync it, then replace ``path``.
    ``before_replace`` runs once the new content is safely on disk, just before the replace. The
    file gets mode ``0o666 & ~umask`` (``mkstemp`` alone would make it 0600)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with suppress(OSError):  # e.g. a filesystem without modes
            os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if before_replace is not None:
            before_replace()
        os.replace(tmp, path)
    except BaseException:
        with suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def previous_path(path: Path) -> Path:
    """Where :func:`atomic_save` keeps the file it replaces: ``checkpoint.pt`` -> ``checkpoint.prev.pt``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def _keep_copy(src: Path, dst: Path) -> None:
    """Make ``dst`` hold what ``src`` holds now (a hard link, else a copy), atomically."""
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.link.tmp")
    with suppress(FileNotFoundError):
        tmp.unlink()
    try:
        os.link(src, tmp)
    except OSError:  # no hard links here
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def atomic_save(obj: Any, path: str | Path, keep_previous: bool | None = None) -> None:
    """``torch.save`` made atomic. With ``keep_previous`` (default: for ``checkpoint.pt``) the
    file being replaced stays as ``<stem>.prev<suffix>`` until the next save, so that a damaged
    latest checkpoint can fall back to it (:func:`load_checkpoint`); ``path`` itself exists at
    every moment."""
    import torch

    path = Path(path)
    if keep_previous is None:
        keep_previous = path.name == CHECKPOINT_FILE

    def keep() -> None:
        if path.is_file():
            _keep_copy(path, previous_path(path))

    atomic_write(path, lambda f: torch.save(obj, f), keep if keep_previous else None)


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
    """Parse a JSON file; a missing file gives ``default``. A file that is not UTF-8 JSON raises
    :class:`DamagedFileError` naming it (not a bare ``JSONDecodeError`` / ``UnicodeDecodeError``)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return default
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DamagedFileError(path, f"not UTF-8 text (byte {e.start} is {raw[e.start:e.start + 1]!r})") from None
    if not text.strip():
        raise DamagedFileError(path, "empty file")
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise DamagedFileError(path, f"not valid JSON ({e.msg} at line {e.lineno} column {e.colno}; "
                                     f"{len(raw)} bytes, truncated?)") from None


def read_status(path: Path) -> dict:
    """A run folder's status.json as a dict; {} when it is missing or damaged."""
    try:
        info = read_json(Path(path) / STATUS_FILE, {})
    except DamagedFileError:
        return {}
    return info if isinstance(info, dict) else {}


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _stamp() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S%f")


def move_aside(path: Path) -> Path:
    """Rename ``path`` to ``<path>.old-<UTC timestamp>`` (never deletes anything)."""
    path = Path(path)
    target = path.with_name(f"{path.name}.old-{_stamp()}")
    os.replace(path, target)
    return target


def _move_file_aside(file: Path) -> Path:
    """Rename a damaged file to ``<name>.damaged-<UTC timestamp>`` (kept, never deleted)."""
    target = file.with_name(f"{file.name}.damaged-{_stamp()}")
    os.replace(file, target)
    return target


def _warn(message: str) -> None:
    warnings.warn(message, StoreWarning, stacklevel=3)


# --- locks -----------------------------------------------------------------------------------

class RunLock:
    """An exclusive ``flock`` on ``<run folder>/.lock``, held while a run is decided on and
    trained (POSIX; a no-op elsewhere). ``with run_lock(path) as lock:`` ... ``lock.move_aside()``
    renames the folder aside and locks the fresh folder that replaces it *before* letting go of
    anything, so no other process can slip in between a decision and the training."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._fds: list[int] = []

    def __enter__(self) -> "RunLock":
        self._acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        while self._fds:
            os.close(self._fds.pop())  # closing releases the lock

    def _acquire(self) -> None:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            return
        deadline = time.monotonic() + LOCK_WAIT_S
        while True:
            self.path.mkdir(parents=True, exist_ok=True)
            lock_file = self.path / LOCK_FILE
            fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{self.path} is being trained by another process right now; "
                                       "wait for it (or use another runs_dir)") from None
                time.sleep(0.02)
                continue
            except BaseException:
                os.close(fd)
                raise
            # The folder may have been moved aside (by the process we waited for) between our
            # open and our lock: then we hold the old folder's lock, not this one's.
            try:
                here = os.stat(lock_file)
                mine = os.fstat(fd)
                same = (here.st_ino, here.st_dev) == (mine.st_ino, mine.st_dev)
            except FileNotFoundError:
                same = False
            if same:
                self._fds.append(fd)
                return
            os.close(fd)

    def move_aside(self) -> Path:
        """Rename the locked run folder to ``<name>.old-<timestamp>``, create a fresh one and lock
        it (the old lock is released on exit). Returns where the old folder went."""
        target = move_aside(self.path)
        self._acquire()
        return target


def run_lock(path: Path) -> RunLock:
    """Hold an exclusive lock on a run folder while deciding on and training it (see :class:`RunLock`)."""
    return RunLock(path)


def lock_is_held(path: Path) -> bool | None:
    """Whether some process holds the run folder's lock (True), nobody does (False), or we cannot
    tell (None: no fcntl, or the lock file cannot be opened). Takes a shared lock for an instant
    and writes nothing (works on a read-only store)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        return None
    try:
        fd = os.open(Path(path) / LOCK_FILE, os.O_RDONLY)
    except FileNotFoundError:
        return False
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return None
    finally:
        os.close(fd)  # also releases the shared lock, if we got it
    return False


# --- checkpoints and weights -----------------------------------------------------------------

def load_torch_file(file: Path, weights_only: bool) -> Any:
    """``torch.load`` onto the CPU; a file torch cannot read raises :class:`DamagedFileError`
    naming it (instead of a bare ``EOFError`` / ``OSError: [Errno 22]`` / unpickling error)."""
    import torch

    try:
        return torch.load(file, map_location="cpu", weights_only=weights_only)
    except FileNotFoundError:
        raise
    except Exception as e:  # truncated zip, bad pickle, EOF...
        size = file.stat().st_size if file.is_file() else 0
        raise DamagedFileError(file, f"torch.load cannot read it ({type(e).__name__}: {e}; {size} bytes, "
                                     "truncated?)") from e


def _read_checkpoint(file: Path) -> dict:
    ckpt = load_torch_file(file, weights_only=False)  # written by this package
    if not isinstance(ckpt, dict) or any(k not in ckpt for k in CHECKPOINT_KEYS):
        raise DamagedFileError(file, "not a checkpoint of this package (keys missing)")
    return ckpt


def _intact_checkpoint(folder: Path) -> tuple[dict | None, Path | None, list[str]]:
    """The newest readable checkpoint of a run folder (``checkpoint.pt``, else
    ``checkpoint.prev.pt``), the file it came from, and the problems of the ones that were not."""
    problems = []
    for file in (folder / CHECKPOINT_FILE, folder / PREVIOUS_CHECKPOINT_FILE):
        if not file.is_file():
            continue
        try:
            return _read_checkpoint(file), file, problems
        except DamagedFileError as e:
            problems.append(str(e))
    return None, None, problems


def has_checkpoint(folder: Path) -> bool:
    """Whether the run folder has a checkpoint to resume from (not checked for damage)."""
    return (folder / CHECKPOINT_FILE).is_file() or (folder / PREVIOUS_CHECKPOINT_FILE).is_file()


def load_checkpoint(ckpt_path: str | Path) -> dict | None:
    """The checkpoint to resume from, for the training loop: ``ckpt_path`` if intact, else the
    previous one (``checkpoint.prev.pt``), else None (train from the start). A damaged file is
    renamed ``<name>.damaged-<timestamp>`` (kept, so the next save cannot turn it into the
    fallback) and a :class:`StoreWarning` says which checkpoint was used."""
    ckpt_path = Path(ckpt_path)
    folder = ckpt_path.parent
    ckpt, file, problems = _intact_checkpoint(folder)
    if not problems:
        if ckpt is not None and file != ckpt_path:
            _warn(f"{ckpt_path} is missing; resuming from the previous checkpoint {file} (epoch {ckpt['epoch']})")
        return ckpt
    for damaged in (ckpt_path, previous_path(ckpt_path)):
        if damaged != file and damaged.is_file():
            _move_file_aside(damaged)
    if ckpt is not None:
        _warn(f"{'; '.join(problems)}. Falling back to the previous checkpoint {file} (epoch {ckpt['epoch']}); "
              "the damaged file was renamed *.damaged-<time>")
        return ckpt
    _warn(f"{'; '.join(problems)}. No intact checkpoint is left: training restarts from epoch 1 "
          "(the damaged files were renamed *.damaged-<time>)")
    atomic_write_json([], folder / HISTORY_FILE)
    return None


def history_digest(history: Any) -> str:
    """SHA-256 of the history as stored (parsed JSON, canonical form): recorded in status.json
    when a run is done, checked by :func:`load_run`."""
    text = json.dumps(history, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def seal_run(path: str | Path) -> dict:
    """For a run that is done: record the history's checksum and ``model.pt``'s size in
    status.json (so that later damage or edits are noticed) and drop the previous checkpoint.
    Returns the fields written."""
    path = Path(path)
    info = read_json(path / STATUS_FILE)
    history = read_json(path / HISTORY_FILE)
    sealed: dict[str, Any] = {"history_sha256": history_digest(history)}
    if (path / MODEL_FILE).is_file():
        sealed["model_bytes"] = (path / MODEL_FILE).stat().st_size
    info.pop("model_bytes", None)
    info.update(sealed)
    atomic_write_json(info, path / STATUS_FILE)
    (path / PREVIOUS_CHECKPOINT_FILE).unlink(missing_ok=True)
    return sealed


# --- runs ------------------------------------------------------------------------------------

@dataclass
class Run:
    """A stored (or just trained) run. ``model`` loads the weights on first access.

    ``status`` is ``"damaged"`` when its files are unreadable or inconsistent: ``problems`` then
    says what (each naming its file), and ``config`` is None if config.json was unreadable."""

    config: RunConfig | None
    path: Path
    history: list[dict] = field(default_factory=list)
    status: str = RUNNING
    wall_seconds: float = 0.0
    device: str | None = None
    info: dict = field(default_factory=dict, repr=False)  # status.json as read
    problems: list[str] = field(default_factory=list, repr=False)
    _model: Any = field(default=None, repr=False)
    _callback_states: Any = field(default=None, repr=False)
    _damaged_files: tuple[str, ...] = field(default=(), repr=False)
    #: For a run read from a bundle of published runs (:mod:`cifar_utils.engine.bundle`): its
    #: ``published.json`` (provenance); None for a run of the local store.
    published: dict | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        best = self.best_test_error
        best = f"{best:.2f}%" if best is not None else "-"
        epochs = self.config.epochs if self.config is not None else "?"
        return (f"Run({self.name!r}, status={self.status!r}, epochs={len(self.history)}/{epochs}, "
                f"best_test_error={best}, path={str(self.path)!r})")

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def collapse(self):
        """A :class:`~cifar_utils.engine.health.Collapse` when the run sat at chance for several epochs
        (one class predicted, training loss at ln(classes)), else None. Computed from the history, so
        runs stored before the detector existed are judged too; ``status.json`` records it as well."""
        from .health import collapse

        classes = (self.info.get("data") or {}).get("num_classes") or 10
        return collapse(self.history, num_classes=int(classes))

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

    def _stored_weights(self):
        """The state_dict to load: ``model.pt``; if that is damaged, the checkpoint's weights when
        they are the same epoch (with a warning); for a run without ``model.pt`` (diverged or
        unfinished), its checkpoint. None when no weights were stored."""
        model_file = self.path / MODEL_FILE
        if model_file.is_file():
            try:
                return load_torch_file(model_file, weights_only=True)
            except DamagedFileError as e:
                damage = str(e)
        else:
            damage = None
        ckpt, file, problems = _intact_checkpoint(self.path)
        if damage is None:
            if ckpt is None and problems:
                raise DamagedFileError(self.path / CHECKPOINT_FILE, "; ".join(problems) + " (no intact checkpoint)")
            return None if ckpt is None else ckpt["model"]
        if ckpt is not None and int(ckpt["epoch"]) == len(self.history):
            _warn(f"{damage}. Using the weights of {file} (epoch {ckpt['epoch']}, the same) instead")
            return ckpt["model"]
        why = ("no intact checkpoint" if ckpt is None
               else f"{file} holds epoch {ckpt['epoch']}, not the final epoch {len(self.history)}")
        raise DamagedFileError(model_file, f"{damage.split(': ', 1)[-1]}; cannot fall back: {why}. "
                                           "run(config) repairs or retrains the run")

    def load_model(self, device: str | None = None):
        """Rebuild the network and load its stored weights onto ``device`` (default: the config's
        device resolved on this machine, CPU when that is CUDA and there is none). None when no
        weights were stored. A damaged ``model.pt`` falls back to the checkpoint (see above)."""
        import torch

        from cifar_utils.models import create_model

        from .runtime import resolve_device

        if self.config is None:
            raise DamagedFileError(self.path / CONFIG_FILE, "; ".join(self.problems) or "no config")
        state = self._stored_weights()
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
        """One flat row: name, status, epochs, errors, seconds, problems (damaged runs), and the
        config fields (for a damaged run without a readable config, only ``model``, from the
        folder name)."""
        config = self.config.to_dict() if self.config is not None else {"model": self.name.rsplit("-", 1)[0]}
        return {"name": self.name, "status": self.status, "epochs_done": len(self.history),
                "best_test_error": self.best_test_error, "final_test_error": self.final_test_error,
                "wall_seconds": self.wall_seconds, "device": self.device,
                "problems": "; ".join(self.problems) or None, **config}


def _check_files(path: Path) -> tuple[RunConfig | None, dict, Any, dict[str, str]]:
    """Read a run folder's JSON files; return config, status info, history and the problems
    found, by file name."""
    problems: dict[str, str] = {}
    config = None
    try:
        data = read_json(path / CONFIG_FILE)
        if not isinstance(data, dict):
            raise DamagedFileError(path / CONFIG_FILE, f"holds a JSON {type(data).__name__}, not a config object")
        config = RunConfig.from_dict(data)
    except DamagedFileError as e:
        problems[CONFIG_FILE] = str(e)
    except (ValueError, TypeError) as e:
        problems[CONFIG_FILE] = f"{path / CONFIG_FILE}: not a valid RunConfig ({e})"

    info: dict = {}
    try:
        data = read_json(path / STATUS_FILE, {})
        if not isinstance(data, dict):
            raise DamagedFileError(path / STATUS_FILE, f"holds a JSON {type(data).__name__}, not an object")
        info = data
        if info.get("status", RUNNING) not in STATUSES:
            problems[STATUS_FILE] = (f"{path / STATUS_FILE}: unknown status {info.get('status')!r} "
                                     f"(one of {', '.join(STATUSES)} expected)")
    except DamagedFileError as e:
        problems[STATUS_FILE] = str(e)
    status = info.get("status", RUNNING)

    history: Any = []
    hist_file = path / HISTORY_FILE
    try:
        history = read_json(hist_file, None)
        if history is None:
            history = []
            if status in DONE:
                problems[HISTORY_FILE] = f"{hist_file}: missing, but the run is {status}"
        elif not isinstance(history, list) or not all(isinstance(r, dict) for r in history):
            problems[HISTORY_FILE] = f"{hist_file}: not a list of per-epoch records"
            history = []
    except DamagedFileError as e:
        problems[HISTORY_FILE] = str(e)
        history = []

    if status in DONE and HISTORY_FILE not in problems and STATUS_FILE not in problems:
        expected, done = info.get("history_sha256"), info.get("epochs_done")
        if expected is not None and history_digest(history) != expected:
            problems[HISTORY_FILE] = (f"{hist_file}: does not match the checksum recorded when the run finished "
                                      f"({len(history)} epochs now, {done} then): edited or damaged")
        elif isinstance(done, int) and done != len(history):
            problems[HISTORY_FILE] = f"{hist_file}: holds {len(history)} epochs, status.json says {done}"
    model_bytes = info.get("model_bytes")
    if status == FINISHED and STATUS_FILE not in problems and isinstance(model_bytes, int):
        file = path / MODEL_FILE
        size = file.stat().st_size if file.is_file() else None
        if size != model_bytes:
            problems[MODEL_FILE] = (f"{file}: missing" if size is None else
                                    f"{file}: {size} bytes, {model_bytes} when the run finished (truncated?)")
    return config, info, history, problems


def load_run(path: str | Path) -> Run:
    """Read a run folder (no training, no weights loaded until ``Run.model`` is used, nothing
    written). A damaged run comes back with status ``"damaged"`` and a :class:`StoreWarning`
    naming its files and what is wrong with them; a ``"running"`` run whose lock no live process
    holds comes back ``"interrupted"`` (its process died)."""
    path = Path(path)
    if not (path / CONFIG_FILE).is_file():
        raise FileNotFoundError(f"{path} is not a run folder (no {CONFIG_FILE})")
    config, info, history, problems = _check_files(path)
    status = info.get("status", RUNNING)
    if problems:
        _warn(f"damaged run {path}: " + "; ".join(problems.values()))
        status = DAMAGED
    elif status == RUNNING and lock_is_held(path) is False:
        status = INTERRUPTED
    try:
        wall = float(info.get("wall_seconds") or 0.0)
    except (TypeError, ValueError):
        wall = 0.0
    return Run(config=config, path=path, history=history, status=status, wall_seconds=wall,
               device=info.get("device_name") or info.get("device"), info=info,
               problems=list(problems.values()), _damaged_files=tuple(problems))


def load_published(folder: str | Path):
    """The published run in ``folder`` (a :class:`~cifar_utils.engine.store.Run` whose ``published`` holds
    its ``published.json``), or None, with a :class:`StoreWarning` naming every problem, when any file is not
    as published or the run does not load as done. Reads only."""
    from .bundle import verify

    folder = Path(folder)
    meta, problems = verify(folder)
    if problems:
        warnings.warn(f"published run {folder} is not used: " + "; ".join(problems)
                      + ". It is left as it is; a run that needs it is trained into the local store instead",
                      StoreWarning, stacklevel=3)
        return None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", StoreWarning)
        run = load_run(folder)
    if run.status not in DONE:
        why = "; ".join(run.problems) or f"its status is {run.status!r}"
        warnings.warn(f"published run {folder} is not used: {why}", StoreWarning, stacklevel=3)
        return None
    for w in caught:  # anything else load_run said
        warnings.warn(w.message, w.category, stacklevel=3)
    run.published = meta
    return run


def repair_run(lock: RunLock, damaged: Run, config: RunConfig) -> Run | None:
    """Deal with a damaged run folder for :func:`cifar_utils.engine.run`, under its ``lock``.

    With an intact checkpoint of this config, the damaged files are renamed
    ``<file>.damaged-<time>`` and rewritten from the checkpoint (config, history, and, for a run
    that was done at the checkpoint's epoch, ``model.pt`` and the status): the returned run is
    then done, or unfinished and resumes from the checkpoint. Without one, the folder is moved
    aside (``<name>.old-<time>``, nothing deleted) and None is returned: train it afresh. A
    :class:`StoreWarning` says which happened."""
    path = damaged.path
    ckpt, file, ckpt_problems = _intact_checkpoint(path)
    if ckpt is not None and ckpt.get("config") != config.to_dict():
        ckpt_problems.append(f"{file} belongs to another config")
        ckpt = None
    what = "; ".join(damaged.problems)
    if ckpt is None:
        target = lock.move_aside()
        extra = f" ({'; '.join(ckpt_problems)})" if ckpt_problems else ""
        _warn(f"damaged run {path}: {what}. It has no intact checkpoint{extra}: moved aside to {target.name} "
              "and trained again from scratch")
        return None
    for name in damaged._damaged_files:
        if (path / name).is_file():
            _move_file_aside(path / name)
    history, epoch = list(ckpt["history"]), int(ckpt["epoch"])
    atomic_write_json(config.to_dict(), path / CONFIG_FILE)
    atomic_write_json(history, path / HISTORY_FILE)
    info = read_status(path)
    done = info.get("status") in DONE and info.get("epochs_done") == epoch == len(history)
    if done and info["status"] == FINISHED and not (path / MODEL_FILE).is_file():
        atomic_save(ckpt["model"], path / MODEL_FILE)
    if done:
        info.update(updated=now_iso(), repaired=now_iso())
        atomic_write_json(info, path / STATUS_FILE)
        seal_run(path)
        _warn(f"damaged run {path}: {what}. Repaired from its checkpoint {file.name} (epoch {epoch}); "
              "the damaged files were renamed *.damaged-<time>")
    else:
        info.update(status=INTERRUPTED, updated=now_iso(), epochs_done=epoch)
        for stale in ("history_sha256", "model_bytes", "finished"):
            info.pop(stale, None)
        atomic_write_json(info, path / STATUS_FILE)
        _warn(f"damaged run {path}: {what}. Its config and history were restored from its checkpoint "
              f"{file.name}; training resumes from epoch {epoch}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", StoreWarning)
        return load_run(path)


def load_callback_states(path: str | Path) -> dict | None:
    """What the run's callbacks saved (``callbacks.pt``), or None."""
    file = Path(path) / CALLBACKS_FILE
    if not file.is_file():
        return None
    return load_torch_file(file, weights_only=False)  # written by this package


class RunStore:
    """A folder of runs (see the module doc for the layout), and beneath it, read-only, bundles of
    published runs (:mod:`cifar_utils.engine.bundle`).

    ``published``: the bundle folders, searched in order for a run the local folder lacks (default: the
    ``CIFAR_UTILS_PUBLISHED`` environment variable, ``os.pathsep``-separated; ``()``: none). Every write
    (training, repairs, moving aside) goes to ``root``; a bundle is never written to."""

    def __init__(self, root: str | Path | None = None, published: "Sequence[str | Path] | None" = None) -> None:
        from .bundle import layers_from_env

        self.root = Path(root if root is not None else os.environ.get(ENV_VAR) or "runs")
        self.published = layers_from_env() if published is None else tuple(Path(p) for p in published)

    def __repr__(self) -> str:
        extra = f", published={[str(p) for p in self.published]!r}" if self.published else ""
        return f"RunStore({str(self.root)!r}{extra})"

    def local_only(self) -> "RunStore":
        """The same store without its published layers (where runs are trained)."""
        return RunStore(self.root, published=())

    def path_for(self, config: RunConfig) -> Path:
        """Where ``config``'s run lives in the local store (where it is trained)."""
        return self.root / config.name

    def get(self, config: RunConfig) -> Run | None:
        """The stored run for ``config`` (any status, ``"damaged"`` included): the local one when its folder
        exists, else a published one that is intact and done (:meth:`get_published`), else None."""
        path = self.path_for(config)
        if (path / CONFIG_FILE).is_file():
            return load_run(path)
        return self.get_published(config)

    def get_published(self, config: RunConfig) -> Run | None:
        """``config``'s run from the first bundle that has it intact (a damaged or edited one is skipped with
        a :class:`StoreWarning` naming its files), or None."""
        for layer in self.published:
            folder = Path(layer) / config.name
            if folder.is_dir():
                run = load_published(folder)
                if run is not None and run.config is not None and run.config.to_dict() != config.to_dict():
                    _warn(f"published run {folder} holds another config than {config.name} asks for (a key "
                          "collision, or the config format changed); not used")
                elif run is not None:
                    return run
        return None

    def list(self, status: str | None = None) -> list[Run]:
        """All runs in the store (folders moved aside by ``retrain`` are skipped), by name: the local ones,
        then the published ones the local store does not shadow (intact ones only).
        Damaged runs are listed with status ``"damaged"`` (and a warning each)."""
        from .bundle import bundle_runs

        runs = []
        if self.root.is_dir():
            for path in sorted(self.root.iterdir()):
                if path.is_dir() and ".old-" not in path.name and (path / CONFIG_FILE).is_file():
                    run = load_run(path)
                    if status is None or run.status == status:
                        runs.append(run)
        seen = {p.name for p in self.root.iterdir() if (p / CONFIG_FILE).is_file()} if self.root.is_dir() else set()
        for layer in self.published:
            for name in bundle_runs(layer):
                if name in seen:
                    continue
                run = load_published(Path(layer) / name)
                if run is not None:
                    seen.add(name)
                    if status is None or run.status == status:
                        runs.append(run)
        return runs

    def frame(self, status: str | None = None):
        """:meth:`list` as a pandas DataFrame, one row per run (:meth:`Run.summary`)."""
        import pandas as pd

        return pd.DataFrame([r.summary() for r in self.list(status)])
