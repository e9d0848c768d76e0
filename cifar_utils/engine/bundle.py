"""Published runs: a read-only layer of finished runs beneath the local store (the reading side).

A **bundle** (``results/<profile>/`` in the repository, written by ``python -m cifar_utils.publish``) holds
finished runs exported from a store, one folder per run, named as in the store (``<model>-<key8>``):

=========================  ==================================================================================
``config.json``            the run's :class:`RunConfig`, as in the store
``history.json``           its per-epoch history, as in the store
``status.json``            its status file (device, precision, wall time...; ``model_bytes`` only with weights)
``callbacks.pt``           only the callback records its chapter reads (absent when it reads none)
``model.pt``               the final weights, for small models only (see ``published.json``'s ``weights``)
``derived/<name>.json``    what the chapter computes from the weights and the data after training (chapter 6's
                           pruning tables...), computed at publication by the chapter's own functions
``published.json``         the provenance (date, commit, device, torch, precision, wall time, data copy, a digest
                           of the code that produced the run) and the sha256 and size of every file above
=========================  ==================================================================================

and ``MANIFEST.json`` lists the runs (with the sha256 of each ``published.json``) and the bundle's size.

Reading (:class:`~cifar_utils.engine.store.RunStore` with ``published=[bundle, ...]``, or the
``CIFAR_UTILS_PUBLISHED`` environment variable, folders separated by ``os.pathsep``): a run the local store
lacks is looked up in the bundles, in order. Before it is used, every file of the run folder is checked
against ``published.json`` (and ``published.json`` against ``MANIFEST.json``): a file edited, truncated,
missing or added is a :class:`~cifar_utils.engine.store.StoreWarning` naming it, and the run is **not used**
(as if absent: asking :func:`cifar_utils.engine.run` for it trains it into the local store). Nothing ever
writes into a bundle: every write of the engine goes to the local store's root.

Derived results: :func:`derived` ``(run, name, compute)`` returns a published run's stored
``derived/<name>.json``, and for a local run what ``compute()`` returns (nothing is written anywhere), so a
chapter reads the same numbers from a bundle without its data set.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

#: Environment variable listing the bundles a :class:`RunStore` reads beneath its root (``os.pathsep``-separated).
ENV_VAR = "CIFAR_UTILS_PUBLISHED"
PUBLISHED_FILE = "published.json"
MANIFEST_FILE = "MANIFEST.json"
DERIVED_DIR = "derived"
#: Version of the bundle layout ``published.json`` says it follows.
FORMAT = 1
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


class PublishedDataMissing(RuntimeError):
    """A published run lacks a derived result, and the data to compute it is not here either."""


def layers_from_env(value: str | None = None) -> tuple[Path, ...]:
    """The bundles named by ``$CIFAR_UTILS_PUBLISHED`` (or ``value``): folders separated by ``os.pathsep``;
    empty or unset: none."""
    value = os.environ.get(ENV_VAR, "") if value is None else value
    return tuple(Path(p) for p in value.split(os.pathsep) if p.strip())


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def folder_files(folder: Path) -> list[str]:
    """Every file under ``folder``, as POSIX paths relative to it, sorted (hidden files included)."""
    out = []
    for base, dirs, names in os.walk(folder):
        dirs.sort()
        for name in names:
            out.append(Path(base, name).relative_to(folder).as_posix())
    return sorted(out)


def _read_json(path: Path) -> tuple[Any, str | None]:
    try:
        return json.loads(path.read_text(encoding="utf-8")), None
    except FileNotFoundError:
        return None, f"{path}: missing"
    except (UnicodeDecodeError, ValueError) as e:
        return None, f"{path}: not valid JSON ({type(e).__name__}: {e})"


def manifest(bundle: Path) -> tuple[dict | None, str | None]:
    """The bundle's ``MANIFEST.json`` (None and the problem when it is missing or unreadable)."""
    data, problem = _read_json(Path(bundle) / MANIFEST_FILE)
    if problem is None and not (isinstance(data, dict) and isinstance(data.get("runs"), dict)):
        return None, f"{Path(bundle) / MANIFEST_FILE}: not a bundle manifest (no 'runs' mapping)"
    return data, problem


# verification results, by the folder's file signature (paths, sizes, modification times)
_VERIFIED: dict[tuple, tuple[dict | None, tuple[str, ...]]] = {}


def _signature(folder: Path) -> tuple:
    parts = []
    for rel in folder_files(folder):
        try:
            st = (folder / rel).stat()
        except OSError:
            continue
        parts.append((rel, st.st_size, st.st_mtime_ns))
    top = folder.parent / MANIFEST_FILE
    mst = top.stat() if top.is_file() else None
    return (str(folder.resolve()), tuple(parts), (mst.st_size, mst.st_mtime_ns) if mst else None)


def verify(folder: str | Path) -> tuple[dict | None, list[str]]:
    """Check a published run folder against its ``published.json`` and the bundle's ``MANIFEST.json``.

    Returns (``published.json`` as a dict, or None when unreadable; the problems found, each naming its
    file): a listed file missing, of another size or another sha256; a file in the folder that the
    publication does not list; ``published.json`` unreadable or not the one ``MANIFEST.json`` lists. An
    empty list means every byte is as published."""
    folder = Path(folder)
    key = _signature(folder)
    if key in _VERIFIED:
        meta, problems = _VERIFIED[key]
        return meta, list(problems)
    problems: list[str] = []
    meta, problem = _read_json(folder / PUBLISHED_FILE)
    if problem is not None:
        problems.append(problem)
        meta = None
    elif not (isinstance(meta, dict) and isinstance(meta.get("files"), dict)):
        problems.append(f"{folder / PUBLISHED_FILE}: not a publication record (no 'files' mapping)")
        meta = None
    top, problem = manifest(folder.parent)
    if problem is not None:
        problems.append(problem)
    elif folder.name not in top["runs"]:
        problems.append(f"{folder}: not listed in {folder.parent / MANIFEST_FILE}")
    elif meta is not None:
        expected = (top["runs"][folder.name] or {}).get("published_sha256")
        if expected != file_digest(folder / PUBLISHED_FILE):
            problems.append(f"{folder / PUBLISHED_FILE}: does not match the sha256 in {folder.parent / MANIFEST_FILE} "
                            "(edited or damaged)")
    if meta is not None:
        listed = meta["files"]
        for rel, want in sorted(listed.items()):
            path = folder / rel
            if not path.is_file():
                problems.append(f"{path}: missing (published with {want.get('bytes')} bytes)")
                continue
            size = path.stat().st_size
            if size != want.get("bytes"):
                problems.append(f"{path}: {size} bytes, {want.get('bytes')} when published (edited or truncated)")
            elif file_digest(path) != want.get("sha256"):
                problems.append(f"{path}: does not match its sha256 in {PUBLISHED_FILE} (edited or damaged)")
        for rel in folder_files(folder):
            if rel != PUBLISHED_FILE and rel not in listed:
                problems.append(f"{folder / rel}: not part of the publication (a file added to the bundle)")
    _VERIFIED[key] = (meta, tuple(problems))
    return meta, problems


def bundle_runs(bundle: str | Path) -> list[str]:
    """Names of the run folders of a bundle (those ``MANIFEST.json`` lists, then any other folder)."""
    bundle = Path(bundle)
    top, _ = manifest(bundle)
    listed = list((top or {}).get("runs", {}))
    others = sorted(p.name for p in bundle.iterdir() if p.is_dir() and not p.name.startswith(".")) \
        if bundle.is_dir() else []
    return listed + [n for n in others if n not in listed]


# --- derived results ----------------------------------------------------------------------------------

def check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name) or name in (".", ".."):
        raise ValueError(f"derived result name {name!r}: use letters, digits and _ . + - (a file name)")
    return name


def derived_path(run_path: str | Path, name: str) -> Path:
    return Path(run_path) / DERIVED_DIR / f"{check_name(name)}.json"


def derived(run, name: str, compute: Callable[[], Any], covers: Callable[[Any], bool] | None = None) -> Any:
    """A run's derived result ``name`` (JSON data: what a chapter computes from the trained weights and the
    data, e.g. a pruning table).

    * a published run (``run.published``): its ``derived/<name>.json`` (verified with the rest of the run when
      it was loaded), when it exists and ``covers(data)`` (default: always) says it holds what is asked;
      otherwise ``compute()``, and if that fails for want of data (any exception), a
      :class:`PublishedDataMissing` naming the file and the cause;
    * a local run: ``compute()``. Nothing is written (the local store stays as training left it).
    """
    if getattr(run, "published", None):
        path = derived_path(run.path, name)
        if path.is_file():
            data, problem = _read_json(path)
            if problem is not None:  # changed since the run was loaded
                raise PublishedDataMissing(f"{problem}; the published run {run.path} is damaged")
            if covers is None or covers(data):
                return data
            why = f"{path} does not hold what is asked (published for other settings)"
        else:
            why = f"{path} is missing (the run was published without it)"
        try:
            return compute()
        except Exception as exc:
            raise PublishedDataMissing(f"{why}, and computing it here failed: {type(exc).__name__}: {exc}") from exc
    return compute()


def published_runs(runs: Iterable) -> list:
    """The runs among ``runs`` that come from a bundle."""
    return [r for r in runs if r is not None and getattr(r, "published", None)]
