"""The shape of a Stage 2 rule: which images of a feature (or group) are highly activating.

A rule is made with its own options (``GlobalThreshold(alpha, k_std)``, ``TopK(top_k)``,
``Quantile(quantile)``), then :meth:`HighRule.passed` marks the images that pass and records the
threshold it used, and :meth:`HighRule.describe` says in one sentence which rule produced the set
and how many images passed. Ordering, the cap on the number of images and the
:class:`~falcon_core.stages.selection.Selection` are :func:`~falcon_core.stages.selection.select_high`'s.
"""

from __future__ import annotations

from typing import ClassVar, Sequence

import numpy as np

from ..common import count_images


def group_columns(Hn: np.ndarray, feats: Sequence[int]) -> np.ndarray:
    """The activations of the group's features, (N, len(feats)) in float64."""
    return Hn[:, list(feats)].astype(np.float64)


class HighRule:
    """One rule for T. Subclasses set :attr:`name` and implement :meth:`passed` and
    :meth:`condition` (or :meth:`describe`)."""

    name: ClassVar[str]
    # Said after "No image has <condition>" when nothing passes.
    empty_hint: ClassVar[str] = ""

    def __init__(self) -> None:
        self.threshold: float | None = None  # one number for displays (None: no threshold)
        self.feature_thresholds: tuple[float, ...] | None = None  # one per feature of the group

    def passed(self, Hn: np.ndarray, feats: tuple[int, ...], valid: np.ndarray) -> np.ndarray:
        """Boolean (N,): the valid images that pass; sets the thresholds used."""
        raise NotImplementedError

    def members(self, Hn: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """Boolean (N, r): the rule applied to every feature on its own (column ``f``: the
        images that pass for feature ``f`` alone). Stage 8's signatures and the co-activation map
        use it. This default calls :meth:`passed` once per feature; the built-in rules compute
        the same mask for all features at once."""
        out = np.zeros(Hn.shape, dtype=bool)
        for f in range(Hn.shape[1]):
            out[:, f] = self.passed(Hn, (f,), valid)
        return out

    def condition(self, feats: tuple[int, ...]) -> str:
        """What an image must satisfy, e.g. "feature 3 > α = 0.12 (the global threshold)"."""
        raise NotImplementedError

    def describe(self, feats: tuple[int, ...], n_passed: int, n_used: int) -> str:
        """Which rule produced T, how many images passed and how many are used."""
        cond = self.condition(feats)
        if n_passed == 0:
            return f"No image has {cond}{self.empty_hint}."
        verb = "has" if n_passed == 1 else "have"
        use = "it is used" if n_passed == 1 else "all are used"
        if n_used < n_passed:
            use = f"the {n_used} highest are used"
        return f"{count_images(n_passed)} {verb} {cond}; {use}."
