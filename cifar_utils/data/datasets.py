"""Finding, downloading and loading whole datasets: :func:`load_dataset` and :class:`Dataset`."""

from __future__ import annotations

import hashlib
import json
import os
import urllib.error
import urllib.request
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import readers
from .meta import DATASETS, IMAGE_SHAPE, SOURCES, check_name, class_names
from .readers import Arrays, CorruptDataError, DataNotFoundError

DATA_ENV = "CIFAR_UTILS_DATA"
CACHE_ENV = "CIFAR_UTILS_CACHE"
DEFAULT_CACHE = Path("~/.cache/cifar_utils")
SAMPLE_DIR = Path(__file__).resolve().parent / "sample"

TITLE = {"cifar10": "CIFAR-10", "mnist": "MNIST"}

#: Where torchvision 0.29 downloads from; used only to check, with a short timeout, that a
#: download can start at all, so that offline machines fail in seconds instead of hanging.
DOWNLOAD_URLS = {
    "cifar10": ["https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"],
    "mnist": ["https://ossci-datasets.s3.amazonaws.com/mnist/train-images-idx3-ubyte.gz",
              "http://yann.lecun.com/exdb/mnist/train-images-idx3-ubyte.gz"],
}
PROBE_TIMEOUT_S = 10.0


@dataclass(frozen=True, repr=False, eq=False)
class Dataset:
    """Whole splits of one dataset as CPU tensors.

    ``x_*`` are uint8 ``(N, C, H, W)`` (C = 3 for CIFAR-10, 1 for MNIST), ``y_*`` int64 ``(N,)``.
    ``x_val``/``y_val`` are held out from the *end* of the official training split when
    ``val_size > 0`` (else 0-row tensors); ``x_train`` never overlaps them. ``source`` says in
    words where the data came from (a path, the download folder, or the embedded sample)."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    classes: tuple[str, ...]
    source: str

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one image."""
        return tuple(self.x_train.shape[1:])  # type: ignore[return-value]

    def __repr__(self) -> str:
        c, h, w = self.image_shape
        return (f"Dataset({self.name!r}: {len(self.x_train)} train, {len(self.x_val)} val, {len(self.x_test)} test "
                f"images of {c}x{h}x{w}; source: {self.source})")


# --------------------------------------------------------------------------------------------


def default_cache_dir() -> Path:
    """``$CIFAR_UTILS_CACHE`` or ``~/.cache/cifar_utils``."""
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE).expanduser()


def load_dataset(name: str = "cifar10", *, source: str = "auto", data_root=None, cache_dir=None,
                 train_size: int | None = None, test_size: int | None = None, val_size: int = 0) -> Dataset:
    """Load CIFAR-10 or MNIST as whole-split uint8 tensors.

    ``source``:

    * ``"local"``: a copy at ``data_root`` (or ``$CIFAR_UTILS_DATA``), in one of these forms:

      - a **folder**, searched in this order, first in the folder itself, then in its
        subfolder named after the dataset (``<data_root>/cifar10/``, ``<data_root>/mnist/``):

        1. torchvision's own layout: ``cifar-10-batches-py/`` (``data_batch_1..5``,
           ``test_batch``, ``batches.meta``) or the folder itself holding those files; MNIST
           ``MNIST/raw/`` or ``raw/`` or the folder itself holding ``train-images-idx3-ubyte``,
           ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``
           (each optionally ``.gz``);
        2. image folders ``train/<class>/*.png|jpg|jpeg`` and ``test/<class>/...``, the label
           being the position of the folder name in :func:`class_names` (an unknown folder name
           is an error). Folders have no official order, so the images are interleaved
           round-robin over the classes (each class in natural file-name order): the first N are
           class-balanced;
        3. ``<name>.npz`` with ``x_train``, ``y_train``, ``x_test``, ``y_test``; or
           ``<name>_train.npz`` + ``<name>_test.npz`` each with ``x``, ``y``. Images may be
           ``(N, H, W, C)``, ``(N, C, H, W)`` or, for MNIST, ``(N, H, W)``; uint8.

      - a **file**: such an ``.npz`` (a ``*_train.npz`` or ``*_test.npz`` is paired with the
        other split's file beside it), or a ``.tar``/``.tar.gz``/``.tgz`` archive of image folders
        ``[top/]train/<class>/...``.

      With the offline copy in ``../shared/data`` this means: ``data_root="../shared/data"``
      finds MNIST (``mnist/mnist_train.npz`` + ``mnist_test.npz``); for CIFAR-10 pass the file,
      ``.../cifar10/cifar10_jpeg_q75.tar.gz`` (full split, JPEG: lossy) or
      ``.../cifar10/cifar10_exact_sample.npz`` (2000/1000 official images).

      Decoding image files is slow (tens of seconds for 60000), so the decoded arrays are
      cached as ``.npz`` in ``<cache_dir>/decoded/``, keyed by the path and every file's size and
      modification time; the next load takes a fraction of a second.
    * ``"download"``: the official files through torchvision (``download=True``, with its md5
      checks) into ``cache_dir`` (default ``$CIFAR_UTILS_CACHE`` or ``~/.cache/cifar_utils``);
      already-downloaded files are verified and reused. Offline, this fails within seconds.
    * ``"auto"`` (default): ``"local"`` if a copy is found there, else ``"download"``. It never
      falls back to the sample: a full run must not silently train on 1000 images.
    * ``"sample"``: the small sample embedded in the package (official train images 0-999 and
      test images 0-499; see ``cifar_utils/data/sample/make_sample.py``). For smoke tests and
      docs builds, not for results.

    ``train_size``/``test_size`` keep the first N images (official order) of each split;
    ``val_size`` holds out the *last* ``val_size`` training images as a validation split, which
    stays the same whatever ``train_size`` is (train is taken from the images before it).

    Raises :class:`DataNotFoundError` (a FileNotFoundError) listing every place tried when no
    copy is found, :class:`CorruptDataError` (a ValueError) naming the file when one is broken,
    and ValueError for unknown names or impossible sizes.
    """
    check_name(name)
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}; choose one of: {', '.join(SOURCES)}")
    for arg, value, lo in (("train_size", train_size, 1), ("test_size", test_size, 1), ("val_size", val_size, 0)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo):
            raise ValueError(f"{arg} must be an integer >= {lo} (or None), got {value!r}")
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()

    if source == "sample":
        arrays, where = load_sample(name)
    else:
        tried: list[str] = []
        found = None
        root = data_root if data_root is not None else os.environ.get(DATA_ENV) or None
        if source in ("auto", "local"):
            if root is None:
                tried.append(f"local: no copy given (data_root=None and ${DATA_ENV} unset)")
            else:
                found = _load_local(name, Path(root).expanduser(), cache, tried)
        if found is None and source in ("auto", "download"):
            found = _download(name, cache, tried)
            if found is not None and root is not None and source == "auto":
                warnings.warn(f"no {name} copy found at {root}; using the downloaded official files instead",
                              stacklevel=2)
        if found is None:
            raise DataNotFoundError(_not_found_message(name, source, tried, cache), tried)
        arrays, where = found
    return _make_dataset(name, arrays, where, train_size, test_size, val_size)


def load_sample(name: str) -> tuple[Arrays, str]:
    """The embedded sample's arrays and description."""
    path = SAMPLE_DIR / f"{name}.npz"
    if not path.is_file():
        raise DataNotFoundError(f"the embedded {name} sample {path} is missing from this installation "
                                "(it ships as package data; reinstall cifar_utils)", [str(path)])
    arrays = readers.read_npz(name, path)
    return arrays, (f"embedded sample: official {TITLE[name]} train 0-{len(arrays[0]) - 1}, "
                    f"test 0-{len(arrays[2]) - 1}")


def _make_dataset(name: str, arrays: Arrays, where: str, train_size, test_size, val_size) -> Dataset:
    x_tr, y_tr, x_te, y_te = arrays
    n, n_test = len(x_tr), len(x_te)
    if val_size >= n:
        raise ValueError(f"val_size={val_size} leaves no training images: the {name} copy ({where}) has {n}")
    available = n - val_size
    if train_size is None:
        train_size = available
    elif train_size > available:
        extra = f" ({n} minus val_size={val_size})" if val_size else ""
        raise ValueError(f"train_size={train_size}, but only {available} training images are available{extra} "
                         f"in the {name} copy ({where})")
    if test_size is None:
        test_size = n_test
    elif test_size > n_test:
        raise ValueError(f"test_size={test_size}, but only {n_test} test images are available "
                         f"in the {name} copy ({where})")

    def t(a: np.ndarray) -> torch.Tensor:
        # Own memory (a slice would pin the whole array), writable (torch warns otherwise).
        return torch.from_numpy(np.array(a, copy=True))

    c, h, w = IMAGE_SHAPE[name]
    return Dataset(
        name=name,
        x_train=t(x_tr[:train_size]) if train_size < n else torch.from_numpy(_writable(x_tr)),
        y_train=t(y_tr[:train_size]) if train_size < n else torch.from_numpy(_writable(y_tr)),
        x_test=t(x_te[:test_size]) if test_size < n_test else torch.from_numpy(_writable(x_te)),
        y_test=t(y_te[:test_size]) if test_size < n_test else torch.from_numpy(_writable(y_te)),
        x_val=t(x_tr[n - val_size:]) if val_size else torch.empty((0, c, h, w), dtype=torch.uint8),
        y_val=t(y_tr[n - val_size:]) if val_size else torch.empty((0,), dtype=torch.int64),
        classes=class_names(name),
        source=where,
    )


def _writable(a: np.ndarray) -> np.ndarray:
    return a if a.flags.writeable and a.flags.c_contiguous else np.array(a, copy=True)


# --------------------------------------------------------------------------------------------
# local copies


def _local_candidates(name: str, base: Path) -> list[tuple[str, list[Path]]]:
    """``(format, paths)`` to check in ``base``, in order; all paths must exist for a match."""
    if name == "cifar10":
        tv = [("torchvision pickles", [base / "cifar-10-batches-py"]), ("torchvision pickles", [base])]
    else:
        tv = [("MNIST idx files", [base / "MNIST" / "raw"]), ("MNIST idx files", [base / "raw"]),
              ("MNIST idx files", [base])]
    return tv + [
        ("image folders", [base / "train", base / "test"]),
        (".npz", [base / f"{name}.npz"]),
        (".npz pair", [base / f"{name}_train.npz", base / f"{name}_test.npz"]),
    ]


def _load_local(name: str, root: Path, cache: Path, tried: list[str]) -> tuple[Arrays, str] | None:
    if not root.exists():
        tried.append(f"local: {root} (does not exist)")
        return None
    if root.is_file():
        return _load_local_file(name, root, cache)
    bases = [root] + ([root / name] if (root / name).is_dir() else [])
    for base in bases:
        for fmt, paths in _local_candidates(name, base):
            if fmt in ("torchvision pickles", "MNIST idx files"):
                hit = paths[0].is_dir() and (readers.is_cifar_pickle_dir(paths[0]) if name == "cifar10"
                                             else readers.is_mnist_idx_dir(paths[0]))
                shown = f"{paths[0]}{os.sep}" + ("{data_batch_1..5,test_batch}" if name == "cifar10"
                                                 else "train-images-idx3-ubyte[.gz] ...")
            elif fmt == "image folders":
                hit = paths[0].is_dir() or paths[1].is_dir()  # one without the other: reader says which is missing
                shown = f"{paths[0]}{os.sep}<class>/, {paths[1]}{os.sep}<class>/"
            else:  # for a pair, one file without the other is an error (below), not "not found"
                hit = any(p.is_file() for p in paths)
                shown = " + ".join(str(p) for p in paths)
            if not hit:
                tried.append(f"local: {shown} ({fmt}): not found")
                continue
            if fmt == "torchvision pickles":
                return readers.read_cifar_pickles(paths[0]), f"torchvision CIFAR-10 pickles: {paths[0]}"
            if fmt == "MNIST idx files":
                return readers.read_mnist_idx(paths[0]), f"MNIST idx files: {paths[0]}"
            if fmt == "image folders":
                return _cached_images(name, base, cache)
            if fmt == ".npz":
                return readers.read_npz(name, paths[0]), f"npz: {paths[0]}"
            for p, other in ((paths[0], paths[1]), (paths[1], paths[0])):
                if not p.is_file():
                    raise CorruptDataError(p, f"not found, but {other.name} is there: an .npz pair needs both splits")
            return readers.read_npz_pair(name, *paths), f"npz: {paths[0]} + {paths[1].name}"
    # Nothing in a recognised form: point at files that look like what the user meant.
    near = sorted({str(p) for base in bases for pat in (f"{name}*.npz", "*.tar", "*.tar.gz", "*.tgz")
                   for p in base.glob(pat)})
    if near:
        tried.append(f"local: found {', '.join(near)} under {root}, but not under a name searched above; "
                     "pass the file itself as data_root")
    return None


def _load_local_file(name: str, path: Path, cache: Path) -> tuple[Arrays, str]:
    lower = path.name.lower()
    if lower.endswith(".npz"):
        for mine, other in (("_train.npz", "_test.npz"), ("_test.npz", "_train.npz")):
            if lower.endswith(mine):
                pair = path.with_name(path.name[: -len(mine)] + other)
                if not pair.is_file():
                    raise CorruptDataError(path, f"a *{mine} needs its *{other} beside it: {pair} not found")
                train, test = (path, pair) if mine == "_train.npz" else (pair, path)
                return readers.read_npz_pair(name, train, test), f"npz: {train} + {test.name}"
        return readers.read_npz(name, path), f"npz: {path}"
    if readers.is_archive(path):
        return _cached_images(name, path, cache)
    raise CorruptDataError(path, "not a supported data file: give a folder, an .npz, "
                                 "or a .tar/.tar.gz/.tgz of image folders")


# --------------------------------------------------------------------------------------------
# decoded-image cache

_CACHE_VERSION = 1


def _cached_images(name: str, path: Path, cache: Path) -> tuple[Arrays, str]:
    """Decode an image-folder tree or archive once; reuse the arrays while nothing changed."""
    path = path.resolve()
    listing = None
    if path.is_dir():
        listing = readers.image_folder_listing(path)
        files = sorted((str(p.relative_to(path)), st.st_size, st.st_mtime_ns)
                       for split in listing.values() for lst in split.values() for _, p in lst
                       for st in (p.stat(),))
        kind = "image folder"
    else:
        st = path.stat()
        files = [(path.name, st.st_size, st.st_mtime_ns)]
        kind = "image archive"
    key = hashlib.sha256(json.dumps([_CACHE_VERSION, name, str(path), files]).encode()).hexdigest()[:24]
    exts = sorted({f[0].rsplit(".", 1)[-1].lower() for f in files}) if listing is not None else None
    n_files = len(files) if listing is not None else None
    cache_file = cache / "decoded" / f"{name}-{key}.npz"
    arrays = _read_cache(name, cache_file)
    if arrays is None:
        arrays = (readers.read_image_folder(name, path, listing) if listing is not None
                  else readers.read_image_archive(name, path))
        _write_cache(cache_file, arrays)
    if listing is None:
        jpeg = "jpeg" in path.name.lower() or "jpg" in path.name.lower()
        what = f"{kind}: {path}"
    else:
        jpeg = any(e in ("jpg", "jpeg") for e in exts)
        what = f"{kind}: {path} ({n_files} .{'/.'.join(exts)} files)"
    if jpeg:
        what += "; JPEG is lossy: pixels differ from the official ones, so accuracy is not directly comparable"
    return arrays, what


def _read_cache(name: str, path: Path) -> Arrays | None:
    if not path.is_file():
        return None
    try:
        return readers.read_npz(name, path)
    except CorruptDataError as e:
        warnings.warn(f"ignoring a broken cache file, decoding again: {e}", stacklevel=3)
        return None


def _write_cache(path: Path, arrays: Arrays) -> None:
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            np.savez(f, x_train=arrays[0], y_train=arrays[1], x_test=arrays[2], y_test=arrays[3])
        os.replace(tmp, path)
    except OSError as e:
        warnings.warn(f"could not cache decoded images in {path} ({e}); the next load will decode again", stacklevel=3)
        tmp.unlink(missing_ok=True)


# --------------------------------------------------------------------------------------------
# download


def _probe(urls: list[str], timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """None if any URL's server answers (any HTTP status), else the last error as text."""
    err = "no URL"
    for url in urls:
        try:
            req = urllib.request.Request(url, method="HEAD", headers={"User-Agent": "cifar_utils"})
            with urllib.request.urlopen(req, timeout=timeout):
                return None
        except urllib.error.HTTPError:
            return None  # the server answered; let torchvision deal with it
        except (urllib.error.URLError, OSError, ValueError) as e:
            err = f"{url}: {getattr(e, 'reason', e)}"
    return err


def _downloaded_files(name: str, cache: Path) -> tuple[Path, list[Path]]:
    if name == "cifar10":
        folder = cache / "cifar-10-batches-py"
        names = list(readers.CIFAR_TRAIN_FILES) + [readers.CIFAR_TEST_FILE, readers.CIFAR_META_FILE]
    else:
        folder = cache / "MNIST" / "raw"
        names = [stem for pair in readers.MNIST_FILES.values() for stem in pair]
    return folder, [folder / n for n in names]


def _download(name: str, cache: Path, tried: list[str]) -> tuple[Arrays, str] | None:
    folder, files = _downloaded_files(name, cache)
    what = f"download: official {TITLE[name]} via torchvision into {cache}"
    if not all(f.is_file() for f in files):  # else torchvision only verifies checksums, no network
        err = _probe(DOWNLOAD_URLS[name])
        if err is not None:
            tried.append(f"{what}: no connection ({err})")
            return None
    try:
        cache.mkdir(parents=True, exist_ok=True)
        import torchvision.datasets as tvd

        if name == "cifar10":
            tvd.CIFAR10(root=str(cache), train=True, download=True)  # verifies every file's md5
        else:
            tvd.MNIST(root=str(cache), train=True, download=True)  # verifies the .gz md5s
    except Exception as e:  # network errors, md5 mismatch (RuntimeError), disk full, ...
        tried.append(f"{what}: failed ({type(e).__name__}: {str(e).strip()[:300]})")
        return None
    arrays = readers.read_cifar_pickles(folder) if name == "cifar10" else readers.read_mnist_idx(folder)
    return arrays, f"official {TITLE[name]} downloaded by torchvision (checksums verified): {folder}"


def _not_found_message(name: str, source: str, tried: list[str], cache: Path) -> str:
    lines = [f"No {TITLE[name]} data found (source={source!r}). Looked at:"]
    lines += [f"  - {t}" for t in tried]
    lines.append("To fix, do one of:")
    lines.append(f"  - with internet access, load_dataset({name!r}) or source='download' fetches the official files "
                 f"(md5-checked by torchvision) into {cache} (change with cache_dir= or ${CACHE_ENV});")
    lines.append(f"  - point data_root= (or ${DATA_ENV}) at a local copy: a folder with "
                 + ("cifar-10-batches-py/" if name == "cifar10" else "MNIST/raw/*-ubyte[.gz]")
                 + f", train/<class>/ + test/<class>/ image folders, {name}.npz, or {name}_train.npz + "
                 f"{name}_test.npz (also in its {name}/ subfolder), or such an .npz or a .tar.gz of image "
                 "folders itself;")
    lines.append("  - source='sample' for the small embedded sample (official train 0-999, test 0-499): "
                 "enough for smoke tests, not for real results.")
    return "\n".join(lines)


__all__ = ["DATASETS", "SOURCES", "Dataset", "load_dataset", "load_sample", "DataNotFoundError",
           "CorruptDataError", "default_cache_dir"]
