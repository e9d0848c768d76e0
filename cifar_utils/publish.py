"""``python -m cifar_utils.publish --profile P [--chapters 06]``: export a store's finished runs of the plan into a
bundle of published runs (``results/<P>/``, committed with the repository), which books then read beneath
their own store instead of training (see :mod:`cifar_utils.engine.bundle` for the layout and how it is read).

For every run the plan of profile ``P`` gives the chosen chapters (:mod:`cifar_utils.plan`), the run found
finished (or diverged) in the store is exported: its ``config.json``, ``history.json`` and ``status.json``,
the callback records its chapter reads (``callbacks.pt`` keeping only those), its weights when the model is
small (at most :data:`MAX_WEIGHT_PARAMETERS` parameters), and ``derived/<name>.json``: what the chapter
computes from the weights and the data after training (:data:`DERIVED`: chapter 6's pruning tables), with the
chapter's own functions. Each run gets a ``published.json``: provenance (publication date, git commit and
whether the tree had uncommitted changes, the training's device, torch version, precision and wall time, the
data copy, a digest of the code that decides the chapter's numbers: :func:`cifar_utils.published.code_digest`)
and the sha256 and size of every file. ``MANIFEST.json`` lists the bundle's runs and its size.

Planned runs that are not published are listed with the reason (missing from the store, unfinished, damaged,
without their records, or failing to export). Runs already in the bundle stay; publishing a run again with
different files needs ``--replace``. The bundle may not exceed ``--max-mb`` (default :data:`MAX_BYTES`):
publish refuses, saying how big it would be, and writes nothing. Every run folder is written into a staging
folder and moved into place whole, and ``MANIFEST.json`` is written last (a run folder the manifest does not
list is not used by readers). The store is only read.

``--dry-run`` says what would be published, and writes nothing. Exit status: 0 when the bundle was written (or
nothing needed writing), 1 when the size cap or an existing run stopped it, 2 for bad input.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import plan as _plan
from .chapters import CH6
from .engine import Run, RunStore
from .engine import bundle as bd
from .engine import store as st
from .published import code_digest

#: The largest bundle publish writes (bytes): small enough to commit with the repository.
MAX_BYTES = 20_000_000
#: Models with at most this many parameters are published with their weights (LeNet-5: 61,706).
MAX_WEIGHT_PARAMETERS = 1_000_000
#: The status.json fields a publication copies into its provenance.
TRAINING_FIELDS = ("status", "created", "finished", "device", "device_name", "precision", "channels_last",
                   "torch_version", "wall_seconds", "sessions", "epochs_done")


class PublishError(RuntimeError):
    """Publishing stopped before anything was written (size cap, a run published differently already...)."""


# --- what a chapter computes from weights after training ----------------------------------------------

def _dessilbi_derived(run: Run, arm: Any, params: Mapping[str, Any], loader_for: Callable[[Run], Any]
                      ) -> dict[str, Any]:
    """Chapter 6: the pruning table of every coupled layer of an SLBI LeNet run at
    :data:`~cifar_utils.sparsity.PUBLISHED_PERCENTS` and the chapter's ``prune_percents`` (Table 3, Figure 19,
    the explorer's static figure and the ``prune_conv3_60`` claim read them); for SLBI-Adam, Figure 21's layer
    at 0 and 50 %."""
    from . import sparsity

    if arm.label == "SLBI":
        percents = sorted({*map(float, sparsity.PUBLISHED_PERCENTS), *map(float, params.get("prune_percents", ()))})
        layers = sparsity.coupled_layers(run)
    elif arm.label == "SLBI-Adam":
        percents, layers = [0.0, 50.0], [str(params["resnet_prune_layer"])]
    else:
        return {}
    loader = loader_for(run)
    return {sparsity.pruning_name(layer): sparsity.pruning_data(run, layer, percents, loader) for layer in layers}


#: Chapter -> ``f(run, arm, chapter parameters, loader_for) -> {derived name: JSON data}``; ``loader_for(run)``
#: gives the run's test loader on its model's device, shared by runs with the same data (loaded on first use).
DERIVED: dict[str, Callable[[Run, Any, Mapping[str, Any], Callable[[Run], Any]], dict[str, Any]]] = {
    CH6: _dessilbi_derived}


# --- one run ---------------------------------------------------------------------------------------------

@dataclass
class Export:
    """One planned run: published (``folder`` staged, ``bytes``) or not (``reason``)."""

    name: str
    uses: list[str]
    reason: str | None = None
    folder: Path | None = None
    bytes: int = 0
    notes: list[str] = field(default_factory=list)
    unchanged: bool = False


def git_state(root: Path) -> tuple[str | None, bool | None]:
    """(HEAD's commit, whether tracked files have uncommitted changes); (None, None) outside git."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=30,
                                check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True,
                               text=True, timeout=60, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None, None
    return commit or None, bool(dirty)


def _record_keys(factory: Any, config) -> list[str]:
    if factory is None:
        return []
    return [cb.key for cb in factory(config) if getattr(cb, "key", None)]


def _parameters(state: Mapping[str, Any]) -> int:
    return int(sum(v.numel() for v in state.values() if hasattr(v, "numel") and v.is_floating_point()))


_DATA_CACHE: dict[tuple, dict] = {}


def _data_provenance(run: Run) -> dict[str, Any]:
    """The data copy the run trained on: ``status.json``'s ``data`` (recorded by the engine), else the copy its
    config loads on this machine now (said so)."""
    recorded = (run.info or {}).get("data")
    if isinstance(recorded, dict) and recorded:
        return {**recorded, "recorded": "at training"}
    from .engine.datasets import load_for_config

    c = run.config
    key = (c.dataset, c.source, c.data_root, c.train_size, c.test_size, c.val_size)
    if key not in _DATA_CACHE:
        ds = load_for_config(c)
        _DATA_CACHE[key] = {"dataset": ds.name, "source": str(ds.source), "train_images": int(len(ds.y_train)),
                            "test_images": int(len(ds.y_test)), "val_images": int(len(ds.y_val)),
                            "recorded": "at publication: the copy the run's config loads on the publishing machine "
                                        "(the engine did not record it when the run trained)"}
    return dict(_DATA_CACHE[key])


def export_run(run: Run, planned: _plan.PlannedRun, chapters: Mapping[str, Any], staging: Path, *, profile: str,
               root: Path, commit: str | None, dirty: bool | None, loaders: dict) -> Export:
    """Write ``run``'s publication into ``staging/<name>/`` (see the module doc); never touches the store."""
    import torch

    exp = Export(run.name, list(planned.uses))
    folder = staging / run.name
    folder.mkdir(parents=True)
    for name in (st.CONFIG_FILE, st.HISTORY_FILE):
        shutil.copyfile(run.path / name, folder / name)
    info = json.loads((run.path / st.STATUS_FILE).read_text())

    # records: only what the chapter reads
    keys = _record_keys(planned.records, run.config)
    states = run.callback_states or {}
    kept = {k: states[k] for k in keys if k in states}
    if keys and len(kept) != len(keys):
        raise ValueError(f"the store's run lacks the records {', '.join(k for k in keys if k not in kept)}")
    if kept:
        st.atomic_save(kept, folder / st.CALLBACKS_FILE)

    # weights, for small models
    weights: dict[str, Any] = {"included": False}
    model_file = run.path / st.MODEL_FILE
    if run.status == st.FINISHED and model_file.is_file():
        state = st.load_torch_file(model_file, weights_only=True)
        n = _parameters(state)
        weights["parameters"] = n
        if n <= MAX_WEIGHT_PARAMETERS:
            shutil.copyfile(model_file, folder / st.MODEL_FILE)
            weights["included"] = True
        else:
            weights["why_not"] = f"{n:,} parameters, more than {MAX_WEIGHT_PARAMETERS:,}: the derived results carry " \
                                 "what the chapter computes from them"
    else:
        weights["why_not"] = f"the run is {run.status}, with no final weights"
    if not weights["included"]:
        info.pop("model_bytes", None)
    st.atomic_write_json(info, folder / st.STATUS_FILE)

    # what the chapter computes from the weights and the data
    derived_names: list[str] = []
    for chapter in planned.chapters:
        compute = DERIVED.get(chapter)
        ch = chapters.get(chapter)
        if compute is None or ch is None:
            continue
        arms = [a for a in ch.arms if any(c.key() == run.config.key() for c in a.configs)]
        for arm in arms:
            for name, data in compute(run, arm, ch.params, lambda r: _loader_for(r, loaders)).items():
                path = bd.derived_path(folder, name)
                path.parent.mkdir(exist_ok=True)
                st.atomic_write_json(data, path)
                derived_names.append(name)

    files = {}
    for rel in bd.folder_files(folder):
        files[rel] = {"sha256": bd.file_digest(folder / rel), "bytes": (folder / rel).stat().st_size}
    meta = {
        "format": bd.FORMAT, "run": run.name, "profile": profile, "chapters": list(planned.chapters),
        "uses": list(planned.uses), "published": st.now_iso(), "commit": commit, "dirty": dirty,
        "training": {k: info.get(k) for k in TRAINING_FIELDS if k in info},
        "data": _data_provenance(run), "code": code_digest(planned.chapters, root),
        "weights": weights, "records": sorted(kept), "derived": sorted(derived_names), "torch_at_publication":
            torch.__version__, "files": files,
    }
    st.atomic_write_json(meta, folder / bd.PUBLISHED_FILE)
    exp.folder, exp.bytes = folder, sum(f["bytes"] for f in files.values()) + (folder / bd.PUBLISHED_FILE).stat().st_size
    exp.notes = [f"{len(run.history)} epochs", "weights" if weights["included"] else "no weights",
                 *([f"records {', '.join(sorted(kept))}"] if kept else []),
                 *([f"derived {', '.join(sorted(derived_names))}"] if derived_names else [])]
    return exp


def _loader_for(run: Run, loaders: dict) -> Any:
    """The run's test loader on its model's device, one per data copy and device (loaded on first use)."""
    from .sparsity import test_loader

    device = next(run.model.parameters()).device
    c = run.config
    spec = (c.dataset, c.source, c.data_root, c.test_size, c.val_size, str(device))
    if spec not in loaders:
        loaders[spec] = test_loader(c, device=device, lazy=True)
    return loaders[spec]


# --- the bundle -----------------------------------------------------------------------------------------

def _same_files(a: Path, b: Path) -> bool:
    """Whether two published run folders hold the same files (``published.json`` aside)."""
    meta_a, _ = bd._read_json(a / bd.PUBLISHED_FILE)
    meta_b, _ = bd._read_json(b / bd.PUBLISHED_FILE)
    if not (isinstance(meta_a, dict) and isinstance(meta_b, dict)):
        return False
    strip = lambda files: {k: v.get("sha256") for k, v in (files or {}).items()}  # noqa: E731
    return strip(meta_a.get("files")) == strip(meta_b.get("files"))


def bundle_size(bundle: Path) -> int:
    """Bytes of every file under ``bundle`` (staging folders aside)."""
    total = 0
    for rel in bd.folder_files(bundle) if bundle.is_dir() else []:
        if not rel.startswith("."):
            total += (bundle / rel).stat().st_size
    return total


def _run_bytes(folder: Path) -> int:
    return sum((folder / rel).stat().st_size for rel in bd.folder_files(folder))


def _manifest_current(bundle: Path) -> bool:
    """Whether the bundle has no run folders, or a manifest listing exactly its run folders with their
    ``published.json`` as they are (a publication interrupted before its manifest was written is not)."""
    folders = sorted(p for p in bundle.iterdir() if p.is_dir() and not p.name.startswith(".")) \
        if bundle.is_dir() else []
    if not folders:
        return True
    top, problem = bd.manifest(bundle)
    if problem is not None or set(top["runs"]) != {p.name for p in folders}:
        return False
    return all((top["runs"][p.name] or {}).get("published_sha256") == bd.file_digest(p / bd.PUBLISHED_FILE)
               for p in folders if (p / bd.PUBLISHED_FILE).is_file())


def write_manifest(bundle: Path, profile: str, max_bytes: int) -> dict:
    """(Re)write ``MANIFEST.json``: every run folder of the bundle with its chapters, uses, size and the sha256 of
    its ``published.json``, and the bundle's total size."""
    runs = {}
    for folder in sorted(p for p in bundle.iterdir() if p.is_dir() and not p.name.startswith(".")):
        meta, problem = bd._read_json(folder / bd.PUBLISHED_FILE)
        if problem is not None or not isinstance(meta, dict):
            raise PublishError(f"{folder}: {problem or 'not a published run'}; remove it or publish it again")
        runs[folder.name] = {"chapters": meta.get("chapters"), "uses": meta.get("uses"),
                             "published": meta.get("published"), "commit": meta.get("commit"),
                             "bytes": _run_bytes(folder),
                             "published_sha256": bd.file_digest(folder / bd.PUBLISHED_FILE)}
    data = {"format": bd.FORMAT, "profile": profile, "updated": st.now_iso(), "runs": runs,
            "bytes": sum(r["bytes"] for r in runs.values()), "max_bytes": max_bytes}
    text = json.dumps(data, indent=1)
    data["bytes"] += len(text.encode()) + 32  # the manifest itself (approximately: its own size field)
    st.atomic_write_json(data, bundle / bd.MANIFEST_FILE)
    return data


@dataclass
class Report:
    """What :func:`publish` did: exports (published and not), the bundle and its size."""

    bundle: Path
    exports: list[Export]
    bytes: int = 0
    max_bytes: int = MAX_BYTES
    dry_run: bool = False

    def text(self) -> str:
        done = [e for e in self.exports if e.reason is None]
        lines = []
        for e in self.exports:
            if e.reason is None:
                state = "unchanged" if e.unchanged else ("would publish" if self.dry_run else "published")
                lines.append(f"  {state:<13} {e.name:<24} {e.bytes / 1e3:8.0f} kB  {e.uses[0]}; {', '.join(e.notes)}")
        for e in self.exports:
            if e.reason is not None:
                lines.append(f"  NOT published {e.name:<24} {e.uses[0]}: {e.reason}")
        size = f"{self.bytes / 1e6:.2f} MB of at most {self.max_bytes / 1e6:.1f} MB"
        lines.append(f"bundle {self.bundle}: {len(done)} of {len(self.exports)} planned runs "
                     f"{'would be ' if self.dry_run else ''}published; {size}")
        return "\n".join(lines)


def publish(profile: str, chapters: Sequence[str] | None = None, *, runs_dir: str | Path | None = None,
            out: str | Path | None = None, root: str | Path | None = None, max_bytes: int = MAX_BYTES,
            replace: bool = False, dry_run: bool = False) -> Report:
    """Export the store's finished runs of ``profile``'s plan (``chapters``: all when None) into the bundle
    ``out`` (default ``results/<profile>`` under the book root). See the module doc."""
    root = _plan.book_root(root)
    plan = _plan.for_profile(profile, root, chapters)
    planned = plan.select(chapters)
    store = RunStore(runs_dir or _plan.default_store(profile, root), published=())  # the local store only, read
    bundle = (Path(out) if out is not None else root / "results" / profile).resolve()
    commit, dirty = git_state(root)
    exports: list[Export] = []
    loaders: dict = {}
    if not dry_run:  # staged beside the bundle (same file system: moved into place whole)
        bundle.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".publish-{bundle.name}-", dir=None if dry_run else bundle.parent))
    try:
        for r in planned:
            exp = Export(r.name, list(r.uses))
            run = store.get(r.config)
            check = getattr(r.records, "has_records", None)
            if run is None:
                kept = " (the bundle's copy stays as it is)" if (bundle / r.name).is_dir() else ""
                exp.reason = f"missing (not in the store {store.root}){kept}"
            elif run.status == st.DAMAGED:
                exp.reason = f"damaged ({'; '.join(run.problems)})"
            elif run.status not in st.DONE:
                exp.reason = f"unfinished ({run.status}, epoch {len(run.history)}/{r.config.epochs})"
            elif check is not None and not check(run):
                exp.reason = "stored without the records its chapter reads (train it with them: python -m cifar_utils.train)"
            else:
                try:
                    exp = export_run(run, r, plan.chapters, staging, profile=profile, root=root, commit=commit,
                                     dirty=dirty, loaders=loaders)
                except Exception as exc:  # one run's failure (no data for its derived tables...) is reported
                    exp.reason = f"export failed: {type(exc).__name__}: {exc}"
                    shutil.rmtree(staging / r.name, ignore_errors=True)
            exports.append(exp)

        ready = [e for e in exports if e.reason is None]
        for e in ready:
            existing = bundle / e.name
            if existing.is_dir():
                if _same_files(existing, e.folder):
                    e.unchanged = True
                elif not replace:
                    raise PublishError(f"{existing} is already published with other files (the run was trained or "
                                       "exported differently since); pass --replace to publish it again")
        replaced = {e.name for e in ready if not e.unchanged and (bundle / e.name).is_dir()}
        kept = [p for p in bundle.iterdir() if p.is_dir() and not p.name.startswith(".") and p.name not in replaced] \
            if bundle.is_dir() else []
        new = [e for e in ready if not e.unchanged]
        total = sum(_run_bytes(p) for p in kept) + sum(e.bytes for e in new) + 2000 + 400 * (len(kept) + len(new))
        report = Report(bundle, exports, total, max_bytes, dry_run)
        if total > max_bytes:
            big = sorted(new, key=lambda e: -e.bytes)[:5]
            raise PublishError(f"the bundle {bundle} would hold {total / 1e6:.2f} MB, more than the cap of "
                               f"{max_bytes / 1e6:.1f} MB (--max-mb); nothing was written. Largest new runs: "
                               + ", ".join(f"{e.name} {e.bytes / 1e6:.2f} MB" for e in big))
        if dry_run or (not new and _manifest_current(bundle)):
            if not dry_run and bundle.is_dir():
                report.bytes = bundle_size(bundle)
            return report
        bundle.mkdir(exist_ok=True)
        for e in new:
            target = bundle / e.name
            old = None
            if target.exists():
                old = bundle / f".replaced-{e.name}-{os.getpid()}"
                os.replace(target, old)
            os.replace(e.folder, target)
            if old is not None:
                shutil.rmtree(old)
        write_manifest(bundle, profile, max_bytes)
        report.bytes = bundle_size(bundle)
        return report
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    """The command line (see the module doc)."""
    ap = argparse.ArgumentParser(prog="python -m cifar_utils.publish", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="full", help="params/<profile>.yaml: whose plan to publish (default: full)")
    ap.add_argument("--chapters", default="", help="comma-separated chapters (06 or 06_dessilbi; default: all)")
    ap.add_argument("--runs-dir", default=None, help="the store to export from (default: $CIFAR_UTILS_RUNS, else "
                    "runs/<profile>)")
    ap.add_argument("--out", default=None, help="the bundle (default: results/<profile> under the book root)")
    ap.add_argument("--max-mb", type=float, default=MAX_BYTES / 1e6, help="the bundle's size cap in MB (default 20)")
    ap.add_argument("--replace", action="store_true", help="publish again runs the bundle holds with other files")
    ap.add_argument("--dry-run", action="store_true", help="say what would be published; write nothing")
    args = ap.parse_args(argv)
    if not args.max_mb > 0:
        ap.error(f"--max-mb must be > 0, got {args.max_mb}")
    try:
        chapters = _plan.expand_chapters(args.chapters)
    except SystemExit as exc:
        print(f"publish: {exc}", file=sys.stderr)
        return 2
    try:
        report = publish(args.profile, chapters, runs_dir=args.runs_dir, out=args.out,
                         max_bytes=int(args.max_mb * 1e6), replace=args.replace, dry_run=args.dry_run)
    except PublishError as exc:
        print(f"publish: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:  # a bad profile or parameter: one line naming what is allowed
        print(f"publish: {exc}", file=sys.stderr)
        return 2
    print(f"publish: profile {args.profile!r}, chapters {', '.join(chapters) if chapters else 'all'}")
    print(report.text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
