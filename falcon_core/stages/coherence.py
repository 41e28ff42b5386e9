"""Stage 7: is a feature interpretable? The coherence of the CLIP embeddings of its crops.

``coherence(B)`` is the mean pairwise cosine similarity of the rows of ``B`` over the
**off-diagonal** pairs ``i != j`` (the authors' mean included the diagonal of ones, which inflates
small sets). Rows are L2-normalised first; an all-zero row has similarity 0 with everything. Fewer
than two rows give NaN, and NaN is never interpretable.
"""

from __future__ import annotations

import math

import numpy as np

from .common import unit_rows


def coherence(B: np.ndarray) -> float:
    B = np.asarray(B, dtype=np.float64)
    if B.ndim != 2 or B.shape[0] < 2:
        return float("nan")
    Bn = unit_rows(B)
    S = Bn @ Bn.T
    n = S.shape[0]
    off = S.sum() - np.trace(S)
    return float(off / (n * (n - 1)))


def is_interpretable(c: float, threshold: float = 0.8) -> bool:
    """``c > threshold`` (strict, as the authors' "> 0.8"); NaN is not interpretable."""
    return c is not None and not math.isnan(c) and c > threshold
