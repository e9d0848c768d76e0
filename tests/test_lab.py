"""``make lab`` (cifar_utils.book.lab): the lab copies of the chapters, the store, the server's start and stop.

The browser test of the explorers is tests/test_lab_live.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cifar_utils.book import lab
from cifar_utils.book.params import ProfileError
from cifar_utils.book.runner import BookLayout, kernel_parameters

ROOT = Path(__file__).resolve().parents[1]


def digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*.ipynb"))}


def injected(nb: dict) -> str:
    cells = [c for c in nb["cells"] if "injected-parameters" in c["metadata"].get("tags", [])]
    assert len(cells) == 1, [c["metadata"] for c in nb["cells"]]
    return "".join(cells[0]["source"])


def test_the_store_is_the_runners(tmp_path, monkeypatch):
    monkeypatch.delenv("CIFAR_UTILS_RUNS", raising=False)
    assert lab.runs_store(tmp_path, "full") == (tmp_path / "runs" / "full").resolve()
    monkeypatch.setenv("CIFAR_UTILS_RUNS", str(tmp_path / "elsewhere"))
    assert lab.runs_store(tmp_path, "full") == (tmp_path / "elsewhere").resolve()


def test_stored_runs_counts_statuses_without_torch(tmp_path):
    assert lab.stored_runs(tmp_path / "none") == {}
    for name, text in (("a", '{"status": "finished"}'), ("b", '{"status": "finished"}'), ("c", '{"status": "running"}'),
                       ("d", "{not json"), ("e.old-20260101-000000", '{"status": "finished"}')):
        (tmp_path / name).mkdir()
        (tmp_path / name / "status.json").write_text(text)
    assert lab.stored_runs(tmp_path) == {"finished": 2, "running": 1, "damaged": 1}


def test_without_a_build_every_copy_gets_the_profiles_parameters(book, monkeypatch, capsys):
    monkeypatch.delenv("CIFAR_UTILS_RUNS", raising=False)
    committed = digest(book / "book")
    plan = lab.prepare_lab(book, "test")
    assert digest(book / "book") == committed, "the committed notebooks are never modified"
    assert plan.folder == book / "_build" / "lab" / "test" and plan.store == (book / "runs" / "test").resolve()
    assert [n.chapter for n in plan.notebooks] == ["01_demo", "02_fails", "03_sleeps", "04_dies", "status"]
    assert {n.origin for n in plan.notebooks} == {"injected"}
    demo = json.loads((plan.folder / "book" / "01_demo.ipynb").read_text())
    source = injected(demo)
    assert "n_points = 7" in source and 'label = "from-profile"' in source
    layout = BookLayout(book, book)
    expected = kernel_parameters(layout, book / "book" / "01_demo.ipynb", "test", {"n_points": 7, "label": "from-profile"})
    assert demo["metadata"]["papermill"]["parameters"] == expected  # what make book would inject
    tags = [c["metadata"].get("tags", []) for c in demo["cells"]]
    assert tags.index(["injected-parameters"]) == tags.index(["parameters"]) + 1 and tags[0] == [lab.LAB_NOTE_TAG]
    status = json.loads((plan.folder / "book" / "status.ipynb").read_text())
    assert f'executed_dir = "{book / "_build" / "src" / "book"}"' in injected(status)
    report = plan.report()
    assert "WARNING: no finished run there yet" in report and "make book PROFILE=test" in report
    assert "book/01_demo.ipynb: not executed with these parameters yet" in report


def test_the_last_builds_executed_copy_is_used_when_its_parameters_match(book, monkeypatch):
    monkeypatch.delenv("CIFAR_UTILS_RUNS", raising=False)
    layout = BookLayout(book, book)
    params = kernel_parameters(layout, book / "book" / "01_demo.ipynb", "test", {"n_points": 7, "label": "from-profile"})
    nb = json.loads((book / "book" / "01_demo.ipynb").read_text())
    nb["metadata"]["papermill"] = {"parameters": params, "exception": None}
    nb["cells"][-1]["outputs"] = [{"output_type": "stream", "name": "stdout", "text": "the last build's output\n"}]
    staged = layout.staged(book / "book" / "01_demo.ipynb")
    staged.parent.mkdir(parents=True)
    staged.write_text(json.dumps(nb))
    other = dict(nb, metadata=dict(nb["metadata"], papermill={"parameters": dict(params, profile="fail")}))
    layout.staged(book / "book" / "02_fails.ipynb").write_text(json.dumps(other))  # another profile's build
    (book / "runs" / "test" / "run-a").mkdir(parents=True)
    (book / "runs" / "test" / "run-a" / "status.json").write_text('{"status": "finished"}')
    plan = lab.prepare_lab(book, "test")
    origins = {n.chapter: n.origin for n in plan.notebooks}
    assert origins["01_demo"] == "executed" and origins["02_fails"] == "injected", origins
    copy = json.loads((plan.folder / "book" / "01_demo.ipynb").read_text())
    assert "the last build's output" in json.dumps(copy["cells"][-1]["outputs"])
    assert copy["cells"][0]["metadata"]["tags"] == [lab.LAB_NOTE_TAG]
    assert "1 finished: a chapter loads its finished runs" in plan.report() and "WARNING" not in plan.report()


def test_an_edited_copy_is_kept_and_fresh_moves_it_aside(book):
    plan = lab.prepare_lab(book, "test")
    copy = plan.folder / "book" / "01_demo.ipynb"
    copy.write_text(copy.read_text().replace("n_points = 7", "n_points = 8"))
    again = lab.prepare_lab(book, "test")
    assert {n.chapter: n.origin for n in again.notebooks}["01_demo"] == "kept" and "n_points = 8" in copy.read_text()
    assert "your edited copy, kept" in again.report()
    assert {n.origin for n in again.notebooks if n.chapter != "01_demo"} == {"injected"}  # unedited: rewritten
    fresh = lab.prepare_lab(book, "test", fresh=True)
    assert {n.chapter: n.origin for n in fresh.notebooks}["01_demo"] == "injected" and "n_points = 7" in copy.read_text()
    aside = list((plan.folder / "book").glob("01_demo.edited-*.ipynb"))
    assert len(aside) == 1 and "n_points = 8" in aside[0].read_text(), "the edited copy is moved aside, not deleted"


def test_a_bad_profile_stops_before_anything_is_written(book, capsys):
    with pytest.raises(ProfileError, match="no profile 'nope'.*available profiles: fail, hang, test"):
        lab.prepare_lab(book, "nope")
    assert not (book / "_build").exists()
    assert lab.main(["--root", str(book), "--profile", "nope", "--prepare-only"]) == 2
    assert "available profiles: fail, hang, test" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        lab.main(["--root", str(book), "--port", "70000"])
    assert "--port must be 0 (a free port) or 1-65535" in capsys.readouterr().err


def test_prepare_only_prints_what_jupyterlab_would_open(book, capsys, monkeypatch):
    monkeypatch.setenv("CIFAR_UTILS_RUNS", str(book / "store"))
    assert lab.main(["--root", str(book), "--profile", "test", "--prepare-only"]) == 0
    out = capsys.readouterr().out
    assert f"results store: {(book / 'store').resolve()}" in out and "book/status.ipynb" in out


def test_every_chapter_of_the_real_book_can_be_prepared(tmp_path, monkeypatch):
    """The repository's own profiles fit its chapters (the lab copies go to a temporary output folder)."""
    monkeypatch.delenv("CIFAR_UTILS_RUNS", raising=False)
    for profile in ("smoke", "full"):
        plan = lab.prepare_lab(ROOT, profile, output_dir=tmp_path)
        assert plan.folder == tmp_path / "_build" / "lab" / profile
        chapters = [n.chapter for n in plan.notebooks]
        assert chapters[:6] == ["01_architectures", "02_ablations", "03_training_choices", "04_gradcam_best_model",
                                "05_batchnorm", "06_dessilbi"], chapters
        one = json.loads((plan.folder / "book" / "01_architectures.ipynb").read_text())
        assert f'profile = "{profile}"' in injected(one)
    assert "epochs = 2" in injected(json.loads((tmp_path / "_build/lab/smoke/book/01_architectures.ipynb").read_text()))


def test_a_profiles_published_bundle_reaches_the_lab_kernels_as_the_runners(book, monkeypatch):
    """A profile with ``published:`` (bundles of runs beneath the store): the lab's kernels get the same
    CIFAR_UTILS_PUBLISHED as make book's, and the report names it."""
    from cifar_utils.book.params import load_profile, published_folders
    from cifar_utils.book.runner import PUBLISHED_ENV, kernel_environment

    monkeypatch.delenv(PUBLISHED_ENV, raising=False)
    (book / "results" / "test").mkdir(parents=True)
    (book / "results" / "test" / "MANIFEST.json").write_text('{"runs": []}')
    (book / "params" / "pub.yaml").write_text((book / "params" / "test.yaml").read_text()
                                              + "published: results/test\n")
    plan = lab.prepare_lab(book, "pub")
    runner = kernel_environment(book, "pub", published_folders(load_profile(book / "params" / "pub.yaml"), book))
    assert plan.published == runner[PUBLISHED_ENV] == str((book / "results" / "test").resolve())
    assert f"published runs beneath it: {plan.published}" in plan.report()
    assert lab.lab_environment(plan.store, published=plan.published, base={})[PUBLISHED_ENV] == plan.published
    assert lab.prepare_lab(book, "test").published == ""  # none: the layer is off, as in make book


def test_lab_environment_makes_explorers_live_and_names_the_store(tmp_path):
    env = lab.lab_environment(tmp_path / "runs", jupyter_dirs=tmp_path / "j", base={"CIFAR_UTILS_STATIC": "1",
                                                                                    "JUPYTER_PATH": "/x"})
    assert env["CIFAR_UTILS_STATIC"] == "0" and env["CIFAR_UTILS_RUNS"] == str(tmp_path / "runs")
    assert "JUPYTER_PATH" not in env and env["JUPYTERLAB_SETTINGS_DIR"] == str(tmp_path / "j" / "lab-settings")
    assert Path(env["JUPYTER_RUNTIME_DIR"]).is_dir()


# --- the server --------------------------------------------------------------------------------------

@pytest.fixture()
def jupyterlab_installed():
    pytest.importorskip("jupyterlab", reason="JupyterLab is not installed (the [lab] extra; make lab and make "
                        "test install it)")


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode(errors="replace").split("=", 1) for item in raw if b"=" in item)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_server_starts_with_a_token_and_stops_with_its_kernels(tmp_path, jupyterlab_installed):
    env = lab.lab_environment(tmp_path / "runs", jupyter_dirs=tmp_path / "jupyter")
    server = lab.LabServer(tmp_path, env=env, log=tmp_path / "lab.log")
    try:
        server.start()
        assert server.url("lab").startswith(f"http://127.0.0.1:{server.port}/lab?token=") and len(server.token) >= 32
        with pytest.raises(Exception, match="403"):  # no token, no entry
            import urllib.request

            urllib.request.urlopen(f"{server.base_url}/api/kernels", timeout=10)
        kernel = server.api("api/kernels", method="POST", timeout=60)
        deadline = time.monotonic() + 60
        pids: set[int] = set()
        while time.monotonic() < deadline and not pids:
            pids = {p for p in server._descendants() if "ipykernel" in Path(f"/proc/{p}/cmdline").read_text()}
            time.sleep(0.2)
        assert kernel["id"] and pids, "a kernel started"
        kernel_env = _environ(next(iter(pids)))
        assert kernel_env["CIFAR_UTILS_STATIC"] == "0" and kernel_env["CIFAR_UTILS_RUNS"] == str(tmp_path / "runs")
    finally:
        server.stop()
    assert server.proc.poll() is not None and server.alive_children() == [], server.log_tail()
    assert "Shutting down 1 kernel" in server.log_tail(10**6), "stopped cleanly, through /api/shutdown"


def test_a_taken_port_is_a_clear_error_and_leaves_nothing_running(tmp_path, jupyterlab_installed):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = lab.LabServer(tmp_path, env=lab.lab_environment(tmp_path / "runs", jupyter_dirs=tmp_path / "j"),
                               port=port, log=tmp_path / "lab.log", start_timeout=60)
        with pytest.raises(RuntimeError, match=f"JupyterLab exited with code 1 before answering \\(is port {port} taken"):
            server.start()
    assert server.proc.poll() is not None and server.alive_children() == []


def test_make_lab_prints_the_url_and_stops_on_ctrl_c(tmp_path, jupyterlab_installed):
    """The command behind make lab: it prints a URL that answers, and Ctrl-C stops JupyterLab cleanly, also
    when the interrupt comes twice (a terminal's Ctrl-C reaches make and timeout too, which pass it on)."""
    import shutil
    import signal
    import urllib.request

    root = tmp_path / "root"
    shutil.copytree(Path(__file__).parent / "book_fixture", root)
    env = lab.lab_environment(tmp_path / "runs", jupyter_dirs=tmp_path / "jupyter")
    env["PYTHONUNBUFFERED"] = "1"
    proc = subprocess.Popen([sys.executable, "-m", "cifar_utils.book.lab", "--root", str(root), "--profile", "test"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True)
    lines: list[str] = []
    try:
        deadline = time.monotonic() + lab.START_TIMEOUT_S + 30
        url = None
        while time.monotonic() < deadline and url is None:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.strip().startswith("http://127.0.0.1:"):
                url = line.strip()
        assert url, "".join(lines)
        assert "/lab/tree/book/01_demo.ipynb?token=" in url
        with urllib.request.urlopen(url, timeout=30) as reply:
            assert reply.status == 200 and b"JupyterLab" in reply.read()
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: the terminal signals the whole foreground group
        time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGINT)  # and again, while it stops
        proc.wait(timeout=90)
        lines.append(proc.stdout.read())  # (communicate(timeout=...) would skip what readline buffered)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    text = "".join(lines)
    assert proc.returncode == 0, text
    assert "stopping JupyterLab and its kernels" in text and "Ctrl-C stops JupyterLab" in text
    assert "Traceback" not in text and "KeyboardInterrupt" not in text, text
    log = (root / "_build" / "lab" / "test" / "jupyterlab.log").read_text()
    assert "Shutting down on /api/shutdown request" in log
    with pytest.raises(OSError):  # nothing answers there any more
        urllib.request.urlopen(url, timeout=10)


@pytest.mark.slow
def test_after_the_smoke_book_a_lab_chapter_loads_its_runs_and_trains_nothing(smoke_book, monkeypatch):
    """After ``make book``: every chapter's lab copy is its executed copy, and a chapter run from it in a
    kernel (chapter 6, cell by cell, with the lab's store) loads every run and writes nothing to the store."""
    import nbformat
    from nbclient import NotebookClient

    out, runs_dir, result = smoke_book
    monkeypatch.setenv("CIFAR_UTILS_RUNS", str(runs_dir))
    plan = lab.prepare_lab(ROOT, "smoke", output_dir=out)
    assert plan.store == runs_dir.resolve() and plan.finished > 0, plan.report()
    executed = {c.chapter for c in result.chapters if c.ok}
    assert {n.chapter for n in plan.notebooks if n.origin == "executed"} == executed and "06_dessilbi" in executed

    from conftest import store_snapshot

    before = store_snapshot(runs_dir)
    copy = plan.folder / "book" / "06_dessilbi.ipynb"
    nb = nbformat.read(copy, as_version=4)
    # the kernel's environment as the lab's server gives it (the store and the profile's published bundles:
    # the smoke profile's chapter 6 reads its LeNet runs from results/full), only headless
    for name, value in lab.lab_environment(plan.store, published=plan.published).items():
        monkeypatch.setenv(name, value)
    assert "results" in plan.published, plan.published  # params/smoke.yaml: published: results/full
    monkeypatch.setenv("CIFAR_UTILS_STATIC", "1")  # headless: static figures (see cifar_utils.widgets.live_widgets)
    monkeypatch.setenv("CIFAR_UTILS_PROGRESS", "log")
    NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(copy.parent)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert store_snapshot(runs_dir) == before, "the lab's chapter retrained or rewrote runs of the store"
