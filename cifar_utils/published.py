"""Where a chapter's numbers come from: published runs (a bundle, :mod:`cifar_utils.engine.bundle`) or this
build's store, said in one line under each chapter's title, and whether the chapter's code changed since
its runs were published.

* :func:`code_files` / :func:`code_digest` -- the code that decides a chapter's numbers: the package's
  engine, optimizers, data and models, ``experiments.py``, ``plan.py``, the chapter's helper module and
  the code cells of its notebook (not its parameters cell: the parameters are in every run's config). A
  publication records the sha256 of each (``published.json``'s ``code``), and :func:`code_changes` lists
  those that differ now.
* :func:`describe` -- the line under a chapter's title, from the chapter's planned runs (a
  :class:`cifar_utils.plan.ChapterRuns`) and the store: per part of the chapter, "published full-profile
  runs, N seeds, E epochs on N images, trained on <device>, <date>, commit <sha>" (and "the chapter's code
  changed since: <files>") or this build's own runs (the smoke note in a smoke build).
  :func:`show` displays it (and records it in the output's metadata, which the status page reads).
* :func:`profile_of` -- the profile a part's numbers belong to (the publication's when every run of the
  part is published), for the figures' and tables' notes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .chapters import CH4, CH5, CH6

#: Package sources that decide every chapter's numbers (relative to the book root; folders are read recursively).
COMMON_CODE: tuple[str, ...] = ("cifar_utils/engine", "cifar_utils/optim", "cifar_utils/data", "cifar_utils/models",
                                "cifar_utils/experiments.py", "cifar_utils/plan.py")
#: Each chapter's helper module, which computes what the chapter shows from the runs.
CHAPTER_CODE: dict[str, tuple[str, ...]] = {CH4: ("cifar_utils/cam.py",), CH5: ("cifar_utils/bn_metrics.py",),
                                            CH6: ("cifar_utils/sparsity.py",)}
#: Key of a displayed output's metadata holding the line (the status page reads it back).
METADATA_KEY = "cifar_utils"
LINE_KEY = "results_line"


def notebook_path(chapter: str, root: str | Path | None = None) -> str:
    return f"book/{chapter}.ipynb"


def code_files(chapters: Iterable[str], root: str | Path | None = None) -> list[str]:
    """The files (relative to the book root, POSIX) whose code decides ``chapters``' numbers, sorted: every
    ``.py`` file under :data:`COMMON_CODE`, the chapters' helpers and their notebooks."""
    from .plan import book_root

    root = book_root(root)
    out: set[str] = set()
    for entry in COMMON_CODE:
        path = root / entry
        if path.is_dir():
            out |= {p.relative_to(root).as_posix() for p in path.rglob("*.py") if "__pycache__" not in p.parts}
        else:
            out.add(entry)
    for chapter in chapters:
        out |= set(CHAPTER_CODE.get(chapter, ()))
        out.add(notebook_path(chapter))
    return sorted(out)


def file_code_digest(path: Path) -> str | None:
    """sha256 of a source file; for a notebook, of its code cells except the parameters cell (outputs,
    metadata and prose do not decide numbers). None when the file does not exist."""
    if not path.is_file():
        return None
    if path.suffix == ".ipynb":
        nb = json.loads(path.read_text(encoding="utf-8"))
        cells = []
        for cell in nb.get("cells", []):
            if cell.get("cell_type") != "code" or "parameters" in cell.get("metadata", {}).get("tags", []):
                continue
            src = cell.get("source", "")
            src = "".join(src) if isinstance(src, list) else src
            cells.append("\n".join(line.rstrip() for line in src.strip().splitlines()))
        data = "\n# --- cell ---\n".join(cells).encode()
    else:
        data = path.read_bytes()
    return hashlib.sha256(data).hexdigest()


def code_digest(chapters: Iterable[str], root: str | Path | None = None) -> dict[str, Any]:
    """``{"files": {path: sha256}, "sha256": digest of them all}`` for ``chapters``' code (:func:`code_files`)."""
    from .plan import book_root

    root = book_root(root)
    files = {rel: file_code_digest(root / rel) for rel in code_files(chapters, root)}
    files = {k: v for k, v in files.items() if v is not None}
    whole = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()
    return {"files": files, "sha256": whole}


def code_changes(meta: Mapping[str, Any], chapter: str, root: str | Path | None = None) -> list[str]:
    """The files of ``chapter``'s code (:func:`code_files`) that differ from what the publication ``meta``
    (a ``published.json``) recorded: changed, added since or removed since. A chapter notebook the
    publication did not record (the run was published for another chapter) is not compared."""
    from .plan import book_root

    root = book_root(root)
    then = dict((meta.get("code") or {}).get("files") or {})
    now = code_digest([chapter], root)["files"]
    changed = []
    for rel in sorted(set(now) | {k for k in then if _in_scope(k, chapter)}):
        if rel.endswith(".ipynb") and rel not in then:
            continue
        if then.get(rel) != now.get(rel):
            changed.append(rel if rel in now and rel in then else f"{rel} ({'added' if rel in now else 'removed'})")
    return changed


def _in_scope(rel: str, chapter: str) -> bool:
    return (any(rel == c or rel.startswith(c + "/") for c in COMMON_CODE) or rel in CHAPTER_CODE.get(chapter, ())
            or rel == notebook_path(chapter))


# --- the line under a chapter's title --------------------------------------------------------------------

def _runs_of(arms: Sequence[Any], store) -> list[tuple[Any, Any]]:
    """(config, stored run or None) for every distinct config of ``arms``."""
    seen: dict[str, Any] = {}
    for arm in arms:
        for c in arm.configs:
            seen.setdefault(c.key(), c)
    return [(c, store.get(c)) for c in seen.values()]


def profile_of(chapter, part: str | None = None, profile: str = "", store=None) -> str:
    """The profile whose protocol a part's numbers follow: the publication's (``"full"``) when every run of the
    part (arms whose path starts with ``part``; all arms when None) is published under one profile, else
    ``profile`` (this build's)."""
    from .engine import RunStore

    store = store if store is not None else RunStore()
    arms = [a for a in chapter.arms if part is None or (a.path[:1] == (part,))]
    runs = [r for _, r in _runs_of(arms, store)]
    profiles = {(r.published or {}).get("profile") for r in runs if r is not None and r.published}
    if runs and all(r is not None and r.published for r in runs) and len(profiles) == 1:
        return profiles.pop() or profile
    return profile


def _span(values: Iterable[Any]) -> str:
    vals = sorted({v for v in values if v is not None})
    return " - ".join([str(vals[0]), str(vals[-1])]) if len(vals) > 1 else (str(vals[0]) if vals else "?")


def _seeds(seeds: Sequence[int]) -> str:
    seeds = sorted(set(seeds))
    if len(seeds) > 2 and seeds == list(range(seeds[0], seeds[-1] + 1)):
        return f"{seeds[0]}-{seeds[-1]}"
    return ", ".join(map(str, seeds))


def _count(n: int | None) -> str:
    return f"{n:,}" if isinstance(n, int) else "?"


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def _published_text(arms: Sequence[Any], runs: Sequence[Any], chapter: str, root: Path) -> tuple[str, list[str]]:
    """The sentence for a part whose runs are all published, and the code files changed since."""
    metas = [r.published for r in runs]
    profiles = _span(m.get("profile") for m in metas)
    labels = list(dict.fromkeys(str(a.label) for a in arms))
    seeds = sorted({r.config.seed for r in runs})
    epochs = _span(r.config.epochs for r in runs)
    data = [m.get("data") or {} for m in metas]
    dataset = _span(str(d.get("dataset", "")).upper() or None for d in data)
    train = _span(_count(d.get("train_images")) for d in data)
    training = [m.get("training") or {} for m in metas]
    devices = _span(t.get("device_name") for t in training)
    precision = _span(t.get("precision") for t in training)
    torch_v = _span(t.get("torch_version") for t in training)
    dates = _span((t.get("finished") or "")[:10] or None for t in training)
    walls = [float(t.get("wall_seconds") or 0) for t in training]
    commits = _span(f"{(m.get('commit') or 'unknown')[:10]}{' (uncommitted changes)' if m.get('dirty') else ''}"
                    for m in metas)
    published_on = _span((m.get("published") or "")[:10] or None for m in metas)
    bundle = _span(_relative(Path(r.path).parent, root) for r in runs)
    what = " and ".join(labels) if len(labels) <= 3 else f"{len(labels)} variants"
    seed_text = f"{len(seeds)} seed{'s' if len(seeds) != 1 else ''} ({_seeds(seeds)})"
    text = (f"{profiles}-profile runs published in `{bundle}` (not trained by this build): {len(runs)} runs, {what} "
            f"x {seed_text}, {epochs} epochs on {train} {dataset} training images; trained on {devices} "
            f"({precision}, torch {torch_v}), {dates}, {_minutes(sum(walls) / max(1, len(walls)))} per run; "
            f"published {published_on} from commit {commits}")
    changed = sorted({f for m in metas for f in code_changes(m, chapter, root)})
    return text, changed


def _relative(path: Path, root: Path) -> str:
    try:
        return Path(path).resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(path)


def _local_text(runs: Sequence[Any], note: str | None, profile: str) -> str:
    if note:
        return note
    done = [r for r in runs if r is not None and r.device]
    details = ([f"profile {profile}"] if profile else []) + ([f"trained on {_span(r.device for r in done)}"] if done
                                                             else [])
    return "this build's own runs" + (f" ({', '.join(details)})" if details else "")


def describe_parts(chapter, *, note: str | None = None, parts: Mapping[str, str] | None = None,
                   notes: Mapping[str, str | None] | None = None, profile: str | None = None, store=None,
                   root: str | Path | None = None) -> list[dict[str, Any]]:
    """Per part of the chapter: ``title`` (from ``parts``, by the arms' first path element; None for a chapter
    in one part), ``source`` (``"published"``, ``"local"`` or ``"mixed"``), ``text``, ``changed`` (code files
    changed since the publication) and the runs."""
    from .engine import RunStore
    from .plan import book_root

    store = store if store is not None else RunStore()
    root = book_root(root)
    profile = profile or str(chapter.params.get("profile", ""))
    groups: dict[str | None, list[Any]] = {}
    for arm in chapter.arms:
        key = arm.path[0] if parts and arm.path and arm.path[0] in parts else None
        groups.setdefault(key, []).append(arm)
    out = []
    for key, arms in groups.items():
        pairs = _runs_of(arms, store)
        runs = [r for _, r in pairs]
        part_note = (notes or {}).get(key, note) if key is not None else note
        published = [r for r in runs if r is not None and r.published]
        if runs and len(published) == len(runs):
            text, changed = _published_text(arms, published, chapter.chapter, root)
            source = "published"
        elif published:
            text, changed = _published_text(arms, published, chapter.chapter, root)
            text = (f"{len(published)} of {len(runs)} runs are {text}; the other {len(runs) - len(published)} are "
                    + _local_text([r for r in runs if r is None or not r.published], part_note, profile))
            source = "mixed"
        else:
            text, changed, source = _local_text(runs, part_note, profile), [], "local"
        out.append({"title": (parts or {}).get(key) if key is not None else None, "source": source, "text": text,
                    "changed": changed, "runs": runs})
    return out


def describe(chapter, *, note: str | None = None, parts: Mapping[str, str] | None = None,
             notes: Mapping[str, str | None] | None = None, profile: str | None = None, store=None,
             root: str | Path | None = None) -> str:
    """The one line (Markdown) under a chapter's title saying where its numbers come from (see the module doc).

    ``chapter``: the chapter's :class:`~cifar_utils.plan.ChapterRuns`; ``note``: the chapter's results note
    (:func:`cifar_utils.experiments.results_note`, None for the full protocol); ``parts``: first path element
    of the arms -> the part's title, for a chapter whose parts may come from different places (chapter 6:
    ``{"lenet": "Parts 1-3 (LeNet on MNIST)", "resnet": "Part 4 (ResNet-18 on CIFAR-10)"}``), with each
    part's own note in ``notes``; ``profile``: this build's profile (named for its own runs). Reads the store (default ``RunStore()``: ``$CIFAR_UTILS_RUNS`` with
    ``$CIFAR_UTILS_PUBLISHED`` beneath); trains nothing."""
    described = describe_parts(chapter, note=note, parts=parts, notes=notes, profile=profile, store=store, root=root)
    pieces = []
    for part in described:
        text = part["text"]
        if part["changed"]:
            shown = ", ".join(f"`{f}`" for f in part["changed"][:4]) + (
                f" and {len(part['changed']) - 4} more" if len(part["changed"]) > 4 else "")
            text += f"; **the chapter's code changed since** ({shown})"
        pieces.append(f"{part['title']}: {text}" if part["title"] else text)
    sources = {p["source"] for p in described}
    if sources == {"published"}:
        head = "Published results."
    elif sources == {"local"} and all(p["text"] and "smoke" in p["text"] for p in described):
        head = "Smoke results."
    else:
        head = "Results."
    return f"**{head}** " + ". ".join(pieces).rstrip(".") + "."


def show(chapter, **kwargs) -> str:
    """Display :func:`describe`'s line (with it in the output's metadata, which the status page reads) and
    return it."""
    from IPython.display import Markdown, display

    line = describe(chapter, **kwargs)
    display(Markdown(line), metadata={METADATA_KEY: {LINE_KEY: plain(line)}})
    return line


def plain(markdown: str) -> str:
    """The line without Markdown emphasis and code marks."""
    return markdown.replace("**", "").replace("`", "")


def line_of(notebook: str | Path) -> str | None:
    """The line an executed chapter notebook showed (:func:`show`'s metadata), or None."""
    try:
        nb = json.loads(Path(notebook).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    for cell in nb.get("cells", []):
        for output in cell.get("outputs", []) or []:
            meta = (output.get("metadata") or {}).get(METADATA_KEY) or {}
            if LINE_KEY in meta:
                return str(meta[LINE_KEY])
    return None
