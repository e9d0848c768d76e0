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

from .params import (RUNNER_PARAMETERS, ProfileError, load_profile, notebook_parameters, published_folders,
                     validate_profile)

HIDDEN_TAGS = ("parameters", "injected-parameters")
log = logging.getLogger("cifar_utils.book")


#: Per-cell execution limit when a profile does not set ``runner: {cell_timeout: ...}`` (seconds).
DEFAULT_CELL_TIMEOUT = 6 * 3600
#: How long a kernel may take to start and answer (seconds).
DEFAULT_START_TIMEOUT = 180
#: Set to "1" in the kernels the runner starts: chapters show static figures instead of live
#: widgets (see :func:`cifar_utils.widgets.show_explorer`).
STATIC_ENV = "CIFAR_UTILS_STATIC"


class ChapterFailed(RuntimeError):
    """A chapter did not finish: a cell raised, timed out, or the kernel died or did not start.

    The message names the chapter, the cell (index and first line), what happened and where the
    partly executed notebook is. ``kind`` is ``error``, ``timeout``, ``dead`` or ``start``;
    ``result`` (when raised by :func:`build_book`) is the whole :class:`BookRun`.
    """

    def __init__(self, message: str, kind: str = "error", result: "BookRun | None" = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.result = result


@dataclass(frozen=True)
class RunnerSettings:
    """Limits for executing one notebook; ``cell_timeout=None`` means no limit."""

    cell_timeout: int | None = DEFAULT_CELL_TIMEOUT
    start_timeout: int = DEFAULT_START_TIMEOUT


def runner_settings(profile: dict, cell_timeout: int | None = None,
                    start_timeout: int | None = None) -> RunnerSettings:
    """The profile's ``runner:`` section (already validated), overridden by the command line.

    A cell timeout of 0 (or ``null`` in the profile) means no limit.
    """
    section = profile.get("runner") or {}
    cell = section.get("cell_timeout", DEFAULT_CELL_TIMEOUT) if cell_timeout is None else cell_timeout
    start = section.get("start_timeout", DEFAULT_START_TIMEOUT) if start_timeout is None else start_timeout
    return RunnerSettings(cell_timeout=int(cell) if cell else None, start_timeout=int(start))


#: The bundles of published runs the kernels' stores read beneath ``CIFAR_UTILS_RUNS``
#: (``cifar_utils.engine.bundle.ENV_VAR``; not imported: this module imports no torch).
PUBLISHED_ENV = "CIFAR_UTILS_PUBLISHED"


def kernel_environment(root: Path, profile: str, published: list[Path] | None = None) -> dict[str, str]:
    """Environment variables the chapter kernels get (this process's own environment is unchanged): the store
    (``$CIFAR_UTILS_RUNS``, else ``runs/<profile>``) and the bundles of published runs beneath it
    (``$CIFAR_UTILS_PUBLISHED`` when set, else the profile's ``published:`` folders, else none)."""
    layers = os.pathsep.join(str(p) for p in (published or []))
    return {"CIFAR_UTILS_PROGRESS": os.environ.get("CIFAR_UTILS_PROGRESS", "log"),
            "CIFAR_UTILS_RUNS": os.environ.get("CIFAR_UTILS_RUNS", str(Path(root) / "runs" / profile)),
            PUBLISHED_ENV: os.environ.get(PUBLISHED_ENV, layers),
            STATIC_ENV: "1"}


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

    @property
    def logs(self) -> Path:
        return self.build_dir / "logs"

    def kernel_log(self, chapter: str) -> Path:
        """Where the kernel process's own stdout/stderr go for one chapter (rewritten every attempt)."""
        return self.logs / f"{chapter}.kernel.log"

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
    output: Path  # the executed copy in the staging tree, or the partly executed one in _build/failed
    ok: bool = True
    error: str | None = None  # the failure message when not ok


@dataclass
class BookRun:
    profile: str
    chapters: list[ChapterResult] = field(default_factory=list)
    html_index: Path | None = None

    @property
    def executed(self) -> list[ChapterResult]:
        return [c for c in self.chapters if c.ok]

    @property
    def failed(self) -> list[ChapterResult]:
        return [c for c in self.chapters if not c.ok]

    def summary(self) -> str:
        """One line per chapter: ok / failed, seconds, where its notebook is."""
        lines = [f"  {c.chapter:<28} {'ok' if c.ok else 'FAILED':<7} {c.seconds:8.1f} s  -> {c.output}"
                 for c in self.chapters]
        return "\n".join(lines)


def kernel_parameters(layout: BookLayout, notebook: Path, profile: str, values: dict) -> dict:
    """The parameters papermill injects into ``notebook``: the profile's ``values`` for it, and the
    runner's own (``profile``, ``executed_dir``, ``failed_dir``) where its parameters cell declares them.
    ``make lab`` (:mod:`cifar_utils.book.lab`) injects the same."""
    declared = notebook_parameters(notebook)
    params = dict(values)
    nb_dir = notebook.parent.relative_to(layout.root)
    runner_values = {"profile": profile, "executed_dir": str(layout.src / nb_dir), "failed_dir": str(layout.failed)}
    params.update({k: v for k, v in runner_values.items() if k in declared and k in RUNNER_PARAMETERS})
    return params


def _first_line(source: str | list[str]) -> str:
    text = "".join(source) if isinstance(source, list) else source
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    line = lines[0] if lines else "(empty cell)"
    return line if len(line) <= 80 else line[:77] + "..."


def _signal_text(status: int | None) -> str:
    if status is None:
        return "exit status unknown"
    if status < 0:
        import signal

        try:
            name = signal.Signals(-status).name
        except ValueError:
            name = "?"
        return f"killed by signal {-status} ({name})"
    return f"exit code {status}"


def execute_notebook(chapter: str, notebook: Path, parameters: dict, layout: BookLayout,
                     kernel_name: str | None = None, settings: RunnerSettings = RunnerSettings(),
                     env: dict[str, str] | None = None) -> Path:
    """Run one notebook with papermill into the staging tree; a failure keeps the last good copy.

    Every cell runs under ``settings.cell_timeout`` and the kernel must start within
    ``settings.start_timeout``. A cell that raises, times out, or whose kernel dies raises
    :class:`ChapterFailed` naming the chapter, the cell and what happened; the partly executed
    notebook goes to ``_build/failed/`` with the message in its metadata (``cifar_utils.failure``).

    The kernel process's own stdout/stderr (ipykernel's messages; the cells' outputs reach the
    console through papermill as before) go to ``_build/logs/<chapter>.kernel.log``: a failed
    chapter's message names that file and nothing of the kernel's reaches the console (a kernel
    killed on a timeout prints a ZMQ traceback there); a chapter that succeeds copies it to stderr
    afterwards, as the kernel itself used to print it.
    """
    import papermill as pm
    from nbclient.exceptions import CellTimeoutError, DeadKernelError
    from papermill.exceptions import PapermillExecutionError

    layout.failed.mkdir(parents=True, exist_ok=True)
    work = layout.build_dir / "executing" / notebook.name
    work.parent.mkdir(parents=True, exist_ok=True)
    current: dict = {}

    def on_cell_execute(cell, cell_index, **_kw):
        current.update(index=cell_index, source=cell.get("source", ""))

    from .kernel import watched_kernel_manager

    kernel_log = layout.kernel_log(chapter)
    kernel_log.parent.mkdir(parents=True, exist_ok=True)
    kernel_log.write_bytes(b"")  # this attempt's only
    manager = watched_kernel_manager(kernel_log)
    try:
        with _environment(env or {}):  # the kernel inherits it; this process is left as it was
            pm.execute_notebook(str(notebook), str(work), parameters=parameters, kernel_name=kernel_name,
                                log_output=True, progress_bar=False, cwd=str(layout.root),
                                start_timeout=settings.start_timeout, execution_timeout=settings.cell_timeout,
                                on_cell_execute=on_cell_execute, kernel_manager_class=manager)
    except PapermillExecutionError as exc:
        kind, what, index = "error", f"{exc.ename}: {exc.evalue}", exc.cell_index
    except CellTimeoutError:
        kind, index = "timeout", current.get("index")
        what = (f"timeout: the cell was still running after {settings.cell_timeout} s (raise the limit with "
                "--cell-timeout SECONDS or the profile's runner: cell_timeout)")
    except DeadKernelError:
        kind, index = "dead", current.get("index")
        what = f"the kernel died ({_signal_text(manager.exit_status)})"
    except Exception as exc:  # noqa: BLE001 - a kernel that does not start, a broken notebook...
        started = "index" in current
        kind, index = ("error" if started else "start"), current.get("index")
        what = (f"{type(exc).__name__}: {exc}" if started else
                f"the kernel did not start ({type(exc).__name__}: {exc}; start timeout {settings.start_timeout} s)")
    else:
        dest = layout.staged(notebook)
        dest.parent.mkdir(parents=True, exist_ok=True)
        hide_parameter_cells(work)
        os.replace(work, dest)
        (layout.failed / notebook.name).unlink(missing_ok=True)
        _replay(kernel_log)
        return dest

    failed = layout.failed / notebook.name
    # The cell as nbclient ran it (index among the cells of the parameterised notebook, counting the
    # injected-parameters cell); papermill later puts an error banner cell on top of the saved copy.
    if index is not None and current.get("index") == index:
        where = f"in cell {index} ({_first_line(current.get('source', ''))!r})"
    else:
        where = "before any cell ran" if index is None else f"in cell {index}"
    # Always (re)write the failed copy, so it is this attempt's (the status page reads it): the partly
    # executed notebook, or the notebook as written when papermill saved nothing.
    nb = json.loads((work if work.exists() else notebook).read_text())
    nb.setdefault("metadata", {})["cifar_utils"] = {"failure": what, "kind": kind, "cell_index": index,
                                                    "failed_at": time.strftime("%Y-%m-%d %H:%M:%S")}
    failed.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
    work.unlink(missing_ok=True)
    kept = layout.staged(notebook)
    raise ChapterFailed(
        f"chapter {chapter} failed {where}: {what}\n"
        f"  the partly executed notebook is at {failed}\n"
        f"  the kernel's own output (stderr, e.g. a killed kernel's traceback) is in {kernel_log}\n"
        f"  the book keeps {'the last good executed copy' if _is_executed(kept) else 'the unexecuted notebook'}"
        f" of this chapter; the other chapters' executed notebooks are in {layout.src / 'book'}",
        kind=kind) from None


def _replay(log: Path) -> None:
    """A successful chapter's kernel output, onto stderr (where the kernel used to write it)."""
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return
    if text:
        sys.stderr.write(text if text.endswith("\n") else text + "\n")
        sys.stderr.flush()


def _is_executed(path: Path) -> bool:
    try:
        return "papermill" in json.loads(path.read_text()).get("metadata", {})
    except (OSError, ValueError):
        return False


def kernel_interpreter(kernel_name: str | None) -> str:
    """The Python a Jupyter kernel will run: jupyter_client runs a spec's bare ``python`` as this
    interpreter (so the venv's own ``python3`` kernel is this venv), anything else as written."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    ksm = KernelSpecManager()
    try:
        argv = ksm.get_kernel_spec(kernel_name or "python3").argv
    except NoSuchKernel:
        raise ValueError(f"--kernel {kernel_name or 'python3'!r}: no such Jupyter kernel; installed kernels: "
                         f"{', '.join(sorted(ksm.find_kernel_specs())) or 'none'}") from None
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
               kernel_name: str | None = None, cell_timeout: int | None = None,
               start_timeout: int | None = None) -> BookRun:
    """Validate the profile, execute the chosen chapters, then build the HTML book.

    Notebooks whose parameters cell declares ``executed_dir`` are summary pages (the status page):
    they run after the chapters, every time, and get the staging folder of executed notebooks.
    A chapter that fails (exception, cell timeout, dead kernel) does not stop the others: the HTML
    is built from what there is, and :class:`ChapterFailed` is raised at the end with the whole
    :class:`BookRun` as ``result``. ``cell_timeout`` / ``start_timeout`` (seconds; a cell timeout of
    0 means none) override the profile's ``runner:`` section.
    """
    root = Path(root).resolve()
    if not (root / "_toc.yml").is_file():
        raise ProfileError(f"--root {root}: no _toc.yml there; point --root at the book's root folder "
                           "(the one holding _toc.yml, _config.yml, book/ and params/)")
    layout = BookLayout(root, Path(output_dir).resolve() if output_dir else root)
    notebooks = toc_notebooks(root)
    summaries = [c for c, p in notebooks.items() if "executed_dir" in notebook_parameters(p)]
    chapter_ids = [c for c in notebooks if c not in summaries]
    profile_path = root / "params" / f"{profile}.yaml"
    profile_data = load_profile(profile_path)
    selected = select_chapters(chapter_ids, chapters)
    values = validate_profile(profile_data, notebooks, source=str(profile_path), required=selected,
                              subset=bool(chapters), root=root)
    settings = runner_settings(profile_data, cell_timeout, start_timeout)

    kernel_env = kernel_environment(root, profile, published_folders(profile_data, root))
    interpreter = kernel_interpreter(kernel_name)  # an unknown kernel stops here, before anything is written
    stage_sources(layout)
    for chapter in chapter_ids:  # chapters not re-run keep their last executed copy, else render unexecuted
        dest = layout.staged(notebooks[chapter])
        if not dest.exists():
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(notebooks[chapter], dest)
            hide_parameter_cells(dest)

    log.info("kernel %r runs %s", kernel_name or "python3", interpreter)
    if Path(interpreter).resolve() != Path(sys.executable).resolve():
        log.warning("WARNING: that is not this Python (%s): the notebooks will import the cifar_utils installed "
                    "there; pass --kernel to choose another kernel", sys.executable)
    log.info("limits: %s per cell, %d s for a kernel to start",
             f"{settings.cell_timeout} s" if settings.cell_timeout else "no limit", settings.start_timeout)
    result = BookRun(profile)
    todo = selected + summaries
    t_all = time.monotonic()
    for i, chapter in enumerate(todo, 1):
        nb = notebooks[chapter]
        params = kernel_parameters(layout, nb, profile, values.get(chapter, {}))
        log.info("[%d/%d] %s: executing with profile %r %s", i, len(todo), chapter, profile,
                 json.dumps(values.get(chapter, {})))
        t0 = time.monotonic()
        try:
            out = execute_notebook(chapter, nb, params, layout, kernel_name, settings, kernel_env)
        except ChapterFailed as exc:
            seconds = time.monotonic() - t0
            result.chapters.append(ChapterResult(chapter, seconds, layout.failed / nb.name, ok=False, error=str(exc)))
            log.error("[%d/%d] %s: FAILED after %.1f s\n%s", i, len(todo), chapter, seconds, exc)
            continue
        seconds = time.monotonic() - t0
        result.chapters.append(ChapterResult(chapter, seconds, out))
        log.info("[%d/%d] %s: done in %.1f s (total %.1f s)", i, len(todo), chapter, seconds,
                 time.monotonic() - t_all)

    if build_html:
        log.info("building the HTML book with jupyter-book ...")
        jb = Path(sys.executable).with_name("jupyter-book")
        cmd = [str(jb) if jb.exists() else "jupyter-book", "build", str(layout.src), "--path-output", str(layout.out)]
        subprocess.run(cmd, check=True)
        result.html_index = layout.html / "index.html"
    if result.failed:
        names = ", ".join(c.chapter for c in result.failed)
        raise ChapterFailed(f"{len(result.failed)} of {len(result.chapters)} notebooks failed ({names}):\n\n"
                            + "\n\n".join(c.error or "" for c in result.failed), result=result)
    return result
