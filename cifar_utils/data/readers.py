"""Readers for the on-disk formats a local copy may come in; all return validated numpy arrays.

Every reader returns ``(x_train, y_train, x_test, y_test)``: images ``uint8 (N, C, H, W)``, labels
``int64 (N,)``, in the file's order. Anything wrong with a file (unreadable pickle, truncated
archive, an image that will not decode, wrong shape, labels out of range, fewer images than the
file's own header or metadata promise) raises :class:`CorruptDataError` naming the file: a
partial dataset is never returned silently.
"""

from __future__ import annotations

import gzip
import io
import os
import pickle
import re
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path, PurePosixPath

import numpy as np

from .meta import IMAGE_SHAPE, class_names

Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz")


class DataNotFoundError(FileNotFoundError):
    """No copy of the dataset was found (or could be downloaded). ``tried`` lists where we looked."""

    def __init__(self, message: str, tried: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.tried = list(tried)

    def __str__(self) -> str:  # FileNotFoundError's own __str__ would be "[Errno None] ..." otherwise
        return self.args[0]


class CorruptDataError(ValueError):
    """A data file exists but is unreadable, truncated or inconsistent. ``path`` names it."""

    def __init__(self, path: str | os.PathLike, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = str(path)


# --------------------------------------------------------------------------------------------
# validation


def check_arrays(name: str, x, y, where: str | os.PathLike, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Bring ``x`` to uint8 ``(N, C, H, W)`` and ``y`` to int64 ``(N,)``, or raise CorruptDataError.

    ``x`` may be NCHW, NHWC, or (single-channel datasets) NHW; any integer dtype with values in
    0..255 is accepted and cast to uint8. Floats are refused: their scale is ambiguous.
    """
    c, h, w = IMAGE_SHAPE[name]
    x = np.asarray(x)
    y = np.asarray(y)
    if x.ndim == 4 and x.shape[1:] == (c, h, w):
        pass
    elif x.ndim == 4 and x.shape[1:] == (h, w, c):
        x = x.transpose(0, 3, 1, 2)
    elif x.ndim == 3 and c == 1 and x.shape[1:] == (h, w):
        x = x[:, None]
    else:
        shapes = f"(N, {c}, {h}, {w}) or (N, {h}, {w}, {c})" + (f" or (N, {h}, {w})" if c == 1 else "")
        raise CorruptDataError(where, f"{split} images have shape {tuple(x.shape)}; {name} needs {shapes}")
    if x.dtype != np.uint8:
        if not np.issubdtype(x.dtype, np.integer):
            raise CorruptDataError(where, f"{split} images have dtype {x.dtype}; expected uint8 pixels 0..255")
        if x.size and (x.min() < 0 or x.max() > 255):
            raise CorruptDataError(where, f"{split} pixel values outside 0..255")
        x = x.astype(np.uint8)
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise CorruptDataError(where, f"{split} labels must be a 1-D integer array, got {y.dtype} {tuple(y.shape)}")
    if len(x) == 0:
        raise CorruptDataError(where, f"no {split} images")
    if len(y) != len(x):
        raise CorruptDataError(where, f"{len(x)} {split} images but {len(y)} labels")
    k = len(class_names(name))
    if y.min() < 0 or y.max() >= k:
        raise CorruptDataError(where, f"{split} labels out of range: {y.min()}..{y.max()}, expected 0..{k - 1}")
    return np.ascontiguousarray(x), y.astype(np.int64, copy=False)


# --------------------------------------------------------------------------------------------
# torchvision CIFAR-10 pickles (cifar-10-batches-py/)

CIFAR_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_TEST_FILE = "test_batch"
CIFAR_META_FILE = "batches.meta"


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            obj = pickle.load(f, encoding="bytes")
    except Exception as e:  # UnpicklingError, EOFError, ValueError, ... : all mean "not a valid batch"
        raise CorruptDataError(path, f"cannot unpickle ({type(e).__name__}: {e})") from e
    if not isinstance(obj, dict):
        raise CorruptDataError(path, f"expected a pickled dict, got {type(obj).__name__}")
    return {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in obj.items()}


def is_cifar_pickle_dir(folder: Path) -> bool:
    return (folder / CIFAR_TRAIN_FILES[0]).is_file() or (folder / CIFAR_TEST_FILE).is_file()


def read_cifar_pickles(folder: Path) -> Arrays:
    """Read torchvision's ``cifar-10-batches-py`` folder: ``data_batch_1..5``, ``test_batch`` and
    (optional) ``batches.meta``. Each batch is a pickled dict with ``data`` (uint8 ``(n, 3072)``,
    rows of 1024 red, 1024 green, 1024 blue values) and ``labels``. When ``batches.meta`` is
    present its ``label_names`` must be CIFAR-10's and every batch must hold its
    ``num_cases_per_batch`` images (10000 in the official files)."""
    per_batch = None
    meta_path = folder / CIFAR_META_FILE
    if meta_path.is_file():
        meta = _unpickle(meta_path)
        names = meta.get("label_names")
        if names is not None:
            names = tuple(n.decode("latin1") if isinstance(n, bytes) else str(n) for n in names)
            if names != class_names("cifar10"):
                raise CorruptDataError(meta_path, f"label_names {names} are not CIFAR-10's {class_names('cifar10')}")
        per_batch = meta.get("num_cases_per_batch")
    missing = [f for f in CIFAR_TRAIN_FILES + (CIFAR_TEST_FILE,) if not (folder / f).is_file()]
    if missing:
        raise CorruptDataError(folder, f"incomplete torchvision CIFAR-10 folder: missing {', '.join(missing)}")

    def batch(fname: str) -> tuple[np.ndarray, np.ndarray]:
        path = folder / fname
        d = _unpickle(path)
        if "data" not in d or "labels" not in d:
            raise CorruptDataError(path, f"batch dict has keys {sorted(map(str, d))}; expected data and labels")
        data = d["data"]
        if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
            desc = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
            raise CorruptDataError(path, f"data is {desc}; expected uint8 (n, 3072)")
        if per_batch is not None and len(data) != per_batch:
            raise CorruptDataError(path, f"{len(data)} images, but {CIFAR_META_FILE} says "
                                         f"num_cases_per_batch={per_batch}")
        x, y = check_arrays("cifar10", data.reshape(-1, 3, 32, 32), np.asarray(d["labels"]), path, fname)
        return x, y

    parts = [batch(f) for f in CIFAR_TRAIN_FILES]
    x_test, y_test = batch(CIFAR_TEST_FILE)
    return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]), x_test, y_test)


# --------------------------------------------------------------------------------------------
# MNIST idx files (MNIST/raw/ in torchvision's layout)

MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _find_idx(folder: Path, stem: str) -> Path | None:
    for cand in (folder / stem, folder / f"{stem}.gz"):
        if cand.is_file():
            return cand
    return None


def is_mnist_idx_dir(folder: Path) -> bool:
    return _find_idx(folder, MNIST_FILES["train"][0]) is not None


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """One idx file (LeCun's format: big-endian magic 0x0000 08 <ndim>, ndim int32 sizes, bytes),
    plain or gzipped. The body must hold exactly the number of bytes the header promises."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                data = f.read()
        else:
            data = path.read_bytes()
    except (OSError, EOFError, zlib.error) as e:
        raise CorruptDataError(path, f"cannot read ({type(e).__name__}: {e})") from e
    if len(data) < 4 + 4 * ndim:
        raise CorruptDataError(path, f"only {len(data)} bytes: too short for an idx header")
    magic = int.from_bytes(data[:4], "big")
    if magic != 0x0800 + ndim:
        raise CorruptDataError(path, f"idx magic number {magic:#010x}; expected {0x0800 + ndim:#010x} "
                                     f"(uint8, {ndim}-D)")
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    body = memoryview(data)[4 + 4 * ndim:]
    need = int(np.prod(dims))
    if len(body) != need:
        raise CorruptDataError(path, f"header promises {dims} = {need} bytes of data but the file has {len(body)}"
                               + (" (truncated: fewer images than the header says)" if len(body) < need else ""))
    return np.frombuffer(body, dtype=np.uint8).reshape(dims).copy()


def read_mnist_idx(folder: Path) -> Arrays:
    """Read the four MNIST idx files (``train-images-idx3-ubyte`` ... ``t10k-labels-idx1-ubyte``,
    each optionally ``.gz``) from ``folder``."""
    out: list[np.ndarray] = []
    for split, (img_stem, lbl_stem) in MNIST_FILES.items():
        img, lbl = _find_idx(folder, img_stem), _find_idx(folder, lbl_stem)
        if img is None or lbl is None:
            missing = [s for s, p in ((img_stem, img), (lbl_stem, lbl)) if p is None]
            raise CorruptDataError(folder, f"incomplete MNIST idx folder: missing {', '.join(missing)}[.gz]")
        x = read_idx(img, 3)
        y = read_idx(lbl, 1)
        if len(x) != len(y):
            raise CorruptDataError(img, f"{len(x)} images but {lbl.name} has {len(y)} labels")
        out += check_arrays("mnist", x, y, img, split)
    return tuple(out)  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------
# .npz arrays

def _npz_arrays(path: Path, keys: Sequence[Sequence[str]]) -> list[np.ndarray]:
    """Load one array per entry of ``keys`` (each entry: accepted names, first match wins).

    A file that is not a zip archive (random bytes, a pickle, a lone ``.npy``) is refused as "not a
    valid .npz" before numpy sees it: numpy's own message for it would suggest
    ``allow_pickle=True``, i.e. running whatever code the file holds."""
    _check_npz_magic(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            files = set(z.files)
            out = []
            for alternatives in keys:
                key = next((k for k in alternatives if k in files), None)
                if key is None:
                    want = " or ".join(alternatives)
                    raise CorruptDataError(path, f"no array {want}; the file has {sorted(files) or 'no arrays'}")
                out.append(z[key])
            return out
    except CorruptDataError:
        raise
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, zlib.error, KeyError) as e:
        if "pickle" in str(e):  # an array of Python objects inside: never loaded
            raise CorruptDataError(path, "not a valid .npz of arrays (it holds pickled Python objects, "
                                         "which are never loaded)") from None
        raise CorruptDataError(path, f"cannot read as .npz ({type(e).__name__}: {e})") from e


#: How every .npz (a zip archive) starts: a local file header, or the end record of an empty one.
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")


def _check_npz_magic(path: Path) -> None:
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as e:
        raise CorruptDataError(path, f"cannot read ({type(e).__name__}: {e})") from e
    if head not in _ZIP_MAGIC:
        what = "an empty file" if not head else f"its first bytes are {head!r}, a zip archive starts with b'PK'"
        raise CorruptDataError(path, f"not a valid .npz file ({what})")


def read_npz(name: str, path: Path) -> Arrays:
    """One ``.npz`` with ``x_train``, ``y_train``, ``x_test``, ``y_test``."""
    xtr, ytr, xte, yte = _npz_arrays(path, [("x_train",), ("y_train",), ("x_test",), ("y_test",)])
    return (*check_arrays(name, xtr, ytr, path, "train"), *check_arrays(name, xte, yte, path, "test"))


def read_npz_pair(name: str, train_path: Path, test_path: Path) -> Arrays:
    """Two ``.npz`` files, each with ``x`` and ``y`` (or ``x_train``/``y_train`` resp. ``x_test``/``y_test``)."""
    xtr, ytr = _npz_arrays(train_path, [("x", "x_train"), ("y", "y_train")])
    xte, yte = _npz_arrays(test_path, [("x", "x_test"), ("y", "y_test")])
    return (*check_arrays(name, xtr, ytr, train_path, "train"), *check_arrays(name, xte, yte, test_path, "test"))


# --------------------------------------------------------------------------------------------
# image folders and image archives: <split>/<class>/<file>.{png,jpg,jpeg}

def natural_key(s: str) -> tuple:
    """Sort key that puts ``img2.png`` before ``img10.png``."""
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s))


def _is_image(fname: str) -> bool:
    return not fname.startswith(".") and fname.lower().endswith(IMAGE_EXTENSIONS)


def interleave(name: str, by_class: dict[str, list], where: str | os.PathLike, split: str) -> tuple[list, np.ndarray]:
    """Order one split's files: round-robin over the classes in label order, each class's files in
    natural name order (file 0 of class 0, file 0 of class 1, ..., file 1 of class 0, ...).

    Image folders carry no official order; interleaving makes the *first N* images (``train_size``)
    and the *last N* (``val_size``) class-balanced instead of all airplanes."""
    classes = class_names(name)
    unknown = sorted(set(by_class) - set(classes))
    if unknown:
        raise CorruptDataError(where, f"unknown class folder(s) {unknown} in {split}/; "
                                      f"{name} classes are {list(classes)}")
    missing = [c for c in classes if not by_class.get(c)]
    if missing:
        raise CorruptDataError(where, f"{split}/ has no images for class(es) {missing}")
    lists = [sorted(by_class[c], key=lambda item: natural_key(item[0])) for c in classes]
    items, labels = [], []
    for k in range(max(len(lst) for lst in lists)):
        for label, lst in enumerate(lists):
            if k < len(lst):
                items.append(lst[k][1])
                labels.append(label)
    return items, np.asarray(labels, dtype=np.int64)


def decode_image(name: str, data: bytes, where: str) -> np.ndarray:
    """Decode one PNG/JPEG file's bytes to uint8 ``(C, H, W)`` with Pillow (torchvision's own image
    dependency), converted to RGB (CIFAR-10) or grayscale (MNIST). Truncated files are errors."""
    from PIL import Image

    c, h, w = IMAGE_SHAPE[name]
    try:
        with Image.open(io.BytesIO(data)) as img:
            arr = np.asarray(img.convert("RGB" if c == 3 else "L"), dtype=np.uint8)
    except Exception as e:  # UnidentifiedImageError, OSError ("image file is truncated"), SyntaxError, ...
        raise CorruptDataError(where, f"cannot decode image ({type(e).__name__}: {e})") from e
    if arr.shape[:2] != (h, w):
        raise CorruptDataError(where, f"image is {arr.shape[1]}x{arr.shape[0]}; {name} images are {w}x{h}")
    return arr.transpose(2, 0, 1) if c == 3 else arr[None]


def _decode_all(name: str, jobs: list[tuple[Callable[[], bytes], str]], progress: bool) -> np.ndarray:
    """Decode ``jobs`` (``(read bytes, name for errors)``) into one uint8 ``(N, C, H, W)`` array."""
    from ..progress import progress_bar

    out = np.empty((len(jobs), *IMAGE_SHAPE[name]), dtype=np.uint8)
    bar = progress_bar(total=len(jobs), desc=f"decoding {len(jobs)} {name} images (cached afterwards)",
                       disable=not progress or len(jobs) < 5000)
    for i, (read, where) in enumerate(jobs):
        out[i] = decode_image(name, read(), where)
        if i % 1000 == 999:
            bar.update(1000)
    bar.update(len(jobs) % 1000)
    bar.close()
    return out


def image_folder_listing(root: Path) -> dict[str, dict[str, list[tuple[str, Path]]]]:
    """``{split: {class: [(file name, path), ...]}}`` for ``root/{train,test}/<class>/<image>``.

    Files whose extension is not .png/.jpg/.jpeg (any case) and hidden files are ignored; any
    other entry directly under ``train/`` or ``test/`` that is not a folder is an error."""
    listing: dict[str, dict[str, list[tuple[str, Path]]]] = {}
    for split in ("train", "test"):
        sdir = root / split
        if not sdir.is_dir():
            raise CorruptDataError(root, f"image folder tree has no {split}/ folder")
        by_class: dict[str, list[tuple[str, Path]]] = {}
        for entry in os.scandir(sdir):
            if entry.name.startswith("."):
                continue
            if not entry.is_dir():
                raise CorruptDataError(entry.path, f"expected only class folders in {split}/")
            by_class[entry.name] = [(f.name, Path(f.path)) for f in os.scandir(entry.path)
                                    if _is_image(f.name) and f.is_file()]
        listing[split] = by_class
    return listing


def read_image_folder(name: str, root: Path, listing=None, progress: bool = True) -> Arrays:
    """Decode ``root/train/<class>/*`` and ``root/test/<class>/*`` (see :func:`interleave` for the order)."""
    listing = listing or image_folder_listing(root)
    out: list[np.ndarray] = []
    for split in ("train", "test"):
        paths, y = interleave(name, listing[split], root, split)
        jobs = [((lambda p=p: p.read_bytes()), str(p)) for p in paths]
        x = _decode_all(name, jobs, progress)
        out += check_arrays(name, x, y, root / split, split)
    return tuple(out)  # type: ignore[return-value]


def is_archive(path: Path) -> bool:
    return path.name.lower().endswith(ARCHIVE_SUFFIXES)


def read_image_archive(name: str, path: Path, progress: bool = True) -> Arrays:
    """Decode the images of a ``.tar[.gz]`` holding ``[prefix/]{train,test}/<class>/<image>``."""
    by_split: dict[str, dict[str, list[tuple[str, bytes]]]] = {"train": {}, "test": {}}
    prefixes = set()
    try:
        with tarfile.open(path, "r:*") as tf:
            for m in tf:
                if not m.isfile():
                    continue
                parts = PurePosixPath(m.name).parts
                if len(parts) < 3 or parts[-3] not in by_split or not _is_image(parts[-1]):
                    continue
                prefixes.add(parts[:-3])
                f = tf.extractfile(m)
                by_split[parts[-3]].setdefault(parts[-2], []).append((m.name, f.read()))
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        raise CorruptDataError(path, f"cannot read archive ({type(e).__name__}: {e})") from e
    if len(prefixes) > 1:
        raise CorruptDataError(path, f"images under several top folders {sorted('/'.join(p) or '.' for p in prefixes)}")
    out: list[np.ndarray] = []
    for split in ("train", "test"):
        if not by_split[split]:
            raise CorruptDataError(path, f"archive has no {split}/<class>/<image> files")
        items, y = interleave(name, {c: [(PurePosixPath(n).name, (n, b)) for n, b in lst]
                                     for c, lst in by_split[split].items()}, path, split)
        jobs = [((lambda b=b: b), f"{path}:{n}") for n, b in items]
        x = _decode_all(name, jobs, progress)
        out += check_arrays(name, x, y, path, split)
    return tuple(out)  # type: ignore[return-value]
