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


def store_snapshot(runs_dir: Path) -> dict[str, tuple]:
    """Each run folder of a store and, per file, its size and modification time: what a training run
    (or a repair) would change."""
    out = {}
    for run in sorted(Path(runs_dir).iterdir()) if Path(runs_dir).is_dir() else []:
        if run.is_dir():
            out[run.name] = tuple(sorted((f.name, f.stat().st_size, f.stat().st_mtime_ns)
                                         for f in run.iterdir() if f.is_file() and f.name != ".lock"))
    return out


def bundle_snapshot(profile: str) -> dict[str, str]:
    """sha256 of every file of the bundles of published runs a profile reads (its ``published:`` key)."""
    import hashlib

    from cifar_utils.book.params import load_profile, published_folders

    out = {}
    for folder in published_folders(load_profile(ROOT / "params" / f"{profile}.yaml"), ROOT):
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                out[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="session")
def smoke_book(tmp_path_factory):
    """The whole smoke book as the README's GPU path builds a profile: ``python -m cifar_utils.train``
    trains the plan's runs into a fresh store, then the book is executed and rendered from that store into
    a temporary folder.

    Returns ``(out, runs_dir, BookRun)``: ``out/_build/{src,html}`` are the executed notebooks and the HTML;
    ``BookRun.store_before`` / ``store_after`` are :func:`store_snapshot` s of the store around the book
    (the book must train nothing), ``bundle_before`` / ``bundle_after`` the sha256 of every file of the
    bundles of published runs the smoke profile reads (``published:``; none: empty). Session-scoped so that
    the chapter tests and the offline browser test share one build.
    """
    from cifar_utils.book import build_book
    from cifar_utils.train import main as train

    out = tmp_path_factory.mktemp("smoke")
    runs_dir = out / "runs"
    mp = pytest.MonkeyPatch()
    mp.setenv("CIFAR_UTILS_RUNS", str(runs_dir))
    mp.setenv("CIFAR_UTILS_PROGRESS", "log")
    try:
        mp.chdir(ROOT)
        mp.delenv("CIFAR_UTILS_PUBLISHED", raising=False)  # the profile's own key decides
        assert train(["--profile", "smoke", "--every", "0"]) == 0
        before, bundle_before = store_snapshot(runs_dir), bundle_snapshot("smoke")
        result = build_book(ROOT, "smoke", output_dir=out)
        result.store_before, result.store_after = before, store_snapshot(runs_dir)
        result.bundle_before, result.bundle_after = bundle_before, bundle_snapshot("smoke")
    finally:
        mp.undo()
    return out, runs_dir, result
