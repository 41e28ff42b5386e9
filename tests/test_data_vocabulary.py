import hashlib

import numpy as np
import pandas as pd
import pytest

from falcon_core.cache import DiskCache
from falcon_core.data import vocabulary as vocab_mod
from falcon_core.data.vocabulary import (CaptionFile, LaionShards, ListVocabulary,
                                         create_vocabulary, register_vocabulary,
                                         text_embeddings)
from falcon_core.errors import FalconError


class FakeClip:
    def __init__(self, dim=8, fingerprint="fake-clip-v1"):
        self.embed_dim = dim
        self.fingerprint = fingerprint
        self.calls = 0
        self.texts = 0

    def encode_texts(self, texts):
        self.calls += 1
        self.texts += len(texts)
        return self.expected(texts)

    def expected(self, texts):
        rows = []
        for t in texts:
            seed = int.from_bytes(hashlib.sha256(t.encode()).digest()[:8], "little")
            rows.append(np.random.default_rng(seed).standard_normal(self.embed_dim))
        a = np.asarray(rows, dtype=np.float32).reshape(-1, self.embed_dim)
        return a / np.linalg.norm(a, axis=1, keepdims=True)


def test_caption_file_cleaning(tmp_path):
    long = "x" * 10_000
    raw = ("\ufeffa red car\n"
           "\n"
           "   \n"
           "a red car\n"
           "a\tdog  on\t\tgrass\r\n"
           "bell\x00ring\x1b[0m here\n"
           + long + "\n"
           ).encode("utf-8") + b"caf\xe9 bad bytes\n" \
        + "a dog on grass\na dog on grass again\n".encode()
    p = tmp_path / "caps.txt"
    p.write_bytes(raw)
    v = CaptionFile(p)
    caps = [v.caption(i) for i in range(len(v))]
    assert caps[0] == "a red car"  # BOM stripped
    assert caps[1] == "a dog on grass"
    assert caps[2] == "bell ring [0m here"
    assert caps[3] == "x" * 1000
    assert len(v) == 5  # the line with a byte that is not UTF-8 is left out, not patched
    assert caps[4] == "a dog on grass again"
    assert not any("\ufffd" in c for c in caps)
    r = v.report
    assert r["lines_read"] == 10
    assert r["blank_dropped"] == 2
    assert r["duplicates_dropped"] == 2  # "a red car" and the tab-cleaned "a dog on grass"
    assert r["control_chars_cleaned"] == 1
    assert r["truncated"] == 1
    assert r["undecodable"] == 1 and r["first_undecodable_line"] == 8
    assert any("not valid UTF-8" in n and "line 8" in n and "iconv" in n for n in r["notes"])
    assert r["bom_stripped"] is True
    assert v.captions([4, 0]) == [caps[4], caps[0]]
    assert v.describe()["count"] == 5


def test_fingerprint_depends_on_cleaned_captions(tmp_path):
    a = tmp_path / "a.txt"
    b = tmp_path / "b.txt"
    c = tmp_path / "c.txt"
    a.write_text("one\ntwo\n")
    b.write_text("\none\n\n  two \none\n")
    c.write_text("one\nthree\n")
    assert CaptionFile(a).fingerprint == CaptionFile(b).fingerprint
    assert CaptionFile(a).fingerprint != CaptionFile(c).fingerprint
    assert ListVocabulary(["one", "two"]).fingerprint == CaptionFile(a).fingerprint


def test_empty_and_single(tmp_path):
    e = tmp_path / "empty.txt"
    e.write_bytes(b"")
    with pytest.raises(FalconError, match="empty"):
        CaptionFile(e)
    blank = tmp_path / "blank.txt"
    blank.write_text("\n  \n\t\n")
    with pytest.raises(FalconError, match="no captions"):
        CaptionFile(blank)
    with pytest.raises(FalconError, match="does not exist"):
        create_vocabulary(str(tmp_path / "missing.txt"))
    one = tmp_path / "one.txt"
    one.write_text("just one caption")
    v = create_vocabulary(str(one))
    assert isinstance(v, CaptionFile) and len(v) == 1 and v.caption(0) == "just one caption"
    assert any("single caption" in n for n in v.report["notes"])


def make_laion(root, sizes, dim=16, side_by_side=False, seed=0):
    rng = np.random.default_rng(seed)
    emb_dir = root if side_by_side else root / "text_emb"
    meta_dir = root if side_by_side else root / "metadata"
    emb_dir.mkdir(parents=True, exist_ok=True)
    meta_dir.mkdir(parents=True, exist_ok=True)
    all_emb, all_caps = [], []
    for s, n in enumerate(sizes):
        e = rng.standard_normal((n, dim)).astype(np.float32)
        e /= np.linalg.norm(e, axis=1, keepdims=True)
        e = e.astype(np.float16)
        caps = [f"shard {s} caption {i}" for i in range(n)]
        np.save(emb_dir / f"text_emb_{s:04d}.npy", e)
        pd.DataFrame({"caption": caps, "url": ["http://x"] * n,
                      "similarity": np.ones(n)}).to_parquet(
            meta_dir / f"metadata_{s:04d}.parquet")
        all_emb.append(e)
        all_caps += caps
    return np.concatenate(all_emb).astype(np.float32), all_caps


@pytest.mark.parametrize("side_by_side", [False, True])
def test_laion_roundtrip(tmp_path, side_by_side):
    emb, caps = make_laion(tmp_path / "laion", [5, 7], side_by_side=side_by_side)
    v = create_vocabulary(f"laion:{tmp_path / 'laion'}")
    assert isinstance(v, LaionShards)
    assert len(v) == 12 and v.embeddings.shape == (12, 16) and len(v.embeddings) == 12
    assert v.embedding_model == "ViT-B-32"
    assert [v.caption(i) for i in range(12)] == caps
    assert v.captions([11, 0, 5]) == [caps[11], caps[0], caps[5]]
    # slices across the shard boundary line up with the captions
    np.testing.assert_allclose(v.embeddings[3:9], emb[3:9], atol=2e-3)
    assert v.embeddings[3:9].dtype == np.float32
    np.testing.assert_allclose(v.embeddings[6], emb[6], atol=2e-3)
    np.testing.assert_allclose(v.embeddings[np.array([11, 2, 5])], emb[[11, 2, 5]], atol=2e-3)
    np.testing.assert_allclose(v.embeddings[0:12:5], emb[0:12:5], atol=2e-3)
    np.testing.assert_allclose(np.linalg.norm(v.embeddings[:], axis=1), 1.0, atol=1e-5)
    assert v.fingerprint == LaionShards(tmp_path / "laion").fingerprint
    assert v.report["shards"] == 2


def test_laion_row_mismatch_and_missing_partner(tmp_path):
    make_laion(tmp_path / "l", [4, 6])
    pd.DataFrame({"caption": ["a", "b"]}).to_parquet(
        tmp_path / "l" / "metadata" / "metadata_0001.parquet")
    with pytest.raises(FalconError) as e:
        LaionShards(tmp_path / "l")
    assert "text_emb_0001.npy" in e.value.message and "metadata_0001.parquet" in e.value.message
    make_laion(tmp_path / "m", [3, 3])
    (tmp_path / "m" / "metadata" / "metadata_0000.parquet").unlink()
    with pytest.raises(FalconError, match="text_emb_0000.npy"):
        LaionShards(tmp_path / "m")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FalconError, match="No LAION shards"):
        LaionShards(tmp_path / "empty")


def test_text_embeddings_cached(tmp_path):
    cache = DiskCache(tmp_path / "cache")
    v = ListVocabulary([f"caption number {i}" for i in range(37)], name="t")
    clip = FakeClip()
    seen = []
    A = text_embeddings(v, clip, cache, batch_size=5, chunk_batches=2,
                        progress=lambda d, t, s: seen.append((d, t)))
    assert A.shape == (37, 8) and A.dtype == np.float16 and isinstance(A, np.memmap)
    expected = clip.expected([v.caption(i) for i in range(37)])
    np.testing.assert_allclose(np.asarray(A, dtype=np.float32), expected, atol=2e-3)
    assert clip.texts == 37 and clip.calls == 8
    assert seen[-1] == (37, 37)
    A2 = text_embeddings(v, clip, cache, batch_size=5, chunk_batches=2)
    assert clip.calls == 8  # not computed again
    np.testing.assert_array_equal(A2, A)
    # another CLIP model -> another entry
    other = FakeClip(fingerprint="other")
    text_embeddings(v, other, cache)
    assert other.calls == 1


def test_text_embeddings_resume(tmp_path):
    cache = DiskCache(tmp_path / "cache")
    v = ListVocabulary([f"c{i}" for i in range(20)])

    class Dying(FakeClip):
        def encode_texts(self, texts):
            if self.calls == 3:
                raise RuntimeError("killed")
            return super().encode_texts(texts)

    with pytest.raises(RuntimeError):
        text_embeddings(v, Dying(), cache, batch_size=4, chunk_batches=1)
    clip = FakeClip()
    A = text_embeddings(v, clip, cache, batch_size=4, chunk_batches=1)
    assert clip.texts == 8  # chunks 0-2 were kept
    np.testing.assert_allclose(np.asarray(A, np.float32),
                               clip.expected([f"c{i}" for i in range(20)]), atol=2e-3)


def test_text_embeddings_precomputed(tmp_path):
    make_laion(tmp_path / "l", [3, 4], dim=16)
    v = LaionShards(tmp_path / "l")
    clip = FakeClip(dim=16)
    A = text_embeddings(v, clip, DiskCache(tmp_path / "cache"))
    assert A is v.embeddings and clip.calls == 0
    with pytest.raises(FalconError) as e:
        text_embeddings(v, FakeClip(dim=8), DiskCache(tmp_path / "cache"))
    assert "ViT-B-32" in e.value.message and "ViT-B-32" in e.value.hint


def test_registry():
    register_vocabulary("unit-test-vocab", lambda **kw: ListVocabulary(["a", "b"], "u"))
    try:
        assert len(create_vocabulary("unit-test-vocab")) == 2
    finally:
        vocab_mod.VOCABULARIES.unregister("unit-test-vocab")


# ------------------------------------------------------- LAION at scale: lazy, bounded reads

def test_laion_shards_are_read_lazily_and_bounded(tmp_path):
    from falcon_core.stages.captions import top_captions

    emb, _ = make_laion(tmp_path / "l", [40, 30, 50], dim=16)
    v = LaionShards(tmp_path / "l")
    E = v.embeddings
    assert E.files_opened == 0 and E.bytes_read == 0  # headers only
    row = 16 * 2  # float16 rows of 16
    np.testing.assert_allclose(E[5:8], emb[5:8], atol=2e-3)
    assert E.files_opened == 1 and E.bytes_read == 3 * row  # one shard, three rows
    E.max_open = 1
    B = emb[[3, 77]] + 0.01
    idx, _ = top_captions(B, E, k=3, chunk=16)  # a scan across the shards, 16 rows a block
    assert E.bytes_read == 3 * row + 120 * row  # every row read once, nothing else
    assert len(E._fds) <= 1  # at most one file open
    assert idx[0, 0] == 3 and idx[1, 0] == 77
    before = E.bytes_read
    E[np.array([100, 1, 45])]
    assert E.bytes_read - before == 3 * row  # a gather reads its rows, nothing else


def _record_reads(monkeypatch, E):
    """Every read of ``E``'s shards as (shard, byte offset, length, buffer address), and no
    memory mapping allowed (a mapped page of a shard counts in the process's RSS)."""
    import mmap

    def no_map(*a, **k):
        raise AssertionError("a shard was memory-mapped")

    monkeypatch.setattr(mmap, "mmap", no_map)
    reads = []
    real = E._preadv

    def rec(fd, buf, pos):
        shard = [s for s, f in E._fds.items() if f == fd]
        addr = np.frombuffer(buf, dtype=np.uint8).__array_interface__["data"][0]
        reads.append((shard[0], pos, len(buf), addr))
        return real(fd, buf, pos)

    monkeypatch.setattr(E, "_preadv", rec)
    return reads


def _npy_data_offset(path):
    """The byte where a .npy file's data starts, read from its header by hand: 6 bytes of
    magic, 2 of version, a little-endian uint16 header length (version 1.0), the header."""
    raw = open(path, "rb").read(10)
    assert raw[:6] == b"\x93NUMPY" and raw[6] == 1
    return 10 + int.from_bytes(raw[8:10], "little")


def test_a_gather_reads_only_its_rows_run_by_run_and_maps_nothing(tmp_path, monkeypatch):
    emb, _ = make_laion(tmp_path / "l", [40, 30, 50], dim=16)  # global rows 0-39 | 40-69 | 70-119
    raw16 = np.concatenate([np.load(p) for p in sorted((tmp_path / "l" / "text_emb").glob("*.npy"))])
    off = [_npy_data_offset(p) for p in sorted((tmp_path / "l" / "text_emb").glob("*.npy"))]
    E = LaionShards(tmp_path / "l").embeddings
    reads = _record_reads(monkeypatch, E)
    row = 16 * 2
    ind = np.array([100, 1, 46, 45, 39, 47, 40, 1, 119])  # any order, a repeat, runs
    got = E._rows(ind)
    np.testing.assert_array_equal(got, raw16[ind])  # the stored bits, in the order asked
    # by hand: shard 0 rows 1 and 39; shard 1 row 0 (global 40) and the run 5-7 (45-47, one
    # read); shard 2 rows 30 and 49 (global 100, 119); global 39 and 40 are in two shards
    want = {(0, off[0] + 1 * row, row), (0, off[0] + 39 * row, row),
            (1, off[1] + 0 * row, row), (1, off[1] + 5 * row, 3 * row),
            (2, off[2] + 30 * row, row), (2, off[2] + 49 * row, row)}
    assert sorted(r[:3] for r in reads) == sorted(want)
    # the public gather: the same rows, normalised float32
    np.testing.assert_allclose(E[ind], emb[ind], atol=2e-3)


def test_a_scan_reads_each_row_once_in_blocks_into_one_buffer(tmp_path, monkeypatch):
    from falcon_core.stages.captions import top_captions

    make_laion(tmp_path / "l", [40, 30, 50], dim=16)
    paths = sorted((tmp_path / "l" / "text_emb").glob("*.npy"))
    off = [_npy_data_offset(p) for p in paths]
    E = LaionShards(tmp_path / "l").embeddings
    reads = _record_reads(monkeypatch, E)
    row, chunk = 16 * 2, 16
    top_captions(np.ones((2, 16), np.float32), E, k=3, chunk=chunk)
    scan = reads[:]
    # each shard's data read exactly once, in order, in reads of at most one block
    for s, n in enumerate((40, 30, 50)):
        mine = [(p, ln) for sh, p, ln, _ in scan if sh == s]
        assert all(ln <= chunk * row for _, ln in mine)
        assert mine[0][0] == off[s]
        assert all(p + ln == q for (p, ln), (q, _) in zip(mine, mine[1:]))  # no gap, no overlap
        assert mine[-1][0] + mine[-1][1] == off[s] + n * row
    # every block lands in the same buffer of one block: a scan holds one raw block at a time
    lo = min(a for *_, a in scan)
    assert all(lo <= a and a + ln <= lo + chunk * row for _, _, ln, a in scan)


def test_laion_caption_lookup_reads_only_the_rows_asked_for(tmp_path, monkeypatch):
    import pyarrow.parquet as pq

    from falcon_core.data.vocabulary import CaptionText

    _, caps = make_laion(tmp_path / "l", [3000, 3000, 3000], dim=8)
    monkeypatch.setattr(CaptionText, "BLOCK", 512)  # small blocks: a small entry shows it
    cache = DiskCache(tmp_path / "cache")
    v = LaionShards(tmp_path / "l", cache=cache)
    rows = [3005, 5999, 3100]
    assert v.captions(rows) == [caps[r] for r in rows]
    # only the shard holding them got a caption text entry; the others were never read
    assert len(list((tmp_path / "cache" / "caption_text").glob("*.bin"))) == 1
    text = v._texts[1]
    entry = text.nbytes
    # each row: its two offsets and its bytes, each within at most two checked blocks
    assert text.bytes_read <= 3 * 4 * 512 + 3 * 100 < entry / 8
    # a new object reads the entry, never the parquet file again
    monkeypatch.setattr(pq, "read_table", lambda *a, **k: pytest.fail("parquet read again"))
    w = LaionShards(tmp_path / "l", cache=cache)
    assert w.captions([5999, 3001]) == [caps[5999], caps[3001]]


def test_laion_caption_entry_damage_is_rebuilt(tmp_path):
    _, caps = make_laion(tmp_path / "l", [500], dim=8)
    cache = DiskCache(tmp_path / "cache")
    assert LaionShards(tmp_path / "l", cache=cache).captions([7]) == [caps[7]]
    (binf,) = (tmp_path / "cache" / "caption_text").glob("*.bin")
    raw = bytearray(binf.read_bytes())
    pos = raw.find(caps[7].encode())
    raw[pos] = ord("X")  # the caption's own bytes changed on disk
    binf.write_bytes(bytes(raw))
    assert LaionShards(tmp_path / "l", cache=cache).captions([7, 499]) == [caps[7], caps[499]]
    # the damaged text was moved to quarantine (kept for a bug report), then built again
    assert [q["file"] for q in cache.quarantined] == [f"caption_text/{binf.name}"]
    assert binf.exists()


def test_laion_captions_null_and_control_characters(tmp_path):
    root = tmp_path / "l"
    (root / "text_emb").mkdir(parents=True)
    (root / "metadata").mkdir(parents=True)
    np.save(root / "text_emb" / "text_emb_0000.npy", np.eye(3, 4, dtype=np.float16))
    pd.DataFrame({"caption": ["a\tdog\x00 on  grass", None, "ok"]}).to_parquet(
        root / "metadata" / "metadata_0000.parquet")
    v = LaionShards(root, cache=DiskCache(tmp_path / "cache"))
    assert v.captions([0, 1, 2]) == ["a dog on grass", "", "ok"]
    with pytest.raises(IndexError):
        v.caption(3)


# ------------------------------------------------------------------ document frequency (issue 7)

class WordsExtractor:
    """Concepts = the caption's lower-case words (no spaCy: counts checkable by hand)."""

    def __init__(self, fail_after=None):
        self.seen = 0
        self.fail_after = fail_after
        self.fingerprint = {"fake": 1}

    def iter_extract(self, texts):
        from falcon_core.stages.concepts import CaptionConcepts

        for t in texts:
            if self.fail_after is not None and self.seen >= self.fail_after:
                raise RuntimeError("interrupted")
            self.seen += 1
            ws = frozenset(t.lower().split())
            yield CaptionConcepts(ws, frozenset([t.lower()]) if len(ws) > 1 else frozenset())


CAPS = ["dog lie", "cat lie", "lie", "dog", "bird lie", "cat", "lie fish", "dog cow", "lie cow",
        "cow"]
# lie: rows 0 1 2 4 6 8 -> 6 of 10; dog: 0 3 7 -> 3; cow: 7 8 9 -> 3; cat: 1 5 -> 2


def test_document_frequencies_by_hand_and_cached(tmp_path):
    from falcon_core.data.vocabulary import document_frequencies

    cache = DiskCache(tmp_path / "c")
    v = ListVocabulary(CAPS)
    ex = WordsExtractor()
    df = document_frequencies(v, ex, cache, chunk=3)
    assert (df.n_docs, df.total, df.sampled) == (10, 10, False)
    assert df.words["lie"] == 6 and df.words["dog"] == 3 and df.words["cat"] == 2
    assert df.share("lie") == 0.6 and df.share("nothing") == 0.0
    assert df.phrases["dog lie"] == 1
    assert df.frequent(0.5) == ({"lie": 0.6}, {})
    assert df.top(3) == [("lie", 0.6), ("cow", 0.3), ("dog", 0.3)]  # ties: by text
    assert ex.seen == 10
    # cached: a second call reads it back, no caption is extracted again
    again = document_frequencies(v, ex, cache, chunk=3)
    assert ex.seen == 10 and again.words == df.words and again.n_docs == 10
    # keyed by the vocabulary and by the extractor
    other = WordsExtractor()
    other.fingerprint = {"fake": 2}
    document_frequencies(v, other, cache)
    assert other.seen == 10


def test_document_frequencies_resume_after_interruption(tmp_path):
    from falcon_core.data.vocabulary import document_frequencies

    cache = DiskCache(tmp_path / "c")
    v = ListVocabulary(CAPS)
    with pytest.raises(RuntimeError):
        document_frequencies(v, WordsExtractor(fail_after=7), cache, chunk=3)
    ex = WordsExtractor()
    df = document_frequencies(v, ex, cache, chunk=3)
    # chunks [0, 3) and [3, 6) were stored before the interruption: only 4 captions are left
    assert ex.seen == 4
    assert df.words["lie"] == 6 and df.n_docs == 10
    assert not list((tmp_path / "c").rglob("document_frequency_parts/*.json"))


def test_document_frequencies_sample_evenly(tmp_path):
    from falcon_core.data.vocabulary import document_frequencies

    ex = WordsExtractor()
    df = document_frequencies(ListVocabulary(CAPS), ex, DiskCache(tmp_path / "c"), sample=4)
    # rows linspace(0, 9, 4) = 0, 3, 6, 9: "dog lie", "dog", "lie fish", "cow"
    assert (df.n_docs, df.total, df.sampled) == (4, 10, True)
    assert df.words == {"dog": 2, "lie": 2, "fish": 1, "cow": 1}
    assert ex.seen == 4


def test_document_frequencies_of_laion_shards(tmp_path):
    from falcon_core.data.vocabulary import document_frequencies

    root = tmp_path / "laion"
    (root / "text_emb").mkdir(parents=True)
    (root / "metadata").mkdir()
    rng = np.random.default_rng(0)
    for s, caps in enumerate([CAPS[:4], CAPS[4:]]):
        np.save(root / "text_emb" / f"text_emb_{s:04d}.npy",
                rng.standard_normal((len(caps), 8)).astype(np.float16))
        pd.DataFrame({"caption": caps}).to_parquet(root / "metadata" / f"metadata_{s:04d}.parquet")
    v = LaionShards(root)
    ex = WordsExtractor()
    df = document_frequencies(v, ex, DiskCache(tmp_path / "c"), chunk=3)
    assert df.n_docs == 10 and df.words["lie"] == 6 and df.words["cow"] == 3
    # the same counts as the caption list: shards are read through vocab.captions()
    df2 = document_frequencies(ListVocabulary(CAPS), WordsExtractor(), DiskCache(tmp_path / "d"))
    assert df.words == df2.words


def test_an_exact_search_holds_one_block_and_its_candidates_never_a_shard(tmp_path, monkeypatch):
    """What bounds the exact search's memory at any shard size: its reads (nothing is mapped)
    are the scan, each row once in reads of at most one block, then the candidates' rows
    (k + MARGIN a query at most); the result equals a plain in-memory matmul."""
    from falcon_core import caption_index as ci

    make_laion(tmp_path / "l", [300, 200], dim=16, seed=3)
    raw16 = np.concatenate([np.load(p) for p in
                            sorted((tmp_path / "l" / "text_emb").glob("*.npy"))])
    E = LaionShards(tmp_path / "l").embeddings
    reads = _record_reads(monkeypatch, E)
    row, chunk, k = 16 * 2, 64, 3
    B = np.random.default_rng(4).standard_normal((6, 16)).astype(np.float32)
    B /= np.linalg.norm(B, axis=1, keepdims=True)
    idx, sc = ci.ExactIndex(E, chunk=chunk).search(B, k)
    # by plain numpy, every row in memory at once
    A = raw16.astype(np.float32)
    A /= np.linalg.norm(A, axis=1, keepdims=True)
    S = B @ A.T
    want = np.stack([np.lexsort((np.arange(len(A)), -s))[:k] for s in S])
    np.testing.assert_array_equal(idx, want)
    np.testing.assert_allclose(sc, np.take_along_axis(S, want, axis=1), atol=1e-5)
    assert max(r[2] for r in reads) <= chunk * row
    total = sum(r[2] for r in reads)
    assert 500 * row < total <= 500 * row + 6 * (k + ci.MARGIN) * row
