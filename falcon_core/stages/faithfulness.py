"""Faithfulness of an explanation: does the probe image ranking its words give predict the feature?

Beyond the paper (issue 12). An explanation says "feature 42 means *star*, *red*". Check it on the
probe set, with no generator (CoSy, NeurIPS 2024, scores textual neuron explanations the same way
on generated images):

1. Embed the explanation's top concepts as text with the workspace's CLIP (``concepts``: rows
   L2-normalised, shape (c, k)) and take the CLIP embedding of every probe image seen whole
   (``views``: (N, k), L2-normalised).
2. **Concept similarity** of image j: the Word-Score-weighted mean of its cosine similarity to
   each concept, ``s_j = Σ_c w_c cos(v_j, t_c) / Σ_c w_c``. Concepts that the explanation ranks
   higher count more; a plain mean when every weight is equal. (Equivalently: the cosine to the
   weighted sum of the concept directions, up to a factor the same for every image, so the
   ranking is the same.)
3. **ROC AUC**: the images in the top k by concept similarity are the positives, every other
   valid image is a negative, and the feature's activation is the score:
   ``AUC = P(activation of a top-k image > activation of another image)`` (ties count half).
   1.0: every image the concepts pick activates the feature more than any image they do not;
   0.5: the concepts say nothing about the feature.
4. **Rank correlation**: Spearman's ρ between concept similarity and activation over every valid
   image (both ranked with ties averaged): does the whole ordering agree, not only its top?

**k** (:func:`choose_k`): as many images as the explanation was made from (``|T|``: the concepts
should pick out a set the size of the one the feature picked out), but at least 1 % of the valid
probe images so the AUC rests on enough positives (|T| can be 1 under the authors' global α), and
at most all but one (there must be a negative). Ties in concept similarity at the k-th place are
broken by the lower image index (deterministic).

Everything here is arrays in, numbers out; :mod:`falcon_core.explainer` gives it the cached probe
view embeddings and the feature's normalised activations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

#: Bump when the meaning of a stored score changes (part of every explanation's cache key).
VERSION = 1
#: How many top words and top phrases of an explanation are scored together.
TOP_CONCEPTS = 3
#: k is at least this share of the valid probe images.
MIN_SHARE = 0.01

METHOD = (f"Probe images ranked by the CLIP similarity of the whole image to the top "
          f"{TOP_CONCEPTS} words and top {TOP_CONCEPTS} phrases (Word-Score-weighted mean of "
          f"cosines); AUC: the top k of that ranking vs the rest, scored by the feature's "
          f"activation (k = |T|, at least {MIN_SHARE:.0%} of the images); ρ: Spearman rank "
          f"correlation of concept similarity and activation over every image.")


@dataclass(frozen=True)
class Score:
    auc: float  # NaN when it cannot be computed (fewer than two valid images)
    spearman: float  # NaN when either side is constant
    k: int
    n: int  # valid images scored


def rankdata(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n of ``x`` with ties given their average rank (as ``scipy.stats.rankdata``)."""
    return rank_rows(np.asarray(x, dtype=np.float64).reshape(1, -1))[0]


def rank_rows(X: np.ndarray) -> np.ndarray:
    """:func:`rankdata` of each row of the 2-D ``X`` (float64 ranks, ties averaged), in one
    sort of the whole array (the explanation scores its ~30 concepts over the probe set at once).

    A run of equal values at sorted positions i..j gets the average rank (i + j) / 2 + 1; NaNs
    sort last, each its own run (NaN != NaN), as a 1-D sort of each row would place them."""
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError(f"rank_rows takes a 2-D array, got shape {X.shape}")
    m, n = X.shape
    if n == 0:
        return np.zeros((m, 0), dtype=np.float64)
    order = np.argsort(X, axis=1, kind="mergesort")  # stable: the same as each row alone
    xs = np.take_along_axis(X, order, axis=1)
    new = np.ones((m, n), dtype=bool)  # a run starts here
    np.not_equal(xs[:, 1:], xs[:, :-1], out=new[:, 1:])
    pos = np.arange(n, dtype=np.int64)
    starts = np.maximum.accumulate(np.where(new, pos, 0), axis=1)
    last = np.ones((m, n), dtype=bool)  # a run ends here
    last[:, :-1] = new[:, 1:]
    ends = np.minimum.accumulate(np.where(last, pos, n - 1)[:, ::-1], axis=1)[:, ::-1]
    ranks = np.empty((m, n), dtype=np.float64)
    np.put_along_axis(ranks, order, (starts + ends) / 2.0 + 1.0, axis=1)
    return ranks


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """ROC AUC of ``scores`` for the boolean labels ``positive`` (Mann-Whitney U / (n⁺ n⁻), ties
    counted half). NaN when one class is empty."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    positive = np.asarray(positive, dtype=bool).ravel()
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    r = rankdata(scores)
    u = r[positive].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def choose_k(n_valid: int, n_high: int, min_share: float = MIN_SHARE) -> int:
    """k for the AUC: ``|T|``, at least ``min_share`` of the valid images, at most all but one."""
    k = max(int(n_high), int(math.ceil(min_share * n_valid)), 1)
    return max(min(k, int(n_valid) - 1), 0)


def concept_similarity(views: np.ndarray, concepts: np.ndarray,
                       weights: Sequence[float] | None = None) -> np.ndarray:
    """(N,) weighted mean cosine of each view to the concepts (rows: L2-normalised embeddings).

    ``weights``: one per concept (non-negative; None or all zero: equal weights)."""
    views = np.asarray(views, dtype=np.float32)
    concepts = np.asarray(concepts, dtype=np.float32).reshape(-1, views.shape[1])
    if len(concepts) == 0:
        raise ValueError("no concept to score")
    w = np.ones(len(concepts)) if weights is None else np.clip(np.asarray(weights, float), 0, None)
    if w.shape != (len(concepts),):
        raise ValueError(f"{len(w)} weights for {len(concepts)} concepts")
    if w.sum() <= 0:
        w = np.ones(len(concepts))
    return (views @ concepts.T).astype(np.float64) @ (w / w.sum())


def score(similarity: np.ndarray, activation: np.ndarray, k: int,
          valid: np.ndarray | None = None) -> Score:
    """AUC of "top ``k`` by ``similarity``" vs the rest, scored by ``activation``, and Spearman's
    ρ of the two, over the ``valid`` images (all when None)."""
    similarity = np.asarray(similarity, dtype=np.float64).ravel()
    activation = np.asarray(activation, dtype=np.float64).ravel()
    if similarity.shape != activation.shape:
        raise ValueError(f"{len(similarity)} similarities for {len(activation)} activations")
    return score_rows(similarity[None, :], activation, k, valid)[0]


def score_rows(similarities: np.ndarray, activation: np.ndarray, k: int,
               valid: np.ndarray | None = None) -> list[Score]:
    """:func:`score` of each row of ``similarities`` (m, N) against the one ``activation`` (N,),
    with the work the rows share done once (the activation ranked once, not twice per row) and
    the rest in whole-array operations. Gives :func:`score`'s numbers bit for bit whatever the
    rows scored together: every sum is over one row, in the order a 1-D sum takes (a reduction
    over the last axis of a C-ordered array), and the AUC's sums are of half-integer ranks,
    exact in float64."""
    S = np.asarray(similarities, dtype=np.float64)
    if S.ndim == 1:
        S = S[None, :]
    activation = np.asarray(activation, dtype=np.float64).ravel()
    if S.ndim != 2 or S.shape[1] != len(activation):
        raise ValueError(f"similarities of shape {S.shape} for {len(activation)} activations")
    if valid is not None:
        keep = np.asarray(valid, dtype=bool).ravel()
        S, activation = S[:, keep], activation[keep]
    m, n = S.shape
    k = int(min(max(int(k), 0), max(n - 1, 0)))
    if n < 2 or k < 1:
        return [Score(math.nan, math.nan, k, n) for _ in range(m)]
    if m == 0:
        return []
    S = np.ascontiguousarray(S)
    ra = rankdata(activation)
    # AUC: the top k by similarity (ties: the lower index first) are the positives; the
    # Mann-Whitney U of their activation ranks
    top = np.argsort(-S, axis=1, kind="stable")[:, :k]
    u = ra[top].sum(axis=1) - k * (k + 1) / 2.0
    auc = u / (k * (n - k))
    # Spearman: Pearson correlation of the ranks; NaN when either side is constant
    rs = rank_rows(S)
    rs -= rs.mean(axis=1)[:, None]
    ry = ra - ra.mean()
    syy = float((ry * ry).sum())
    sxx = (rs * rs).sum(axis=1)
    sxy = (rs * ry).sum(axis=1)
    out = []
    for i in range(m):
        den = math.sqrt(float(sxx[i]) * syy)
        rho = math.nan if den == 0 else float(sxy[i] / den)
        out.append(Score(float(auc[i]), rho, k, n))
    return out


def concept_products(views: np.ndarray, concepts: np.ndarray) -> np.ndarray:
    """(N, c) float32 cosine of each view to each concept (rows: L2-normalised embeddings)."""
    return np.asarray(views, dtype=np.float32) @ np.asarray(concepts, dtype=np.float32).T


def concept_scores(views: np.ndarray, concepts: np.ndarray, activation: np.ndarray, k: int,
                   valid: np.ndarray | None = None) -> list[Score]:
    """:func:`score` of each concept alone (one row of ``concepts`` each), all in one
    :func:`score_rows`."""
    return score_rows(concept_products(views, concepts).T, activation, k, valid)
