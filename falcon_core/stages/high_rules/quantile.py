"""Per feature: images where every feature of the group is strictly above its own quantile ``q``
(``np.quantile`` over the valid rows, linear interpolation). ``threshold`` reports the smallest of
the per-feature thresholds (one number for displays that want one)."""

from __future__ import annotations

import numpy as np

from ...errors import FalconError
from ..common import above, column_blocks, name_features
from .base import HighRule, group_columns


class Quantile(HighRule):
    name = "quantile"

    def __init__(self, quantile: float = 0.99):
        super().__init__()
        if not (0.0 < quantile < 1.0):
            raise FalconError(f"quantile={quantile} must be between 0 and 1 (exclusive).")
        self.quantile = quantile

    def passed(self, Hn, feats, valid):
        cols = group_columns(Hn, feats)
        if not valid.any():
            q = np.full(len(feats), np.inf)
        else:
            q = np.quantile(cols[valid], self.quantile, axis=0)
        self.feature_thresholds = tuple(float(x) for x in q)
        self.threshold = float(np.min(q)) if len(q) else None
        return valid & np.all(cols > q[None, :], axis=1)

    def members(self, Hn, valid):
        q = np.full(Hn.shape[1], np.inf)
        if valid.any():
            for b in column_blocks(Hn):
                q[b] = np.quantile(Hn[valid, b].astype(np.float64), self.quantile, axis=0)
        return above(Hn, q, valid)

    def condition(self, feats):
        qs = ", ".join(f"{f}: {t:.4g}" for f, t in zip(feats, self.feature_thresholds))
        return f"{name_features(feats)} above its own {self.quantile:g} quantile ({qs})"
