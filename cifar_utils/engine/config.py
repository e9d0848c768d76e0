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
import functools
import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from cifar_utils import config_rules as rules
from cifar_utils.config_rules import COMPILE_MODES, LOSS_NAMES, MONITORS, PRECISIONS, SEED_MAX, SOURCES  # noqa: F401

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
        # optimization
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

        # single fields: the torch-free rules the book runner applies to profiles too
        for name in rules.FIELD_RULES:
            problem = rules.field_problem(name, getattr(self, name))
            if problem:
                out.append(problem)
        if self.monitor == "val" and self.val_size == 0:
            out.append("monitor='val' needs a validation split: set val_size > 0 (or monitor='test', as in the report)")

        # does the model take this dataset's images?
        if not out:
            problem = _model_dataset_problem(self)
            if problem:
                out.append(problem)
        return out

    def validate(self) -> "RunConfig":
        """Raise one ``ValueError`` listing every problem (each names the allowed values)."""
        problems = self.problems()
        if problems:
            if len(problems) == 1:
                raise ValueError(f"invalid RunConfig: {problems[0]}")
            raise ValueError("invalid RunConfig:\n" + "\n".join(f"  - {p}" for p in problems))
        return self


def _model_dataset_problem(config: RunConfig) -> str | None:
    """Whether ``config.model`` takes ``config.dataset``'s images: LeNet-5 is built for 28x28 MNIST,
    VGG-A's five max-pools need 32x32 (CIFAR-10). Checked by building the model on torch's ``meta``
    device (no memory, no compute) and passing it a batch of the dataset's shape, so every model is
    covered without declaring anything. Datasets whose image shape is not known here are skipped."""
    try:
        from cifar_utils.data.meta import IMAGE_SHAPE, class_names
    except ImportError:  # pragma: no cover
        return None
    if config.dataset not in IMAGE_SHAPE:
        return None  # a registered extra dataset (e.g. the tests' tiny one): shape unknown until loaded
    shape = IMAGE_SHAPE[config.dataset]
    options = json.dumps(_plain(config.model_options), sort_keys=True)
    error = _forward_error(config.model, options, shape, len(class_names(config.dataset)))
    if error is None:
        return None
    return (f"model {config.model!r} does not fit dataset {config.dataset!r} (images {'x'.join(map(str, shape))}): "
            f"a forward pass fails with {error}; choose a model built for {config.dataset} images")


@functools.lru_cache(maxsize=256)
def _forward_error(model: str, options_json: str, shape: tuple[int, ...], num_classes: int) -> str | None:
    """The error of a forward pass of ``model`` on a (2, *shape) batch on the meta device, or None."""
    import torch

    from cifar_utils.models import create_model, model_options

    options = json.loads(options_json)
    args: dict[str, Any] = {"num_classes": num_classes}
    if "in_channels" in model_options(model) and "in_channels" not in options:
        args["in_channels"] = shape[0]  # as the training loop does
    try:
        with torch.device("meta"):
            net = create_model(model, **args, **options).eval()
            out = net(torch.empty(2, *shape))
    except (RuntimeError, ValueError, IndexError) as exc:
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    if tuple(out.shape) != (2, num_classes):
        return f"output shape {tuple(out.shape)} instead of (2, {num_classes})"
    return None


def _model_options(name: str) -> tuple[str, ...] | None:
    try:
        from cifar_utils.models import model_options
    except ImportError:  # pragma: no cover
        return None
    try:
        return tuple(model_options(name))
    except Exception:  # pragma: no cover - registry without signature info
        return None


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
