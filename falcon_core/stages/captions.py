"""Stage 4: the top captions of each image, by cosine similarity, chunked over the vocabulary.

``C = B · Aᵀ`` with ``B`` (n, k) the L2-normalised CLIP image embeddings and ``A`` (M, k) the
L2-normalised text embeddings. ``A`` may be a float16 ``np.memmap`` of millions of rows: it is read
``chunk`` rows at a time, each chunk converted to float32, and a running top-k is kept, so memory
stays at O(n·chunk). The scores are the cosine similarities themselves (never a softmax, which
the authors' code took per shard and made scores of different shards incomparable). Ties are
broken by the lower caption index; NaN similarities rank last.
"""

from __future__ import annotations

import numpy as np

from ..errors import FalconError


def _merge(rows, idx, sc, k):
    """Keep the k best (score desc, index asc) entries of each row of a flat candidate list."""
    order = np.lexsort((idx, -sc, rows))
    rows, idx, sc = rows[order], idx[order], sc[order]
    starts = np.searchsorted(rows, rows, side="left")
    rank = np.arange(len(rows)) - starts
    keep = rank < k
    return rows[keep], idx[keep], sc[keep]


def top_captions(B: np.ndarray, A: np.ndarray, k: int = 5, chunk: int = 65536) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` most similar captions of each row of ``B``: ``(idx int64 (n,k), scores float32 (n,k))``."""
    B = np.asarray(B, dtype=np.float32)
    if B.ndim == 1:
        B = B[None, :]
    if B.ndim != 2 or A.ndim != 2:
        raise FalconError(f"Embeddings must be 2-D; got shapes {B.shape} and {A.shape}.")
    n, dim = B.shape
    M = A.shape[0]
    if M == 0:
        raise FalconError("The caption vocabulary is empty.", "Use a vocabulary with at least one caption.")
    if A.shape[1] != dim:
        raise FalconError(
            f"Image embeddings have {dim} dimensions but caption embeddings have {A.shape[1]}.",
            "The caption embeddings were computed with another CLIP model; recompute them.",
        )
    if k < 1:
        raise FalconError(f"k={k} must be at least 1.")
    if chunk < 1:
        raise FalconError(f"chunk={chunk} must be at least 1.")
    k = min(int(k), M)
    if n == 0:
        return np.zeros((0, k), dtype=np.int64), np.zeros((0, k), dtype=np.float32)

    rows = np.zeros(0, dtype=np.int64)
    idx = np.zeros(0, dtype=np.int64)
    sc = np.zeros(0, dtype=np.float32)
    for start in range(0, M, chunk):
        a = np.asarray(A[start:start + chunk], dtype=np.float32)
        S = B @ a.T  # (n, c) float32
        if np.isnan(S).any():
            S = np.where(np.isnan(S), -np.inf, S).astype(np.float32)
        c = S.shape[1]
        if c > k:
            # the k-th largest of each row; every entry >= it is a candidate (ties included)
            kth = -np.partition(-S, k - 1, axis=1)[:, k - 1]
            r_new, c_new = np.nonzero(S >= kth[:, None])
        else:
            r_new, c_new = np.nonzero(np.ones_like(S, dtype=bool))
        rows = np.concatenate([rows, r_new.astype(np.int64)])
        idx = np.concatenate([idx, c_new.astype(np.int64) + start])
        sc = np.concatenate([sc, S[r_new, c_new]])
        rows, idx, sc = _merge(rows, idx, sc, k)
    return idx.reshape(n, k), sc.reshape(n, k).astype(np.float32)
