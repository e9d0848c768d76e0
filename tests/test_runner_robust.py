"""The book always finishes (#9) and bad input is caught early (#18 items 8, 9, 12).

Timeouts and dead kernels are chapter failures like exceptions; a profile names every chapter it
runs and its checkable values are checked before any kernel starts, with RunConfig's own rules;
RunConfig rejects a model that does not fit the dataset; the status page shows the latest attempt.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cifar_utils.book import ProfileError, runner_settings, toc_notebooks, validate_profile
from cifar_utils.book.__main__ import main as cli_main

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = Path(__file__).parent / "book_fixture"


@pytest.fixture()
def real_book(tmp_path: Path) -> Path:
    """The real chapters' notebooks with a params/ folder of the test's own."""
    dest = tmp_path / "real"
    shutil.copytree(ROOT / "book", dest / "book")
    for name in ("_toc.yml", "_config.yml"):
        shutil.copy2(ROOT / name, dest / name)
    (dest / "params").mkdir()
    return dest


# -- #9: timeouts and dead kernels ------------------------------------------------------------------

@pytest.mark.slow
def test_timed_out_cell_and_dead_kernel_fail_their_chapters_and_the_rest_runs(book, capfd):
    # capfd, not capsys: the console is file descriptors 1 and 2, which the kernels inherit
    rc = cli_main(["--root", str(book), "--profile", "hang", "--chapters", "02,03,04", "--no-html",
                   "--cell-timeout", "15"])
    out, err = capfd.readouterr()
    assert rc == 1
    build = book / "_build"
    # #27: nothing of the kernels' own reaches the console for a failed chapter (the kernel killed on
    # the timeout prints ipykernel's ZMQ traceback): it goes to a log file the failure message names
    assert "Traceback" not in out + err, (out + err)[-3000:]
    logs = {c: build / "logs" / f"{c}.kernel.log" for c in ("02_fails", "03_sleeps", "04_dies")}
    for chapter in ("03_sleeps", "04_dies"):
        assert f"the kernel's own output (stderr, e.g. a killed kernel's traceback) is in {logs[chapter]}" in err
        assert logs[chapter].is_file()
    assert "Traceback (most recent call last)" in logs["03_sleeps"].read_text()
    # a chapter that succeeds still shows its kernel's messages, as before
    assert logs["02_fails"].read_text().strip() and logs["02_fails"].read_text().strip() in err
    # one message per failed chapter: chapter, cell index + first line, what happened, where the notebook is
    assert ("chapter 03_sleeps failed in cell 3 ('import time'): timeout: the cell was still running after 15 s"
            in err)
    assert f"the partly executed notebook is at {build / 'failed' / '03_sleeps.ipynb'}" in err
    assert ("chapter 04_dies failed in cell 3 ('import os, signal'): the kernel died (killed by signal 9 (SIGKILL))"
            in err)
    assert f"the partly executed notebook is at {build / 'failed' / '04_dies.ipynb'}" in err
    # a per-chapter summary: the others ran and are kept
    summary = {line.split()[0]: line.split()[1] for line in out.splitlines() if line.startswith("  ")}
    assert summary == {"02_fails": "ok", "03_sleeps": "FAILED", "04_dies": "FAILED", "status": "ok"}
    assert "FAILS-OK" in (build / "src" / "book" / "02_fails.ipynb").read_text()
    failed = json.loads((build / "failed" / "03_sleeps.ipynb").read_text())
    assert failed["metadata"]["cifar_utils"]["kind"] == "timeout"
    assert json.loads((build / "failed" / "04_dies.ipynb").read_text())["metadata"]["cifar_utils"]["kind"] == "dead"
    # the status page ran after the failures and reports them
    status = (build / "src" / "book" / "status.ipynb").read_text()
    assert "the kernel died (killed by signal 9 (SIGKILL))" in status and "timeout: the cell" in status


def test_cell_timeout_comes_from_the_profile_then_the_command_line():
    assert runner_settings({}).cell_timeout == 6 * 3600
    assert runner_settings({"runner": {"cell_timeout": 30, "start_timeout": 9}}) == \
        runner_settings({}, cell_timeout=30, start_timeout=9)
    assert runner_settings({"runner": {"cell_timeout": 30}}, cell_timeout=0).cell_timeout is None  # 0: no limit
    assert runner_settings({"runner": {"cell_timeout": None}}).cell_timeout is None


def test_profiles_set_generous_cell_timeouts():
    from cifar_utils.book import load_profile

    smoke = runner_settings(load_profile(ROOT / "params" / "smoke.yaml"))
    full = runner_settings(load_profile(ROOT / "params" / "full.yaml"))
    assert 600 <= smoke.cell_timeout <= 3600 and full.cell_timeout >= 24 * 3600


def test_runner_section_is_validated(book):
    with pytest.raises(ProfileError) as err:
        validate_profile({"runner": {"cell_timeout": -1, "start_timeout": 0, "cell_timout": 5}}, toc_notebooks(book))
    msg = str(err.value)
    assert "cell_timeout must be seconds (an integer >= 0; 0 or null: no limit), got -1" in msg
    assert "start_timeout must be seconds (an integer > 0), got 0" in msg
    assert "unknown key 'cell_timout'; allowed: cell_timeout, start_timeout" in msg


def test_negative_cell_timeout_on_the_command_line_is_refused(book, capsys):
    with pytest.raises(SystemExit) as exc:
        cli_main(["--root", str(book), "--profile", "test", "--cell-timeout", "-5"])
    assert exc.value.code == 2 and "--cell-timeout must be a number of seconds >= 0" in capsys.readouterr().err


# -- #9: the static build never executes a live widget ----------------------------------------------

class _Explorer:
    def __init__(self) -> None:
        self.widget = "WIDGET"


def _capture_display(monkeypatch) -> list:
    import IPython.display

    shown: list = []
    monkeypatch.setattr(IPython.display, "display", lambda obj, **kw: shown.append(obj))
    return shown


def test_show_explorer_static_never_builds_the_widget(monkeypatch):
    import matplotlib.pyplot as plt

    from cifar_utils.widgets import show_explorer

    shown = _capture_display(monkeypatch)
    monkeypatch.setenv("CIFAR_UTILS_STATIC", "1")
    fig = plt.figure()
    built = []
    assert show_explorer(lambda: built.append(1) or _Explorer(), lambda: fig, title="smoke note") is None
    assert built == [] and shown == [fig] and fig._suptitle.get_text() == "smoke note"
    assert not plt.fignum_exists(fig.number)  # closed, so the inline backend does not show it twice


def test_show_explorer_live_displays_the_widget_and_no_figure(monkeypatch):
    from cifar_utils.widgets import show_explorer

    shown = _capture_display(monkeypatch)
    monkeypatch.setenv("CIFAR_UTILS_STATIC", "0")
    figures = []
    show_explorer(_Explorer, lambda: figures.append(1))
    assert shown == ["WIDGET"] and figures == []


def test_without_the_variable_live_means_inside_a_jupyter_kernel(monkeypatch):
    import IPython

    from cifar_utils.widgets import live_widgets

    monkeypatch.delenv("CIFAR_UTILS_STATIC", raising=False)
    assert live_widgets() is False  # plain Python (pytest): no kernel

    class Shell:
        kernel = object()

    monkeypatch.setattr(IPython, "get_ipython", lambda: Shell())
    assert live_widgets() is True
    monkeypatch.setenv("CIFAR_UTILS_STATIC", "1")
    assert live_widgets() is False


@pytest.mark.parametrize("path", sorted((ROOT / "book").glob("*.ipynb")), ids=lambda p: p.name)
def test_chapters_show_explorers_through_show_explorer(path):
    for cell in json.loads(path.read_text())["cells"]:
        src = "".join(cell["source"])
        if cell["cell_type"] == "code" and "_explorer(" in src.replace("show_explorer(", ""):
            assert "show_explorer(" in src and "lambda: " in src, \
                f"{path.name}: build explorers inside show_explorer(lambda: ..., static_figure)"


@pytest.mark.slow
def test_runner_kernels_get_the_static_switch(book):
    from cifar_utils.book import build_book

    nb = book / "book" / "02_fails.ipynb"
    data = json.loads(nb.read_text())
    data["cells"][2]["source"] = ["import os\n", "print('STATIC=' + os.environ.get('CIFAR_UTILS_STATIC', '?'))"]
    nb.write_text(json.dumps(data))
    build_book(book, "test", chapters="02", build_html=False)
    assert "STATIC=1" in (book / "_build" / "src" / "book" / "02_fails.ipynb").read_text()


# -- #18 item 8: a profile names every chapter it runs; checkable values are checked early -----------

def test_empty_profile_or_null_chapter_is_an_error_listing_the_chapters(book):
    notebooks = toc_notebooks(book)
    chapters = ["01_demo", "02_fails", "03_sleeps", "04_dies"]
    with pytest.raises(ProfileError) as err:
        validate_profile({}, notebooks, required=chapters)
    assert "missing: 01_demo, 02_fails, 03_sleeps, 04_dies" in str(err.value)
    assert "Chapters: 01_demo, 02_fails, 03_sleeps, 04_dies" in str(err.value)
    with pytest.raises(ProfileError, match=r"set to null: 02_fails"):
        validate_profile({"chapters": {"01_demo": {}, "02_fails": None, "03_sleeps": {}, "04_dies": {}}},
                         notebooks, required=chapters)
    # a subset chosen with --chapters needs only its own sections; {} runs the defaults on purpose
    assert validate_profile({"chapters": {"02_fails": {}}}, notebooks, required=["02_fails"], subset=True) == \
        {"02_fails": {}}


def test_empty_profile_stops_the_runner_before_any_kernel(book, capsys):
    (book / "params" / "empty.yaml").write_text("description: nothing\n")
    assert cli_main(["--root", str(book), "--profile", "empty", "--no-html"]) == 2
    assert "missing: 01_demo, 02_fails, 03_sleeps, 04_dies" in capsys.readouterr().err
    assert not (book / "_build").exists()
    assert cli_main(["--root", str(book), "--profile", "empty", "--chapters", "02", "--no-html"]) == 2
    assert "the chapters chosen with --chapters (missing: 02_fails)" in capsys.readouterr().err


def test_profile_values_are_checked_with_runconfig_rules_before_any_kernel(real_book, capsys):
    from cifar_utils.engine import RunConfig

    (real_book / "params" / "bad.yaml").write_text(
        "chapters:\n  01_architectures:\n    epochs: -1\n    source: samples\n    device: gpu\n"
        "    seeds: [0, 4294967296]\n    train_size: 0\n")
    assert cli_main(["--root", str(real_book), "--profile", "bad", "--chapters", "01", "--no-html"]) == 2
    err = capsys.readouterr().err
    assert not (real_book / "_build").exists()
    expected = RunConfig(epochs=-1, source="samples", device="gpu", seed=2**32, train_size=0).problems()
    assert len(expected) == 5
    for problem in expected:  # the very words RunConfig.validate uses
        assert f"chapter '01_architectures': {problem}" in err


def test_runner_and_rules_import_no_torch():
    code = ("import sys, cifar_utils.book, cifar_utils.config_rules, cifar_utils.status as s; "
            "s.store_sizes('.'); assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=120)


# -- #18 item 9: the model must fit the dataset; seed in 0..2**32-1 ----------------------------------

def test_runconfig_rejects_a_model_that_does_not_fit_the_dataset():
    from cifar_utils.engine import RunConfig

    (lenet,) = RunConfig(model="lenet", dataset="cifar10").problems()
    assert "model 'lenet' does not fit dataset 'cifar10' (images 3x32x32)" in lenet
    (vgg,) = RunConfig(model="vgg_a", dataset="mnist").problems()
    assert "model 'vgg_a' does not fit dataset 'mnist' (images 1x28x28)" in vgg
    assert RunConfig(model="lenet", dataset="mnist").problems() == []
    assert RunConfig(model="vgg_a", dataset="cifar10").problems() == []
    with pytest.raises(ValueError, match="invalid RunConfig: model 'lenet' does not fit dataset 'cifar10'"):
        RunConfig(model="lenet", dataset="cifar10").validate()


def test_runconfig_seed_must_fit_in_32_bits():
    from cifar_utils.engine import RunConfig

    assert RunConfig(seed=2**32 - 1).problems() == []
    for bad in (2**32, -1, 1.5):
        assert RunConfig(seed=bad).problems() == [
            f"seed must be an integer in 0..2**32-1 (4294967295), got {bad!r}"]


# -- #18 item 12: the status page shows the latest attempt; --root nowhere is one line -------------

def _executed(path: Path, start: str, end: str, params: dict, extra: dict | None = None) -> None:
    meta = {"papermill": {"parameters": params, "start_time": start, "end_time": end, "duration": 5.0,
                          "exception": None}}
    meta.update(extra or {})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"cells": [], "metadata": meta}))


def test_status_shows_the_latest_attempt_and_when_the_shown_copy_was_made(tmp_path):
    from cifar_utils.status import chapter_status

    src, failed = tmp_path / "src" / "book", tmp_path / "failed"
    _executed(src / "01_a.ipynb", "2026-11-27T10:00:00", "2026-11-27T10:01:00", {"profile": "smoke", "epochs": 2})
    _executed(failed / "01_a.ipynb", "2026-11-28T09:00:00", "2026-11-28T09:00:05", {"profile": "smoke", "epochs": 3},
              {"cifar_utils": {"failure": "timeout: the cell was still running after 60 s", "kind": "timeout"}})
    _executed(src / "02_b.ipynb", "2026-11-28T09:01:00", "2026-11-28T09:02:00", {"profile": "smoke"})
    (src / "03_never.ipynb").write_text(json.dumps({"cells": [], "metadata": {}}))
    _executed(failed / "03_never.ipynb", "2026-11-28T09:03:00", "", {"profile": "smoke"},
              {"cifar_utils": {"failure": "the kernel died (killed by signal 9 (SIGKILL))", "failed_at": "x"}})
    rows = {r["chapter"]: r for r in chapter_status(src, failed).to_dict("records")}
    assert rows["01_a"]["status"] == "failed" and rows["01_a"]["start"] == "2026-11-28 09:00:00"
    assert rows["01_a"]["parameters"] == "epochs=3" and rows["01_a"]["problem"].startswith("timeout")
    assert rows["01_a"]["shown_copy"] == "executed 2026-11-27 10:01:00"
    assert rows["02_b"]["status"] == "ok" and rows["02_b"]["problem"] == ""
    assert rows["03_never"]["status"] == "failed"
    assert rows["03_never"]["shown_copy"].startswith("not executed")
    # without the failed folder (the old page) 01_a looked ok: that was the bug
    assert chapter_status(src).set_index("chapter").loc["01_a", "status"] == "ok"


def test_root_pointing_nowhere_is_one_line(tmp_path, capsys):
    assert cli_main(["--root", str(tmp_path / "nowhere"), "--no-html"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no _toc.yml there" in err and "Traceback" not in err


# -- store size on the status page -----------------------------------------------------------------

def test_store_sizes_per_profile_folder(tmp_path):
    from cifar_utils.status import human_size, store_sizes

    (tmp_path / "runs" / "smoke" / "resnet18-1").mkdir(parents=True)
    (tmp_path / "runs" / "smoke" / "resnet18-1" / "model.pt").write_bytes(b"x" * 1500)
    (tmp_path / "runs" / "smoke" / "lenet-2").mkdir()
    (tmp_path / "runs" / "smoke" / "lenet-2" / "history.json").write_bytes(b"y" * 500)
    (tmp_path / "runs" / "full").mkdir()
    rows = store_sizes(tmp_path / "runs" / "smoke").to_dict("records")
    assert [(Path(r["store"]).name, r["runs"], r["files"], r["size"], r["bytes"]) for r in rows] == [
        ("full", 0, 0, "0 B", 0), ("smoke", 2, 2, "2.0 kB", 2000)]
    assert human_size(1_430_000_000) == "1.4 GB" and human_size(999) == "999 B"


def test_unknown_kernel_is_one_line(book, capsys):
    assert cli_main(["--root", str(book), "--profile", "test", "--kernel", "no-such-kernel", "--no-html"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'no-such-kernel': no such Jupyter kernel; installed kernels:" in err


@pytest.mark.slow
def test_kernel_that_never_starts_fails_its_chapter_after_the_start_timeout(book, tmp_path, monkeypatch, capsys):
    spec = tmp_path / "jupyter" / "kernels" / "mute"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": ["python", "-c", "import time, sys; time.sleep(120)", "-f", "{connection_file}"],
        "display_name": "never answers", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    rc = cli_main(["--root", str(book), "--profile", "test", "--chapters", "02", "--no-html", "--kernel", "mute",
                   "--start-timeout", "5"])
    err = capsys.readouterr().err
    assert rc == 1
    assert "chapter 02_fails failed before any cell ran: the kernel did not start" in err
    assert "start timeout 5 s" in err
    assert (book / "_build" / "failed" / "02_fails.ipynb").exists()


def test_sliced_channel_returns_messages_and_times_out_like_the_plain_one(monkeypatch):
    import asyncio
    import time
    from queue import Empty

    import zmq
    import zmq.asyncio
    from jupyter_client.session import Session

    from cifar_utils.book import kernel

    monkeypatch.setattr(kernel, "SLICE_S", 0.05)

    async def scenario():
        ctx = zmq.asyncio.Context()
        a, b = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
        a.bind("inproc://sliced-test")
        b.connect("inproc://sliced-test")
        session = Session()
        channel = kernel.SlicedChannel(b, session)
        t0 = time.monotonic()
        with pytest.raises(Empty):
            await channel.get_msg(timeout=0.3)
        waited = time.monotonic() - t0
        session.send(a, "execute_reply", {"status": "ok"})
        msg = await channel.get_msg(timeout=None)
        a.close(), b.close(), ctx.term()
        return waited, msg

    waited, msg = asyncio.run(scenario())
    # it waited out its timeout (at least 0.3 s, to the poll's ms resolution); the upper bound only
    # guards against an endless wait (the hang of #9), it is no speed claim
    assert 0.25 <= waited < 120 and msg["msg_type"] == "execute_reply" and msg["content"] == {"status": "ok"}
    manager = kernel.watched_kernel_manager()()
    assert manager.client_factory is kernel.SlicedKernelClient
