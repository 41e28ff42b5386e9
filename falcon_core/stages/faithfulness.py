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
    x = np.asarray(x, dtype=np.float64).ravel()
    n = len(x)
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    # Runs of equal values (vectorised: the app scores ~100 concepts over the probe set per
    # explanation). A run at sorted positions i..j gets the average rank (i + j) / 2 + 1.
    starts = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1]]) if n else np.zeros(0, np.int64)
    ends = np.r_[starts[1:], n] - 1
    run = np.cumsum(np.r_[True, xs[1:] != xs[:-1]]) - 1 if n else np.zeros(0, np.int64)
    ranks = np.empty(n, dtype=np.float64)
    ranks[order] = (starts[run] + ends[run]) / 2.0 + 1.0
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


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's ρ (Pearson correlation of the average ranks); NaN when either is constant."""
    rx, ry = rankdata(x), rankdata(y)
    if len(rx) < 2:
        return math.nan
    rx, ry = rx - rx.mean(), ry - ry.mean()
    den = math.sqrt(float((rx * rx).sum()) * float((ry * ry).sum()))
    return math.nan if den == 0 else float((rx * ry).sum() / den)


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
    if valid is not None:
        keep = np.asarray(valid, dtype=bool).ravel()
        similarity, activation = similarity[keep], activation[keep]
    n = len(similarity)
    k = int(min(max(int(k), 0), max(n - 1, 0)))
    if n < 2 or k < 1:
        return Score(math.nan, math.nan, k, n)
    top = np.argsort(-similarity, kind="stable")[:k]  # ties: the lower index first
    positive = np.zeros(n, dtype=bool)
    positive[top] = True
    return Score(roc_auc(activation, positive), spearman(similarity, activation), k, n)


def concept_scores(views: np.ndarray, concepts: np.ndarray, activation: np.ndarray, k: int,
                   valid: np.ndarray | None = None) -> list[Score]:
    """:func:`score` of each concept alone (one row of ``concepts`` each)."""
    sims = np.asarray(views, dtype=np.float32) @ np.asarray(concepts, dtype=np.float32).T
    return [score(sims[:, c], activation, k, valid) for c in range(sims.shape[1])]
