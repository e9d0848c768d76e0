"""What the status page shows: how each chapter was executed, and on what.

Papermill records parameters and start/end times in each executed notebook's metadata; this reads
them back. ``environment()`` reports the kernel's own software and device.
"""

from __future__ import annotations

import json
import platform
import sys
from importlib import metadata
from pathlib import Path

import pandas as pd

PACKAGES = ("cifar_utils", "torch", "torchvision", "numpy", "matplotlib", "pandas", "papermill",
            "jupyter-book", "ipywidgets", "grad-cam", "nbformat", "ipykernel")


def chapter_status(executed_dir: str | Path) -> pd.DataFrame:
    """One row per executed chapter: profile, parameters, start, end, duration (s), status."""
    rows = []
    for path in sorted(Path(executed_dir).glob("*.ipynb")):
        meta = json.loads(path.read_text()).get("metadata", {}).get("papermill")
        if not meta or "executed_dir" in (meta.get("parameters") or {}):
            continue  # never executed by papermill, or a summary page (this one)
        params = dict(meta.get("parameters") or {})
        profile = params.pop("profile", "")
        rows.append({
            "chapter": path.stem,
            "profile": profile,
            "parameters": ", ".join(f"{k}={v!r}" for k, v in params.items()) or "(notebook defaults)",
            "start": (meta.get("start_time") or "")[:19].replace("T", " "),
            "end": (meta.get("end_time") or "")[:19].replace("T", " "),
            "duration_s": round(meta["duration"], 1) if meta.get("duration") is not None else None,
            "status": "failed" if meta.get("exception") else "ok",
        })
    return pd.DataFrame(rows, columns=["chapter", "profile", "parameters", "start", "end", "duration_s", "status"])


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
