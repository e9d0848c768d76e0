"""``RunConfig``: everything that decides a training run, with the report's protocol as defaults.

Defaults reproduce the report: ResNet-18 on CIFAR-10, SGD lr 0.1, momentum 0.9, weight decay 5e-4,
batch 128, 200 epochs, pad-4 random crop + horizontal flip, and the learning rate halved when the
*test* error stops improving (``scheduler="plateau"``, ``monitor="test"``). The report used the test
set as its validation set; ``monitor="val"`` (with ``val_size > 0``) watches a held-out part of the
training set instead.

``momentum`` and ``weight_decay`` are passed to the optimizer only when it takes them (see
:func:`cifar_utils.optim.optimizer_options`): ``momentum`` is ignored by Adam, Adagrad and Adadelta.
``optimizer_options`` / ``scheduler_options`` / ``model_options`` are passed through and checked
against what the factory accepts.

The run's identity, :meth:`RunConfig.key`, is the sha1 of the canonical JSON of *all* fields,
including ``device``, ``precision``, ``channels_last`` and ``compile`` because they change the
numbers. They are hashed *as written*: ``device="auto"`` stays ``"auto"``, so a run trained on a GPU
machine is found (loaded, not retrained) when the book is rebuilt on a CPU machine; the device it
actually ran on is recorded in the run's ``status.json``. Pin ``device="cpu"`` to force a separate
CPU run. Adding a field later: leave it out of :meth:`key` while it has its default
(see ``_KEY_OMIT_IF_DEFAULT``) so existing run folders keep their names.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

LOSS_NAMES = ("ce", "bce", "mse", "huber", "mse_logits", "huber_logits")  # = engine.losses.LOSSES
MONITORS = ("test", "val")
PRECISIONS = ("auto", "fp32", "bf16")
SOURCES = ("auto", "local", "download", "sample")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")

#: Fields added after runs were stored: omitted from the key while at their default.
_KEY_OMIT_IF_DEFAULT: tuple[str, ...] = ()


@dataclass(frozen=True)
class RunConfig:
    """One training run. Frozen; use :func:`dataclasses.replace` (or :meth:`replace`) to vary it."""

    model: str = "resnet18"
    model_options: Mapping[str, Any] = field(default_factory=dict)
    dataset: str = "cifar10"
    source: str = "auto"
    data_root: str | None = None
    train_size: int | None = None
    test_size: int | None = None
    val_size: int = 0
    loss: str = "ce"
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    optimizer_options: Mapping[str, Any] = field(default_factory=dict)
    scheduler: str = "plateau"
    scheduler_options: Mapping[str, Any] = field(default_factory=dict)
    monitor: str = "test"
    batch_size: int = 128
    epochs: int = 200
    augment: bool = True
    cutout: int = 0
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    channels_last: bool | None = None
    compile: bool = False
    compile_mode: str = "max-autotune"
    grad_clip: float | None = None

    def __post_init__(self) -> None:
        # Canonical forms, so that lr=1 and lr=1.0 are the same run (and the same key).
        for name in ("model_options", "optimizer_options", "scheduler_options"):
            value = getattr(self, name)
            if value is None:
                value = {}
            if isinstance(value, Mapping):
                object.__setattr__(self, name, {str(k): _plain(v) for k, v in sorted(value.items())})
        for name in ("lr", "momentum", "weight_decay"):
            value = getattr(self, name)
            if isinstance(value, int) and not isinstance(value, bool):
                object.__setattr__(self, name, float(value))
        if isinstance(self.grad_clip, int) and not isinstance(self.grad_clip, bool):
            object.__setattr__(self, "grad_clip", float(self.grad_clip))
        if self.data_root is not None and not isinstance(self.data_root, str):
            object.__setattr__(self, "data_root", str(self.data_root))

    # -- identity ----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict of all fields."""
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "RunConfig":
        """Inverse of :meth:`to_dict`; missing fields take their defaults, unknown ones are an error."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown RunConfig field(s) {', '.join(unknown)}; fields: {', '.join(sorted(names))}")
        return cls(**dict(data))

    def __hash__(self) -> int:  # the option dicts are not hashable; the key is
        return hash(self.key())

    def replace(self, **changes: Any) -> "RunConfig":
        return dataclasses.replace(self, **changes)

    def key(self) -> str:
        """Short stable hash (8 hex digits) of the fields that define the run."""
        data = self.to_dict()
        defaults = RunConfig().to_dict()
        for name in _KEY_OMIT_IF_DEFAULT:
            if data[name] == defaults[name]:
                del data[name]
        canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), allow_nan=False)
        return hashlib.sha1(canonical.encode()).hexdigest()[:8]

    @property
    def name(self) -> str:
        """The run folder's name: ``<model>-<key>``."""
        return f"{self.model}-{self.key()}"

    # -- validation ----------------------------------------------------------------------------
    def problems(self) -> list[str]:
        """Every problem with this config, one message each (empty when valid)."""
        from cifar_utils.optim import list_optimizers, list_schedulers, optimizer_options, scheduler_options

        from .datasets import list_datasets

        out: list[str] = []

        def choice(name: str, value: Any, allowed) -> bool:
            allowed = list(allowed)
            if value not in allowed:
                out.append(f"unknown {name} {value!r}; choose one of: {', '.join(map(str, allowed))}")
                return False
            return True

        # model
        try:
            from cifar_utils.models import list_models
        except ImportError as exc:  # pragma: no cover - the models package is missing
            out.append(f"cannot check model={self.model!r}: cifar_utils.models does not import ({exc})")
        else:
            if choice("model", self.model, list_models()):
                allowed = _model_options(self.model)
                if allowed is not None and isinstance(self.model_options, Mapping):
                    unknown = sorted(set(self.model_options) - set(allowed) - {"num_classes"})
                    if unknown:
                        out.append(f"model {self.model!r} got unknown model_options {', '.join(unknown)}; "
                                   f"allowed: {', '.join(a for a in allowed if a != 'num_classes') or '(none)'}")
        for name in ("model_options", "optimizer_options", "scheduler_options"):
            if not isinstance(getattr(self, name), Mapping):
                out.append(f"{name} must be a mapping (dict), got {type(getattr(self, name)).__name__}")
            elif _non_finite_paths(getattr(self, name)):
                bad = ", ".join(_non_finite_paths(getattr(self, name)))
                out.append(f"{name} must hold finite numbers only (the run's key is strict JSON), "
                           f"got NaN/inf at {bad}")
        if "num_classes" in (self.model_options if isinstance(self.model_options, Mapping) else {}):
            out.append("model_options must not set num_classes: it comes from the dataset")

        # data
        choice("dataset", self.dataset, list_datasets())
        choice("source", self.source, SOURCES)
        for name in ("train_size", "test_size"):
            value = getattr(self, name)
            if value is not None and not (_is_int(value) and value > 0):
                out.append(f"{name} must be None (all) or a positive integer, got {value!r}")
        if not (_is_int(self.val_size) and self.val_size >= 0):
            out.append(f"val_size must be an integer >= 0, got {self.val_size!r}")
        if not (_is_int(self.batch_size) and self.batch_size >= 1):
            out.append(f"batch_size must be an integer >= 1, got {self.batch_size!r}")
        if not (_is_int(self.cutout) and self.cutout >= 0):
            out.append(f"cutout must be an integer >= 0 (0 = off), got {self.cutout!r}")
        if not isinstance(self.augment, bool):
            out.append(f"augment must be True or False, got {self.augment!r}")

        # optimization
        choice("loss", self.loss, LOSS_NAMES)
        if choice("optimizer", self.optimizer, list_optimizers()) and isinstance(self.optimizer_options, Mapping):
            allowed = optimizer_options(self.optimizer)
            both = sorted({"momentum", "weight_decay", "lr"} & set(self.optimizer_options))
            if both:
                out.append(f"set {', '.join(both)} as RunConfig field(s), not in optimizer_options")
            if allowed is not None:
                unknown = sorted(set(self.optimizer_options) - set(allowed) - set(both))
                if unknown:
                    allowed = [a for a in allowed if a not in ("momentum", "weight_decay")]
                    out.append(f"optimizer {self.optimizer!r} got unknown optimizer_options {', '.join(unknown)}; "
                               f"allowed: {', '.join(allowed) or '(none)'}")
        if choice("scheduler", self.scheduler, list_schedulers()) and isinstance(self.scheduler_options, Mapping):
            allowed = scheduler_options(self.scheduler)
            if allowed is not None:
                unknown = sorted(set(self.scheduler_options) - set(allowed))
                if unknown:
                    out.append(f"scheduler {self.scheduler!r} got unknown scheduler_options {', '.join(unknown)}; "
                               f"allowed: {', '.join(allowed) or '(none)'}")
        for name in ("lr", "momentum", "weight_decay"):
            value = getattr(self, name)
            if not (_is_number(value) and math.isfinite(value) and value >= 0):
                out.append(f"{name} must be a finite number >= 0, got {value!r}")
        if not (_is_int(self.epochs) and self.epochs >= 1):
            out.append(f"epochs must be an integer >= 1, got {self.epochs!r}")
        if self.grad_clip is not None and not (_is_number(self.grad_clip) and math.isfinite(self.grad_clip)
                                               and self.grad_clip > 0):
            out.append(f"grad_clip must be None (off) or a finite number > 0, got {self.grad_clip!r}")
        if choice("monitor", self.monitor, MONITORS) and self.monitor == "val" and self.val_size == 0:
            out.append("monitor='val' needs a validation split: set val_size > 0 (or monitor='test', as in the report)")
        if not (_is_int(self.seed) and self.seed >= 0):
            out.append(f"seed must be an integer >= 0, got {self.seed!r}")

        # execution
        if self.device != "auto":
            try:
                import torch

                torch.device(self.device)
            except (RuntimeError, TypeError, ValueError):
                out.append(f"device={self.device!r} is not a torch device; use 'auto', 'cpu', 'cuda' or 'cuda:N'")
        choice("precision", self.precision, PRECISIONS)
        if self.channels_last not in (None, True, False):
            out.append(f"channels_last must be None (auto), True or False, got {self.channels_last!r}")
        if not isinstance(self.compile, bool):
            out.append(f"compile must be True or False, got {self.compile!r}")
        choice("compile_mode", self.compile_mode, COMPILE_MODES)
        return out

    def validate(self) -> "RunConfig":
        """Raise one ``ValueError`` listing every problem (each names the allowed values)."""
        problems = self.problems()
        if problems:
            if len(problems) == 1:
                raise ValueError(f"invalid RunConfig: {problems[0]}")
            raise ValueError("invalid RunConfig:\n" + "\n".join(f"  - {p}" for p in problems))
        return self


def _model_options(name: str) -> tuple[str, ...] | None:
    try:
        from cifar_utils.models import model_options
    except ImportError:  # pragma: no cover
        return None
    try:
        return tuple(model_options(name))
    except Exception:  # pragma: no cover - registry without signature info
        return None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _non_finite_paths(value: Any, prefix: str = "") -> list[str]:
    """Where (``key``, ``key.sub``, ``key[i]``) ``value`` holds a NaN or infinite float."""
    if isinstance(value, float):
        return [] if math.isfinite(value) else [prefix or "(value)"]
    if isinstance(value, Mapping):
        return [p for k, v in value.items() for p in _non_finite_paths(v, f"{prefix}.{k}" if prefix else str(k))]
    if isinstance(value, (list, tuple)):
        return [p for i, v in enumerate(value) for p in _non_finite_paths(v, f"{prefix}[{i}]")]
    return []


def _plain(value: Any) -> Any:
    """JSON-able canonical copy: mappings -> sorted dicts, tuples -> lists."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in sorted(value.items())}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
