"""Stage 4 (captions.py): chunked top-k equals a brute-force sort."""

import numpy as np
import pytest

from falcon_core.errors import FalconError
from falcon_core.stages.captions import top_captions


def _norm(X):
    return (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32)


def _brute(B, A, k):
    S = B.astype(np.float32) @ np.asarray(A, dtype=np.float32).T
    idx = np.stack([np.lexsort((np.arange(S.shape[1]), -s))[:k] for s in S])
    return idx, np.take_along_axis(S, idx, axis=1)


@pytest.mark.parametrize("chunk", [1, 7, 128, 100000])
def test_random_equals_brute_force(chunk):
    rng = np.random.default_rng(0)
    B = _norm(rng.normal(size=(9, 16)))
    A = _norm(rng.normal(size=(1000, 16)))
    idx, sc = top_captions(B, A, k=5, chunk=chunk)
    bi, bs = _brute(B, A, 5)
    assert idx.dtype == np.int64 and sc.dtype == np.float32 and idx.shape == (9, 5)
    np.testing.assert_array_equal(idx, bi)
    np.testing.assert_allclose(sc, bs, rtol=1e-6, atol=1e-6)
    assert np.all(np.diff(sc, axis=1) <= 0)


def test_float16_memmap(tmp_path):
    rng = np.random.default_rng(1)
    B = _norm(rng.normal(size=(4, 32)))
    A16 = _norm(rng.normal(size=(777, 32))).astype(np.float16)
    mm = np.memmap(tmp_path / "a.f16", dtype=np.float16, mode="w+", shape=A16.shape)
    mm[:] = A16
    mm.flush()
    mm = np.memmap(tmp_path / "a.f16", dtype=np.float16, mode="r", shape=A16.shape)
    idx, sc = top_captions(B, mm, k=5, chunk=100)
    bi, bs = _brute(B, A16, 5)
    np.testing.assert_array_equal(idx, bi)
    np.testing.assert_allclose(sc, bs, rtol=1e-6, atol=1e-6)


def test_ties_lower_index_and_k_larger_than_m():
    e0, e1 = [1.0, 0.0], [0.0, 1.0]
    A = np.array([e0, e1, e0, e1, e0], dtype=np.float32)  # scores for B = e0: 1 0 1 0 1
    B = np.array([e0], dtype=np.float32)
    idx, sc = top_captions(B, A, k=3, chunk=2)  # ties cross chunk boundaries
    assert idx.tolist() == [[0, 2, 4]]
    assert sc.tolist() == [[1.0, 1.0, 1.0]]
    idx, sc = top_captions(B, A, k=10, chunk=2)  # k > M -> M
    assert idx.tolist() == [[0, 2, 4, 1, 3]]
    assert sc.shape == (1, 5)


def test_cosine_not_softmax():
    A = np.array([[1.0, 0.0], [0.6, 0.8]], dtype=np.float32)
    B = np.array([[0.6, 0.8]], dtype=np.float32)
    idx, sc = top_captions(B, A, k=2)
    assert idx.tolist() == [[1, 0]]
    np.testing.assert_allclose(sc, [[1.0, 0.6]], rtol=1e-6)


def test_empty_and_errors():
    A = np.eye(3, dtype=np.float32)
    idx, sc = top_captions(np.zeros((0, 3), np.float32), A, k=5)
    assert idx.shape == (0, 3) and sc.shape == (0, 3)
    assert idx.dtype == np.int64 and sc.dtype == np.float32
    idx, sc = top_captions(np.zeros((0, 3), np.float32), np.eye(8, 3, dtype=np.float32), k=5)
    assert idx.shape == (0, 5)
    with pytest.raises(FalconError):
        top_captions(np.ones((1, 4), np.float32), A)
    with pytest.raises(FalconError):
        top_captions(np.ones((1, 3), np.float32), np.zeros((0, 3), np.float32))
