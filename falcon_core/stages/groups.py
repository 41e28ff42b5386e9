"""Stage 8: feature groups discovered by activation signature, and co-activation maps.

An image's *signature* is the set of features whose highly activating images ``T`` (Stage 2,
one feature at a time) contain it, under the workspace's rule:

* ``"global"`` (authors): ``Hn[j, f] > alpha`` (strict), one global ``alpha``;
* ``"topk"``: ``j`` is among the ``top_k`` valid images of feature ``f`` (ties: lower index);
* ``"quantile"``: ``Hn[j, f]`` is strictly above feature ``f``'s own quantile ``q`` over the
  valid rows (``np.quantile``, linear interpolation);

and, when ``max_images`` caps ``T``, among the ``max_images`` best images of ``f`` as well.
:func:`membership` computes that (N, r) mask for every feature at once with the rule's own
:meth:`~.high_rules.base.HighRule.members`; it is the set ``selection.select_high(Hn, f, ...)``
returns for each ``f`` (a test checks the two agree), so the groups and the co-activation map
follow the rule the explanations use (with the authors' global α, a dense representation such as
the demo backbone's leaves most features with no image and no group at all).

A group is every image with exactly the same signature; signatures with at least ``min_size``
features and at least ``min_images`` images are kept. Groups are sorted by number of images
(descending), then by their features; a group's ``indices`` are sorted by the group's summed
activation, descending (ties: lower index), like Stage 2's selections. Invalid rows never count.

Only the images with at least ``min_size`` high features are grouped in Python (one dictionary
pass over those rows, never over features × images); the rest is vectorised, column block by
column block so that no float64 copy of a large matrix is made.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import sparse

from ..errors import FalconError
from .common import above, as_matrix, best_first, valid_mask, validate_features
from .high_rules import RULES, TopK


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
    """Boolean (N, r): ``Hn > alpha`` (the global α, or one threshold per feature) on the valid
    rows, False on invalid ones. Compared in float64, as Stage 2 compares."""
    Hn = as_matrix(Hn)
    return above(Hn, _thresholds(alpha, Hn.shape[1]), valid_mask(valid, Hn.shape[0]))


def membership(Hn: np.ndarray, rule: str = "global", alpha: float | None = None, top_k: int = 20,
               quantile: float = 0.99, max_images: int = 0, valid: np.ndarray | None = None,
               k_std: float = 5.0) -> np.ndarray:
    """Boolean (N, r): image ``j`` is in ``T`` of feature ``f`` under ``rule`` (see the module
    docstring), with the options of ``select_high``; ``max_images`` > 0 also keeps only each
    feature's ``max_images`` best images, as ``select_high``'s cap does."""
    Hn = as_matrix(Hn)
    if rule not in RULES:
        raise FalconError(f"Unknown rule for highly activating images: {rule!r}.",
                          f"Use one of {', '.join(RULES.names())}.")
    v = valid_mask(valid, Hn.shape[0])
    mask = RULES.create(rule, alpha=alpha, k_std=k_std, top_k=top_k,
                        quantile=quantile).members(Hn, v)
    if max_images and int(max_images) > 0:
        # a threshold rule passes an upper set of each column, so its best max_images are the
        # column's best max_images that pass
        mask &= TopK(int(max_images)).members(Hn, v)
    return mask


def _signature_mask(Hn, alpha, valid, mask) -> np.ndarray:
    if mask is None:
        if alpha is None:
            raise FalconError("Groups need a threshold (alpha) or a membership mask.")
        return high_mask(Hn, alpha, valid)
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != Hn.shape:
        raise FalconError(f"A membership mask of shape {mask.shape} for a matrix of shape "
                          f"{Hn.shape}.")
    v = valid_mask(valid, Hn.shape[0])
    return mask & v[:, None] if not v.all() else mask


def discover_groups(Hn: np.ndarray, alpha=None, min_images: int = 11, min_size: int = 2,
                    valid: np.ndarray | None = None, mask: np.ndarray | None = None) -> list[Group]:
    """Groups of images with the same signature. The signatures come from ``mask`` (N, r) (e.g.
    :func:`membership` under the workspace's rule) or, without one, from ``Hn > alpha``."""
    Hn = as_matrix(Hn)
    mask = _signature_mask(Hn, alpha, valid, mask)
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


def jaccard(mask: np.ndarray) -> np.ndarray:
    """(r, r) Jaccard index of the columns of a boolean (N, r) mask (0 where both are empty)."""
    m = sparse.csr_matrix(mask.astype(np.float32))
    inter = np.asarray((m.T @ m).todense(), dtype=np.float64)
    cnt = np.diag(inter).copy()
    union = cnt[:, None] + cnt[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def coactivation(Hn: np.ndarray, alpha=None, valid: np.ndarray | None = None,
                 mask: np.ndarray | None = None) -> np.ndarray:
    """(r, r) Jaccard index of the high sets of every two features (1 on the diagonal of features
    with at least one high image, 0 where neither feature is ever high). The high sets are the
    columns of ``mask`` (e.g. :func:`membership`), else ``Hn > alpha`` (the global α or one
    threshold per feature). Computed with a sparse product (the high sets are sparse)."""
    Hn = as_matrix(Hn)
    return jaccard(_signature_mask(Hn, alpha, valid, mask))


def coactivation_for(Hn: np.ndarray, features: Sequence[int], alpha, valid: np.ndarray | None = None) -> np.ndarray:
    """The co-activation (Jaccard) matrix of a subset of features, in the order given."""
    Hn = as_matrix(Hn)
    feats = list(validate_features(features, Hn.shape[1]))
    thr = _thresholds(alpha, Hn.shape[1])[feats]
    return jaccard(high_mask(Hn[:, feats], thr, valid))
