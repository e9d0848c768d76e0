"""Where and how a run computes: device, precision, memory format, and the RNG states.

Kept apart from the loop so that the store (loading a model onto a device), the benchmarks and the
loop share one definition of each setting without importing the loop.
"""

from __future__ import annotations

import contextlib
import os
import platform
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> ``cuda`` when available, else ``cpu``; anything else as given."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_precision(precision: str, device: torch.device) -> str:
    """``"auto"`` -> ``"bf16"`` on a CUDA GPU with native bf16 (compute capability 8.0+, Ampere or
    newer; ROCm), ``"fp32"`` elsewhere, including older GPUs where bf16 would only be emulated
    (slower than fp32)."""
    if precision == "auto":
        return "bf16" if device.type == "cuda" and _native_bf16(device) else "fp32"
    return precision


def _native_bf16(device: torch.device) -> bool:
    """Whether the CUDA ``device`` computes in bf16 natively (not emulated)."""
    # is_bf16_supported asks about the *current* device; switch only when an index is given.
    ctx = torch.cuda.device(device) if device.index is not None else contextlib.nullcontext()
    with ctx:
        try:
            return bool(torch.cuda.is_bf16_supported(including_emulation=False))
        except TypeError:  # a torch without the argument: decide from the compute capability
            if torch.version.hip:
                return True
            return torch.cuda.is_available() and torch.cuda.get_device_capability(device)[0] >= 8


def resolve_channels_last(channels_last: bool | None, device: torch.device) -> bool:
    """``None`` -> channels_last on CUDA (faster convolutions there), not elsewhere."""
    return device.type == "cuda" if channels_last is None else bool(channels_last)


#: torch.compile modes that capture the step in CUDA graphs (they need a CUDA device).
CUDA_GRAPH_MODES = ("reduce-overhead",)
#: Environment variable: the folder of torch.compile's (inductor's) cache (default: ``inductor`` in the
#: package's cache folder, ``$CIFAR_UTILS_CACHE`` or ``~/.cache/cifar_utils``).
INDUCTOR_CACHE_ENV = "CIFAR_UTILS_INDUCTOR_CACHE"


def inductor_cache_dir() -> Path:
    """Where compiled artefacts are kept: ``$CIFAR_UTILS_INDUCTOR_CACHE``, else an explicit
    ``$TORCHINDUCTOR_CACHE_DIR``, else ``<package cache>/inductor``."""
    from cifar_utils.data import default_cache_dir

    given = os.environ.get(INDUCTOR_CACHE_ENV) or os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    return Path(given).expanduser() if given else default_cache_dir() / "inductor"


def step_model(model: torch.nn.Module, device: torch.device, compile: bool, mode: str) -> tuple[torch.nn.Module, str]:
    """The model the training step calls, and a one-line note of what was chosen.

    ``compile=False``: ``model`` itself. Else ``torch.compile(model, mode=mode)``, with inductor's cache
    in :func:`inductor_cache_dir` (shared by every run, so a later run of the same model reuses what the
    first compiled; the compilation itself happens in the first steps and counts in the run's time). A
    mode that captures CUDA graphs (:data:`CUDA_GRAPH_MODES`) on a device without CUDA falls back to the
    plain model, and the note says so (the run's ``status.json`` keeps it)."""
    if not compile:
        return model, "eager"
    if mode in CUDA_GRAPH_MODES and device.type != "cuda":
        return model, f"eager: compile mode {mode!r} captures CUDA graphs, which need a CUDA device (this is {device.type})"
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(inductor_cache_dir())
    return torch.compile(model, mode=mode), f"torch.compile mode {mode!r}, cache {os.environ['TORCHINDUCTOR_CACHE_DIR']}"


def autocast(device: torch.device, precision: str):
    """The forward-pass context: bf16 autocast, or nothing for fp32."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def device_name(device: torch.device) -> str:
    """A human-readable name of the device, recorded with each run."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{device.type}: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def seed_everything(seed: int) -> None:
    """Seed python's, numpy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """The global RNG states, for a checkpoint (CUDA's only when CUDA was used)."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
