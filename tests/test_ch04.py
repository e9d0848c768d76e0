"""Chapter 4: its runs are chapter 1's (same keys), its table and figures, the Grad-CAM explorer, and
the executed smoke notebook."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import yaml

matplotlib.use("agg")

from cifar_utils import experiments, plan, plots, tables  # noqa: E402
from cifar_utils.book.params import chapter_parameters  # noqa: E402
from cifar_utils.engine import Run, RunConfig  # noqa: E402
from cifar_utils.reported import BEST_MODEL_ERRORS, CUTOUT_PAPER_ERRORS  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CH1, CH4 = "01_architectures", "04_gradcam_best_model"
SHARED = ("source", "data_root", "train_size", "test_size", "batch_size", "epochs", "seeds", "device")


def _profile(name: str) -> dict:
    return yaml.safe_load((ROOT / "params" / f"{name}.yaml").read_text())["chapters"]


@pytest.mark.parametrize("profile", ["smoke", "full"])
def test_chapter4_reuses_chapter1_runs_in_every_profile(profile):
    chapters = _profile(profile)
    ch1, ch4 = chapters[CH1], chapters[CH4]
    for key in SHARED:
        if key == "seeds":
            assert ch1.get("seeds", [0])[0] == ch4.get("seed", 0)
        else:
            assert ch1.get(key) == ch4.get(key), f"{profile}: {key} differs between chapters 1 and 4"
    first, fourth = (plan.chapter(c, chapter_parameters(ROOT, c, profile)) for c in (CH1, CH4))
    for role in ("resnet18", "wrn28_10"):
        assert fourth.arm((), role).configs[0].key() == first.arm((), role).configs[0].key()
    cut = fourth.arm((), "wrn28_10_cutout").configs[0]
    assert cut.cutout == 16 and cut.replace(cutout=0) == fourth.arm((), "wrn28_10").configs[0]


def test_best_model_configs_refuse_a_bad_cutout():
    data = experiments.DataChoice(source="sample")
    with pytest.raises(ValueError, match="cutout must be the hole side in pixels"):
        experiments.best_model_configs(epochs=1, batch_size=8, data=data, cutout=0)


def _fake(model: str, accs: list[float], losses: list[float], **config) -> Run:
    history = [{"epoch": i + 1, "train_loss": l, "train_acc": 50.0, "test_loss": 1.0, "test_acc": a, "lr": 0.1}
               for i, (a, l) in enumerate(zip(accs, losses))]
    cfg = RunConfig(model=model, **config)
    return Run(config=cfg, path=Path("/nonexistent") / cfg.name, history=history, status="finished",
               wall_seconds=61.0, device="cpu")


def test_best_model_table_and_figure_14():
    runs = {"wrn28_10": _fake("wrn28_10", [90.0, 95.5, 95.0], [1.0, 0.5, 0.2]),
            "wrn28_10_cutout": _fake("wrn28_10", [89.0, 96.0, 96.5], [1.2, 0.7, 0.4], cutout=16)}
    table = tables.best_model_table(runs, experiments.BEST_MODEL_RUNS, BEST_MODEL_ERRORS, CUTOUT_PAPER_ERRORS)
    row = table.set_index("run").loc["WRN-28-10 + Cutout"]
    assert (row["reported_error"], row["paper_error"]) == (3.35, 3.08)
    assert row["reported_accuracy"] == pytest.approx(96.65)
    assert row["reproduced_error"] == pytest.approx(3.5) and row["best_error"] == pytest.approx(3.5)
    assert row["reproduced_accuracy"] == pytest.approx(96.5)
    assert table.set_index("run").loc["WRN-28-10", "best_error"] == pytest.approx(4.5)
    html = tables.format_numbers(table).to_html()
    assert "96.65" in html and "3.35" in html and "3.08" in html and "3.87" in html
    fig = plots.plot_cutout_comparison({"without": runs["wrn28_10"], "with": runs["wrn28_10_cutout"]}, note="smoke x")
    err, loss = fig.axes
    assert [list(l.get_ydata()) for l in err.lines] == [pytest.approx([10.0, 4.5, 5.0]),
                                                         pytest.approx([11.0, 4.0, 3.5])]
    assert list(loss.lines[1].get_ydata()) == [1.2, 0.7, 0.4]
    assert "smoke x" in fig._suptitle.get_text()


# --- figures and the explorer on a trained tiny model ------------------------------------------

@pytest.fixture(scope="module")
def tiny_cam(tmp_path_factory):
    pytest.importorskip("pytorch_grad_cam")
    import cifar_utils.engine.testing as tiny
    from cifar_utils import cam
    from cifar_utils.engine import run

    r = run(tiny.tiny_config(epochs=3), runs_dir=tmp_path_factory.mktemp("runs"), progress=False)
    return r.load_model("cpu"), cam.load_cam_data(r.config)


def test_cam_figures_show_every_class_and_pair(tiny_cam):
    import cifar_utils.engine.testing as tiny
    from cifar_utils import cam

    model, data = tiny_cam
    items = cam.gallery(model, data, per_class=1)
    fig = plots.plot_cam_gallery(items, data.classes, note="smoke profile")
    present = len({it.label for it in items})
    assert len(fig.axes) == present and "smoke profile" in fig._suptitle.get_text()
    assert fig.axes[0].images[0].get_array().shape == (128, 128, 3), "enlarged 4x"
    pairs = cam.misclassified(model, data, limit=2)
    fig = plots.plot_misclassified(pairs, data.classes)
    assert len(fig.axes) == 3 * max(len(pairs), 1)
    maps = cam.method_maps(model, data, [0, 1])
    fig = plots.plot_cam_methods([data.images[0], data.images[1]], maps, cam.METHODS)
    assert len(fig.axes) == 2 * (len(cam.METHODS) + 1)
    assert [fig.axes[j].get_title() for j in range(1, 5)] == list(cam.METHODS.values())
    rows = cam.augmentation_examples(cam.training_images(tiny.tiny_config(), 5))
    fig = plots.plot_augmentations(rows)
    assert len(fig.axes) == 15 and fig.axes[10].get_ylabel() == "crop + flip + cutout 16"


def test_cam_explorer_redraws_on_each_control(tiny_cam):
    from cifar_utils import cam
    from cifar_utils.widgets import cam_explorer

    model, data = tiny_cam
    ex = cam_explorer(model, data)

    def overlay_pixels():
        return ex.figure.axes[1].images[0].get_array().copy()

    def bars():
        return sorted(float(b.get_width()) for b in ex.figure.axes[2].patches)

    first, png = overlay_pixels(), ex.image.value
    assert ex.index.continuous_update is False  # one map per drag, not one per image passed
    assert png[:4] == b"\x89PNG"
    i0 = ex.selected
    assert bars() == pytest.approx(sorted(100 * float(p) for p in sorted(ex.probs[i0])[-3:]), abs=1e-3)
    ex.index.value = 1
    assert ex.selected == data.class_indices(ex.klass.value)[1] and ex.item.index == ex.selected
    assert not np.array_equal(overlay_pixels(), first) and ex.image.value != png
    assert f"test image {ex.selected}" in ex.figure.axes[0].get_title()
    other = (ex.item.pred + 1) % 10
    ex.target.value = other
    assert ex.item.target == other and data.classes[other] in ex.figure.axes[1].get_title()
    ex.method.value = "layercam"
    assert ex.figure.axes[1].get_title().startswith("LayerCAM map of")
    classes = [v for _, v in ex.klass.options]
    ex.klass.value = classes[-1]
    assert ex.index.value == 0 and data.labels[ex.selected] == classes[-1]
    assert ex.index.max == len(data.class_indices(classes[-1])) - 1
    assert bars() == pytest.approx(sorted(100 * float(p) for p in sorted(ex.probs[ex.selected])[-3:]), abs=1e-3)
    assert all(p.grad is None for p in model.parameters())
    with pytest.raises(ValueError, match="unknown CAM method 'x'"):
        cam_explorer(model, data, methods=["x"])
    assert set(cam.METHODS) == {v for _, v in ex.method.options}


def test_the_static_explorer_view_is_the_explorers_first_view(tiny_cam):
    from cifar_utils.widgets import cam_explorer, cam_explorer_figure

    model, data = tiny_cam
    fig = cam_explorer_figure(model, data)
    ex = cam_explorer(model, data)
    assert len(fig.axes) == 3 and fig.axes[0].get_title() == ex.figure.axes[0].get_title()
    assert np.array_equal(fig.axes[1].images[0].get_array(), ex.figure.axes[1].images[0].get_array())


# --- the executed smoke chapter ---------------------------------------------------------------

@pytest.mark.slow
def test_smoke_chapter4_shows_every_figure_and_table(tmp_path):
    from cifar_utils.book import build_book
    from cifar_utils.engine import RunStore

    mp = pytest.MonkeyPatch()
    mp.setenv("CIFAR_UTILS_RUNS", str(tmp_path / "runs"))
    mp.setenv("CIFAR_UTILS_PROGRESS", "log")
    try:
        build_book(ROOT, "smoke", chapters="04", output_dir=tmp_path, build_html=False)
    finally:
        mp.undo()
    nb = json.loads((tmp_path / "_build" / "src" / "book" / f"{CH4}.ipynb").read_text())
    outputs = [o for c in nb["cells"] for o in c.get("outputs", [])]
    text = json.dumps(outputs)
    assert "Smoke results" in text and "4x4" in text
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 6  # 13, misclassified, methods, aug, 14, explorer
    for label in ("Grad-CAM++", "LayerCAM", "RandomCAM", "WRN-28-10 + Cutout", "3.35", "3.08"):
        assert label in text, label
    stored = {r.config.model: r for r in RunStore(tmp_path / "runs").list() if r.config.cutout == 0}
    smoke = _profile("smoke")[CH1]
    assert {m: (r.config.epochs, r.config.batch_size) for m, r in stored.items()} == {
        "resnet18": (smoke["epochs"], smoke["batch_size"]), "wrn28_10": (smoke["epochs"], smoke["batch_size"])}
