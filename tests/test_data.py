"""Tests of cifar_utils.data: every local format, the embedded sample, errors, augmentation, loaders.

The files each format test reads are written here, in tmp_path; only the tests marked as using the
offline copy ``../shared/data`` need it, and they skip when it is absent. Nothing is downloaded:
the one test of the download path points it at a closed local port.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from cifar_utils.data import (DATASETS, SOURCES, CorruptDataError, DataNotFoundError, DeviceLoader, Loaders,
                              class_names, denormalize, load_dataset, make_loaders, normalization, normalize,
                              to_images)
from cifar_utils.data import datasets as ds_mod
from cifar_utils.data import readers

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
SAMPLE_DIR = ROOT / "cifar_utils" / "data" / "sample"
CIFAR_MEAN, CIFAR_STD = normalization("cifar10")


@pytest.fixture(autouse=True)
def _isolate(monkeypatch, tmp_path):
    """No test may see the caller's data/cache settings or reach the network."""
    monkeypatch.delenv("CIFAR_UTILS_DATA", raising=False)
    monkeypatch.setenv("CIFAR_UTILS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CIFAR_UTILS_PROGRESS", "off")
    monkeypatch.setattr(ds_mod, "DOWNLOAD_URLS", {k: ["http://127.0.0.1:9/closed"] for k in DATASETS})


def shared_or_skip() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"offline data copy not present at {SHARED}")
    return SHARED


# --------------------------------------------------------------------------------------------
# writers of small fake copies


def fake_images(name: str, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 NCHW images and labels covering every class."""
    rng = np.random.default_rng(seed)
    c, h, w = (3, 32, 32) if name == "cifar10" else (1, 28, 28)
    return rng.integers(0, 256, (n, c, h, w), dtype=np.uint8), np.arange(n, dtype=np.int64) % 10


def write_cifar_pickles(root: Path, per_batch: int = 3) -> tuple[np.ndarray, ...]:
    """A torchvision-layout folder: 5 train batches and a test batch of ``per_batch`` images each
    (batches.meta's num_cases_per_batch applies to all six, as in the official 10000-image files)."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    xs, ys = [], []
    for i in range(1, 6):
        x, y = fake_images("cifar10", per_batch, seed=i)
        y = (y + i) % 10
        with open(folder / f"data_batch_{i}", "wb") as f:  # the keys and layout of the official pickles
            pickle.dump({b"batch_label": f"training batch {i} of 5".encode(), b"labels": y.tolist(),
                         b"data": x.reshape(per_batch, 3072), b"filenames": [b"x.png"] * per_batch}, f, protocol=2)
        xs.append(x)
        ys.append(y)
    xt, yt = fake_images("cifar10", per_batch, seed=9)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({b"labels": yt.tolist(), b"data": xt.reshape(per_batch, 3072)}, f, protocol=2)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"num_cases_per_batch": per_batch, b"num_vis": 3072,
                     b"label_names": [c.encode() for c in class_names("cifar10")]}, f, protocol=2)
    return np.concatenate(xs), np.concatenate(ys), xt, yt


def write_idx(path: Path, arr: np.ndarray, gz: bool = False) -> None:
    header = (0x0800 + arr.ndim).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in arr.shape)
    data = header + arr.astype(np.uint8).tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        data = gzip.compress(data)
    path.write_bytes(data)


def write_mnist_idx(raw: Path, n_train: int = 12, n_test: int = 10, gz: bool = False) -> tuple[np.ndarray, ...]:
    raw.mkdir(parents=True)
    xtr, ytr = fake_images("mnist", n_train, 1)
    xte, yte = fake_images("mnist", n_test, 2)
    write_idx(raw / "train-images-idx3-ubyte", xtr[:, 0], gz)
    write_idx(raw / "train-labels-idx1-ubyte", ytr, gz)
    write_idx(raw / "t10k-images-idx3-ubyte", xte[:, 0], gz)
    write_idx(raw / "t10k-labels-idx1-ubyte", yte, gz)
    return xtr, ytr, xte, yte


def write_png_tree(root: Path, name: str = "cifar10", per_class: tuple[int, int] = (2, 1)) -> dict:
    """root/{train,test}/<class>/<k>.png; returns {split: {class: [NCHW image per file k]}}."""
    from PIL import Image

    out = {}
    rng = np.random.default_rng(0)
    c, h, w = (3, 32, 32) if name == "cifar10" else (1, 28, 28)
    for split, n in zip(("train", "test"), per_class):
        out[split] = {}
        for cls in class_names(name):
            d = root / split / cls
            d.mkdir(parents=True)
            imgs = []
            for k in range(n):
                img = rng.integers(0, 256, (h, w, c), dtype=np.uint8)
                Image.fromarray(img if c == 3 else img[..., 0]).save(d / f"{k}.png")
                imgs.append(img.transpose(2, 0, 1))
            out[split][cls] = imgs
    return out


# --------------------------------------------------------------------------------------------
# formats


def check_ds(ds, name, n_train, n_test):
    c, h, w = (3, 32, 32) if name == "cifar10" else (1, 28, 28)
    assert ds.name == name and ds.classes == class_names(name)
    assert ds.x_train.shape == (n_train, c, h, w) and ds.x_train.dtype == torch.uint8
    assert ds.x_test.shape == (n_test, c, h, w) and ds.x_test.dtype == torch.uint8
    assert ds.y_train.shape == (n_train,) and ds.y_train.dtype == torch.int64
    assert ds.y_test.shape == (n_test,) and ds.y_test.dtype == torch.int64
    assert ds.x_val.shape == (0, c, h, w) and ds.y_val.shape == (0,)
    for y in (ds.y_train, ds.y_test):
        assert 0 <= int(y.min()) and int(y.max()) < 10


def test_cifar_torchvision_pickles(tmp_path):
    xtr, ytr, xte, yte = write_cifar_pickles(tmp_path)
    ds = load_dataset("cifar10", source="local", data_root=tmp_path)
    check_ds(ds, "cifar10", 15, 3)
    assert torch.equal(ds.x_train, torch.from_numpy(xtr)) and torch.equal(ds.y_train, torch.from_numpy(ytr))
    assert torch.equal(ds.x_test, torch.from_numpy(xte)) and torch.equal(ds.y_test, torch.from_numpy(yte))
    assert np.bincount(ds.y_train.numpy(), minlength=10).sum() == 15
    assert "cifar-10-batches-py" in ds.source
    # the folder itself, and the <root>/cifar10/ subfolder, are found too
    assert torch.equal(load_dataset("cifar10", data_root=tmp_path / "cifar-10-batches-py").x_test, ds.x_test)


@pytest.mark.parametrize("layout", ["MNIST/raw", "raw", "."])
@pytest.mark.parametrize("gz", [False, True])
def test_mnist_idx(tmp_path, layout, gz):
    xtr, ytr, xte, yte = write_mnist_idx(tmp_path / layout if layout != "." else tmp_path / "m", gz=gz)
    root = tmp_path / "m" if layout == "." else tmp_path
    ds = load_dataset("mnist", source="local", data_root=root)
    check_ds(ds, "mnist", 12, 10)
    assert torch.equal(ds.x_train, torch.from_numpy(xtr)) and torch.equal(ds.y_test, torch.from_numpy(yte))


def test_image_folders_png(tmp_path):
    tree = write_png_tree(tmp_path / "cifar10")  # found through the <data_root>/<name>/ subfolder
    ds = load_dataset("cifar10", data_root=tmp_path, cache_dir=tmp_path / "c")
    check_ds(ds, "cifar10", 20, 10)
    classes = class_names("cifar10")
    # interleaved: file k of every class in label order, then file k + 1
    assert ds.y_train.tolist() == list(range(10)) * 2
    assert np.array_equal(ds.x_train[0].numpy(), tree["train"][classes[0]][0])
    assert np.array_equal(ds.x_train[13].numpy(), tree["train"][classes[3]][1])
    assert np.array_equal(ds.x_test[9].numpy(), tree["test"][classes[9]][0])
    assert "image folder" in ds.source and "lossy" not in ds.source


def test_mnist_image_folders(tmp_path):
    write_png_tree(tmp_path, "mnist", (1, 1))
    ds = load_dataset("mnist", data_root=tmp_path, cache_dir=tmp_path / "c")
    check_ds(ds, "mnist", 10, 10)


def test_image_folder_cache(tmp_path, monkeypatch):
    write_png_tree(tmp_path / "tree", per_class=(1, 1))
    first = load_dataset("cifar10", data_root=tmp_path / "tree", cache_dir=tmp_path / "c")
    assert len(list((tmp_path / "c" / "decoded").glob("cifar10-*.npz"))) == 1

    def no_decoding(*a, **k):
        raise AssertionError("decoded again although nothing changed")

    with monkeypatch.context() as m:
        m.setattr(readers, "decode_image", no_decoding)
        second = load_dataset("cifar10", data_root=tmp_path / "tree", cache_dir=tmp_path / "c")
    assert torch.equal(first.x_train, second.x_train) and torch.equal(first.y_test, second.y_test)
    # a changed file changes the key: decoded again, new pixels
    from PIL import Image

    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "tree" / "train" / "airplane" / "0.png")
    third = load_dataset("cifar10", data_root=tmp_path / "tree", cache_dir=tmp_path / "c")
    assert int(third.x_train[0].sum()) == 0 and torch.equal(third.x_train[1:], first.x_train[1:])


def test_image_archive(tmp_path):
    import tarfile

    write_png_tree(tmp_path / "top", per_class=(1, 1))
    arc = tmp_path / "imgs.tar.gz"
    with tarfile.open(arc, "w:gz") as tf:
        tf.add(tmp_path / "top", arcname="top")
    ds = load_dataset("cifar10", data_root=arc, cache_dir=tmp_path / "c")
    ref = load_dataset("cifar10", data_root=tmp_path / "top", cache_dir=tmp_path / "c")
    check_ds(ds, "cifar10", 10, 10)
    assert torch.equal(ds.x_train, ref.x_train) and torch.equal(ds.y_train, ref.y_train)


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
def test_npz_combined(tmp_path, layout):
    xtr, ytr = fake_images("cifar10", 7, 1)
    xte, yte = fake_images("cifar10", 5, 2)
    conv = (lambda a: a.transpose(0, 2, 3, 1)) if layout == "NHWC" else (lambda a: a)
    np.savez(tmp_path / "cifar10.npz", x_train=conv(xtr), y_train=ytr, x_test=conv(xte), y_test=yte)
    for root in (tmp_path, tmp_path / "cifar10.npz"):
        ds = load_dataset("cifar10", data_root=root)
        check_ds(ds, "cifar10", 7, 5)
        assert torch.equal(ds.x_train, torch.from_numpy(xtr)) and torch.equal(ds.x_test, torch.from_numpy(xte))


def test_npz_pair_mnist_hw(tmp_path):
    xtr, ytr = fake_images("mnist", 6, 1)
    xte, yte = fake_images("mnist", 4, 2)
    (tmp_path / "mnist").mkdir()
    np.savez_compressed(tmp_path / "mnist" / "mnist_train.npz", x=xtr[:, 0], y=ytr)  # (N, H, W), as ../shared has
    np.savez_compressed(tmp_path / "mnist" / "mnist_test.npz", x=xte[:, 0], y=yte)
    for root in (tmp_path, tmp_path / "mnist" / "mnist_train.npz", tmp_path / "mnist" / "mnist_test.npz"):
        ds = load_dataset("mnist", data_root=root)
        check_ds(ds, "mnist", 6, 4)
        assert torch.equal(ds.x_train, torch.from_numpy(xtr)) and torch.equal(ds.y_test, torch.from_numpy(yte))


def test_env_var_data_root(tmp_path, monkeypatch):
    write_cifar_pickles(tmp_path)
    monkeypatch.setenv("CIFAR_UTILS_DATA", str(tmp_path))
    assert len(load_dataset("cifar10").x_train) == 15


def test_sizes_and_validation_split(tmp_path):
    write_cifar_pickles(tmp_path)
    full = load_dataset("cifar10", data_root=tmp_path)
    ds = load_dataset("cifar10", data_root=tmp_path, train_size=5, test_size=2, val_size=4)
    assert torch.equal(ds.x_train, full.x_train[:5]) and torch.equal(ds.y_train, full.y_train[:5])
    assert torch.equal(ds.x_val, full.x_train[-4:]) and torch.equal(ds.y_val, full.y_train[-4:])
    assert torch.equal(ds.x_test, full.x_test[:2])
    assert len(load_dataset("cifar10", data_root=tmp_path, val_size=4).x_train) == 11  # never overlaps val
    with pytest.raises(ValueError, match="train_size=12.*only 11"):
        load_dataset("cifar10", data_root=tmp_path, train_size=12, val_size=4)
    with pytest.raises(ValueError, match="test_size=4.*only 3"):
        load_dataset("cifar10", data_root=tmp_path, test_size=4)
    with pytest.raises(ValueError, match="val_size"):
        load_dataset("cifar10", data_root=tmp_path, val_size=15)


# --------------------------------------------------------------------------------------------
# embedded sample


def _make_sample_module():
    spec = importlib.util.spec_from_file_location("make_sample", SAMPLE_DIR / "make_sample.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("name", DATASETS)
def test_sample(name):
    ds = load_dataset(name, source="sample")
    check_ds(ds, name, 1000, 500)
    assert ds.source.startswith("embedded sample: official") and "0-999" in ds.source and "0-499" in ds.source
    assert set(ds.y_train.tolist()) == set(range(10))
    # the committed arrays are the ones make_sample.py recorded
    expected = _make_sample_module().CONTENT_SHA256[f"{name}.npz"]
    with np.load(SAMPLE_DIR / f"{name}.npz") as z:
        got = {k: hashlib.sha256(np.ascontiguousarray(z[k]).tobytes()).hexdigest() for k in expected}
    assert got == expected
    assert sum(p.stat().st_size for p in SAMPLE_DIR.glob("*.npz")) < 6e6


def test_sample_bit_exact_with_shared():
    shared = shared_or_skip()
    c = load_dataset("cifar10", source="sample")
    with np.load(shared / "cifar10" / "cifar10_exact_sample.npz") as z:
        assert np.array_equal(c.x_train.numpy(), z["x_train"][:1000].transpose(0, 3, 1, 2))
        assert np.array_equal(c.y_train.numpy(), z["y_train"][:1000])
        assert np.array_equal(c.x_test.numpy(), z["x_test"][:500].transpose(0, 3, 1, 2))
        assert np.array_equal(c.y_test.numpy(), z["y_test"][:500])
    m = load_dataset("mnist", source="sample")
    with np.load(shared / "mnist" / "mnist_train.npz") as tr, np.load(shared / "mnist" / "mnist_test.npz") as te:
        assert np.array_equal(m.x_train[:, 0].numpy(), tr["x"][:1000])
        assert np.array_equal(m.y_train.numpy(), tr["y"][:1000])
        assert np.array_equal(m.x_test[:, 0].numpy(), te["x"][:500]) and np.array_equal(m.y_test.numpy(), te["y"][:500])


def test_shared_copy_as_data_root():
    shared = shared_or_skip()
    m = load_dataset("mnist", data_root=shared, train_size=1000)
    assert len(m.x_test) == 10000 and torch.equal(m.x_train, load_dataset("mnist", source="sample").x_train)
    c = load_dataset("cifar10", data_root=shared / "cifar10" / "cifar10_exact_sample.npz")
    assert (len(c.x_train), len(c.x_test)) == (2000, 1000)
    x = m.x_train.float() / 255  # the documented MNIST statistics, roughly, on 1000 images
    assert abs(x.mean() - normalization("mnist")[0][0]) < 0.01


# --------------------------------------------------------------------------------------------
# errors


def test_missing_data_lists_paths_and_fixes(tmp_path, monkeypatch):
    import urllib.error
    import urllib.request

    import torchvision.datasets

    empty = tmp_path / "empty"
    empty.mkdir()
    # Offline, whatever this machine's network: every connection is refused. "Fails fast" is the
    # mechanism, not a stopwatch: one bounded probe per URL, and torchvision's download (which
    # retries for minutes) is never started.
    probes = []

    def refused(req, timeout=None, **kw):
        probes.append(timeout)
        raise urllib.error.URLError("connection refused (test: offline)")

    monkeypatch.setattr(urllib.request, "urlopen", refused)
    monkeypatch.setattr(torchvision.datasets, "CIFAR10",
                        lambda *a, **kw: pytest.fail("torchvision's download was started though the probe failed"))
    with pytest.raises(DataNotFoundError) as e:
        load_dataset("cifar10", data_root=empty, cache_dir=tmp_path / "dl")
    assert probes and all(t == ds_mod.PROBE_TIMEOUT_S for t in probes), probes
    assert len(probes) == len(ds_mod.DOWNLOAD_URLS["cifar10"])
    msg = str(e.value)
    assert "no connection" in msg and "test: offline" in msg
    assert isinstance(e.value, FileNotFoundError)
    assert str(empty / "cifar-10-batches-py") in msg and str(empty / "cifar10.npz") in msg
    assert str(empty / "train") in msg and "download" in msg and str(tmp_path / "dl") in msg
    assert "source='sample'" in msg and "CIFAR_UTILS_DATA" in msg
    assert any(str(empty) in t for t in e.value.tried)
    assert not (tmp_path / "dl" / "cifar-10-batches-py").exists()  # torchvision never called


def test_local_only_and_download_only(tmp_path):
    with pytest.raises(DataNotFoundError, match="data_root=None and \\$CIFAR_UTILS_DATA unset") as e:
        load_dataset("mnist", source="local")
    assert "download:" not in "\n".join(e.value.tried)
    write_mnist_idx(tmp_path / "MNIST" / "raw")
    with pytest.raises(DataNotFoundError, match="no connection") as e:
        load_dataset("mnist", source="download", data_root=tmp_path, cache_dir=tmp_path / "dl")
    assert all(t.startswith("download") for t in e.value.tried)  # the local copy was not used


def test_auto_never_falls_back_to_sample(tmp_path):
    with pytest.raises(DataNotFoundError):
        load_dataset("cifar10", source="auto", cache_dir=tmp_path)


def test_unknown_names():
    with pytest.raises(ValueError, match="cifar10, mnist"):
        load_dataset("cifar100", source="sample")
    with pytest.raises(ValueError, match="auto, local, download, sample"):
        load_dataset("cifar10", source="web")
    with pytest.raises(ValueError, match="cifar10, mnist"):
        normalization("imagenet")
    assert SOURCES == ("auto", "local", "download", "sample")


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _corrupt_pickle(tmp):
    write_cifar_pickles(tmp)
    _truncate(tmp / "cifar-10-batches-py" / "data_batch_3")
    return "cifar10", tmp, "data_batch_3"


def _short_pickle_batch(tmp):
    write_cifar_pickles(tmp)
    path = tmp / "cifar-10-batches-py" / "data_batch_2"
    x, y = fake_images("cifar10", 2, 0)  # 2 images where batches.meta promises 3
    path.write_bytes(pickle.dumps({b"data": x.reshape(2, 3072), b"labels": y.tolist()}))
    return "cifar10", tmp, "data_batch_2"


def _missing_batch(tmp):
    write_cifar_pickles(tmp)
    (tmp / "cifar-10-batches-py" / "data_batch_5").unlink()
    return "cifar10", tmp, "data_batch_5"


def _truncated_npz(tmp):
    x, y = fake_images("cifar10", 20, 0)
    np.savez(tmp / "cifar10.npz", x_train=x, y_train=y, x_test=x, y_test=y)
    _truncate(tmp / "cifar10.npz")
    return "cifar10", tmp, "cifar10.npz"


def _labels_out_of_range(tmp):
    x, y = fake_images("cifar10", 4, 0)
    np.savez(tmp / "cifar10.npz", x_train=x, y_train=y + 7, x_test=x, y_test=y)
    return "cifar10", tmp, "cifar10.npz"


def _wrong_shape(tmp):
    x, y = fake_images("mnist", 4, 0)
    np.savez(tmp / "cifar10.npz", x_train=x, y_train=y, x_test=x, y_test=y)  # MNIST-sized images
    return "cifar10", tmp, "cifar10.npz"


def _bad_png(tmp):
    write_png_tree(tmp, per_class=(1, 1))
    (tmp / "test" / "cat" / "0.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")
    return "cifar10", tmp, str(Path("test") / "cat" / "0.png")


def _wrong_size_png(tmp):
    from PIL import Image

    write_png_tree(tmp, per_class=(1, 1))
    Image.fromarray(np.zeros((30, 32, 3), np.uint8)).save(tmp / "train" / "dog" / "0.png")
    return "cifar10", tmp, str(Path("train") / "dog" / "0.png")


def _unknown_class_folder(tmp):
    write_png_tree(tmp, per_class=(1, 1))
    (tmp / "train" / "kitten").mkdir()
    return "cifar10", tmp, "kitten"


def _truncated_idx(tmp):
    raw = tmp / "MNIST" / "raw"
    write_mnist_idx(raw)
    p = raw / "t10k-images-idx3-ubyte"
    p.write_bytes(p.read_bytes()[:-784 * 3])  # three images short of what the header says
    return "mnist", tmp, "t10k-images-idx3-ubyte"


@pytest.mark.parametrize("make", [_corrupt_pickle, _short_pickle_batch, _missing_batch, _truncated_npz,
                                  _labels_out_of_range, _wrong_shape, _bad_png, _wrong_size_png,
                                  _unknown_class_folder, _truncated_idx])
def test_corrupt_data_names_the_file(tmp_path, make):
    name, root, culprit = make(tmp_path)
    with pytest.raises(ValueError) as e:  # CorruptDataError is a ValueError
        load_dataset(name, data_root=root, cache_dir=tmp_path / "c")
    assert isinstance(e.value, CorruptDataError)
    assert culprit in str(e.value), str(e.value)


# --------------------------------------------------------------------------------------------
# normalisation


def test_normalization_constants():
    assert normalization("cifar10") == ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
    assert normalization("mnist") == ((0.1307,), (0.3081,))
    assert class_names("cifar10")[0] == "airplane" and class_names("cifar10")[9] == "truck"
    assert class_names("mnist") == tuple("0123456789")


@pytest.mark.parametrize("name", DATASETS)
def test_normalize_denormalize_round_trip(name):
    x = torch.from_numpy(fake_images(name, 8, 3)[0])
    z = normalize(x, name)
    assert z.dtype == torch.float32 and z.shape == x.shape
    back = denormalize(z, name)
    assert 0 <= float(back.min()) and float(back.max()) <= 1
    assert torch.equal((back * 255).round().to(torch.uint8), x)
    img = to_images(z, name)
    assert img.dtype == np.float32
    assert img.shape == ((8, 32, 32, 3) if name == "cifar10" else (8, 28, 28))
    assert to_images(z[0], name).shape == img.shape[1:]


def test_eval_batches_match_torchvision_transforms():
    from PIL import Image
    from torchvision import transforms as T

    ds = load_dataset("cifar10", source="sample", test_size=16)
    x, y = next(iter(make_loaders(ds, eval_batch_size=16).test))
    tf = T.Compose([T.ToTensor(), T.Normalize(CIFAR_MEAN, CIFAR_STD)])
    ref = torch.stack([tf(Image.fromarray(img.permute(1, 2, 0).numpy())) for img in ds.x_test])
    assert torch.equal(x, ref) and torch.equal(y, ds.y_test)


# --------------------------------------------------------------------------------------------
# augmentation and loaders


def _loader(x, **kw):
    kw.setdefault("batch_size", len(x))
    return DeviceLoader(x, torch.arange(len(x)) % 10, mean=CIFAR_MEAN, std=CIFAR_STD, train=True, **kw)


def _pixels(z):
    return (denormalize(z, "cifar10") * 255).round().to(torch.uint8)


def test_crop_and_flip_are_windows_of_the_padded_image():
    n = 256
    x = torch.from_numpy(fake_images("cifar10", n, 5)[0])
    xp = torch.nn.functional.pad(x, (4, 4, 4, 4))
    out, y = next(iter(_loader(x, crop_padding=4, flip=True, shuffle=False)))
    out = _pixels(out)
    windows = xp.unfold(2, 32, 1).unfold(3, 32, 1)  # (n, C, 9, 9, 32, 32): every 32x32 window
    match = torch.stack([(out[:, :, None, None] == (windows.flip(-1) if f else windows)).all(-1).all(-1).all(1)
                         for f in (False, True)], 1)  # (n, flip, dy, dx): where the output equals that window
    assert (match.flatten(1).sum(1) == 1).all(), "each output must be exactly one (mirrored) window of its padded input"
    f, dy, dx = (match.flatten(1).nonzero()[:, 1].unsqueeze(1) // torch.tensor([81, 9, 1]) % torch.tensor([2, 9, 9])).T
    assert set(dy.tolist()) == set(dx.tolist()) == set(range(9))  # offsets 0..2p, all used
    assert 0.35 < f.float().mean() < 0.65
    assert y.tolist() == (torch.arange(n) % 10).tolist()


def test_flip_only_mirrors():
    x = torch.from_numpy(fake_images("cifar10", 32, 6)[0])
    out = _pixels(next(iter(_loader(x, flip=True, shuffle=False)))[0])
    same = [torch.equal(out[i], x[i]) for i in range(32)]
    mirrored = [torch.equal(out[i], x[i].flip(-1)) for i in range(32)]
    assert all(s != m for s, m in zip(same, mirrored)) and any(same) and any(mirrored)


@pytest.mark.parametrize("size", [16, 5])
def test_cutout_hole_size_and_clipping(size):
    x = torch.full((256, 3, 32, 32), 255, dtype=torch.uint8)  # normalised value != 0 everywhere
    out = next(iter(_loader(x, cutout=size, shuffle=False)))[0]
    holes = out == 0
    assert torch.equal(holes, holes[:, :1].expand_as(holes))  # same hole in every channel
    full = clipped = 0
    for hole in holes[:, 0]:
        rows = hole.any(1).nonzero().flatten().tolist()
        cols = hole.any(0).nonzero().flatten().tolist()
        assert rows == list(range(rows[0], rows[-1] + 1)) and cols == list(range(cols[0], cols[-1] + 1))
        assert int(hole.sum()) == len(rows) * len(cols)  # a rectangle
        for idx in (rows, cols):
            inside = idx[0] > 0 and idx[-1] < 31
            assert len(idx) == size if inside else size - size // 2 <= len(idx) <= size
        if len(rows) == len(cols) == size:
            full += 1
        else:
            clipped += 1
    assert full > 10 and clipped > 10


def _batches(loader):
    return [(x.clone(), y.clone()) for x, y in loader]


def _same(a, b):
    return len(a) == len(b) and all(torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(a, b))


def test_seeded_epochs_repeat_and_resume():
    x = torch.from_numpy(fake_images("cifar10", 40, 7)[0])
    kw = dict(batch_size=16, crop_padding=4, flip=True, cutout=8, seed=3)
    a = _loader(x, **kw)
    e0, e1, e2 = _batches(a), _batches(a), _batches(a)  # the counter: epochs 0, 1, 2
    assert a.epoch == 3 and len(e0) == len(a) == 2  # drop_last: 40 -> 2 batches of 16
    b = _loader(x, **kw)
    assert _same(_batches(b), e0)
    fresh = _loader(x, **kw)
    fresh.set_epoch(2)
    assert _same(_batches(fresh), e2)  # epoch 2 without running epochs 0 and 1
    assert not _same(e0, e1) and not _same(e1, e2)
    assert not _same(_batches(_loader(x, **{**kw, "seed": 4})), e0)
    # an abandoned pass does not advance the counter
    c = _loader(x, **kw)
    next(iter(c))
    assert c.epoch == 0 and _same(_batches(c), e0) and c.epoch == 1
    # every epoch still shows each image at most once
    ys = torch.cat([y for _, y in _batches(_loader(torch.zeros(40, 3, 32, 32, dtype=torch.uint8), batch_size=8))])
    assert len(ys) == 40


def test_shuffle_is_a_permutation():
    x = torch.arange(50, dtype=torch.uint8).view(50, 1, 1, 1).expand(50, 3, 4, 4).contiguous()
    loader = DeviceLoader(x, torch.arange(50) % 10, batch_size=8, mean=(0, 0, 0), std=(1, 1, 1), train=True)
    assert len(loader) == 6 and loader.num_samples == 50
    xs, ys = zip(*loader)
    ids = torch.cat([(b[:, 0, 0, 0] * 255).round().long() for b in xs])
    assert len(set(ids.tolist())) == 48 and ids.tolist() != sorted(ids.tolist())
    assert torch.equal(torch.cat(ys), ids % 10)  # labels travel with their images


def test_make_loaders():
    cifar = load_dataset("cifar10", source="sample", val_size=100)
    loaders = make_loaders(cifar, batch_size=128, cutout=16, seed=1)
    assert isinstance(loaders, Loaders)
    tr, te, va = loaders.train, loaders.test, loaders.val
    assert (tr.crop_padding, tr.flip, tr.cutout, tr.shuffle, tr.drop_last) == (4, True, 16, True, True)
    assert (te.augments, te.shuffle, te.drop_last, te.batch_size) == (False, False, False, 512)
    assert len(tr) == 900 // 128 and len(te) == 1 and va.num_samples == 100
    x, y = next(iter(tr))
    assert x.shape == (128, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    xs, ys = zip(*te)
    assert torch.equal(torch.cat(ys), cifar.y_test) and torch.equal(torch.cat(xs), normalize(cifar.x_test, "cifar10"))

    mnist = load_dataset("mnist", source="sample", train_size=300)
    ml = make_loaders(mnist, batch_size=64, eval_batch_size=100, channels_last=True)
    assert not ml.train.augments and ml.val is None and len(ml.test) == 5
    x, _ = next(iter(ml.train))
    assert x.shape == (64, 1, 28, 28) and x.is_contiguous(memory_format=torch.channels_last)
    assert len(ml.train) == 300 // 64
    assert not make_loaders(cifar, augment=False).train.augments


def test_loader_argument_checks():
    x = torch.zeros(10, 3, 32, 32, dtype=torch.uint8)
    y = torch.zeros(10, dtype=torch.int64)
    with pytest.raises(ValueError, match="train=True"):
        DeviceLoader(x, y, batch_size=4, mean=CIFAR_MEAN, std=CIFAR_STD, flip=True)
    with pytest.raises(ValueError, match="uint8"):
        DeviceLoader(x.float(), y, batch_size=4, mean=CIFAR_MEAN, std=CIFAR_STD)
    with pytest.raises(ValueError, match="no batch"):
        DeviceLoader(x, y, batch_size=16, mean=CIFAR_MEAN, std=CIFAR_STD, train=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_batches_match_cpu():
    ds = load_dataset("cifar10", source="sample")
    cpu = make_loaders(ds, cutout=16, seed=5).train
    gpu = make_loaders(ds, cutout=16, seed=5, device="cuda").train
    for (xc, yc), (xg, yg) in zip(cpu, gpu):
        assert torch.equal(yc, yg.cpu())
        assert torch.allclose(xc, xg.cpu(), atol=1e-5, rtol=0)
