"""What the status page shows: how each chapter was executed, and on what.

Papermill records parameters and start/end times in each executed notebook's metadata; this reads
them back. ``environment()`` reports the kernel's own software and device.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from importlib import metadata
from pathlib import Path

import pandas as pd

PACKAGES = ("cifar_utils", "torch", "torchvision", "numpy", "matplotlib", "pandas", "papermill",
            "jupyter-book", "ipywidgets", "grad-cam", "nbformat", "ipykernel")


def _papermill_meta(path: Path) -> tuple[dict | None, dict]:
    """(papermill metadata, cifar_utils metadata) of a notebook; (None, {}) if unreadable."""
    try:
        meta = json.loads(path.read_text()).get("metadata", {})
    except (OSError, ValueError):
        return None, {}
    return meta.get("papermill"), meta.get("cifar_utils") or {}


def _when(meta: dict, key: str) -> str:
    return (meta.get(key) or "")[:19].replace("T", " ")


def chapter_status(executed_dir: str | Path, failed_dir: str | Path | None = None) -> pd.DataFrame:
    """One row per chapter: the outcome of its *latest* attempt and which copy the book shows.

    ``executed_dir`` holds the executed copies the book shows; ``failed_dir`` the partly executed
    notebooks of attempts that failed (the runner removes one when the chapter later succeeds, so
    one there means the latest attempt failed). Columns: chapter, status (``ok`` / ``failed``),
    profile, parameters, start, end and duration (s) of the latest attempt, what went wrong,
    ``shown_copy``: when the copy shown in the book was made (a failed attempt never replaces it), and
    ``results``: where the shown copy's numbers come from, the line under its title (published runs, with
    their device, date and commit, or this build's own; :func:`cifar_utils.published.describe`).
    """
    from .published import line_of

    executed = {p.stem: p for p in sorted(Path(executed_dir).glob("*.ipynb"))}
    failed = {p.stem: p for p in sorted(Path(failed_dir).glob("*.ipynb"))} if failed_dir else {}
    rows = []
    for chapter in sorted(set(executed) | set(failed)):
        good, _ = _papermill_meta(executed[chapter]) if chapter in executed else (None, {})
        bad, info = _papermill_meta(failed[chapter]) if chapter in failed else (None, {})
        latest = bad if chapter in failed else good
        if latest is None and chapter not in failed:
            continue  # never executed by papermill (rendered as written)
        latest = latest or {}
        if "executed_dir" in (latest.get("parameters") or {}):
            continue  # a summary page (this one)
        params = dict(latest.get("parameters") or {})
        params.pop("failed_dir", None)
        profile = params.pop("profile", "")
        is_failed = chapter in failed or bool(latest.get("exception"))
        if good is not None and not good.get("exception"):
            shown = f"executed {_when(good, 'end_time')}"
            shown_profile = (good.get("parameters") or {}).get("profile")
            if shown_profile and shown_profile != profile:
                shown += f" (profile {shown_profile})"
        else:
            shown = "not executed: the book shows the notebook as written"
        rows.append({
            "chapter": chapter,
            "status": "failed" if is_failed else "ok",
            "profile": profile,
            "parameters": ", ".join(f"{k}={v!r}" for k, v in params.items()) or "(notebook defaults)",
            "start": _when(latest, "start_time"),
            "end": _when(latest, "end_time") or info.get("failed_at", ""),
            "duration_s": round(latest["duration"], 1) if latest.get("duration") is not None else None,
            "problem": info.get("failure", "an exception (see the notebook)" if is_failed else ""),
            "shown_copy": shown,
            "results": (line_of(executed[chapter]) if chapter in executed else None) or "-",
        })
    return pd.DataFrame(rows, columns=["chapter", "status", "profile", "parameters", "start", "end", "duration_s",
                                       "problem", "shown_copy", "results"])


def human_size(n: float) -> str:
    """Bytes as ``1.4 GB`` (powers of 1000, as disk tools and file managers show them)."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"  # pragma: no cover


def folder_size(path: str | Path) -> tuple[int, int]:
    """(bytes, files) under ``path``, with ``os.walk`` (symlinks not followed; unreadable parts skipped)."""
    total = files = 0
    for folder, _dirs, names in os.walk(path):
        for name in names:
            try:
                st = os.lstat(os.path.join(folder, name))
            except OSError:
                continue
            total += st.st_size
            files += 1
    return total, files


def store_sizes(runs_dir: str | Path | None = None) -> pd.DataFrame:
    """Disk use of the results store, one row per profile's runs folder.

    ``runs_dir`` defaults to the store the chapters used (``$CIFAR_UTILS_RUNS``, which the book
    runner sets to ``runs/<profile>``). When it sits in a ``runs/`` folder, every profile folder
    there gets a row. Columns: store, runs (run folders), files, size (human-readable), bytes.
    """
    path = Path(runs_dir if runs_dir is not None else os.environ.get("CIFAR_UTILS_RUNS", "runs"))
    folders = [path]
    if path.parent.name == "runs" and path.parent.is_dir():
        folders = sorted(p for p in path.parent.iterdir() if p.is_dir())
    rows = []
    for folder in folders:
        size, files = folder_size(folder) if folder.is_dir() else (0, 0)
        runs = sum(1 for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else 0
        rows.append({"store": str(folder), "runs": runs, "files": files, "size": human_size(size), "bytes": size})
    return pd.DataFrame(rows, columns=["store", "runs", "files", "size", "bytes"])


def device_description() -> str:
    """The CUDA device's name, or the CPU with its thread count."""
    import torch

    if torch.cuda.is_available():
        return f"CUDA: {torch.cuda.get_device_name(0)} (CUDA {torch.version.cuda})"
    return f"CPU: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads"


def environment() -> pd.DataFrame:
    """Python, platform, device and the versions of the packages the report depends on."""
    rows = [("python", sys.version.split()[0]), ("platform", platform.platform()), ("device", device_description())]
    for name in PACKAGES:
        try:
            rows.append((name, metadata.version(name)))
        except metadata.PackageNotFoundError:
            rows.append((name, "not installed"))
    return pd.DataFrame(rows, columns=["item", "value"])


#: Where the offline browser test (tests/test_html_offline.py) saves one screenshot per page, relative to
#: the folder that holds ``_build/``; ``screenshot_links`` links there.
SCREENSHOT_DIR = "_build/screenshots"


def screenshot_links(executed_dir: str | Path):
    """Links to the browser test's screenshot of every page of the book, as an HTML list.

    The pages are those of the staged ``_toc.yml`` beside ``executed_dir`` (``_build/src/book``); the links
    are relative to this page in ``_build/html/book/``, so they work from the built folder as it is. The
    screenshots exist once ``pytest -m slow tests/test_html_offline.py`` has run on this build.
    """
    from IPython.display import HTML

    from .book.runner import toc_files

    executed = Path(executed_dir).resolve()
    src = executed.parent  # _build/src, which holds the staged _toc.yml
    if not (src / "_toc.yml").is_file():
        return HTML(f"<p>No staged _toc.yml in {src}: run the book runner to list the pages.</p>")
    rel = Path(SCREENSHOT_DIR).relative_to("_build")
    items = [f'<li><a href="../../{rel.as_posix()}/{Path(name).stem}.png">{name}</a></li>' for name in toc_files(src)]
    return HTML(f'<ul class="screenshot-links">{"".join(items)}</ul>')
