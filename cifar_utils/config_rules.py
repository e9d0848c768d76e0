"""Torch-free rules for single :class:`~cifar_utils.engine.RunConfig` fields.

One place for the checks that need no registry and no torch: the allowed choices (``source``,
``precision``, ``loss``...), the ranges (``epochs >= 1``, ``seed`` in ``0..2**32-1``...) and the
device syntax. ``RunConfig.problems`` applies them to a config; the book runner (which imports no
torch) applies the same functions to a profile's values before any kernel starts, so ``epochs: -1``
or ``device: gpu`` is rejected in the same words in both places.

Each rule takes a value and returns the problem as a message, or None when the value is fine.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

LOSS_NAMES = ("ce", "bce", "mse", "huber", "mse_logits", "huber_logits")  # = engine.losses.LOSSES
MONITORS = ("test", "val")
PRECISIONS = ("auto", "fp32", "bf16")
SOURCES = ("auto", "local", "download", "sample")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
#: Device types a config may name (``"auto"``, or one of these with an optional ``:index``).
DEVICE_TYPES = ("cpu", "cuda", "mps", "xpu")
#: numpy/torch seeds must fit in 32 bits (``np.random.seed`` rejects more).
SEED_MAX = 2**32 - 1

Rule = Callable[[Any], "str | None"]


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def choice(name: str, allowed: tuple[str, ...]) -> Rule:
    def rule(value: Any) -> str | None:
        if value not in allowed:
            return f"unknown {name} {value!r}; choose one of: {', '.join(map(str, allowed))}"
        return None

    return rule


def int_at_least(name: str, low: int, what: str = "") -> Rule:
    def rule(value: Any) -> str | None:
        if not (is_int(value) and value >= low):
            return f"{name} must be an integer >= {low}{what}, got {value!r}"
        return None

    return rule


def optional_positive_int(name: str) -> Rule:
    def rule(value: Any) -> str | None:
        if value is not None and not (is_int(value) and value > 0):
            return f"{name} must be None (all) or a positive integer, got {value!r}"
        return None

    return rule


def finite_non_negative(name: str) -> Rule:
    def rule(value: Any) -> str | None:
        if not (is_number(value) and math.isfinite(value) and value >= 0):
            return f"{name} must be a finite number >= 0, got {value!r}"
        return None

    return rule


def boolean(name: str) -> Rule:
    def rule(value: Any) -> str | None:
        return None if isinstance(value, bool) else f"{name} must be True or False, got {value!r}"

    return rule


def seed_rule(value: Any) -> str | None:
    if not (is_int(value) and 0 <= value <= SEED_MAX):
        return f"seed must be an integer in 0..2**32-1 ({SEED_MAX}), got {value!r}"
    return None


_DEVICE_RE = re.compile(rf"^({'|'.join(DEVICE_TYPES)})(:\d+)?$")


def device_rule(value: Any) -> str | None:
    if value == "auto" or (isinstance(value, str) and _DEVICE_RE.match(value)):
        return None
    return f"device={value!r} is not a torch device; use 'auto', 'cpu', 'cuda' or 'cuda:N'"


def grad_clip_rule(value: Any) -> str | None:
    if value is not None and not (is_number(value) and math.isfinite(value) and value > 0):
        return f"grad_clip must be None (off) or a finite number > 0, got {value!r}"
    return None


def channels_last_rule(value: Any) -> str | None:
    if value is not None and not isinstance(value, bool):
        return f"channels_last must be None (auto), True or False, got {value!r}"
    return None


#: RunConfig field -> rule. Fields that need a registry (model, optimizer, scheduler, dataset) or
#: a combination of fields (monitor='val' needs val_size) are checked by RunConfig itself.
FIELD_RULES: dict[str, Rule] = {
    "source": choice("source", SOURCES),
    "train_size": optional_positive_int("train_size"),
    "test_size": optional_positive_int("test_size"),
    "val_size": int_at_least("val_size", 0),
    "batch_size": int_at_least("batch_size", 1),
    "cutout": int_at_least("cutout", 0, " (0 = off)"),
    "augment": boolean("augment"),
    "loss": choice("loss", LOSS_NAMES),
    "lr": finite_non_negative("lr"),
    "momentum": finite_non_negative("momentum"),
    "weight_decay": finite_non_negative("weight_decay"),
    "epochs": int_at_least("epochs", 1),
    "grad_clip": grad_clip_rule,
    "monitor": choice("monitor", MONITORS),
    "seed": seed_rule,
    "device": device_rule,
    "precision": choice("precision", PRECISIONS),
    "channels_last": channels_last_rule,
    "compile": boolean("compile"),
    "compile_mode": choice("compile_mode", COMPILE_MODES),
}

#: Notebook parameters that hold a list of one field's values (``seeds: [0, 1]`` -> ``seed``).
LIST_PARAMETERS = {"seeds": "seed", "losses": "loss"}


def field_problem(name: str, value: Any) -> str | None:
    """The problem with ``value`` for RunConfig field ``name`` (None if fine or not checked here)."""
    rule = FIELD_RULES.get(name)
    return rule(value) if rule is not None else None


def parameter_problems(name: str, value: Any) -> list[str]:
    """Problems with a notebook parameter that maps onto a RunConfig field.

    A parameter named like a field (``epochs``, ``source``, ``device``...) is checked with that
    field's rule; ``seeds`` / ``losses`` check each element. Other names are not checked here.
    """
    if name in FIELD_RULES:
        problem = field_problem(name, value)
        return [problem] if problem else []
    if name in LIST_PARAMETERS and isinstance(value, list):
        field = LIST_PARAMETERS[name]
        return [p for p in (field_problem(field, v) for v in value) if p]
    return []
