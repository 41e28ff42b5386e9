"""The disk cache verifies what it reads: a checksum on every file, then the expected shape, dtype
or schema. A file that fails is moved aside (kept for a bug report, said once) and recomputed. A
folder that cannot be written gets a message and what to do; values are still computed and
returned, and nothing half-written is left."""

from __future__ import annotations

import errno
import json
import os

import numpy as np
import pytest

import falcon_core.cache as cache_mod
import falcon_core.cache_format as fmt
from falcon_core.cache import DiskCache
from falcon_core.cache_format import TRAILER_SIZE
from makers import cache_snapshot, garbage_after_header, truncate_file

ARR = np.arange(6 * 5, dtype=np.float32).reshape(6, 5)


@pytest.fixture
def notes():
    return []


@pytest.fixture
def cache(tmp_path, notes):
    return DiskCache(tmp_path / "cache", on_notice=notes.append)


def quarantined(cache) -> list[str]:
    q = cache.root / "quarantine"
    return sorted(p.name for p in q.rglob("*") if p.is_file()) if q.exists() else []


def truncate(path):
    truncate_file(path, 0.5)


def plain_npy(path, arr):
    """What an older version (or a hand copy) leaves: a valid .npy without the checksum."""
    with open(path, "wb") as f:
        np.save(f, arr)


def test_files_carry_a_checksum_and_still_open_with_numpy(cache):
    p = cache.write_npy("x", "k", ARR)
    assert p.read_bytes()[-TRAILER_SIZE:][:8] == b"FALCONCK"
    np.testing.assert_array_equal(np.load(p), ARR)  # numpy ignores the trailer
    np.testing.assert_array_equal(cache.read_npy("x", "k", shape=(6, 5), dtype=np.float32), ARR)
    np.testing.assert_array_equal(cache.read_npy("x", "k", mmap=True, shape=(None, 5)), ARR)


@pytest.mark.parametrize("mmap", [False, True])
@pytest.mark.parametrize("damage, reason", [
    (truncate, "truncated"),
    (garbage_after_header, "checksum mismatch"),
    (lambda p: plain_npy(p, ARR), "no checksum"),
    (lambda p: p.write_bytes(b""), "truncated"),
])
def test_a_damaged_array_is_moved_aside_and_recomputed(cache, notes, damage, reason, mmap):
    p = cache.write_npy("cams", "k", ARR)
    damage(p)
    calls = []
    out = cache.get_or_compute_npy("cams", "k", lambda: calls.append(1) or ARR, mmap=mmap)
    assert calls == [1]
    np.testing.assert_array_equal(out, ARR)
    np.testing.assert_array_equal(cache.read_npy("cams", "k"), ARR)  # stored again, verified
    q = quarantined(cache)
    assert [n for n in q if n.startswith("k.npy.") and not n.endswith(".txt")], q
    why = next((cache.root / "quarantine" / "cams").glob("*.txt")).read_text()
    assert reason in why
    assert len(notes) == 1 and reason in notes[0] and "kept for a bug report" in notes[0]


@pytest.mark.parametrize("stored, expect, reason", [
    (ARR[:4], dict(shape=(6, 5)), "shape (4, 5), expected (6, 5)"),
    (ARR.reshape(5, 6), dict(shape=(None, 5)), "shape (5, 6)"),
    (ARR.astype(np.float64), dict(dtype=np.float32), "dtype float64, expected float32"),
    (ARR[None], dict(shape=(6, 5)), "shape (1, 6, 5)"),
])
def test_a_valid_file_of_the_wrong_shape_or_dtype_is_recomputed(cache, notes, stored, expect,
                                                                 reason):
    cache.write_npy("crop_embeddings", "k", stored)  # a correct checksum: only the shape is off
    calls = []
    out = cache.get_or_compute_npy("crop_embeddings", "k", lambda: calls.append(1) or ARR,
                                   **expect)
    assert calls == [1] and out.shape == (6, 5)
    assert reason in notes[0]
    assert cache.read_npy("crop_embeddings", "k", **expect).shape == (6, 5)


@pytest.mark.parametrize("damage, reason", [
    (truncate, "truncated"),
    (garbage_after_header, "checksum mismatch"),
    (lambda p: p.write_text(json.dumps({"a": list(range(40))})), "no checksum"),
])
def test_a_damaged_json_is_moved_aside_and_recomputed(cache, notes, damage, reason):
    p = cache.write_json("explanations", "k", {"v": 1})
    damage(p)
    out = cache.get_or_compute_json("explanations", "k", lambda: {"v": 2})
    assert out == {"v": 2} and cache.read_json("explanations", "k") == {"v": 2}
    assert reason in notes[0] and quarantined(cache)


def test_json_of_the_wrong_structure_is_moved_aside(cache, notes):
    def schema(v):
        if not isinstance(v, dict) or not isinstance(v.get("v"), int):
            raise TypeError("expected {'v': int}")
        return v["v"]

    for bad in ([1], {"v": "1"}, None, "text"):
        cache.write_json("explanations", "k", bad)
        assert cache.read_json("explanations", "k", schema=schema) is None
    assert len(quarantined(cache)) == 8  # 4 files + their .txt
    assert all("wrong structure" in n for n in notes)
    assert cache.get_or_compute_json("explanations", "k", lambda: {"v": 3}, schema=schema) == 3
    # deeply nested JSON: a wrong structure too, never a RecursionError
    cache.write_bytes("explanations", "deep", b"", suffix=".json")
    deep = ("[" * 100000 + "]" * 100000).encode()
    p = cache.path("explanations", "deep", ".json")
    fmt.atomic_write(p, lambda f: f.write(deep), checksum=True)
    assert cache.read_json("explanations", "deep", schema=schema) is None


def test_chunked_arrays_verify_the_final_file_and_every_part(cache, notes):
    n, chunk = 10, 3
    full = np.arange(n * 4, dtype=np.float32).reshape(n, 4)
    calls = []

    def fn(a, b):
        calls.append(a)
        return full[a:b]

    out = cache.compute_chunked("representations", "k", n, chunk, fn, np.float32, row_shape=(4,))
    assert isinstance(out, np.memmap)
    final = cache.path("representations", "k", ".npy")
    for damage in (garbage_after_header, truncate):
        damage(final)
        calls.clear()
        out = cache.compute_chunked("representations", "k", n, chunk, fn, np.float32,
                                    row_shape=(4,))
        np.testing.assert_array_equal(out, full)
        assert calls == [0, 3, 6, 9]
    # rows of another width under the key (a valid file): recomputed
    cache.write_npy("representations", "k", np.zeros((n, 7), np.float32))
    calls.clear()
    out = cache.compute_chunked("representations", "k", n, chunk, fn, np.float32, row_shape=(4,))
    assert calls == [0, 3, 6, 9] and out.shape == (n, 4)
    # an interrupted run whose part is damaged: that part is recomputed, the others reused
    calls.clear()

    def stop_at_6(a, b):
        if a == 6:
            raise KeyboardInterrupt
        return fn(a, b)

    with pytest.raises(KeyboardInterrupt):
        cache.compute_chunked("text_embeddings", "k", n, chunk, stop_at_6, np.float32,
                              row_shape=(4,))
    parts = sorted(cache.parts_dir("text_embeddings", "k").glob("part_*.npy"))
    garbage_after_header(parts[1])
    calls.clear()
    out = cache.compute_chunked("text_embeddings", "k", n, chunk, fn, np.float32, row_shape=(4,))
    assert calls == [3, 6, 9]
    np.testing.assert_array_equal(out, full)
    assert sum("part_" in n for n in notes) == 1
    assert not [k for k in cache_snapshot(cache.root) if k.endswith(".tmp")]


def test_each_problem_is_said_once(cache, notes):
    p = cache.write_npy("x", "k", ARR)
    garbage_after_header(p)
    for _ in range(3):
        cache.get_or_compute_npy("x", "k", lambda: ARR)
    assert len(notes) == 1


# ---- a folder that cannot be used -----------------------------------------------------------

def assert_nothing_half_written(root):
    files = cache_snapshot(root) if root.is_dir() else {}
    assert not [k for k in files if k.endswith(".tmp")], files
    for k in files:
        if k.endswith((".npy", ".json")) and "quarantine" not in k:
            data = (root / k).read_bytes()
            assert data[-TRAILER_SIZE:][:8] == b"FALCONCK", k  # only complete, verified files


def test_a_cache_folder_that_is_a_file(tmp_path, notes):
    root = tmp_path / "cache"
    root.write_text("I am a file")
    cache = DiskCache(root, on_notice=notes.append)
    assert cache.get_or_compute_npy("x", "k", lambda: ARR) is not None
    assert cache.get_or_compute_json("explanations", "k", lambda: {"v": 1}) == {"v": 1}
    out = cache.compute_chunked("representations", "k", 5, 2, lambda a, b: ARR[a:b], np.float32)
    np.testing.assert_array_equal(out, ARR[:5])
    # kept in memory for the rest of the process: not computed again
    assert cache.get_or_compute_json("explanations", "k", lambda: {"v": 2}) == {"v": 1}
    assert len(notes) == 1
    assert "is a file, not a folder" in notes[0] and "FALCON_CACHE" in notes[0]
    assert "computed but not kept" in notes[0]
    assert cache.problem is not None and root.read_text() == "I am a file"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders anyway "
                    "(test_a_read_only_cache_folder_mocked covers it)")
def test_a_read_only_cache_folder(tmp_path, notes):
    root = tmp_path / "cache"
    root.mkdir()
    root.chmod(0o555)
    try:
        cache = DiskCache(root, on_notice=notes.append)
        np.testing.assert_array_equal(cache.get_or_compute_npy("x", "k", lambda: ARR), ARR)
        assert "cannot be written" in notes[0]
        assert_nothing_half_written(root)
    finally:
        root.chmod(0o755)


def test_a_read_only_cache_folder_mocked(tmp_path, notes, monkeypatch):
    def denied(*a, **k):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(fmt.tempfile, "mkstemp", denied)
    cache = DiskCache(tmp_path / "cache", on_notice=notes.append)
    np.testing.assert_array_equal(cache.get_or_compute_npy("x", "k", lambda: ARR), ARR)
    out = cache.compute_chunked("representations", "k", 6, 2, lambda a, b: ARR[a:b], np.float32)
    np.testing.assert_array_equal(out, ARR)
    assert len(notes) == 1 and "cannot be written (Permission denied)" in notes[0]
    assert "writable" in cache.problem.hint
    assert_nothing_half_written(cache.root)


class FullDisk:
    """A disk with ``room`` bytes left: writes beyond it fail with ENOSPC, part-way."""

    def __init__(self, room: int):
        self.room = room

    def __call__(self, f, data):
        n = len(memoryview(data).cast("B"))
        if n > self.room:
            f.write(bytes(memoryview(data).cast("B")[: self.room]))  # a partial write, then full
            self.room = 0
            raise OSError(errno.ENOSPC, "No space left on device")
        self.room -= n
        f.write(data)


@pytest.mark.parametrize("room, recomputed", [(0, 7), (100, 7), (5000, 5)])
def test_a_full_disk_leaves_nothing_half_written(tmp_path, notes, monkeypatch, room, recomputed):
    monkeypatch.setattr(fmt, "_write_chunk", FullDisk(room))
    cache = DiskCache(tmp_path / "cache", on_notice=notes.append)
    big = np.arange(400 * 8, dtype=np.float32).reshape(400, 8)
    out = cache.compute_chunked("representations", "k", 400, 64, lambda a, b: big[a:b],
                                np.float32, row_shape=(8,))
    np.testing.assert_array_equal(out, big)
    assert cache.get_or_compute_json("explanations", "e", lambda: {"v": 1}) == {"v": 1}
    assert len(notes) == 1 and "is full" in notes[0] and "Free some disk space" in notes[0]
    assert_nothing_half_written(cache.root)
    # the parts that did fit are complete and verified: a later run resumes from them
    monkeypatch.setattr(fmt, "_write_chunk", lambda f, d: f.write(d))
    calls = []
    again = DiskCache(tmp_path / "cache").compute_chunked(
        "representations", "k", 400, 64, lambda a, b: calls.append(a) or big[a:b], np.float32,
        row_shape=(8,))
    np.testing.assert_array_equal(again, big)
    assert len(calls) == recomputed  # 5000 bytes held the parts meta and two parts


def test_quarantine_is_not_a_cache_entry(cache):
    p = cache.write_npy("x", "k", ARR)
    truncate(p)
    cache.read_npy("x", "k")
    assert quarantined(cache)
    assert [e["namespace"] for e in cache.entries()] == []
    cache.clear()
    assert quarantined(cache)  # kept for the bug report


def test_the_memory_kept_for_an_unusable_folder_is_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr(cache_mod, "MEMORY_LIMIT_BYTES", 1000)
    root = tmp_path / "cache"
    root.write_text("file")
    cache = DiskCache(root)
    for i in range(10):
        cache.write_npy("x", f"k{i}", np.zeros(100, np.float32))  # 400 bytes each
    kept = [i for i in range(10) if cache.read_npy("x", f"k{i}") is not None]
    assert kept == [8, 9]


def test_json_value_types_round_trip(cache):
    v = {"a": [1, 2.5, None, True], "b": "é", "c": {"d": []}}
    cache.write_json("x", "j", v)
    assert cache.read_json("x", "j") == v
    assert json.loads(cache.path("x", "j", ".json").read_bytes()[:-TRAILER_SIZE]) == v
