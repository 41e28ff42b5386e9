import os
import time

import numpy as np
import pytest

from falcon_core.cache import (DiskCache, default_cache_root, fingerprint_files, hash_bytes,
                               hash_file, hash_json)
from falcon_core.progress import null_progress, tqdm_progress


@pytest.fixture
def cache(tmp_path):
    return DiskCache(tmp_path / "cache")


def test_hash_helpers(tmp_path):
    p = tmp_path / "f.bin"
    p.write_bytes(b"hello" * 100000)
    assert hash_file(p) == hash_bytes(b"hello" * 100000)
    assert hash_json({"a": 1, "b": [1, 2]}) == hash_json({"b": [1, 2], "a": 1})
    assert hash_json({"a": np.int64(3)}) == hash_json({"a": 3})
    assert hash_json({"a": 1}) != hash_json({"a": 2})


def test_fingerprint_files_changes_with_content(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(b"1")
    b.write_bytes(b"22")
    fp = fingerprint_files([a, b], tmp_path)
    assert fp == fingerprint_files([b, a], tmp_path)  # order does not matter
    b.write_bytes(b"333")
    assert fingerprint_files([a, b], tmp_path) != fp


def test_default_root_from_env(monkeypatch, tmp_path):
    monkeypatch.setenv("FALCON_CACHE", str(tmp_path / "x"))
    assert default_cache_root() == tmp_path / "x"
    assert DiskCache().root == tmp_path / "x"


def test_keys_differ_with_parts(cache):
    k1 = cache.key("representations", backbone="a", layer=None)
    assert k1 == cache.key("representations", layer=None, backbone="a")
    assert k1 != cache.key("representations", backbone="b", layer=None)
    assert k1 != cache.key("cams", backbone="a", layer=None)
    assert cache.path("cams", k1, ".npy").parent == cache.root / "cams"
    with pytest.raises(ValueError):
        cache.path("../evil", k1, ".npy")


def test_roundtrips(cache):
    arr = np.arange(12, dtype=np.float32).reshape(3, 4)
    cache.write_npy("x", "k", arr)
    np.testing.assert_array_equal(cache.read_npy("x", "k"), arr)
    mm = cache.read_npy("x", "k", mmap=True)
    assert isinstance(mm, np.memmap)
    np.testing.assert_array_equal(mm, arr)
    cache.write_json("x", "j", {"a": [1, 2], "b": "é"})
    assert cache.read_json("x", "j") == {"a": [1, 2], "b": "é"}
    cache.write_npz("x", "z", a=arr, b=np.array([1, 2]))
    z = cache.read_npz("x", "z")
    np.testing.assert_array_equal(z["a"], arr)
    assert cache.read_npy("x", "missing") is None
    assert cache.read_json("x", "missing") is None
    assert cache.read_npz("x", "missing") is None
    # no temp files left behind
    assert not list((cache.root / "x").glob("*.tmp"))


def test_writer_failure_leaves_no_final_file(cache):
    def boom():
        raise RuntimeError("killed mid-way")

    with pytest.raises(RuntimeError):
        cache.get_or_compute_npy("x", "k", boom)
    assert not cache.path("x", "k", ".npy").exists()

    class Unserialisable:
        pass

    # the writer itself raising half-way through writing
    with pytest.raises(TypeError):
        cache.write_json("x", "j", {"a": Unserialisable()})
    assert not cache.path("x", "j", ".json").exists()
    assert not list((cache.root / "x").glob("*.tmp"))

    calls = []
    out = cache.get_or_compute_npy("x", "k", lambda: calls.append(1) or np.ones(3))
    np.testing.assert_array_equal(out, np.ones(3))
    assert calls == [1]


def test_leftover_tmp_is_never_read(cache):
    folder = cache.root / "x"
    folder.mkdir(parents=True)
    final = cache.path("x", "k", ".npy")
    # a killed write: a temp file next to where the final file would be
    with open(str(final) + ".abc.tmp", "wb") as f:
        np.save(f, np.full(3, 7.0))
    assert cache.read_npy("x", "k") is None
    out = cache.get_or_compute_npy("x", "k", lambda: np.zeros(3))
    np.testing.assert_array_equal(out, np.zeros(3))
    # clear_tmp removes only old temp files
    tmp = folder / (final.name + ".abc.tmp")
    assert cache.clear_tmp() == 0
    old = time.time() - 7200
    os.utime(tmp, (old, old))
    assert cache.clear_tmp() == 1
    assert not tmp.exists()


@pytest.mark.parametrize("suffix", [".npy", ".json", ".npz"])
def test_corrupt_entry_is_recomputed(cache, suffix):
    p = cache.path("x", "k", suffix)
    p.parent.mkdir(parents=True)
    p.write_bytes(b"\x93NUMPY garbage" if suffix == ".npy" else b"{not json" if
                  suffix == ".json" else b"PK\x03\x04 broken zip")
    calls = []
    if suffix == ".npy":
        out = cache.get_or_compute_npy("x", "k", lambda: calls.append(1) or np.arange(4))
        np.testing.assert_array_equal(out, np.arange(4))
        np.testing.assert_array_equal(cache.read_npy("x", "k"), np.arange(4))
    elif suffix == ".json":
        out = cache.get_or_compute_json("x", "k", lambda: calls.append(1) or {"v": 1})
        assert out == {"v": 1} and cache.read_json("x", "k") == {"v": 1}
    else:
        out = cache.get_or_compute_npz("x", "k", lambda: calls.append(1) or {"a": np.ones(2)})
        np.testing.assert_array_equal(out["a"], np.ones(2))
        np.testing.assert_array_equal(cache.read_npz("x", "k")["a"], np.ones(2))
    assert calls == [1]


def test_truncated_npy_is_recomputed(cache):
    cache.write_npy("x", "k", np.arange(1000, dtype=np.float64))
    p = cache.path("x", "k", ".npy")
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    assert cache.read_npy("x", "k", mmap=True) is None
    assert not p.exists()


def test_get_or_compute_caches(cache):
    calls = []
    for _ in range(3):
        v = cache.get_or_compute_json("x", "k", lambda: calls.append(1) or [1, (2, 3)])
        assert v == [1, [2, 3]]
    assert calls == [1]
    # a stored null is a value, not a miss
    n = []
    assert cache.get_or_compute_json("x", "n", lambda: n.append(1)) is None
    assert cache.get_or_compute_json("x", "n", lambda: n.append(1)) is None
    assert n == [1]


def test_compute_chunked_resumes(cache):
    n, chunk, width = 23, 4, 3
    expected = np.arange(n * width, dtype=np.float32).reshape(n, width)
    calls = []
    interrupt = [True]

    def fn(start, stop):
        calls.append(start)
        if start == 12 and interrupt[0]:
            raise KeyboardInterrupt("killed at chunk 3")
        return expected[start:stop]

    with pytest.raises(KeyboardInterrupt):
        cache.compute_chunked("text_embeddings", "k", n, chunk, fn, np.float32)
    assert calls == [0, 4, 8, 12]
    parts = sorted(p.name for p in cache.parts_dir("text_embeddings", "k").glob("part_*.npy"))
    assert len(parts) == 3
    assert not cache.path("text_embeddings", "k", ".npy").exists()
    assert [e["complete"] for e in cache.entries("text_embeddings")] == [False]

    calls.clear()
    interrupt[0] = False
    seen = []
    out = cache.compute_chunked("text_embeddings", "k", n, chunk, fn, np.float32,
                                progress=lambda d, t, s: seen.append((d, t, s)))
    assert calls == [12, 16, 20]
    assert isinstance(out, np.memmap) and out.mode == "r"
    np.testing.assert_array_equal(out, expected)
    assert not cache.parts_dir("text_embeddings", "k").exists()
    assert seen[-1] == (n, n, "text_embeddings")
    # a third run computes nothing
    calls.clear()
    out2 = cache.compute_chunked("text_embeddings", "k", n, chunk, fn, np.float32)
    assert calls == []
    np.testing.assert_array_equal(out2, expected)
    assert not list(cache.path("text_embeddings", "k", ".npy").parent.glob("*.tmp"))


def test_compute_chunked_dtype_and_bad_part(cache):
    def fn(a, b):
        return np.arange(a, b, dtype=np.float64)[:, None] * np.ones((1, 2))

    with pytest.raises(ValueError):
        cache.compute_chunked("c", "bad", 5, 2, lambda a, b: np.zeros((b - a + 1, 2)),
                              np.float16)
    # corrupt one part of an unfinished run: it is recomputed
    calls = []

    def fn_fail(a, b):
        calls.append(a)
        if a == 4:
            raise RuntimeError("stop")
        return fn(a, b)

    with pytest.raises(RuntimeError):
        cache.compute_chunked("c", "k", 5, 2, fn_fail, np.float16)
    parts = sorted(cache.parts_dir("c", "k").glob("part_*.npy"))
    parts[0].write_bytes(b"junk")
    calls.clear()
    out = cache.compute_chunked("c", "k", 5, 2, lambda a, b: calls.append(a) or fn(a, b),
                                np.float16)
    assert calls == [0, 4]
    assert out.dtype == np.float16
    np.testing.assert_array_equal(out, fn(0, 5).astype(np.float16))


def test_entries_size_clear(cache):
    cache.write_npy("representations", "a", np.zeros(100))
    cache.write_json("explanations", "b", {"x": 1})
    (cache.root / "datasets").mkdir(parents=True)
    (cache.root / "datasets" / "big.bin").write_bytes(b"0" * 1000)
    names = {(e["namespace"], e["key"]) for e in cache.entries()}
    assert names == {("representations", "a"), ("explanations", "b")}
    assert cache.size_bytes("representations") > 800
    assert cache.size_bytes() == cache.size_bytes("representations") + \
        cache.size_bytes("explanations")
    cache.clear("explanations")
    assert cache.read_json("explanations", "b") is None
    assert cache.read_npy("representations", "a") is not None
    cache.clear()
    assert cache.entries() == []
    assert (cache.root / "datasets" / "big.bin").exists()  # datasets are not cache entries


def test_progress_helpers():
    null_progress(1, 2, "x")
    import io

    buf = io.StringIO()
    p = tqdm_progress(file=buf)
    for i in range(1, 4):
        p(i, 3, "stage a")
    p(1, 2, "stage b")
    assert "stage a" in buf.getvalue()
