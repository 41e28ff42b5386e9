"""Stage 6: lowly activating counterfactual images ``L`` (Eq. 2) and spurious-concept removal.

``L = { j : Hn[j, f] < eps for every f of the group,  Hn[j, V] · h_mu >= beta }`` where ``V`` is
every column but the group's and ``h_mu`` the mean of ``Hn[T, V]`` over the highly activating
images ``T``. As in the authors' code the similarity is the plain dot product of the (already
row-normalised) rows with the group's dimensions removed; nothing is renormalised. ``eps``
defaults to the global mean of ``Hn`` over the valid rows. Images of ``T`` and invalid rows are
never candidates. ``L`` is sorted by similarity, best first (ties: lower index), and capped at
``max_images`` (0 = no cap, as for ``max_high_images``; turn contrast off with
``FalconSettings.contrast``). ``LowSelection.activations`` is the summed activation of the group
features of each L image.

A concept of ``T`` is spurious when its Word Score on ``L`` is ``>= threshold`` (inclusive); a
concept absent from ``L``'s captions has L-score 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..errors import FalconError
from .common import (as_matrix, best_first, count_images, global_mean, name_features, valid_mask,
                     validate_features)


@dataclass
class LowSelection:
    indices: np.ndarray  # int64, most similar first
    activations: np.ndarray  # summed activation of the group features
    similarity: np.ndarray  # Hn[j, V] · h_mu
    low_threshold: float
    beta: float
    n_candidates: int  # images low on every group feature (not in T, valid)
    description: str

    def __len__(self) -> int:
        return int(len(self.indices))


def select_low(
    Hn: np.ndarray,
    features: Sequence[int] | int,
    high_indices: Sequence[int] | np.ndarray,
    low_threshold: float | None = None,
    beta: float = 0.3,
    max_images: int = 10,
    valid: np.ndarray | None = None,
) -> LowSelection:
    Hn = as_matrix(Hn)
    N, r = Hn.shape
    feats = validate_features(features, r)
    v = valid_mask(valid, N)
    high = np.asarray(high_indices, dtype=np.int64).reshape(-1)
    if high.size and (high.min() < 0 or high.max() >= N):
        raise FalconError(f"A highly activating image index is out of range (0 to {N - 1}).")
    if max_images is None:
        max_images = 0
    if max_images < 0:
        raise FalconError(f"max_images={max_images} must be 0 (no cap) or positive.")

    if low_threshold is None:
        eps = global_mean(Hn, v)
        eps_text = "the global mean"
    else:
        eps = float(low_threshold)
        eps_text = "the set threshold"
    beta = float(beta)
    who = name_features(feats)
    empty = np.zeros(0, dtype=np.int64)

    def result(idx, act, sim, n_cand, description):
        return LowSelection(
            indices=np.asarray(idx, dtype=np.int64),
            activations=np.asarray(act, dtype=np.float64),
            similarity=np.asarray(sim, dtype=np.float64),
            low_threshold=eps,
            beta=beta,
            n_candidates=int(n_cand),
            description=description,
        )

    cols = Hn[:, list(feats)].astype(np.float64)
    cand_mask = v & np.all(cols < eps, axis=1)
    cand_mask[high] = False
    cand = np.flatnonzero(cand_mask)
    n_cand = len(cand)
    if high.size == 0:
        return result(empty, [], [], n_cand,
                      "No counterfactual images: there are no highly activating images to contrast with.")
    if n_cand == 0:
        return result(empty, [], [], 0,
                      f"No counterfactual images: no other image has {who} below ε = {eps:.4g} ({eps_text}).")

    # h_mu over V, written as a full-length vector with zeros on the group's dimensions, so that
    # Hn[j] · h_mu_full == Hn[j, V] · h_mu without copying the columns of V
    h_mu = Hn[high].astype(np.float64).mean(axis=0)
    h_mu[list(feats)] = 0.0
    step = max(1, 2**22 // max(r, 1))
    sim = np.concatenate([Hn[cand[i:i + step]].astype(np.float64) @ h_mu
                          for i in range(0, n_cand, step)])
    ok = sim >= beta
    idx, sim = cand[ok], sim[ok]
    o = best_first(idx, sim)
    idx, sim = idx[o], sim[o]
    n_ok = len(idx)
    if max_images and n_ok > max_images:
        idx, sim = idx[:max_images], sim[:max_images]
    act = cols[idx].sum(axis=1)

    low = f"{who} below ε = {eps:.4g} ({eps_text})"
    if n_ok == 0:
        description = (f"No counterfactual images: {count_images(n_cand)} {'has' if n_cand == 1 else 'have'} {low}, but none has a "
                       f"similarity ≥ β = {beta:g} to the highly activating images on the other features.")
    else:
        use = "all are used" if len(idx) == n_ok else f"the {len(idx)} most similar are used"
        if n_ok == 1:
            use = "it is used"
        verb = "has" if n_ok == 1 else "have"
        description = (f"{n_ok} of {n_cand} images with {low} {verb} a similarity ≥ β = {beta:g} to "
                       f"the highly activating images on the other features; {use}.")
    return result(idx, act, sim, n_cand, description)


def split_spurious(
    t_scores: dict[str, float],
    l_scores: dict[str, float],
    threshold: float = 0.1,
) -> tuple[dict[str, float], dict[str, tuple[float, float]]]:
    """Split T's concepts into kept ones and spurious ones (L-score >= threshold).

    Returns ``(kept, removed)``: ``kept[c] = t_score``, ``removed[c] = (t_score, l_score)``; the
    order of ``t_scores`` is preserved in both.
    """
    kept: dict[str, float] = {}
    removed: dict[str, tuple[float, float]] = {}
    for c, t in t_scores.items():
        l_score = float(l_scores.get(c, 0.0))
        if l_score >= threshold:
            removed[c] = (float(t), l_score)
        else:
            kept[c] = float(t)
    return kept, removed
