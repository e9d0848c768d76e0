"""The book pipeline: profiles, the papermill runner, the Jupyter Book build, the status page."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cifar_utils.book import (ChapterFailed, ProfileError, build_book, notebook_parameters, select_chapters,
                              toc_notebooks, validate_profile)
from cifar_utils.book.__main__ import main as cli_main

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = Path(__file__).parent / "book_fixture"


def test_notebook_parameters_are_parsed_with_types_and_help():
    params = notebook_parameters(FIXTURE / "book" / "01_demo.ipynb")
    assert list(params) == ["n_points", "label", "scale"]
    assert params["n_points"].annotation == "int" and params["n_points"].default == 5
    assert params["label"].help == "a label to print"


def test_profile_validation_lists_every_problem_and_what_is_allowed(book):
    notebooks = toc_notebooks(book)
    assert list(notebooks) == ["01_demo", "02_fails", "03_sleeps", "04_dies", "status"]
    bad = {"chapters": {"01_demo": {"n_point": 3, "scale": "big", "label": 4},
                        "09_nope": {}, "status": {"profile": "x"}}, "colour": 1}
    with pytest.raises(ProfileError) as err:
        validate_profile(bad, notebooks)
    msg = str(err.value)
    assert "unknown parameter 'n_point'; allowed: n_points: int, label: str, scale: float" in msg
    assert "parameter 'scale' must be float, got 'big'" in msg
    assert "parameter 'label' must be str, got 4" in msg
    assert "unknown chapter '09_nope'; chapters in _toc.yml: 01_demo, 02_fails, 03_sleeps, 04_dies, status" in msg
    assert "'profile' is set by the runner" in msg
    assert "unknown top-level key 'colour'; allowed: description, runner, published, chapters" in msg


def test_profile_accepts_ints_for_floats_and_returns_values(book):
    out = validate_profile({"chapters": {"01_demo": {"scale": 2, "n_points": 3}}}, toc_notebooks(book))
    assert out == {"01_demo": {"scale": 2, "n_points": 3}}
    with pytest.raises(ProfileError, match="must be int, got True"):
        validate_profile({"chapters": {"01_demo": {"n_points": True}}}, toc_notebooks(book))


def test_unknown_profile_names_the_available_ones(book, capsys):
    assert cli_main(["--root", str(book), "--profile", "nope", "--no-html"]) == 2
    err = capsys.readouterr().err
    assert "no profile 'nope'" in err and "available profiles: fail, hang, test" in err


def test_select_chapters_by_prefix_and_rejects_unknown():
    ids = ["01_architectures", "02_ablations", "03_training_choices"]
    assert select_chapters(ids, "03,01") == ["01_architectures", "03_training_choices"]
    assert select_chapters(ids, None) == ids
    with pytest.raises(ValueError, match="'07' matches no chapter; chapters: 01_architectures"):
        select_chapters(ids, "07")


@pytest.mark.slow
def test_runner_executes_with_papermill_and_builds_the_book(book):
    source_before = (book / "book" / "01_demo.ipynb").read_text()
    result = build_book(book, "test", chapters="01,02")
    assert [c.chapter for c in result.executed] == ["01_demo", "02_fails", "status"]

    executed = json.loads((book / "_build" / "src" / "book" / "01_demo.ipynb").read_text())
    outputs = [o for c in executed["cells"] for o in c.get("outputs", [])]
    text = "".join("".join(o.get("text", "")) for o in outputs)
    assert "DEMO-LABEL=from-profile N=7" in text
    assert any("image/png" in o.get("data", {}) for o in outputs)
    assert executed["metadata"]["papermill"]["parameters"] == {"n_points": 7, "label": "from-profile"}
    hidden = [c for c in executed["cells"] if "remove-cell" in c["metadata"].get("tags", [])]
    assert {t for c in hidden for t in c["metadata"]["tags"]} >= {"parameters", "injected-parameters"}
    # executing never touches the committed notebook
    assert (book / "book" / "01_demo.ipynb").read_text() == source_before

    html = (book / "_build" / "html" / "book" / "01_demo.html").read_text()
    assert "<img" in html
    assert "n_points: int" not in html and "from-profile\"" not in html and "Parameters" not in html
    assert result.html_index == book / "_build" / "html" / "index.html" and result.html_index.exists()
    status_html = (book / "_build" / "html" / "book" / "status.html").read_text()
    assert "01_demo" in status_html and "n_points=7" in status_html


@pytest.mark.slow
def test_failing_chapter_is_reported_by_name_and_cell_and_keeps_the_others(book):
    with pytest.raises(ChapterFailed) as err:
        build_book(book, "fail", chapters="01,02", build_html=False)
    msg = str(err.value)
    assert "chapter 02_fails failed in cell 3 ('if fail:'): RuntimeError: deliberate failure" in msg
    assert [(c.chapter, c.ok) for c in err.value.result.chapters] == [("01_demo", True), ("02_fails", False),
                                                                      ("status", True)]
    kept = json.loads((book / "_build" / "src" / "book" / "01_demo.ipynb").read_text())
    assert "before-failure" in json.dumps(kept["metadata"]["papermill"]["parameters"])
    assert (book / "_build" / "failed" / "02_fails.ipynb").exists()
    # the failed chapter never replaces a good executed copy: a later good run restores it
    build_book(book, "test", chapters="02", build_html=False)
    good = json.loads((book / "_build" / "src" / "book" / "02_fails.ipynb").read_text())
    assert "FAILS-OK" in json.dumps(good["cells"])
    assert not (book / "_build" / "failed" / "02_fails.ipynb").exists()


def _all_notebooks() -> list[Path]:
    # tests/html_fixture/widgets.ipynb is committed executed on purpose: it carries the saved widget
    # state that the offline browser test renders.
    return sorted((ROOT / "book").glob("*.ipynb")) + sorted(
        p for p in (ROOT / "tests").rglob("*.ipynb") if "html_fixture" not in p.parts)


@pytest.mark.parametrize("path", _all_notebooks(), ids=lambda p: str(p.relative_to(ROOT)))
def test_notebooks_are_committed_without_outputs(path):
    nb = json.loads(path.read_text())
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            assert cell.get("outputs") == [] and cell.get("execution_count") is None, f"{path}: clear the outputs"
    assert "papermill" not in nb["metadata"], f"{path} is an executed copy"


@pytest.mark.parametrize("path", sorted((ROOT / "book").glob("*.ipynb")), ids=lambda p: p.name)
def test_book_notebooks_declare_typed_documented_parameters(path):
    params = notebook_parameters(path)
    assert params, f"{path.name}: empty parameters cell"
    for p in params.values():
        assert p.annotation and p.help, f"{path.name}: parameter {p.name} needs a type and a # comment"


def test_every_toc_entry_exists_and_every_book_notebook_is_in_the_toc():
    notebooks = toc_notebooks(ROOT)
    assert set(notebooks) == {p.stem for p in (ROOT / "book").glob("*.ipynb")}
    assert list(notebooks)[-1] == "status"


def test_profiles_validate_against_the_book():
    from cifar_utils.book import load_profile

    for name in ("smoke", "full", "gpu-smoke"):
        validate_profile(load_profile(ROOT / "params" / f"{name}.yaml"), toc_notebooks(ROOT))


@pytest.mark.slow
def test_runner_sets_the_kernels_environment_without_changing_its_own(book, monkeypatch):
    monkeypatch.delenv("CIFAR_UTILS_RUNS", raising=False)
    monkeypatch.delenv("CIFAR_UTILS_PROGRESS", raising=False)
    nb = book / "book" / "01_demo.ipynb"
    data = json.loads(nb.read_text())
    data["cells"][1]["source"] += "\nimport os\nprint('ENV', os.environ['CIFAR_UTILS_RUNS'], os.environ['CIFAR_UTILS_PROGRESS'])"
    nb.write_text(json.dumps(data))
    build_book(book, "test", chapters="01", build_html=False)
    import os

    assert "CIFAR_UTILS_RUNS" not in os.environ and "CIFAR_UTILS_PROGRESS" not in os.environ
    out = json.loads((book / "_build" / "src" / "book" / "01_demo.ipynb").read_text())
    assert f"ENV {book / 'runs' / 'test'} log" in json.dumps(out["cells"])


def test_the_default_kernel_runs_this_python():
    import sys

    from cifar_utils.book.runner import kernel_interpreter

    assert kernel_interpreter(None) == sys.executable
