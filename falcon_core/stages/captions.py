"""Stage 4: the top captions of each image, by cosine similarity, in one scan of the vocabulary.

``C = B · Aᵀ`` with ``B`` (n, k) the L2-normalised CLIP image embeddings and ``A`` (M, k) the
L2-normalised text embeddings. ``A`` may be a float16 ``np.memmap`` of millions of rows, or
anything with a ``blocks(chunk)`` method (:class:`~falcon_core.data.vocabulary.ShardedEmbeddings`:
LAION shards read block by block): it is read ``chunk`` rows at a time, each block converted to
float32 into a reused buffer, multiplied with BLAS, and only the entries that can still enter an
image's top k (at least the k-th best score so far) are kept, so memory stays at O(n·chunk) and
the work per block after the first is one comparison pass. All the images of a call go through
the same scan: stack the T and L images of an explanation (or many features' images) into one
``B`` rather than scanning once per set.

The scores are the cosine similarities themselves (never a softmax, which the authors' code took
per shard and made scores of different shards incomparable). Ties are broken by the lower caption
index; NaN similarities rank last (as -inf).
"""

from __future__ import annotations

import sys
import warnings

import numpy as np

from ..errors import FalconError


def to_float32(block: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``block`` as float32, written into ``out`` (same shape) unless it is float32 already.

    float16 -> float32 goes through torch when torch is loaded (it converts with the CPU's F16C
    instructions, several times faster than numpy's element loop); numpy otherwise."""
    if block.dtype == np.float32:
        return block
    if block.dtype == np.float16 and "torch" in sys.modules and block.flags.c_contiguous:
        torch = sys.modules["torch"]
        with warnings.catch_warnings():  # a read-only memmap: torch only reads it
            warnings.simplefilter("ignore", UserWarning)
            torch.from_numpy(out).copy_(torch.from_numpy(block))
        return out
    np.copyto(out, block, casting="unsafe")
    return out


def scan_product(B: np.ndarray, block: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``B @ block.T`` (float32) written into ``out``: through torch when torch is loaded, numpy
    otherwise. numpy's OpenBLAS leaves its worker thread spinning for ~0.1 s of CPU after each
    product, all through the partition and merge that follow a block: in a precompute's shared
    search of the demo vocabulary (90 calls of 32 rows over 24,000 captions) that was half the
    search's CPU time, and its wall time on a loaded machine (1.19 -> 0.54 s CPU, 1.33 -> 0.53 s
    wall, same results). The scan's scores only choose the candidates that are scored again
    exactly (:func:`falcon_core.caption_index.pair_scores`), so the product's rounding (which
    differs between the two libraries in the last bit) does not reach a result unless
    ``k + MARGIN`` captions tie within float32 noise (:data:`falcon_core.caption_index.MARGIN`).
    LAION-format shards (read block by block) still go through numpy: their row of
    ``bench speed`` (search_exact) was measured that way."""
    torch = sys.modules.get("torch")
    if torch is None or B.dtype != np.float32 or block.dtype != np.float32 \
            or out.dtype != np.float32:
        return np.matmul(B, block.T, out=out)
    with warnings.catch_warnings():  # a read-only memmap block: torch only reads it
        warnings.simplefilter("ignore", UserWarning)
        torch.mm(torch.from_numpy(B), torch.from_numpy(block).T, out=torch.from_numpy(out))
    return out


def _array_blocks(A, chunk: int):
    rows = A.shape[0]
    buf = None
    for start in range(0, rows, chunk):
        a = np.asarray(A[start:start + chunk])
        if a.dtype != np.float32:
            if buf is None or buf.shape[0] < a.shape[0]:
                buf = np.empty((min(chunk, rows), a.shape[1]), dtype=np.float32)
            a = to_float32(np.ascontiguousarray(a), buf[:a.shape[0]])
        yield start, a, None


def _merge(rows, idx, sc, k):
    """Keep the k best (score desc, index asc) entries of each row of a flat candidate list."""
    order = np.lexsort((idx, -sc, rows))
    rows, idx, sc = rows[order], idx[order], sc[order]
    starts = np.searchsorted(rows, rows, side="left")
    rank = np.arange(len(rows)) - starts
    keep = rank < k
    return rows[keep], idx[keep], sc[keep]


def top_captions(B: np.ndarray, A, k: int = 5, chunk: int = 65536) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` most similar captions of each row of ``B``: ``(idx int64 (n,k), scores float32 (n,k))``."""
    B = np.ascontiguousarray(B, dtype=np.float32)
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

    sharded = hasattr(A, "blocks")
    blocks = A.blocks(chunk) if sharded else _array_blocks(A, chunk)
    S_buf = np.empty((n, min(chunk, M)), dtype=np.float32)
    rows = np.zeros(0, dtype=np.int64)
    idx = np.zeros(0, dtype=np.int64)
    sc = np.zeros(0, dtype=np.float32)
    seen = 0
    for start, a, inv in blocks:
        c = a.shape[0]
        # an array in memory (or mapped) through scan_product; LAION-format shards through
        # numpy, as measured against the bare search of `bench speed` (search_exact row)
        S = np.matmul(B, a.T, out=S_buf[:, :c]) if sharded else scan_product(B, a, S_buf[:, :c])
        if inv is not None:
            S *= inv  # the rows' inverse norms: cosine without rescaling the block
        nan = np.isnan(S)
        if nan.any():
            S[nan] = -np.inf
        if seen < k:
            # rows not full yet: this block's top min(k, c), ties at the k-th included
            kk = min(k, c)
            if c > kk:
                kth = np.partition(S, c - kk, axis=1)[:, c - kk]
                r_new, c_new = np.nonzero(S >= kth[:, None])
            else:
                r_new, c_new = np.nonzero(np.ones_like(S, dtype=bool))
        else:
            # only what reaches the k-th best score so far can enter (ties: lower index wins
            # in the merge)
            thr = sc.reshape(n, k)[:, k - 1]
            r_new, c_new = np.nonzero(S >= thr[:, None])
        seen += c
        if r_new.size == 0:
            continue
        rows = np.concatenate([rows, r_new.astype(np.int64)])
        idx = np.concatenate([idx, c_new.astype(np.int64) + start])
        sc = np.concatenate([sc, S[r_new, c_new]])
        rows, idx, sc = _merge(rows, idx, sc, k)
    return idx.reshape(n, k), sc.reshape(n, k).astype(np.float32)


def split_rows(idx: np.ndarray, scores: np.ndarray, sizes) -> list[tuple[np.ndarray, np.ndarray]]:
    """Undo the stacking of several sets of images searched together: the ``(idx, scores)`` of
    each set, in order (``sizes``: the number of rows of each)."""
    out, start = [], 0
    for n in sizes:
        out.append((idx[start:start + int(n)], scores[start:start + int(n)]))
        start += int(n)
    if start != len(idx):
        raise ValueError(f"sizes add up to {start}, but {len(idx)} rows were searched")
    return out
