"""Stage 2: the highly activating images ``T`` of a feature or a group of features.

The rule (``FalconSettings.high_rule``) is one of :data:`~.high_rules.RULES`, each a small class
in its own module under ``stages/high_rules/``: ``"global"`` (authors: every feature of the group
above one global ``α = mean + 5·std`` of the row-normalised matrix, strict ``>``), ``"topk"`` (the
``top_k`` images with the largest summed activation, no threshold) and ``"quantile"`` (every
feature above its own quantile; ``Selection.feature_thresholds`` has them and
``Selection.threshold`` the smallest).

In every case ``activations`` is the summed activation of the group's features, ``indices`` are
sorted by it, descending (ties: lower image index first), ``n_passed`` counts the images that
passed the rule before the optional cap ``max_images`` (0 = no cap) keeps the best ones, and rows
marked invalid (``valid == False``: unreadable images) are never selected and do not enter the
statistics (alpha, quantiles).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from ..errors import FalconError
from .common import as_matrix, best_first, valid_mask, validate_features
from .high_rules import RULES
from .high_rules.base import group_columns


@dataclass
class Selection:
    indices: np.ndarray  # int64, best first
    activations: np.ndarray  # float, summed activation of the group, same order
    rule: str
    threshold: float | None
    n_passed: int
    description: str
    feature_thresholds: tuple[float, ...] | None = field(default=None)

    def __len__(self) -> int:
        return int(len(self.indices))


def select_high(
    Hn: np.ndarray,
    features: Sequence[int] | int,
    rule: str = "global",
    alpha: float | None = None,
    top_k: int = 20,
    quantile: float = 0.99,
    max_images: int = 0,
    valid: np.ndarray | None = None,
    k_std: float = 5.0,
) -> Selection:
    """Select the highly activating images of a feature or group (see the module docstring).

    ``alpha``/``k_std`` are the global rule's options (``alpha`` None: mean + k_std·std),
    ``top_k`` the top-k rule's, ``quantile`` the quantile rule's.
    """
    Hn = as_matrix(Hn)
    N, r = Hn.shape
    feats = validate_features(features, r)
    v = valid_mask(valid, N)
    if rule not in RULES:
        raise FalconError(f"Unknown rule for highly activating images: {rule!r}.",
                          f"Use one of {', '.join(RULES.names())}.")
    if max_images is None:
        max_images = 0
    if max_images < 0:
        raise FalconError(f"max_images={max_images} must be 0 (no cap) or positive.")
    chosen = RULES.create(rule, alpha=alpha, k_std=k_std, top_k=top_k, quantile=quantile)

    idx = np.flatnonzero(chosen.passed(Hn, feats, v))
    act = group_columns(Hn, feats).sum(axis=1)[idx]
    o = best_first(idx, act)
    idx, act = idx[o], act[o]
    n_passed = int(len(idx))
    if max_images and n_passed > max_images:
        idx, act = idx[:max_images], act[:max_images]

    return Selection(
        indices=idx.astype(np.int64),
        activations=act.astype(np.float64),
        rule=rule,
        threshold=chosen.threshold,
        n_passed=n_passed,
        description=chosen.describe(feats, n_passed, len(idx)),
        feature_thresholds=chosen.feature_thresholds,
    )
