"""Per feature: the ``top_k`` valid images with the largest (summed) activation of the group.
There is no threshold; the description says so."""

from __future__ import annotations

import numpy as np

from ...errors import FalconError
from ..common import best_first, column_blocks, count_images, name_features
from .base import HighRule, group_columns


class TopK(HighRule):
    name = "topk"

    def __init__(self, top_k: int = 20):
        super().__init__()
        if top_k is None or top_k < 1:
            raise FalconError(f"top_k={top_k} must be at least 1.")
        self.top_k = int(top_k)

    def passed(self, Hn, feats, valid):
        summed = group_columns(Hn, feats).sum(axis=1)
        candidates = np.flatnonzero(valid)
        best = candidates[best_first(candidates, summed[candidates])[: self.top_k]]
        mask = np.zeros(Hn.shape[0], dtype=bool)
        mask[best] = True
        return mask

    def members(self, Hn, valid):
        """Every feature's ``top_k`` valid images at once: above the k-th largest value of the
        column, then as many of the images equal to it as are needed, lower index first (the
        order of :func:`best_first`)."""
        N, r = Hn.shape
        k = self.top_k
        if k >= int(valid.sum()):
            return np.repeat(valid[:, None], r, axis=1)
        mask = np.zeros((N, r), dtype=bool)
        for b in column_blocks(Hn):
            X = Hn[:, b].astype(np.float64)
            X[~valid] = -np.inf
            kth = -np.partition(-X, k - 1, axis=0)[k - 1]
            higher = X > kth[None, :]
            need = k - higher.sum(axis=0)
            tied = (X == kth[None, :]) & valid[:, None]
            mask[:, b] = higher | (tied & (np.cumsum(tied, axis=0) <= need[None, :]))
        return mask

    def describe(self, feats, n_passed, n_used):
        if n_passed == 0:
            return "No usable image to select (every image is marked unreadable)."
        label = "activation" if len(feats) == 1 else "summed activation"
        text = (f"Using the {count_images(n_passed)} with the highest {label} of "
                f"{name_features(feats, every=False)} (top-{self.top_k} rule, no threshold)")
        if n_used < n_passed:
            text += f"; the {n_used} highest are used"
        return text + "."
