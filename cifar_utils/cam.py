"""Chapter 4's computations: class activation maps through pytorch-grad-cam, how far to trust them,
and what Cutout does to a training image.

The maps come from the ``grad-cam`` package (``pytorch_grad_cam``) hooked on the layer each model
names (``model.cam_layer``, see :func:`cifar_utils.models.get_cam_layer`); nothing here re-implements
a CAM method. What this module adds is what the package leaves to the caller:

* the model is left exactly as it was found: the package calls ``backward()`` (which leaves
  ``.grad`` on every parameter, and a later optimizer step would use it) and switches the model to
  eval mode; :func:`preserved_state` restores both the gradients and the train/eval flags;
* maps are finite and in [0, 1] even for a model whose map is all zero (an untrained network, or a
  class with no positive evidence): the package scales by ``max + 1e-7``, never by zero, and
  anything non-finite is set to 0;
* the data side: test images, predictions, the gallery, misclassified pairs, a faithfulness table.

Figures are drawn by :mod:`cifar_utils.plots` from the returned arrays; the explorer lives in
:mod:`cifar_utils.widgets`.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from .engine import RunConfig
from .progress import progress_bar

#: The CAM methods the chapter compares (key -> label). ``random`` (RandomCAM: random channel
#: weights) is the floor a real method has to beat.
METHODS: dict[str, str] = {"gradcam": "Grad-CAM", "gradcam++": "Grad-CAM++", "layercam": "LayerCAM",
                           "random": "RandomCAM"}


def _method_class(method: str):
    import pytorch_grad_cam as pgc

    classes = {"gradcam": pgc.GradCAM, "gradcam++": pgc.GradCAMPlusPlus, "layercam": pgc.LayerCAM,
               "random": pgc.RandomCAM}
    if method not in classes:
        raise ValueError(f"unknown CAM method {method!r}; choose one of {', '.join(classes)}")
    return classes[method]


def _check_methods(methods: Sequence[str]) -> list[str]:
    methods = list(methods)
    if not methods:
        raise ValueError(f"methods is empty; choose from {', '.join(METHODS)}")
    for m in methods:
        _method_class(m)
    return methods


# --- leaving the model as it was --------------------------------------------------------------

@contextlib.contextmanager
def preserved_state(model: nn.Module) -> Iterator[nn.Module]:
    """Run CAM code on ``model`` and leave it as found: every parameter's ``.grad`` (None or the
    tensor it held) and every submodule's train/eval flag are put back afterwards, even on error.

    pytorch-grad-cam calls ``model.eval()`` and ``backward()``; without this a CAM computed between
    two training steps would change the next step's update."""
    modes = [(m, m.training) for m in model.modules()]
    grads = [(p, p.grad) for p in model.parameters()]
    for p, _ in grads:
        p.grad = None
    try:
        yield model
    finally:
        for p, g in grads:
            p.grad = g
        for m, training in modes:
            m.training = training


@contextlib.contextmanager
def _seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Fixed numpy and torch randomness inside (RandomCAM uses numpy's global RNG, ROAD's
    imputation torch's), the callers' RNG states untouched outside."""
    state = np.random.get_state()
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)
        try:
            yield
        finally:
            np.random.set_state(state)


def _device(model: nn.Module) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def _layer(model: nn.Module, layer: nn.Module | str | None) -> nn.Module:
    from cifar_utils.models import get_cam_layer

    if layer is None:
        return get_cam_layer(model)
    if isinstance(layer, str):
        return model.get_submodule(layer)
    return layer


# --- maps and predictions ---------------------------------------------------------------------

def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 256) -> np.ndarray:
    """Softmax probabilities ``(N, classes)`` of ``model`` in eval mode (its mode is restored)."""
    device = _device(model)
    out = []
    with preserved_state(model), torch.no_grad():
        model.eval()
        for lo in range(0, len(x), batch_size):
            out.append(torch.softmax(model(x[lo:lo + batch_size].to(device)).float(), dim=1).cpu())
    if not out:
        return np.zeros((0, 0), dtype=np.float32)
    return torch.cat(out).numpy()


def compute_cams(model: nn.Module, x: torch.Tensor, targets: Sequence[int] | None = None,
                 method: str = "gradcam", layer: nn.Module | str | None = None, batch_size: int = 64,
                 seed: int = 0) -> np.ndarray:
    """Class activation maps ``(N, H, W)``, float32 in [0, 1], one per image of the normalised batch
    ``x`` ``(N, C, H, W)``, for class ``targets[i]`` (None: the predicted class).

    ``method`` is a key of :data:`METHODS`; ``layer`` defaults to the model's ``cam_layer``. Each map
    is computed at the layer's resolution (4x4 for a CIFAR ResNet-18's ``layer4``), set to zero where
    negative, scaled to [0, 1] by the package (an all-zero map stays zero) and resized to the input's
    H x W. The model's gradients and train/eval mode are left as they were (:func:`preserved_state`)."""
    cam_class = _method_class(method)
    if x.dim() != 4:
        raise ValueError(f"x must be a normalised (N, C, H, W) batch, got shape {tuple(x.shape)}")
    if targets is not None and len(targets) != len(x):
        raise ValueError(f"targets has {len(targets)} classes for {len(x)} images; give one per image or None")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    device = _device(model)
    target_layer = _layer(model, layer)
    maps = []
    with preserved_state(model), _seeded(seed, device):
        for lo in range(0, len(x), batch_size):
            # the input asks for a gradient so that the graph exists even when every parameter is frozen
            xb = x[lo:lo + batch_size].detach().to(device).float().clone().requires_grad_(True)
            tb = None if targets is None else [ClassifierOutputTarget(int(t)) for t in targets[lo:lo + batch_size]]
            with cam_class(model=model, target_layers=[target_layer]) as cam:
                maps.append(np.asarray(cam(input_tensor=xb, targets=tb), dtype=np.float32))
    if not maps:
        return np.zeros((0, *x.shape[-2:]), dtype=np.float32)
    out = np.concatenate(maps)
    return np.clip(np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0), 0.0, 1.0)


def cam_resolution(model: nn.Module, input_size: tuple[int, int, int] = (3, 32, 32),
                   layer: nn.Module | str | None = None) -> tuple[int, int]:
    """(height, width) of the feature map the CAM is computed at (4x4 for ResNet-18's layer4)."""
    target = _layer(model, layer)
    seen: list[tuple[int, int]] = []
    handle = target.register_forward_hook(lambda _m, _i, out: seen.append(tuple(out.shape[-2:])))
    try:
        with preserved_state(model), torch.no_grad():
            model.eval()
            model(torch.zeros(1, *input_size, device=_device(model)))
    finally:
        handle.remove()
    return seen[-1]


# --- images -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class CamData:
    """Test images to explain: normalised tensors for the model, [0, 1] arrays for the eye."""

    x: torch.Tensor  # (N, C, H, W) float32, normalised, CPU
    images: np.ndarray  # (N, H, W, 3) float32 in [0, 1]
    labels: np.ndarray  # (N,) int64
    classes: tuple[str, ...]
    dataset: str

    def __len__(self) -> int:
        return len(self.labels)

    def class_indices(self, label: int) -> np.ndarray:
        """Positions of the images of class ``label``, in test-split order."""
        return np.flatnonzero(self.labels == label)


def load_cam_data(config: RunConfig, test_size: int | None = None) -> CamData:
    """The first ``test_size`` test images (None: all) of the data ``config`` trains on."""
    from cifar_utils.data import normalize, to_images

    from .engine.datasets import load_for_config

    ds = load_for_config(config.replace(test_size=test_size))
    x = normalize(ds.x_test, ds.name)
    images = to_images(x, ds.name)
    if images.ndim == 3:  # one channel: grey as RGB, for the colour overlay
        images = np.repeat(images[..., None], 3, axis=-1)
    return CamData(x=x, images=images, labels=ds.y_test.numpy().astype(np.int64), classes=tuple(ds.classes),
                   dataset=ds.name)


def upsample(array: np.ndarray, scale: int) -> np.ndarray:
    """Bilinear ``scale``-times enlargement of an ``(H, W)`` or ``(H, W, C)`` array, so a 32x32
    image is readable on the page."""
    if scale < 1:
        raise ValueError(f"scale must be >= 1, got {scale}")
    if scale == 1:
        return np.asarray(array, dtype=np.float32)
    t = torch.as_tensor(np.asarray(array, dtype=np.float32))
    t = t[None, None] if t.dim() == 2 else t.permute(2, 0, 1)[None]
    out = F.interpolate(t, scale_factor=scale, mode="bilinear", align_corners=False)[0]
    out = out[0] if np.ndim(array) == 2 else out.permute(1, 2, 0)
    return out.clamp(0, 1).numpy()


def overlay(image: np.ndarray, cam: np.ndarray, scale: int = 4, image_weight: float = 0.5) -> np.ndarray:
    """The map as a JET heat map over the image (``show_cam_on_image``), both enlarged ``scale``
    times: uint8 ``(H*scale, W*scale, 3)``."""
    from pytorch_grad_cam.utils.image import show_cam_on_image

    img = upsample(image, scale)
    mask = np.clip(np.nan_to_num(upsample(cam, scale)), 0.0, 1.0)
    return show_cam_on_image(img, mask, use_rgb=True, image_weight=image_weight)


@dataclass(frozen=True)
class CamItem:
    """One image with one map: the class it explains, the truth and the prediction."""

    index: int  # position in the CamData (the test split's order)
    image: np.ndarray  # (H, W, 3) in [0, 1]
    cam: np.ndarray  # (H, W) in [0, 1]
    label: int  # true class
    target: int  # the class the map explains
    pred: int  # predicted class
    confidence: float  # predicted probability of ``pred``
    method: str = "gradcam"

    def overlay(self, scale: int = 4) -> np.ndarray:
        return overlay(self.image, self.cam, scale)


def _items(model, data: CamData, indices: Sequence[int], targets: Sequence[int] | None, probs: np.ndarray,
           method: str) -> list[CamItem]:
    """CamItems of ``data[indices]``; ``probs`` holds the probabilities of those images, row by row."""
    indices = [int(i) for i in indices]
    if not indices:
        return []
    preds = probs.argmax(1)
    targets = [int(p) for p in preds] if targets is None else [int(t) for t in targets]
    cams = compute_cams(model, data.x[indices], targets, method=method)
    return [CamItem(index=i, image=data.images[i], cam=c, label=int(data.labels[i]), target=t, pred=int(p),
                    confidence=float(row[p]), method=method)
            for i, c, t, p, row in zip(indices, cams, targets, preds, probs)]


def gallery(model: nn.Module, data: CamData, per_class: int = 3, method: str = "gradcam",
            probs: np.ndarray | None = None) -> list[CamItem]:
    """The first ``per_class`` test images of every class, each with the map of its predicted class,
    class by class (Figure 13 of the report). A class with fewer images contributes what it has."""
    if per_class < 1:
        raise ValueError(f"per_class must be >= 1, got {per_class}")
    probs = predict(model, data.x) if probs is None else probs
    indices = [i for c in range(len(data.classes)) for i in data.class_indices(c)[:per_class]]
    return _items(model, data, indices, None, probs[indices], method)


def misclassified(model: nn.Module, data: CamData, limit: int = 8, method: str = "gradcam",
                  probs: np.ndarray | None = None) -> list[tuple[CamItem, CamItem]]:
    """Up to ``limit`` misclassified test images (in test order), each as a pair: the map of the
    predicted (wrong) class and the map of the true class."""
    probs = predict(model, data.x) if probs is None else probs
    wrong = np.flatnonzero(probs.argmax(1) != data.labels)[:max(int(limit), 0)]
    as_pred = _items(model, data, wrong, None, probs[wrong], method)
    as_true = _items(model, data, wrong, data.labels[wrong], probs[wrong], method)
    return list(zip(as_pred, as_true))


def method_maps(model: nn.Module, data: CamData, indices: Sequence[int], methods: Sequence[str] = tuple(METHODS),
                probs: np.ndarray | None = None, seed: int = 0) -> dict[str, np.ndarray]:
    """Each method's maps ``(len(indices), H, W)`` of the predicted class, for the same images."""
    methods = _check_methods(methods)
    probs = predict(model, data.x) if probs is None else probs
    indices = [int(i) for i in indices]
    targets = probs[indices].argmax(1)
    return {m: compute_cams(model, data.x[indices], targets, method=m, seed=seed) for m in methods}


def explain(model: nn.Module, data: CamData, index: int, target: int | None = None, method: str = "gradcam",
            probs: np.ndarray | None = None) -> CamItem:
    """One image's map for ``target`` (None: the predicted class); the explorer's computation."""
    if not 0 <= index < len(data):
        raise ValueError(f"index {index} is out of range: {len(data)} images")
    if target is not None and not 0 <= target < len(data.classes):
        raise ValueError(f"target {target} is not a class index (0..{len(data.classes) - 1})")
    row = predict(model, data.x[index:index + 1]) if probs is None else probs[index:index + 1]
    return _items(model, data, [index], None if target is None else [target], row, method)[0]


def top_k(probs: np.ndarray, classes: Sequence[str], k: int = 3) -> list[tuple[str, float]]:
    """The ``k`` most probable classes of one image's probabilities, best first."""
    order = np.argsort(-np.asarray(probs), kind="stable")[:k]
    return [(classes[i], float(probs[i])) for i in order]


# --- can the reader trust the map? ------------------------------------------------------------

def _tie_break(cams: np.ndarray, seed: int) -> np.ndarray:
    """Order pixels of equal value at random (below float resolution of the scores): ROAD removes a
    percentile of the pixels, which is ill-defined where a map is flat, e.g. its all-zero part."""
    rng = np.random.default_rng(seed)
    return (cams + rng.uniform(0.0, 1e-6, size=cams.shape)).astype(np.float32)


def faithfulness_table(model: nn.Module, data: CamData, methods: Sequence[str] = tuple(METHODS), images: int = 300,
                       percentiles: Sequence[int] = (10, 20, 30, 40, 50, 60, 70, 80, 90), batch_size: int = 32,
                       seed: int = 0, progress: bool = True) -> pd.DataFrame:
    """How faithful each method's maps are, on the first ``images`` test images, for the predicted class.

    Two scores from ``pytorch_grad_cam.metrics``, both in percentage points of the predicted class's
    softmax probability, averaged over the images (higher = more faithful):

    * ``road``: ROADCombined (Rong et al., 2022), from its parts. For each percentile p, MoRF removes
      the pixels the map ranks above its p-th percentile and LeRF those it ranks below its (100-p)-th:
      they are replaced by a noisy linear interpolation of their neighbours. The score is the
      probability after LeRF minus the probability after MoRF, halved and averaged over the
      percentiles: a map that ranks the pixels the model relies on first scores above 0, a random
      ranking about 0. Pixels a map gives equal values are ordered at random (:func:`_tie_break`).
    * ``keep_change``: the probability change when the image is multiplied by the map
      (``CamMultImageConfidenceChange``): only the highlighted region is kept; near 0 or above
      means that region alone carries the evidence, strongly negative that it does not.

    ``road_sem`` is the standard error of ``road`` over the images. RandomCAM gives the floor."""
    from pytorch_grad_cam.metrics.cam_mult_image import CamMultImageConfidenceChange
    from pytorch_grad_cam.metrics.road import ROADLeastRelevantFirst, ROADMostRelevantFirst
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    methods = _check_methods(methods)
    if images < 1:
        raise ValueError(f"images must be >= 1, got {images}")
    if not percentiles or any(not 0 < p < 100 for p in percentiles):
        raise ValueError("percentiles must be a non-empty list of numbers strictly between 0 and 100, "
                         f"got {percentiles!r}")
    n = min(int(images), len(data))
    x = data.x[:n]
    probs = predict(model, x)
    preds = probs.argmax(1)
    device = _device(model)
    # ROADCombined's own parts, scored without their baseline: its (LeRF drop - MoRF drop) / 2 is
    # (LeRF score - MoRF score) / 2, so the unperturbed forward pass it repeats per percentile and
    # ordering is not needed; the keep score's baseline is the probability predicted above.
    lerf = [ROADLeastRelevantFirst(p) for p in percentiles]
    morf = [ROADMostRelevantFirst(p) for p in percentiles]
    keep_metric = CamMultImageConfidenceChange()
    rows = []
    batches = [(m, lo) for m in methods for lo in range(0, n, batch_size)]
    scores: dict[str, dict[str, list[np.ndarray]]] = {m: {"road": [], "keep": []} for m in methods}
    with progress_bar(total=len(batches), desc="faithfulness", disable=not progress) as bar, \
            warnings.catch_warnings():
        # scipy's sparse solver inside ROAD's imputation trips a numpy 2 deprecation warning per image
        warnings.filterwarnings("ignore", message="__array_wrap__ must accept context", category=DeprecationWarning)
        for m, lo in batches:
            xb, tb = x[lo:lo + batch_size], preds[lo:lo + batch_size]
            cams = compute_cams(model, xb, tb, method=m, seed=seed + lo)
            targets = [ClassifierOutputSoftmaxTarget(int(t)) for t in tb]
            with preserved_state(model), _seeded(seed + lo, device), torch.no_grad():
                model.eval()
                xd = xb.to(device)
                ranked = _tie_break(cams, seed + lo)

                def after(metric, maps):
                    return np.asarray(metric(xd, maps, targets, model, return_diff=False), dtype=np.float64)

                road = np.mean([(after(le, ranked) - after(mo, ranked)) / 2 for le, mo in zip(lerf, morf)], axis=0)
                scores[m]["road"].append(road)
                scores[m]["keep"].append(after(keep_metric, cams) - probs[np.arange(lo, lo + len(tb)), tb])
            bar.update(1)
    for m in methods:
        road = 100.0 * np.concatenate(scores[m]["road"]).astype(np.float64).reshape(-1)
        keep = 100.0 * np.concatenate(scores[m]["keep"]).astype(np.float64).reshape(-1)
        road, keep = road[np.isfinite(road)], keep[np.isfinite(keep)]
        rows.append({"method": METHODS[m], "road": float(road.mean()) if len(road) else None,
                     "road_sem": float(road.std(ddof=1) / np.sqrt(len(road))) if len(road) > 1 else None,
                     "keep_change": float(keep.mean()) if len(keep) else None, "images": int(len(road))})
    return pd.DataFrame(rows, columns=["method", "road", "road_sem", "keep_change", "images"])


# --- the best model: what Cutout does ---------------------------------------------------------

def augmentation_examples(x: torch.Tensor, dataset: str = "cifar10", cutout: int = 16, seed: int = 0,
                          crop_padding: int = 4) -> dict[str, torch.Tensor]:
    """The same uint8 training images ``x`` ``(N, C, H, W)`` as the training loader makes them,
    normalised: ``original``, ``crop + flip`` (pad-4 random crop, horizontal flip) and
    ``crop + flip + cutout`` (the same crops and flips with one ``cutout`` x ``cutout`` hole, zero in
    normalised space, i.e. the mean colour). Built with :class:`cifar_utils.data.DeviceLoader`, the
    training loader itself, so what is shown is what the network trains on."""
    from cifar_utils.data import DeviceLoader, normalization, normalize

    if cutout < 1:
        raise ValueError(f"cutout must be a hole side >= 1 pixel, got {cutout}")
    mean, std = normalization(dataset)
    y = torch.zeros(len(x), dtype=torch.int64)

    def first_batch(**augment) -> torch.Tensor:
        loader = DeviceLoader(x, y, batch_size=len(x), mean=mean, std=std, train=True, shuffle=False,
                              drop_last=False, seed=seed, **augment)
        return next(iter(loader))[0]

    return {"original": normalize(x, dataset),
            "crop + flip": first_batch(crop_padding=crop_padding, flip=True),
            f"crop + flip + cutout {cutout}": first_batch(crop_padding=crop_padding, flip=True, cutout=cutout)}


def cutout_holes(x: torch.Tensor) -> torch.Tensor:
    """Where a normalised batch ``(N, C, H, W)`` is exactly zero in every channel: Cutout's holes
    (a real pixel is never exactly the mean in all channels, since 255 * mean is not a whole number)."""
    return (x == 0).all(dim=1)


def faithfulness_summary(table: pd.DataFrame, floor: str = "RandomCAM") -> str:
    """One sentence per method of :func:`faithfulness_table`: its ROAD score against the random floor,
    and whether the gap is larger than two standard errors (the two combined)."""
    rows = table.set_index("method")
    if floor not in rows.index or rows.loc[floor, "road"] is None or pd.isna(rows.loc[floor, "road"]):
        return "No random floor was computed, so the scores cannot be judged against chance."
    base, base_sem = float(rows.loc[floor, "road"]), rows.loc[floor, "road_sem"]
    parts = []
    for method, row in rows.iterrows():
        if method == floor or row["road"] is None or pd.isna(row["road"]):
            continue
        gap = float(row["road"]) - base
        sems = [s for s in (row["road_sem"], base_sem) if s is not None and not pd.isna(s)]
        noise = 2 * float(np.sqrt(sum(s * s for s in sems))) if len(sems) == 2 else None
        if noise is None:
            verdict = "too few images to tell it from chance"
        elif gap > noise:
            verdict = "clearly above chance"
        elif gap < -noise:
            verdict = "clearly below chance"
        else:
            verdict = "within the noise of chance"
        parts.append(f"{method} scores {float(row['road']):+.2f} points against {base:+.2f} for {floor} "
                     f"({gap:+.2f}; {verdict}"
                     + (f", two standard errors = {noise:.2f}" if noise is not None else "") + ")")
    return "; ".join(parts) + f", over {int(rows['images'].max())} test images."


def training_images(config: RunConfig, n: int = 8) -> torch.Tensor:
    """The first ``n`` training images (uint8 ``(n, C, H, W)``) of the data ``config`` trains on."""
    from .engine.datasets import load_for_config

    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    return load_for_config(config.replace(train_size=n, test_size=1)).x_train[:n]
