"""Caption search indexes (falcon_core/caption_index.py): exact equals a brute force worked out
with plain numpy; IVF-PQ reaches its recall on small clustered data, scores its candidates
exactly, is cached, verified and resumable; T and L go through one search."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

from falcon_core import caption_index as ci
from falcon_core.cache import DiskCache
from falcon_core.data.vocabulary import LaionShards, ListVocabulary
from falcon_core.explainer_stages import score_caption_sets, score_captions
from falcon_core.stages import captions as captions_stage


def write_shards(root, blocks):
    """LAION-format shards of the given float16 row blocks (captions 'row <i>')."""
    (root / "text_emb").mkdir(parents=True)
    (root / "metadata").mkdir(parents=True)
    start = 0
    for s, e in enumerate(blocks):
        np.save(root / "text_emb" / f"text_emb_{s:04d}.npy", np.asarray(e, np.float16))
        pd.DataFrame({"caption": [f"row {start + i}" for i in range(len(e))]}).to_parquet(
            root / "metadata" / f"metadata_{s:04d}.parquet")
        start += len(e)
    return root


def brute(B, A, k):
    """Cosine top-k by a full sort: score descending, then index ascending."""
    A = np.asarray(A, np.float32)
    A = A / np.linalg.norm(A, axis=1, keepdims=True)
    S = np.asarray(B, np.float32) @ A.T
    idx = np.stack([np.lexsort((np.arange(len(A)), -s))[:k] for s in S])
    return idx, np.take_along_axis(S, idx, axis=1)


def test_exact_by_hand_on_unnormalised_shards(tmp_path):
    # cosines with q = (0.6, 0.8): row 2 -> 1.0, row 1 -> 0.8, row 0 -> 0.6, row 3 -> -0.6;
    # the rows are stored at other lengths: the index must score cosines, not dot products
    rows = [[[3.0, 0.0], [0.0, 0.5]], [[1.2, 1.6]], [[-4.0, 0.0]]]
    v = LaionShards(write_shards(tmp_path / "l", rows))
    idx, sc = ci.ExactIndex(v.embeddings, chunk=1).search(np.array([[0.6, 0.8]]), 4)
    assert idx.tolist() == [[2, 1, 0, 3]]
    np.testing.assert_allclose(sc, [[1.0, 0.8, 0.6, -0.6]], atol=1e-3)


@pytest.mark.parametrize("chunk", [3, 50, 4096])
def test_exact_over_shards_equals_brute_force(tmp_path, chunk):
    rng = np.random.default_rng(0)
    blocks = [rng.normal(size=(n, 16)) * rng.uniform(0.5, 2.0, size=(n, 1)) for n in (70, 1, 45)]
    v = LaionShards(write_shards(tmp_path / "l", blocks))
    A16 = np.concatenate([np.asarray(b, np.float16) for b in blocks])
    B = rng.normal(size=(9, 16)).astype(np.float32)
    B /= np.linalg.norm(B, axis=1, keepdims=True)
    index = ci.ExactIndex(v.embeddings, chunk=chunk)
    for _ in range(2):  # the second scan uses the kept norms
        idx, sc = index.search(B, 5)
        bi, bs = brute(B, A16, 5)
        np.testing.assert_array_equal(idx, bi)
        np.testing.assert_allclose(sc, bs, atol=1e-5)


def test_stacked_search_equals_separate_searches(tmp_path):
    rng = np.random.default_rng(1)
    A = rng.normal(size=(300, 8)).astype(np.float32)
    A /= np.linalg.norm(A, axis=1, keepdims=True)  # text embeddings come normalised
    index = ci.ExactIndex(A, chunk=64)
    T, L = rng.normal(size=(7, 8)), rng.normal(size=(3, 8))
    i_all, s_all = index.search(np.concatenate([T, L]), 5)
    for part, (i, s) in zip((T, L), ((i_all[:7], s_all[:7]), (i_all[7:], s_all[7:]))):
        bi, bs = brute(part, A, 5)
        np.testing.assert_array_equal(i, bi)
        np.testing.assert_allclose(s, bs, atol=1e-5)


def test_pair_scores_by_hand():
    # q = (0.6, 0.8); rows stored at other lengths: cosines 0.6, 0.8, 1.0; -1 is no candidate
    A = np.array([[3.0, 0.0], [0.0, 0.5], [1.2, 1.6]], np.float16)
    sc = ci.pair_scores(np.array([[0.6, 0.8]], np.float32), np.array([[2, 0, 1, -1]]), A)
    assert sc.dtype == np.float32
    np.testing.assert_allclose(sc[0, :3], [1.0, 0.6, 0.8], atol=1e-6)
    assert sc[0, 3] == -np.inf


def test_a_querys_result_does_not_depend_on_the_others_searched_with_it():
    # float32 matmuls of 1, 5 and 37 rows differ in their last bits; the search must not
    rng = np.random.default_rng(4)
    A = rng.normal(size=(3000, 64)).astype(np.float32)
    A /= np.linalg.norm(A, axis=1, keepdims=True)
    B = rng.normal(size=(37, 64)).astype(np.float32)
    B /= np.linalg.norm(B, axis=1, keepdims=True)
    index = ci.ExactIndex(A, chunk=1000)
    i_all, s_all = index.search(B, 5)
    for q in (0, 11, 36):
        i1, s1 = index.search(B[q:q + 1], 5)
        i5, s5 = index.search(B[q:q + 5], 5)
        np.testing.assert_array_equal(i1[0], i_all[q])
        np.testing.assert_array_equal(s1[0], s_all[q])  # bit for bit
        np.testing.assert_array_equal(s5[0], s_all[q])
    bi, bs = brute(B, A, 5)
    np.testing.assert_array_equal(i_all, bi)
    np.testing.assert_allclose(s_all, bs, atol=1e-6)


def test_a_small_float16_vocabulary_is_scanned_from_one_float32_copy(monkeypatch):
    # cosines with q = (0.6, 0.8): rows 2, 1, 0, 3 -> 1.0, 0.8, 0.6, -0.6 (float16 holds the
    # rows exactly); the copy is made once, on the first search, and gives the same results
    # as the float16 rows converted block by block
    A = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8], [-1.0, 0.0]], np.float16)
    q = np.array([[0.6, 0.8]], np.float32)
    index = ci.ExactIndex(A, chunk=3)
    made = []
    real = np.empty
    monkeypatch.setattr(ci.np, "empty", lambda *a, **k: made.append(a) or real(*a, **k))
    idx, sc = index.search(q, 4)
    index.search(q, 4)
    monkeypatch.setattr(ci.np, "empty", real)
    assert idx.tolist() == [[2, 1, 0, 3]]
    np.testing.assert_allclose(sc, [[1.0, 0.8, 0.6, -0.6]], atol=1e-6)
    rows = index._rows()
    assert rows.dtype == np.float32 and rows.shape == (4, 2) and made.count(((4, 2),)) == 1
    np.testing.assert_array_equal(rows, np.asarray(A, np.float32))
    # the same bits as a scan of the float16 rows themselves, on data that is not exact
    rng = np.random.default_rng(5)
    A = rng.normal(size=(500, 16)).astype(np.float16)
    B = rng.normal(size=(20, 16)).astype(np.float32)
    B /= np.linalg.norm(B, axis=1, keepdims=True)
    kept, scanned = ci.ExactIndex(A, chunk=128), ci.ExactIndex(A, chunk=128)
    scanned._scanned = A  # what an index over a vocabulary above the bound scans
    for got, want in zip(kept.search(B, 5), scanned.search(B, 5)):
        np.testing.assert_array_equal(got, want)
    assert kept._rows().dtype == np.float32


def test_a_vocabulary_above_the_bound_is_not_copied(monkeypatch):
    monkeypatch.setattr(ci, "RESIDENT_FLOAT32_BYTES", 4 * 2 * 3)  # three rows of two floats
    A = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8], [-1.0, 0.0]], np.float16)
    index = ci.ExactIndex(A, chunk=3)
    idx, _ = index.search(np.array([[0.6, 0.8]], np.float32), 2)
    assert idx.tolist() == [[2, 1]]
    assert index._rows() is A  # scanned block by block, as a LAION-size one
    small = ci.ExactIndex(A[:3], chunk=3)
    assert small._rows() is not A and small._rows().dtype == np.float32  # at the bound: kept
    f32 = ci.ExactIndex(np.asarray(A, np.float32))
    assert f32._rows() is f32.A  # float32 already: nothing to copy


def test_the_scan_product_goes_through_torch_when_loaded_and_numpy_otherwise(monkeypatch):
    import sys

    import torch

    rng = np.random.default_rng(6)
    B = rng.normal(size=(5, 8)).astype(np.float32)
    a = rng.normal(size=(9, 8)).astype(np.float32)
    buf = np.full((5, 12), np.nan, np.float32)
    calls = []
    real_mm = torch.mm
    monkeypatch.setattr(torch, "mm", lambda *x, **k: calls.append(1) or real_mm(*x, **k))
    got = captions_stage.scan_product(B, a, buf[:, :9])
    assert calls == [1] and got is not None
    np.testing.assert_allclose(buf[:, :9], B.astype(np.float64) @ a.T.astype(np.float64),
                               rtol=1e-5, atol=1e-5)
    assert np.isnan(buf[:, 9:]).all()  # written only where asked
    monkeypatch.delitem(sys.modules, "torch")
    out = np.empty((5, 9), np.float32)
    captions_stage.scan_product(B, a, out)
    assert calls == [1]  # numpy's product without torch
    np.testing.assert_allclose(out, B @ a.T, rtol=1e-6)


class Extract:
    def extract(self, texts):
        from falcon_core.stages.concepts import CaptionConcepts

        return [CaptionConcepts(words={t.split()[0]}, phrases={t}) for t in texts]


def test_score_caption_sets_is_one_search_and_equals_one_set_at_a_time():
    rng = np.random.default_rng(2)
    A = rng.normal(size=(50, 8)).astype(np.float32)
    A /= np.linalg.norm(A, axis=1, keepdims=True)
    vocab = ListVocabulary([f"w{i % 7} caption {i}" for i in range(50)])

    class Counting(ci.ExactIndex):
        calls = 0

        def search(self, B, k):
            Counting.calls += 1
            return super().search(B, k)

    T, L = rng.normal(size=(5, 8)), rng.normal(size=(2, 8))
    together = score_caption_sets([T, L], Counting(A), vocab, Extract(), 3)
    assert Counting.calls == 1
    assert together[0] == score_captions(T, A, vocab, Extract(), 3)
    assert together[1] == score_captions(L, A, vocab, Extract(), 3)


# ------------------------------------------------------------------------------- IVF-PQ

def clustered(n, dim=32, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(24, dim))
    x = centres[rng.integers(0, 24, n)] + 0.5 * rng.normal(size=(n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


# 6-bit codes: 64 centroids a sub-quantizer, enough for 3,000 training rows; 16 sub-quantizers
# of 2 dimensions (recall@5 0.99 with or without OPQ on this data, 0.90 with 8 of 4)
PARAMS = ci.IVFPQParams(nlist=16, m=16, nbits=6, train_rows=3000, part_rows=1000, nprobe=8,
                        rerank=40)


@pytest.fixture(scope="module")
def ivf_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("ivf")
    X = clustered(3000)
    v = LaionShards(write_shards(root / "l", [X[:1000], X[1000:2200], X[2200:]]))
    Q = clustered(64, seed=5) + 0.3 * np.random.default_rng(9).normal(size=(64, 32))
    Q = (Q / np.linalg.norm(Q, axis=1, keepdims=True)).astype(np.float32)
    return v, np.asarray(X, np.float16), Q, root


def test_default_ivfpq_parameters_follow_faiss_guidance():
    """nlist = 4·sqrt(rows) as a power of two (the low end of faiss's 4·sqrt(N)..16·sqrt(N)),
    trained on 40·nlist rows (within its 30·K..256·K); worked out by hand."""
    assert [ci.default_nlist(n) for n in (0, 100, 10_000, 1_000_000, 400_000_000)] == \
        [16, 32, 512, 4096, 65536]  # 4, 40 -> 32, 400 -> 512, 4000 -> 4096, 80,000 -> the cap
    p = ci.IVFPQParams().resolved(1_000_000, 512)
    assert (p.nlist, p.m, p.train_rows, p.nprobe) == (4096, 64, 163_840, 32)  # 4096 / 128
    assert ci.IVFPQParams().resolved(10_000, 512).nprobe == 8  # 512 / 128 = 4 -> at least 8
    assert 30 * p.nlist <= p.train_rows <= 256 * p.nlist
    with pytest.raises(Exception, match="does not divide"):
        ci.IVFPQParams(m=48).resolved(1_000_000, 512)


def test_ivfpq_recall_and_exact_scores(ivf_data):
    v, X16, Q, root = ivf_data
    index = ci.build_ivfpq(v.embeddings, DiskCache(root / "cache"), "t", PARAMS)
    assert index.ntotal == 3000 and not index.exact
    idx, sc = index.search(Q, 5)
    bi, _ = brute(Q, X16, 5)
    recall = np.mean([len(set(a) & set(b)) / 5 for a, b in zip(idx, bi)])
    assert recall >= 0.95, recall
    # the scores shown are the true cosines of the captions returned (re-ranked exactly)
    A = X16.astype(np.float32)
    A /= np.linalg.norm(A, axis=1, keepdims=True)
    exact = np.take_along_axis(Q @ A.T, idx, axis=1)
    np.testing.assert_allclose(sc, exact, atol=1e-5)
    assert np.all(np.diff(sc, axis=1) <= 0)


def test_ivfpq_is_cached_verified_and_found_by_open_index(ivf_data, monkeypatch):
    v, X16, Q, root = ivf_data
    cache = DiskCache(root / "cache")
    first = ci.build_ivfpq(v.embeddings, cache, "t", PARAMS)
    i1, s1 = first.search(Q, 5)
    import faiss

    def no_training(*a, **k):
        raise AssertionError("rebuilt instead of read from the cache")

    monkeypatch.setattr(faiss, "index_factory", no_training)
    again = ci.open_index("ivfpq", v.embeddings, cache, "t")  # the last build's parameters
    np.testing.assert_array_equal(again.search(Q, 5)[0], i1)
    assert again.fingerprint == first.fingerprint
    monkeypatch.undo()
    # a damaged inverted-list file fails its digest: not opened, rebuilt by build_ivfpq
    data = first.path.with_suffix(".ivfdata")
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    # a new file in its place (as damage on disk would look to the next process): truncating the
    # file in place would pull the pages from under `first`'s live memory map (SIGBUS)
    damaged = data.with_name(data.name + ".damaged")
    damaged.write_bytes(bytes(raw))
    os.replace(damaged, data)
    assert ci.open_ivfpq(v.embeddings, cache, "t", PARAMS) is None
    assert [q["file"] for q in cache.quarantined] == [f"caption_index/{data.name}"]
    assert not data.exists()  # moved aside for a bug report, like any cache file
    rebuilt = ci.build_ivfpq(v.embeddings, cache, "t", PARAMS)
    np.testing.assert_array_equal(rebuilt.search(Q, 5)[0], i1)
    # the files faiss reads carry the cache's trailer (magic, payload length, xxh3-128)
    for f in (rebuilt.path, rebuilt.path.with_suffix(".ivfdata")):
        tail = f.read_bytes()[-32:]
        assert tail[:8] == b"FALCONCK"
        assert int.from_bytes(tail[8:16], "little") == f.stat().st_size - 32


def test_sealed_files_are_verified_before_use(tmp_path):
    import xxhash

    cache = DiskCache(tmp_path / "cache")
    f = tmp_path / "cache" / "caption_index" / "x.index"
    f.parent.mkdir(parents=True)
    f.write_bytes(b"abcdef")
    assert cache.verified_path(f) is None  # no trailer: not a cache file, moved aside
    assert not f.exists() and len(cache.quarantined) == 1
    f.write_bytes(b"abcdef")
    cache.seal(f)
    raw = f.read_bytes()
    assert raw == b"abcdef" + b"FALCONCK" + (6).to_bytes(8, "little") + \
        xxhash.xxh3_128_digest(b"abcdef")
    assert cache.verified_path(f) == f
    f.write_bytes(b"abcdeF" + raw[6:])  # one byte of the payload changed, same length
    assert DiskCache(tmp_path / "cache").verified_path(f) is None
    assert not f.exists()


def test_ivfpq_build_resumes_after_a_failed_part(ivf_data, tmp_path, monkeypatch):
    v, X16, Q, root = ivf_data
    cache = DiskCache(tmp_path / "cache")
    calls = []
    real = ci._AddPart.__call__

    def dying(self, bounds):
        calls.append(bounds)
        if bounds == (1000, 2000):
            raise RuntimeError("killed")
        return real(self, bounds)

    monkeypatch.setattr(ci._AddPart, "__call__", dying)
    with pytest.raises(RuntimeError):
        ci.build_ivfpq(v.embeddings, cache, "t", PARAMS)
    monkeypatch.setattr(ci._AddPart, "__call__", lambda self, b: (calls.append(b), real(self, b))[1])
    calls.clear()
    index = ci.build_ivfpq(v.embeddings, cache, "t", PARAMS)
    assert calls == [(1000, 2000), (2000, 3000)]  # the first part was kept
    bi, _ = brute(Q, X16, 5)
    recall = np.mean([len(set(a) & set(b)) / 5 for a, b in zip(index.search(Q, 5)[0], bi)])
    assert recall >= 0.95


def test_open_index_messages(ivf_data, tmp_path):
    v, _, _, _ = ivf_data
    from falcon_core.errors import FalconError

    with pytest.raises(FalconError, match="not built"):
        ci.open_index("ivfpq", v.embeddings, DiskCache(tmp_path / "empty"), "t")
    with pytest.raises(FalconError, match="Unknown caption index"):
        ci.open_index("hnsw", v.embeddings, DiskCache(tmp_path / "empty"), "t")
    assert isinstance(ci.open_index("exact", v.embeddings, DiskCache(tmp_path), "t"),
                      ci.ExactIndex)


def test_index_build_refuses_out_of_range_options(capsys, monkeypatch):
    from falcon_core import cli

    def no_workspace(args):
        raise AssertionError("built a workspace before checking the options")

    monkeypatch.setattr(cli, "_workspace", no_workspace)
    assert cli.main(["index", "build", "--part-rows", "0", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "--part-rows 0 is out of range" in err and "between 1000 and 100000000" in err
    assert cli.main(["index", "build", "--nlist", "-3", "--no-progress"]) == 2
    assert "--nlist -3 is out of range" in capsys.readouterr().err
