"""The progress switch and the status page helpers."""

from __future__ import annotations

import json

import pytest

from cifar_utils.progress import progress_bar
from cifar_utils.status import chapter_status, environment


def test_log_mode_writes_whole_lines(monkeypatch, capsys):
    monkeypatch.setenv("CIFAR_UTILS_PROGRESS", "log")
    monkeypatch.setenv("CIFAR_UTILS_PROGRESS_INTERVAL", "0")
    bar = progress_bar(range(3), desc="epochs")
    assert list(bar) == [0, 1, 2]
    out = capsys.readouterr().out
    assert "\r" not in out
    assert out.splitlines()[-1].startswith("epochs: 3/3")


def test_off_mode_is_silent_and_bad_mode_is_an_error(monkeypatch, capsys):
    monkeypatch.setenv("CIFAR_UTILS_PROGRESS", "off")
    assert list(progress_bar(range(2), desc="x")) == [0, 1]
    assert capsys.readouterr().out == ""
    monkeypatch.setenv("CIFAR_UTILS_PROGRESS", "loud")
    with pytest.raises(ValueError, match="choose one of auto, log, off"):
        progress_bar(range(2))


def test_chapter_status_reads_papermill_metadata(tmp_path):
    line = "Published results. Parts 1-3 (LeNet on MNIST): full-profile runs published in results/full ..."
    shown = {"output_type": "display_data", "data": {"text/markdown": "**" + line},
             "metadata": {"cifar_utils": {"results_line": line}}}
    nb = {"cells": [{"cell_type": "code", "source": "", "outputs": [shown]}], "metadata": {"papermill": {
        "parameters": {"profile": "smoke", "epochs": 2}, "start_time": "2026-11-28T01:02:03.456",
        "end_time": "2026-11-28T01:03:04.000", "duration": 60.54, "exception": None}}}
    (tmp_path / "01_x.ipynb").write_text(json.dumps(nb))
    (tmp_path / "02_never_run.ipynb").write_text(json.dumps({"cells": [], "metadata": {}}))
    df = chapter_status(tmp_path)
    assert df.to_dict("records") == [{"chapter": "01_x", "profile": "smoke", "parameters": "epochs=2",
                                      "start": "2026-11-28 01:02:03", "end": "2026-11-28 01:03:04",
                                      "duration_s": 60.5, "status": "ok", "problem": "",
                                      "shown_copy": "executed 2026-11-28 01:03:04", "results": line}]


def test_environment_lists_device_and_pins():
    env = dict(environment().values.tolist())
    assert env["torch"].startswith("2.14.1") and env["device"].startswith(("CPU", "CUDA"))
