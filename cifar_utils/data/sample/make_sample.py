"""Regenerate the embedded data samples ``cifar10.npz`` and ``mnist.npz`` in this folder.

The samples let the book, the tests and CI run without any download. They are *official* pixels,
unchanged, in official order:

* ``cifar10.npz``: CIFAR-10 train images 0-999 and test images 0-499 (Krizhevsky, 2009), taken
  from ``cifar10/cifar10_exact_sample.npz`` (bit-exact official train 0-1999 and test 0-999).
* ``mnist.npz``: MNIST train images 0-999 and test images 0-499 (LeCun, Cortes and Burges), taken
  from ``mnist/mnist_train.npz`` and ``mnist/mnist_test.npz`` (the full official sets).

Each file holds ``x_train``, ``y_train``, ``x_test``, ``y_test``: ``x`` uint8 in the source layout
(CIFAR-10 ``(N, 32, 32, 3)``, MNIST ``(N, 28, 28)``), ``y`` int64.

Run from the project root, with the project's offline data copy next to it::

    python cifar_utils/data/sample/make_sample.py            # reads ../shared/data
    python cifar_utils/data/sample/make_sample.py --shared /path/to/shared/data

The script refuses to run unless the source files have exactly these sha256 digests::

    cifar10/cifar10_exact_sample.npz  4126986bafc6a40e1cd2ac9c241ec3b19c586f7bb200531c97d675f684644764
    mnist/mnist_train.npz             b243a76257a4fc7a4fe28aaf795b97a8161b8cbc16b856d88f03d03d905537d2
    mnist/mnist_test.npz              fe03ede69adf7bb5408464916ac4f1d4cd475510fdfb08add4409b34f0a435ec

and checks what it wrote against ``CONTENT_SHA256`` below: the sha256 of each array's raw bytes
(C order), which does not depend on the zip/zlib version (the ``.npz`` files' own digests might).
The tests check the committed samples against the same digests. With fixed zip timestamps the
files came out byte-identical on rerun here (numpy 2.4, zlib of CPython 3): ``cifar10.npz``
(4.25 MB) sha256 2286429c9913a034f606a890e8366d5acf81edda924d31bfbe66d705e750b7b9, ``mnist.npz``
(0.25 MB) sha256 1e1ab3dc5a76d5dfe51bdf57f2b82a408b9282930044b0faf76287e5dd05963c.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import zipfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent

SOURCE_SHA256 = {
    "cifar10/cifar10_exact_sample.npz": "4126986bafc6a40e1cd2ac9c241ec3b19c586f7bb200531c97d675f684644764",
    "mnist/mnist_train.npz": "b243a76257a4fc7a4fe28aaf795b97a8161b8cbc16b856d88f03d03d905537d2",
    "mnist/mnist_test.npz": "fe03ede69adf7bb5408464916ac4f1d4cd475510fdfb08add4409b34f0a435ec",
}

N_TRAIN, N_TEST = 1000, 500

#: sha256 of ``np.ascontiguousarray(a).tobytes()`` for every array of every sample file.
CONTENT_SHA256 = {
    "cifar10.npz": {
        "x_train": "133c5674fd1c56ceeeb944ddcdc368da2593ce5b67acfa216ab83f98a084f388",
        "y_train": "db7e4c108db33a455adcbcc626b51e0b39385d771c2a1e86e4d57141a8ea73ce",
        "x_test": "8f2427926825821b6e0de483aa537ca1419ff2a5b82cc5e436d5dfc50e85cc7a",
        "y_test": "c9039f40409495701facbb0e09dd1a0c3a923eefa2bd4fb8035639e5d6e91a4c",
    },
    "mnist.npz": {
        "x_train": "2304e0137aea1f236247daacc2dcaf275996895e40c4bb0760c448434d361d1a",
        "y_train": "7c8733e936a08984ed9643de8fd50871b49bc9fd173030252f50154c302fc247",
        "x_test": "6e96778c418dfcfff0dcfdbcb4af54d86e5c54326bf5e7ead99cf94b6434a405",
        "y_test": "d9c1ee129708614296525e1d5d088e7f6c31867941fca58d4df714564188c7d2",
    },
}


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def content_sha256(arrays: dict[str, np.ndarray]) -> dict[str, str]:
    """sha256 of each array's raw C-order bytes."""
    return {k: hashlib.sha256(np.ascontiguousarray(v).tobytes()).hexdigest() for k, v in arrays.items()}


def save_npz_deterministic(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Like ``np.savez_compressed``, but with fixed zip timestamps so reruns give identical bytes."""
    tmp = path.with_suffix(".tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for key, arr in arrays.items():
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            with zf.open(info, "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.ascontiguousarray(arr), allow_pickle=False)
    tmp.replace(path)


def build(shared: Path) -> dict[str, dict[str, np.ndarray]]:
    """The sample arrays, cut from the verified source files under ``shared``."""
    for rel, digest in SOURCE_SHA256.items():
        path = shared / rel
        if not path.is_file():
            raise FileNotFoundError(f"source file missing: {path}")
        got = sha256_file(path)
        if got != digest:
            raise ValueError(f"{path}: sha256 {got} differs from the recorded {digest}; refusing to build")
    with np.load(shared / "cifar10/cifar10_exact_sample.npz") as c:
        cifar = {
            "x_train": c["x_train"][:N_TRAIN], "y_train": c["y_train"][:N_TRAIN].astype(np.int64),
            "x_test": c["x_test"][:N_TEST], "y_test": c["y_test"][:N_TEST].astype(np.int64),
        }
    with np.load(shared / "mnist/mnist_train.npz") as tr, np.load(shared / "mnist/mnist_test.npz") as te:
        mnist = {
            "x_train": tr["x"][:N_TRAIN], "y_train": tr["y"][:N_TRAIN].astype(np.int64),
            "x_test": te["x"][:N_TEST], "y_test": te["y"][:N_TEST].astype(np.int64),
        }
    return {"cifar10.npz": cifar, "mnist.npz": mnist}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shared", type=Path, default=Path("..") / "shared" / "data",
                        help="the offline data folder (default ../shared/data, relative to the cwd)")
    parser.add_argument("--out", type=Path, default=HERE, help="where to write (default: this folder)")
    args = parser.parse_args(argv)
    samples = build(args.shared)
    ok = True
    for fname, arrays in samples.items():
        save_npz_deterministic(args.out / fname, arrays)
        digests = content_sha256(arrays)
        size = (args.out / fname).stat().st_size
        print(f"{fname}: {size / 1e6:.2f} MB, file sha256 {sha256_file(args.out / fname)}")
        for key, digest in digests.items():
            expected = CONTENT_SHA256[fname][key]
            flag = "ok" if digest == expected else "DIFFERS from CONTENT_SHA256"
            ok &= digest == expected
            print(f"  {key} {arrays[key].dtype} {arrays[key].shape} {digest} {flag}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
