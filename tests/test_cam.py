"""cifar_utils.cam: maps through pytorch-grad-cam on a trained tiny model, the model left untouched,
the faithfulness table, and the Cutout examples."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import cifar_utils.engine.testing as tiny
from cifar_utils import cam
from cifar_utils.engine import run
from cifar_utils.models import create_model

pytest.importorskip("pytorch_grad_cam")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny CNN trained for a few epochs, loaded fresh from the store (no gradients on it), and its test images."""
    r = run(tiny.tiny_config(epochs=4), runs_dir=tmp_path_factory.mktemp("runs"), progress=False)
    return r.load_model("cpu"), cam.load_cam_data(r.config)


def _grads(model):
    return [p.grad for p in model.parameters()]


@pytest.mark.parametrize("method", list(cam.METHODS))
def test_maps_of_a_trained_model_are_finite_in_unit_range_and_leave_no_gradient(trained, method):
    model, data = trained
    model.train()
    assert all(g is None for g in _grads(model))
    maps = cam.compute_cams(model, data.x[:10], method=method)
    assert maps.shape == (10, 32, 32) and maps.dtype == np.float32
    assert np.isfinite(maps).all() and maps.min() >= 0.0 and maps.max() <= 1.0
    assert maps.max() > 0.5, "a trained model has some positive evidence for its prediction"
    assert all(g is None for g in _grads(model)), "the package's backward() must not leave .grad on parameters"
    assert model.training and all(m.training for m in model.modules()), "train mode restored"


def test_gradients_already_there_are_put_back_unchanged(trained):
    model, data = trained
    before = [torch.full_like(p, 0.5) for p in model.parameters()]
    for p, g in zip(model.parameters(), before):
        p.grad = g
    try:
        cam.compute_cams(model, data.x[:4], targets=[1, 2, 3, 4])
        assert all(p.grad is g for p, g in zip(model.parameters(), before))
        assert all(torch.equal(g, torch.full_like(g, 0.5)) for g in before)
    finally:
        for p in model.parameters():
            p.grad = None


def test_targets_change_the_map_and_bad_input_is_refused(trained):
    model, data = trained
    a = cam.compute_cams(model, data.x[:1], targets=[0])
    b = cam.compute_cams(model, data.x[:1], targets=[5])
    assert not np.allclose(a, b)
    with pytest.raises(ValueError, match="unknown CAM method 'scorecam'; choose one of gradcam, gradcam\\+\\+"):
        cam.compute_cams(model, data.x[:1], method="scorecam")
    with pytest.raises(ValueError, match="targets has 2 classes for 1 images"):
        cam.compute_cams(model, data.x[:1], targets=[0, 1])


def test_an_all_zero_map_stays_zero_and_draws(trained):
    _, data = trained
    model = tiny.tiny_cnn()
    with torch.no_grad():  # the CAM layer outputs ReLU(BN(0) + 0) = 0 everywhere: every map is zero
        model.block2[0].weight.zero_()
    maps = cam.compute_cams(model, data.x[:3])
    assert np.isfinite(maps).all() and (maps == 0).all()
    img = cam.overlay(data.images[0], maps[0], scale=2)
    assert img.shape == (64, 64, 3) and img.dtype == np.uint8
    table = cam.faithfulness_table(model, data, methods=["gradcam"], images=2, percentiles=[50], progress=False)
    assert np.isfinite(table["road"]).all()


def test_resnet18_maps_are_4x4_at_layer4():
    model = create_model("resnet18")
    assert cam.cam_resolution(model) == (4, 4)


def test_gallery_misclassified_and_explain(trained):
    model, data = trained
    probs = cam.predict(model, data.x)
    assert probs.shape == (len(data), 10) and np.allclose(probs.sum(1), 1, atol=1e-5)
    items = cam.gallery(model, data, per_class=2, probs=probs)
    for c in range(10):
        assert [it.index for it in items if it.label == c] == list(data.class_indices(c)[:2])
    assert all(it.target == it.pred == probs[it.index].argmax() for it in items)
    pairs = cam.misclassified(model, data, limit=50, probs=probs)
    assert len(pairs) == int((probs.argmax(1) != data.labels).sum())
    for as_pred, as_true in pairs:
        assert as_pred.index == as_true.index and as_pred.pred != as_pred.label
        assert as_pred.target == as_pred.pred and as_true.target == as_true.label
    one = cam.explain(model, data, 3, target=7, method="layercam", probs=probs)
    assert (one.index, one.target, one.method) == (3, 7, "layercam") and one.cam.shape == (32, 32)
    assert cam.top_k(np.array([0.1, 0.6, 0.3]), ("a", "b", "c"), 2) == [("b", 0.6), ("c", 0.3)]


def test_faithfulness_table_for_a_tiny_model(trained):
    model, data = trained
    grads = _grads(model)
    table = cam.faithfulness_table(model, data, images=12, percentiles=[30, 70], batch_size=5, progress=False)
    assert list(table.columns) == ["method", "road", "road_sem", "keep_change", "images"]
    assert list(table["method"]) == list(cam.METHODS.values())
    assert (table["images"] == 12).all()
    for col in ("road", "road_sem", "keep_change"):
        assert np.isfinite(table[col].astype(float)).all()
    assert (table["road"].abs() <= 100).all() and (table["keep_change"].abs() <= 100).all()
    again = cam.faithfulness_table(model, data, images=12, percentiles=[30, 70], batch_size=5, progress=False)
    assert table.equals(again), "seeded: the same table twice"
    assert all(g is None for g in _grads(model)) and grads == _grads(model)
    text = cam.faithfulness_summary(table)
    assert "Grad-CAM scores" in text and "RandomCAM" in text and "over 12 test images" in text
    with pytest.raises(ValueError, match="percentiles must be"):
        cam.faithfulness_table(model, data, images=2, percentiles=[0, 50])


def test_cutout_examples_have_one_hole_of_the_right_size_clipped_at_borders():
    x = torch.full((200, 3, 32, 32), 255, dtype=torch.uint8)  # white: only padding and holes are not white
    rows = cam.augmentation_examples(x, cutout=16, seed=3)
    original, flipped, cut = rows.values()
    assert list(rows) == ["original", "crop + flip", "crop + flip + cutout 16"]
    assert not cam.cutout_holes(original).any() and not cam.cutout_holes(flipped).any()
    holes = cam.cutout_holes(cut)
    clipped = full = 0
    for i, hole in enumerate(holes):
        rows_in, cols_in = hole.any(1).nonzero().flatten(), hole.any(0).nonzero().flatten()
        top, bottom, left, right = rows_in.min(), rows_in.max(), cols_in.min(), cols_in.max()
        h, w = int(bottom - top + 1), int(right - left + 1)
        assert int(hole.sum()) == h * w, f"image {i}: the hole is one filled rectangle"
        assert 8 <= h <= 16 and 8 <= w <= 16
        assert h == 16 or top == 0 or bottom == 31, f"image {i}: a short hole must touch the top or bottom border"
        assert w == 16 or left == 0 or right == 31, f"image {i}: a narrow hole must touch the left or right border"
        outside = ~hole
        assert torch.equal(cut[i][:, outside], flipped[i][:, outside]), "the same crop and flip, plus the hole"
        clipped += (h, w) != (16, 16)
        full += (h, w) == (16, 16)
    assert clipped and full
    with pytest.raises(ValueError, match="cutout must be a hole side >= 1"):
        cam.augmentation_examples(x[:2], cutout=0)


def test_road_score_is_the_packages_road_combined(trained):
    """The table computes ROADCombined from its parts (without the repeated baseline passes): the same
    number as the package's class, up to the imputation noise."""
    from pytorch_grad_cam.metrics.road import ROADCombined
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    model, data = trained
    table = cam.faithfulness_table(model, data, methods=["gradcam"], images=8, percentiles=[30, 70], progress=False)
    x = data.x[:8]
    preds = cam.predict(model, x).argmax(1)
    maps = cam._tie_break(cam.compute_cams(model, x, preds), 0)
    model.eval()
    with torch.no_grad():
        direct = ROADCombined(percentiles=[30, 70])(x, maps, [ClassifierOutputSoftmaxTarget(int(t)) for t in preds],
                                                    model)
    for p in model.parameters():
        p.grad = None
    assert abs(float(np.mean(direct))) > 1e-3, "a score that can tell the two apart"
    assert table.loc[0, "road"] == pytest.approx(100 * float(np.mean(direct)), abs=0.05)
