"""Fixtures shared by test files: the runner's fixture book, and the smoke book built once per session."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = Path(__file__).parent / "book_fixture"


@pytest.fixture()
def book(tmp_path: Path) -> Path:
    """A fresh copy of ``tests/book_fixture`` (a tiny book the runner tests execute and may modify)."""
    dest = tmp_path / "book_root"
    shutil.copytree(FIXTURE, dest)
    return dest


@pytest.fixture(scope="session")
def smoke_book(tmp_path_factory):
    """The whole smoke book, executed and rendered into a temporary folder with its own results store.

    Returns ``(out, runs_dir, BookRun)``: ``out/_build/{src,html}`` are the executed notebooks and the HTML.
    Session-scoped so that the chapter tests and the offline browser test share one build.
    """
    from cifar_utils.book import build_book

    out = tmp_path_factory.mktemp("smoke")
    runs_dir = out / "runs"
    mp = pytest.MonkeyPatch()
    mp.setenv("CIFAR_UTILS_RUNS", str(runs_dir))
    mp.setenv("CIFAR_UTILS_PROGRESS", "log")
    try:
        result = build_book(ROOT, "smoke", output_dir=out)
    finally:
        mp.undo()
    return out, runs_dir, result
