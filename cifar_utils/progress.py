"""One progress switch for the whole package.

Interactive use gets ``tqdm.auto`` bars (widgets in JupyterLab, text in a terminal). Under
papermill the widget bars never reach the log and ``\\r``-redrawn text bars garble it, so the
book runner sets ``CIFAR_UTILS_PROGRESS=log``: bars then print a plain line at most every
``CIFAR_UTILS_PROGRESS_INTERVAL`` seconds (default 30) and once at the end. ``off`` silences them.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any

MODES = ("auto", "log", "off")
ENV_VAR = "CIFAR_UTILS_PROGRESS"


def progress_mode() -> str:
    """The mode in force: the ``CIFAR_UTILS_PROGRESS`` variable, default ``auto``."""
    mode = os.environ.get(ENV_VAR, "auto").strip().lower() or "auto"
    if mode not in MODES:
        raise ValueError(f"{ENV_VAR}={mode!r} is not a progress mode; choose one of {', '.join(MODES)}")
    return mode


class LogProgress:
    """A tqdm-like bar that writes whole lines, never carriage returns."""

    def __init__(self, iterable: Iterable | None = None, total: int | None = None, desc: str = "",
                 interval: float | None = None, file=None, **_: Any) -> None:
        self.iterable = iterable
        self.total = total if total is not None else (len(iterable) if hasattr(iterable, "__len__") else None)
        self.desc = desc
        self.n = 0
        self.postfix = ""
        self.interval = float(os.environ.get("CIFAR_UTILS_PROGRESS_INTERVAL", 30)) if interval is None else interval
        self.file = file or sys.stdout
        self.start = time.monotonic()
        self.last = self.start
        self.closed = False
        self._printed = ""

    def __iter__(self) -> Iterator:
        for item in self.iterable:
            yield item
            self.update(1)
        self.close()

    def __enter__(self) -> "LogProgress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _line(self) -> str:
        total = f"/{self.total}" if self.total is not None else ""
        elapsed = time.monotonic() - self.start
        post = f" {self.postfix}" if self.postfix else ""
        return f"{self.desc}: {self.n}{total} [{elapsed:.0f}s]{post}"

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.last >= self.interval:
            self.last = now
            self._print()

    def _print(self) -> None:
        line = self._line()
        if line != self._printed:  # a line already printed by update() is not repeated by close()
            self._printed = line
            print(line, file=self.file, flush=True)

    def set_postfix(self, ordered_dict: dict | None = None, refresh: bool = True, **kwargs: Any) -> None:
        items = dict(ordered_dict or {}, **kwargs)
        self.postfix = ", ".join(f"{k}={v}" for k, v in items.items())

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        self.postfix = s

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        self.desc = desc or ""

    def refresh(self) -> None:
        pass

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._print()


class _Silent(LogProgress):
    def update(self, n: int = 1) -> None:
        self.n += n

    def close(self) -> None:
        self.closed = True


def progress_bar(iterable: Iterable | None = None, *, total: int | None = None, desc: str = "",
                 leave: bool = True, disable: bool = False, **kwargs: Any):
    """A progress bar honouring the package's switch; ``disable=True`` silences it like ``off``."""
    mode = "off" if disable else progress_mode()
    if mode == "off":
        return _Silent(iterable, total=total, desc=desc)
    if mode == "log":
        return LogProgress(iterable, total=total, desc=desc, **kwargs)
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, leave=leave, **kwargs)
