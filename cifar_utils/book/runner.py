"""Execute the chapter notebooks with papermill, then render the book with Jupyter Book.

The runner never writes into ``book/``: notebooks are executed into a staging copy of the book
(``_build/src``) that Jupyter Book renders to ``_build/html``. It imports no torch: the notebooks'
kernels do the work.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .params import RUNNER_PARAMETERS, load_profile, notebook_parameters, validate_profile

HIDDEN_TAGS = ("parameters", "injected-parameters")
log = logging.getLogger("cifar_utils.book")


class ChapterFailed(RuntimeError):
    """A chapter notebook raised; the message names the chapter and the cell."""


@dataclass(frozen=True)
class BookLayout:
    """Where things are for one book root."""

    root: Path
    out: Path  # the folder that receives ``_build/``

    @property
    def build_dir(self) -> Path:
        return self.out / "_build"

    @property
    def src(self) -> Path:
        return self.build_dir / "src"

    @property
    def html(self) -> Path:
        return self.build_dir / "html"

    @property
    def failed(self) -> Path:
        return self.build_dir / "failed"

    def staged(self, notebook: Path) -> Path:
        return self.src / notebook.relative_to(self.root)


def toc_files(root: Path) -> list[str]:
    """Every file named in ``_toc.yml`` (jb-book format), in reading order, without suffix."""
    toc = yaml.safe_load((root / "_toc.yml").read_text())
    files: list[str] = []

    def walk(entries: list | None) -> None:
        for entry in entries or []:
            if "file" in entry:
                files.append(entry["file"])
            walk(entry.get("sections"))
            walk(entry.get("chapters"))
            for part in entry.get("parts", []) if isinstance(entry.get("parts"), list) else []:
                walk(part.get("chapters"))

    if "root" in toc:
        files.append(toc["root"])
    walk(toc.get("chapters"))
    for part in toc.get("parts") or []:
        walk(part.get("chapters"))
    return files


def toc_notebooks(root: Path) -> dict[str, Path]:
    """Chapter id (the notebook's file stem) -> notebook path, for the notebooks in the toc."""
    out: dict[str, Path] = {}
    for name in toc_files(root):
        path = root / name
        if path.suffix != ".ipynb":
            path = path.with_suffix(".ipynb")
        if path.is_file():
            out[path.stem] = path
    return out


def select_chapters(available: list[str], chapters: str | list[str] | None) -> list[str]:
    """Resolve ``--chapters 01,03`` (prefixes or full ids) against the available chapter ids."""
    if not chapters:
        return list(available)
    wanted = [c.strip() for c in (chapters.split(",") if isinstance(chapters, str) else chapters) if c.strip()]
    chosen: list[str] = []
    for w in wanted:
        hits = [c for c in available if c == w or c.split("_")[0] == w or c.startswith(w)]
        if len(hits) != 1:
            what = "matches no chapter" if not hits else f"is ambiguous ({', '.join(hits)})"
            raise ValueError(f"--chapters {w!r} {what}; chapters: {', '.join(available)}")
        if hits[0] not in chosen:
            chosen.append(hits[0])
    return [c for c in available if c in chosen]


def stage_sources(layout: BookLayout) -> None:
    """Copy the book's non-notebook sources (config, toc, markdown, bib, images) into the staging tree."""
    layout.src.mkdir(parents=True, exist_ok=True)
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy2(layout.root / name, layout.src / name)
    book = layout.root / "book"
    for path in book.rglob("*"):
        if path.is_file() and path.suffix != ".ipynb" and ".ipynb_checkpoints" not in path.parts:
            dest = layout.staged(path)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, dest)


def hide_parameter_cells(path: Path) -> None:
    """Tag the parameter cells ``remove-cell`` so the HTML does not show them."""
    nb = json.loads(path.read_text())
    for cell in nb["cells"]:
        tags = cell.setdefault("metadata", {}).setdefault("tags", [])
        if any(t in tags for t in HIDDEN_TAGS) and "remove-cell" not in tags:
            tags.append("remove-cell")
    path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")


@dataclass
class ChapterResult:
    chapter: str
    seconds: float
    output: Path


@dataclass
class BookRun:
    profile: str
    executed: list[ChapterResult] = field(default_factory=list)
    html_index: Path | None = None


def execute_notebook(chapter: str, notebook: Path, parameters: dict, layout: BookLayout,
                     kernel_name: str | None = None) -> Path:
    """Run one notebook with papermill into the staging tree; a failure keeps the last good copy."""
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    layout.failed.mkdir(parents=True, exist_ok=True)
    work = layout.build_dir / "executing" / notebook.name
    work.parent.mkdir(parents=True, exist_ok=True)
    try:
        pm.execute_notebook(str(notebook), str(work), parameters=parameters, kernel_name=kernel_name,
                            log_output=True, progress_bar=False, cwd=str(layout.root))
    except PapermillExecutionError as exc:
        failed = layout.failed / notebook.name
        shutil.move(str(work), failed)
        raise ChapterFailed(
            f"chapter {chapter} failed in cell {exc.cell_index} (execution count {exc.exec_count}): "
            f"{exc.ename}: {exc.evalue}\n  the partly executed notebook is at {failed}\n"
            f"  the other chapters' executed notebooks are kept in {layout.src / 'book'}") from None
    dest = layout.staged(notebook)
    dest.parent.mkdir(parents=True, exist_ok=True)
    hide_parameter_cells(work)
    os.replace(work, dest)
    (layout.failed / notebook.name).unlink(missing_ok=True)
    return dest


def kernel_interpreter(kernel_name: str | None) -> str:
    """The Python a Jupyter kernel will run: jupyter_client runs a spec's bare ``python`` as this
    interpreter (so the venv's own ``python3`` kernel is this venv), anything else as written."""
    from jupyter_client.kernelspec import KernelSpecManager

    argv = KernelSpecManager().get_kernel_spec(kernel_name or "python3").argv
    bare = {"python", f"python{sys.version_info[0]}", "python{}.{}".format(*sys.version_info[:2])}
    return sys.executable if argv and argv[0] in bare else (argv[0] if argv else "?")


@contextlib.contextmanager
def _environment(values: dict[str, str]):
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def build_book(root: Path | str = ".", profile: str = "smoke", chapters: str | list[str] | None = None,
               output_dir: Path | str | None = None, build_html: bool = True,
               kernel_name: str | None = None) -> BookRun:
    """Validate the profile, execute the chosen chapters, then build the HTML book.

    Notebooks whose parameters cell declares ``executed_dir`` are summary pages (the status page):
    they run after the chapters, every time, and get the staging folder of executed notebooks.
    """
    root = Path(root).resolve()
    layout = BookLayout(root, Path(output_dir).resolve() if output_dir else root)
    notebooks = toc_notebooks(root)
    summaries = [c for c, p in notebooks.items() if "executed_dir" in notebook_parameters(p)]
    chapter_ids = [c for c in notebooks if c not in summaries]
    profile_path = root / "params" / f"{profile}.yaml"
    values = validate_profile(load_profile(profile_path), notebooks, source=str(profile_path))
    selected = select_chapters(chapter_ids, chapters)

    kernel_env = {"CIFAR_UTILS_PROGRESS": os.environ.get("CIFAR_UTILS_PROGRESS", "log"),
                  "CIFAR_UTILS_RUNS": os.environ.get("CIFAR_UTILS_RUNS", str(root / "runs" / profile))}
    stage_sources(layout)
    for chapter in chapter_ids:  # chapters not re-run keep their last executed copy, else render unexecuted
        dest = layout.staged(notebooks[chapter])
        if not dest.exists():
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(notebooks[chapter], dest)
            hide_parameter_cells(dest)

    interpreter = kernel_interpreter(kernel_name)
    log.info("kernel %r runs %s", kernel_name or "python3", interpreter)
    if Path(interpreter).resolve() != Path(sys.executable).resolve():
        log.warning("WARNING: that is not this Python (%s): the notebooks will import the cifar_utils installed "
                    "there; pass --kernel to choose another kernel", sys.executable)
    result = BookRun(profile)
    todo = selected + summaries
    t_all = time.monotonic()
    for i, chapter in enumerate(todo, 1):
        nb = notebooks[chapter]
        declared = notebook_parameters(nb)
        params = dict(values.get(chapter, {}))
        runner_values = {"profile": profile, "executed_dir": str(layout.src / nb.parent.relative_to(root))}
        params.update({k: v for k, v in runner_values.items() if k in declared and k in RUNNER_PARAMETERS})
        log.info("[%d/%d] %s: executing with profile %r %s", i, len(todo), chapter, profile,
                 json.dumps(values.get(chapter, {})))
        t0 = time.monotonic()
        with _environment(kernel_env):  # the kernels inherit it; this process is left as it was
            out = execute_notebook(chapter, nb, params, layout, kernel_name)
        seconds = time.monotonic() - t0
        result.executed.append(ChapterResult(chapter, seconds, out))
        log.info("[%d/%d] %s: done in %.1f s (total %.1f s)", i, len(todo), chapter, seconds,
                 time.monotonic() - t_all)

    if build_html:
        log.info("building the HTML book with jupyter-book ...")
        jb = Path(sys.executable).with_name("jupyter-book")
        cmd = [str(jb) if jb.exists() else "jupyter-book", "build", str(layout.src), "--path-output", str(layout.out)]
        subprocess.run(cmd, check=True)
        result.html_index = layout.html / "index.html"
    return result
