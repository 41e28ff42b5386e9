"""Stage 8: feature groups discovered by activation signature, and co-activation maps.

An image's signature is the sorted tuple of the features with ``Hn[j, f] > alpha`` (strict, as in
Stage 2). A group is every image with exactly that signature; signatures with at least
``min_size`` features and at least ``min_images`` images are kept. ``alpha`` is the global α (a
float) or one threshold per feature (shape (r,)). Groups are sorted by number of images
(descending), then by their features; a group's ``indices`` are sorted by the group's summed
activation, descending (ties: lower index), like Stage 2's selections. Invalid rows never count.

Only the images with at least ``min_size`` high features are grouped in Python (one dictionary
pass over those rows, never over features × images); the rest is vectorised.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import sparse

from ..errors import FalconError
from .common import as_matrix, best_first, valid_mask, validate_features


@dataclass
class Group:
    features: tuple[int, ...]
    indices: np.ndarray  # int64

    @property
    def n_images(self) -> int:
        return int(len(self.indices))


def _thresholds(alpha, r: int) -> np.ndarray:
    a = np.asarray(alpha, dtype=np.float64)
    if a.ndim == 0:
        return np.full(r, float(a))
    a = a.reshape(-1)
    if a.shape[0] != r:
        raise FalconError(f"{a.shape[0]} thresholds for {r} features.")
    return a


def high_mask(Hn: np.ndarray, alpha, valid: np.ndarray | None = None) -> np.ndarray:
    """Boolean (N, r): ``Hn > alpha`` on the valid rows, False on invalid ones."""
    Hn = as_matrix(Hn)
    thr = _thresholds(alpha, Hn.shape[1])
    mask = Hn > thr[None, :]
    v = valid_mask(valid, Hn.shape[0])
    if not v.all():
        mask &= v[:, None]
    return mask


def discover_groups(Hn: np.ndarray, alpha, min_images: int = 11, min_size: int = 2,
                    valid: np.ndarray | None = None) -> list[Group]:
    Hn = as_matrix(Hn)
    mask = high_mask(Hn, alpha, valid)
    counts = mask.sum(axis=1)
    rows_ok = np.flatnonzero(counts >= max(int(min_size), 1))
    if rows_ok.size == 0:
        return []
    sub = mask[rows_ok]
    rr, cc = np.nonzero(sub)  # row-major: features ascending within a row
    bounds = np.cumsum(counts[rows_ok])[:-1]
    members: dict[tuple[int, ...], list[int]] = {}
    for row, feats in zip(rows_ok.tolist(), np.split(cc, bounds)):
        members.setdefault(tuple(feats.tolist()), []).append(row)
    groups = []
    for feats, rows in members.items():
        if len(rows) < min_images:
            continue
        idx = np.asarray(rows, dtype=np.int64)
        act = Hn[np.ix_(idx, list(feats))].astype(np.float64).sum(axis=1)
        idx = idx[best_first(idx, act)]
        groups.append(Group(feats, idx))
    groups.sort(key=lambda g: (-g.n_images, g.features))
    return groups


def _jaccard(mask: np.ndarray) -> np.ndarray:
    m = sparse.csr_matrix(mask.astype(np.float32))
    inter = np.asarray((m.T @ m).todense(), dtype=np.float64)
    cnt = np.diag(inter).copy()
    union = cnt[:, None] + cnt[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def coactivation(Hn: np.ndarray, alpha, valid: np.ndarray | None = None) -> np.ndarray:
    """(r, r) Jaccard index of the high sets of every two features (1 on the diagonal of features
    with at least one high image, 0 where neither feature is ever high). ``alpha``: the global α or
    per-feature thresholds (r,). Computed with a sparse product (the high sets are sparse)."""
    return _jaccard(high_mask(Hn, alpha, valid))


def coactivation_for(Hn: np.ndarray, features: Sequence[int], alpha, valid: np.ndarray | None = None) -> np.ndarray:
    """The co-activation (Jaccard) matrix of a subset of features, in the order given."""
    Hn = as_matrix(Hn)
    feats = list(validate_features(features, Hn.shape[1]))
    thr = _thresholds(alpha, Hn.shape[1])[feats]
    return _jaccard(high_mask(Hn[:, feats], thr, valid))
