"""``make lab``: JupyterLab on the chapters, with the parameters and the results store of the last ``make book``.

``python -m cifar_utils.book.lab [--profile smoke] [--port N] [--fresh] [--prepare-only]``

The committed notebooks in ``book/`` default to the full protocol (200 epochs, official data): run as
they are, a chapter would start hours of training. So the lab opens copies, written to
``_build/lab/<profile>/book/`` (:func:`prepare_lab`):

* the executed copy of the last ``make book`` (``_build/src/book/<chapter>.ipynb``, outputs included)
  when it was run with the parameters this profile gives now (papermill records them in the
  notebook's metadata), else
* the committed notebook with the same parameters injected as papermill would inject them (the cell
  tagged ``injected-parameters``, ``cifar_utils.book.runner.kernel_parameters``).

Either way a chapter run cell by cell gets the book's parameters, and its runs come from the store the
runner used: ``CIFAR_UTILS_RUNS`` when set, else ``runs/<profile>``, with the profile's bundles of published
runs beneath it (``CIFAR_UTILS_PUBLISHED``, as the runner sets it; the server's kernels inherit both).
Finished runs are loaded, not retrained; a run the store lacks is trained as in ``make book``.
``CIFAR_UTILS_STATIC`` is set to ``0`` in the kernels, so the explorers are live widgets.

A lab copy changed since it was written (edited, or saved with new outputs) is kept on the next
``make lab``; ``--fresh`` moves it aside (``<name>.edited-<time>.ipynb``) and writes a new one.

:class:`LabServer` starts JupyterLab headless on a free localhost port with a random token, waits
(bounded) until it answers, and stops it and every kernel it started on every exit path. The live
browser test (``tests/test_lab_live.py``) uses it too. No torch here.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from .params import ProfileError, load_profile, notebook_parameters, published_folders, validate_profile
from .runner import (PUBLISHED_ENV, STATIC_ENV, BookLayout, kernel_environment, kernel_interpreter, kernel_parameters,
                     toc_notebooks)

#: Seconds JupyterLab may take to start answering (a cold start on a loaded 2-core machine takes ~10).
START_TIMEOUT_S = 120
#: Seconds a clean shutdown (``POST /api/shutdown``, which also shuts the kernels down) may take
#: before the server and its kernels are killed.
STOP_TIMEOUT_S = 20
MANIFEST = ".lab-manifest.json"
LAB_NOTE_TAG = "lab-note"


# --- where things are ----------------------------------------------------------------------------

def runs_store(root: Path | str, profile: str) -> Path:
    """The results store the book's kernels use for ``profile``: ``$CIFAR_UTILS_RUNS``, else
    ``<root>/runs/<profile>`` (``cifar_utils.book.runner.kernel_environment``)."""
    return Path(kernel_environment(Path(root), profile)["CIFAR_UTILS_RUNS"]).resolve()


def lab_dir(out: Path | str, profile: str) -> Path:
    """The folder JupyterLab opens: ``<out>/_build/lab/<profile>`` (holding ``book/``); ``out`` is the
    folder holding the book's ``_build/`` (the root, unless the book was built with ``--output-dir``)."""
    return Path(out).resolve() / "_build" / "lab" / profile


def stored_runs(store: Path) -> dict[str, int]:
    """Status -> number of runs in ``store`` (read from each run's ``status.json``; nothing imported, no torch).
    An unreadable status counts as ``damaged``; an empty dict when the store does not exist."""
    counts: dict[str, int] = {}
    if not store.is_dir():
        return counts
    for status_file in store.glob("*/status.json"):
        if ".old-" in status_file.parent.name:  # moved aside by the store, not a run of the chapters
            continue
        try:
            status = str(json.loads(status_file.read_text()).get("status", "damaged"))
        except (OSError, ValueError, AttributeError):
            status = "damaged"
        counts[status] = counts.get(status, 0) + 1
    return counts


# --- the lab copies --------------------------------------------------------------------------------

@dataclass(frozen=True)
class LabNotebook:
    chapter: str
    path: Path  # the copy JupyterLab opens
    origin: str  # "executed" (the last build's copy), "injected" (parameters injected here) or "kept" (edited)


@dataclass(frozen=True)
class LabPlan:
    root: Path
    profile: str
    folder: Path  # JupyterLab's root folder
    store: Path
    runs: dict[str, int]  # status -> count in the store
    notebooks: list[LabNotebook]
    published: str = ""  # the bundles of published runs beneath the store, as the runner passes them (os.pathsep)

    @property
    def finished(self) -> int:
        return self.runs.get("finished", 0) + self.runs.get("diverged", 0)

    def report(self) -> str:
        """What a person needs to know before running a chapter: profile, store, which copies."""
        lines = [f"profile {self.profile!r}: notebooks in {self.folder / 'book'}",
                 f"results store: {self.store} (CIFAR_UTILS_RUNS in the kernels)"]
        if self.published:
            lines.append(f"published runs beneath it: {self.published} ({PUBLISHED_ENV} in the kernels)")
        if self.finished:
            counts = ", ".join(f"{n} {s}" for s, n in sorted(self.runs.items()))
            lines.append(f"  {counts}: a chapter loads its finished runs instead of training them")
        else:
            cost = "minutes on this CPU" if self.profile == "smoke" else "hours, with a GPU"
            beyond = " beyond the published ones" if self.published else ""
            lines.append(f"  WARNING: no finished run there yet (no `make book PROFILE={self.profile}` so far?): "
                         f"running a chapter would train its runs{beyond} ({cost}). Build the book first: "
                         f"make book PROFILE={self.profile}")
        for nb in self.notebooks:
            what = {"executed": "the last build's executed copy (outputs included)",
                    "injected": f"not executed with these parameters yet: {self.profile!r} parameters injected",
                    "kept": "your edited copy, kept (make lab LAB_ARGS=--fresh writes a new one)"}[nb.origin]
            lines.append(f"  {nb.path.relative_to(self.folder)}: {what}")
        return "\n".join(lines)


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _note_cell(profile: str, store: Path, source: str) -> dict:
    text = (f"> **JupyterLab copy** (`make lab`) of `book/{source}`, with the parameters of profile "
            f"`{profile}` (the cell tagged `injected-parameters`). Runs come from the store `{store}`: "
            "finished runs are loaded, not retrained. The explorers are live here. Edits stay in this copy; "
            "the book is built from `book/`.")
    return {"cell_type": "markdown", "id": "cifar-utils-lab-note", "metadata": {"tags": [LAB_NOTE_TAG]},
            "source": text}


def lab_notebook(layout: BookLayout, notebook: Path, profile: str, values: dict, store: Path) -> tuple[dict, str]:
    """The lab copy of one notebook and where it came from (``executed`` or ``injected``)."""
    params = kernel_parameters(layout, notebook, profile, values)
    executed = _read(layout.staged(notebook))
    if executed is not None and executed.get("metadata", {}).get("papermill", {}).get("parameters") == params \
            and executed.get("metadata", {}).get("papermill", {}).get("exception") is not True:
        nb, origin = executed, "executed"
    else:
        import nbformat
        from papermill.iorw import load_notebook_node
        from papermill.parameterize import parameterize_notebook

        # papermill's own reader (it gives every cell a tags list), then its injection, as in make book
        node = parameterize_notebook(load_notebook_node(str(notebook)), params)
        nb, origin = json.loads(nbformat.writes(node)), "injected"
    nb["cells"] = [c for c in nb["cells"] if LAB_NOTE_TAG not in c.get("metadata", {}).get("tags", [])]
    nb["cells"].insert(0, _note_cell(profile, store, notebook.name))
    nb.get("metadata", {}).get("papermill", {}).pop("exception", None)
    return nb, origin


def prepare_lab(root: Path | str = ".", profile: str = "smoke", fresh: bool = False,
                output_dir: Path | str | None = None) -> LabPlan:
    """Write the lab copies of every notebook in ``_toc.yml`` for ``profile`` (see the module docstring).

    The profile is validated as ``make book`` validates it (an unknown profile, chapter or parameter
    stops here with one message listing what is allowed). A copy changed since it was written is kept,
    unless ``fresh``: then it is moved aside (``<name>.edited-<time>.ipynb``), never deleted.
    ``output_dir``: the folder holding the book's ``_build/`` when it was built with ``--output-dir``.
    """
    root = Path(root).resolve()
    layout = BookLayout(root, Path(output_dir).resolve() if output_dir else root)
    if not (root / "_toc.yml").is_file():
        raise ProfileError(f"{root}: no _toc.yml there; run make lab from the repository root")
    notebooks = toc_notebooks(root)
    profile_path = root / "params" / f"{profile}.yaml"
    summaries = [c for c, p in notebooks.items() if "executed_dir" in notebook_parameters(p)]
    chapters = [c for c in notebooks if c not in summaries]
    profile_data = load_profile(profile_path)
    values = validate_profile(profile_data, notebooks, source=str(profile_path), required=chapters, root=root)
    store = runs_store(root, profile)
    published = kernel_environment(root, profile, published_folders(profile_data, root))[PUBLISHED_ENV]
    folder = lab_dir(layout.out, profile)
    manifest_path = folder / MANIFEST
    manifest = _read(manifest_path) or {}
    written: list[LabNotebook] = []
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for chapter, notebook in notebooks.items():
        dest = folder / notebook.relative_to(root)
        key = str(dest.relative_to(folder))
        if dest.exists():
            edited = _digest(dest.read_text()) != manifest.get(key)
            if edited and not fresh:
                written.append(LabNotebook(chapter, dest, "kept"))
                continue
            if edited:
                dest.rename(dest.with_name(f"{dest.stem}.edited-{stamp}{dest.suffix}"))
        nb, origin = lab_notebook(layout, notebook, profile, values.get(chapter, {}), store)
        text = json.dumps(nb, indent=1, ensure_ascii=False) + "\n"
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(text)
        manifest[key] = _digest(text)
        written.append(LabNotebook(chapter, dest, origin))
    folder.mkdir(parents=True, exist_ok=True)
    manifest_path.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return LabPlan(root, profile, folder, store, stored_runs(store), written, published)


# --- the server ------------------------------------------------------------------------------------

def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on now (the OS's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def lab_environment(store: Path, jupyter_dirs: Path | None = None, base: dict[str, str] | None = None,
                    published: str | None = None) -> dict[str, str]:
    """The server's environment (its kernels inherit it): the store, the published bundles beneath it
    (``published``, as :attr:`LabPlan.published`; None leaves the variable as it is), live widgets, and, when
    ``jupyter_dirs`` is given, Jupyter's config/data/runtime and JupyterLab's settings/workspaces folders
    inside it (a test leaves the user's own untouched and unused)."""
    env = dict(os.environ if base is None else base)
    env["CIFAR_UTILS_RUNS"] = str(store)
    if published is not None:
        env[PUBLISHED_ENV] = published
    env[STATIC_ENV] = "0"  # live explorers (the runner's kernels get 1)
    if jupyter_dirs is not None:
        for var, sub in (("JUPYTER_CONFIG_DIR", "config"), ("JUPYTER_DATA_DIR", "data"),
                         ("JUPYTER_RUNTIME_DIR", "runtime"), ("JUPYTERLAB_SETTINGS_DIR", "lab-settings"),
                         ("JUPYTERLAB_WORKSPACES_DIR", "lab-workspaces"), ("IPYTHONDIR", "ipython")):
            (jupyter_dirs / sub).mkdir(parents=True, exist_ok=True)
            env[var] = str(jupyter_dirs / sub)
        env.pop("JUPYTER_PATH", None)
        env.pop("JUPYTER_CONFIG_PATH", None)
    return env


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: the server gets SIGTERM should the Python that started it die without stopping it."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001 - best effort; stop() is the real guarantee
        pass


class LabServer:
    """JupyterLab (``python -m jupyterlab``) on ``folder``, headless, on localhost.

    ``start()`` returns once ``/api/status`` answers (at most ``start_timeout`` seconds; a server that
    exits or does not answer raises ``RuntimeError`` with the end of its log). ``stop()`` asks the
    server to shut down (which shuts its kernels down), then kills the server's process group and every
    process it started (kernels run in sessions of their own) that is still there. A context manager:
    ``with LabServer(...) as lab: lab.url``. Everything the server and its kernels write goes to ``log``.
    """

    def __init__(self, folder: Path | str, env: dict[str, str] | None = None, port: int | None = None,
                 host: str = "127.0.0.1", token: str | None = None, log: Path | str | None = None,
                 extra_args: list[str] | tuple[str, ...] = (), start_timeout: float = START_TIMEOUT_S,
                 python: str | None = None) -> None:
        self.folder = Path(folder).resolve()
        self.env = dict(os.environ if env is None else env)
        self.host = host
        self.port = port or free_port(host)
        self.token = token or secrets.token_hex(24)
        self.log = Path(log) if log else self.folder / "jupyterlab.log"
        self.extra_args = list(extra_args)
        self.start_timeout = start_timeout
        self.python = python or sys.executable
        self.proc: subprocess.Popen | None = None
        self._children: dict[int, object] = {}
        try:  # imported now, not while stopping (an import is slow to be interrupted in)
            import psutil  # a dependency of ipykernel

            self._psutil = psutil
        except ImportError:  # pragma: no cover - then the kernels are left to the server's own shutdown
            self._psutil = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def url(self, path: str = "lab") -> str:
        """A URL of the server with the token, e.g. ``url("lab/tree/book/01_architectures.ipynb")``."""
        return f"{self.base_url}/{path.lstrip('/')}?token={self.token}"

    def command(self) -> list[str]:
        return [self.python, "-m", "jupyterlab", "--no-browser", f"--ServerApp.ip={self.host}",
                f"--ServerApp.port={self.port}", "--ServerApp.port_retries=0",
                f"--IdentityProvider.token={self.token}", f"--ServerApp.root_dir={self.folder}",
                # root in a container (CI, a GPU box): jupyter_server refuses to run without this
                *(["--allow-root"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []),
                *self.extra_args]

    def api(self, path: str, method: str = "GET", timeout: float = 10) -> dict | list | None:
        """One REST call with the token; the decoded JSON answer (None when empty)."""
        req = urllib.request.Request(f"{self.base_url}/{path.lstrip('/')}", method=method,
                                     headers={"Authorization": f"token {self.token}"},
                                     data=b"" if method in ("POST", "PUT") else None)
        with urllib.request.urlopen(req, timeout=timeout) as reply:
            body = reply.read()
        return json.loads(body) if body else None

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def start(self) -> LabServer:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.command(), cwd=self.folder, env=self.env, stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                         preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
        deadline = time.monotonic() + self.start_timeout
        try:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"JupyterLab exited with code {self.proc.returncode} before answering "
                                       f"(is port {self.port} taken? log {self.log}):\n{self.log_tail()}")
                try:
                    self.api("api/status", timeout=5)
                    return self
                except (urllib.error.URLError, OSError, ValueError):
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"JupyterLab did not answer on {self.base_url} within {self.start_timeout:g} s "
                                       f"(log {self.log}):\n{self.log_tail()}")
                time.sleep(0.5)
        except BaseException:
            self.stop()
            raise

    def _descendants(self) -> dict[int, object]:
        """Every process the server started (kernels included), pid -> ``psutil.Process`` (which tells a
        process from a later one that reuses its pid)."""
        if self.proc is None or self._psutil is None:
            return {}
        try:
            return {p.pid: p for p in self._psutil.Process(self.proc.pid).children(recursive=True)}
        except Exception:  # noqa: BLE001 - the server is gone
            return {}

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int | None:
        """Stop the server and its kernels: ``POST /api/shutdown`` (the server shuts its kernels down),
        then SIGTERM and SIGKILL to whatever is left. Returns the server's exit code."""
        if self.proc is None:
            return None
        try:
            self._children.update(self._descendants())  # before the server goes: kernels outlive it
            if self.proc.poll() is None:
                try:
                    self.api("api/shutdown", method="POST", timeout=5)
                    self.proc.wait(timeout=timeout)
                except Exception:  # noqa: BLE001 - no answer, or too slow: ended below
                    pass
            self._children.update(self._descendants())
            if self.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.proc.pid, signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(timeout=5)
        finally:  # whatever interrupted the clean part, nothing is left running
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=10)
            for child in self._children.values():  # kernels still there (each runs in a session of its own)
                with contextlib.suppress(Exception):
                    if child.is_running():  # the same process, not a later one with its pid
                        child.kill()
        return self.proc.returncode

    def alive_children(self) -> list[int]:
        """Pids of the processes the server started that still run (after :meth:`stop`: none)."""
        alive = []
        for pid, child in sorted({**self._children, **self._descendants()}.items()):
            with contextlib.suppress(Exception):  # gone: psutil.NoSuchProcess
                if child.is_running() and child.status() != "zombie":  # a zombie is over, just not reaped
                    alive.append(pid)
        return alive

    def __enter__(self) -> LabServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# --- the command -----------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cifar_utils.book.lab", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="smoke", help="the profile of the book whose runs to explore "
                        "(default smoke; full: the store of `make book PROFILE=full`)")
    parser.add_argument("--root", default=".", help="book root holding _toc.yml, book/, params/")
    parser.add_argument("--output-dir", default=None, help="folder holding the book's _build/ (default: the "
                        "root; as given to python -m cifar_utils.book --output-dir)")
    parser.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    parser.add_argument("--ip", default="127.0.0.1", help="address to listen on (default 127.0.0.1; "
                        "from another machine use an SSH tunnel rather than 0.0.0.0)")
    parser.add_argument("--fresh", action="store_true", help="rewrite every lab copy; edited ones are moved aside")
    parser.add_argument("--prepare-only", action="store_true", help="write the lab copies, print what "
                        "JupyterLab would open, start nothing")
    parser.add_argument("--start-timeout", type=float, default=START_TIMEOUT_S, metavar="SECONDS",
                        help=f"longest JupyterLab may take to start answering (default {START_TIMEOUT_S})")
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        parser.error(f"--port must be 0 (a free port) or 1-65535, got {args.port}")
    if args.start_timeout <= 0:
        parser.error(f"--start-timeout must be a number of seconds > 0, got {args.start_timeout:g}")
    try:
        plan = prepare_lab(args.root, args.profile, fresh=args.fresh, output_dir=args.output_dir)
    except (ProfileError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(plan.report())
    interpreter = kernel_interpreter(None)
    if Path(interpreter).resolve() != Path(sys.executable).resolve():
        print(f"WARNING: the python3 kernel runs {interpreter}, not this Python ({sys.executable}): the "
              "chapters would import the cifar_utils installed there")
    if args.prepare_only:
        return 0
    if importlib_missing("jupyterlab"):
        print("error: JupyterLab is not installed in this Python; `make lab` installs it "
              "(pip install -e '.[book,lab]')", file=sys.stderr)
        return 2
    server = LabServer(plan.folder, env=lab_environment(plan.store, published=plan.published),
                       port=args.port or None, host=args.ip, log=plan.folder / "jupyterlab.log",
                       start_timeout=args.start_timeout)

    def _stop_asked(_signum, _frame):
        # the first Ctrl-C or SIGTERM stops; later ones (a second Ctrl-C, the copy `make` or `timeout` passes
        # on) are ignored so that they cannot cut the (bounded) shutdown short
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, _stop_asked) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.start()
        first = plan.notebooks[0].path.relative_to(plan.folder).as_posix() if plan.notebooks else ""
        print(f"\nJupyterLab is running (log: {server.log}). Open:\n\n    {server.url('lab/tree/' + first)}\n\n"
              "Run a chapter's cells in order (Run > Run All Cells); its explorer cell shows live widgets.\n"
              "Ctrl-C stops JupyterLab and its kernels.", flush=True)
        while server.proc is not None and server.proc.poll() is None:
            time.sleep(1)
        print(f"JupyterLab exited with code {server.proc.returncode if server.proc else '?'} (log: {server.log})")
        return 0 if server.proc is not None and server.proc.returncode == 0 else 1
    except KeyboardInterrupt:
        print(f"\nstopping JupyterLab and its kernels (at most {STOP_TIMEOUT_S + 15} s) ...", flush=True)
        return 0
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            server.stop()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

def importlib_missing(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is None


if __name__ == "__main__":
    sys.exit(main())
