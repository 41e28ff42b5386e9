"""The authors' rule: ``T = { j : Hn[j, f] > α for every f of the group }`` with one global
``α = mean(Hn) + k·std(Hn)`` over every entry of the valid rows (strict ``>``, as in the paper)."""

from __future__ import annotations

import numpy as np

from ..common import above, global_alpha, name_features
from .base import HighRule, group_columns


class GlobalThreshold(HighRule):
    name = "global"
    empty_hint = "; try the top-k or quantile rule"

    def __init__(self, alpha: float | None = None, k_std: float = 5.0):
        """``alpha``: the threshold (computed as mean + k_std·std of ``Hn`` when None)."""
        super().__init__()
        self.alpha = alpha
        self.k_std = k_std
        self._how = ""

    def passed(self, Hn, feats, valid):
        if self.alpha is None:
            alpha = global_alpha(Hn, self.k_std, valid)
            self._how = f"mean + {self.k_std:g}·std of the normalised matrix"
        else:
            alpha = self.alpha
            self._how = "the global threshold"
        alpha = float(alpha)
        self.threshold = alpha
        self.feature_thresholds = tuple(alpha for _ in feats)
        return valid & np.all(group_columns(Hn, feats) > alpha, axis=1)

    def members(self, Hn, valid):
        alpha = global_alpha(Hn, self.k_std, valid) if self.alpha is None else float(self.alpha)
        return above(Hn, np.full(Hn.shape[1], alpha), valid)

    def condition(self, feats):
        return f"{name_features(feats)} > α = {self.threshold:.4g} ({self._how})"
