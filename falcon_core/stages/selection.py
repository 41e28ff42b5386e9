"""Stage 2: the highly activating images ``T`` of a feature or a group of features.

Three rules (``FalconSettings.high_rule``):

* ``"global"`` (authors): ``T = { j : Hn[j, f] > alpha for every f of the group }`` with one global
  ``alpha = mean(Hn) + 5 * std(Hn)`` over every entry of the (valid rows of the) row-normalised
  matrix. The comparison is strict, as in the paper (``h_ji > alpha``).
* ``"topk"``: the ``top_k`` valid images with the largest summed activation of the group.
  ``Selection.threshold`` is ``None`` (there is no threshold; the description says so).
* ``"quantile"``: images where every feature of the group is strictly above its own quantile
  ``q`` (``np.quantile`` over the valid rows, linear interpolation). The per-feature thresholds
  are in ``Selection.feature_thresholds``; ``Selection.threshold`` reports the smallest of them
  (a single float for displays that want one number).

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
from .common import (as_matrix, best_first, count_images, global_alpha, name_features, valid_mask,
                     validate_features)

RULES = ("global", "topk", "quantile")


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

    ``k_std`` is only used when ``alpha`` is None (to compute it) and in the description.
    """
    Hn = as_matrix(Hn)
    N, r = Hn.shape
    feats = validate_features(features, r)
    v = valid_mask(valid, N)
    if rule not in RULES:
        raise FalconError(f"Unknown rule for highly activating images: {rule!r}.",
                          f"Use one of {', '.join(RULES)}.")
    if max_images is None:
        max_images = 0
    if max_images < 0:
        raise FalconError(f"max_images={max_images} must be 0 (no cap) or positive.")
    cols = Hn[:, list(feats)].astype(np.float64)
    summed = cols.sum(axis=1)
    who = name_features(feats)
    feature_thresholds: tuple[float, ...] | None = None

    if rule == "global":
        if alpha is None:
            alpha = global_alpha(Hn, k_std, valid)
            how = f"mean + {k_std:g}·std of the normalised matrix"
        else:
            how = "the global threshold"
        alpha = float(alpha)
        passed = v & np.all(cols > alpha, axis=1)
        threshold: float | None = alpha
        feature_thresholds = tuple(alpha for _ in feats)
        cond = f"{who} > α = {alpha:.4g} ({how})"
    elif rule == "topk":
        if top_k is None or top_k < 1:
            raise FalconError(f"top_k={top_k} must be at least 1.")
        cand = np.flatnonzero(v)
        order = best_first(cand, summed[cand])[: int(top_k)]
        passed = np.zeros(N, dtype=bool)
        passed[cand[order]] = True
        threshold = None
        label = "activation" if len(feats) == 1 else "summed activation"
        cond = None
        topk_text = f"the {count_images(int(passed.sum()))} with the highest {label} of {name_features(feats, every=False)} (top-{int(top_k)} rule, no threshold)"
    else:  # quantile
        if not (0.0 < quantile < 1.0):
            raise FalconError(f"quantile={quantile} must be between 0 and 1 (exclusive).")
        if not v.any():
            q = np.full(len(feats), np.inf)
        else:
            q = np.quantile(cols[v], quantile, axis=0)
        feature_thresholds = tuple(float(x) for x in q)
        passed = v & np.all(cols > q[None, :], axis=1)
        threshold = float(np.min(q)) if len(q) else None
        qs = ", ".join(f"{f}: {t:.4g}" for f, t in zip(feats, feature_thresholds))
        cond = f"{who} above its own {quantile:g} quantile ({qs})"

    idx = np.flatnonzero(passed)
    act = summed[idx]
    o = best_first(idx, act)
    idx, act = idx[o], act[o]
    n_passed = int(len(idx))
    if max_images and n_passed > max_images:
        idx, act = idx[:max_images], act[:max_images]

    if rule == "topk":
        if n_passed == 0:
            description = "No usable image to select (every image is marked unreadable)."
        else:
            description = f"Using {topk_text}"
            if len(idx) < n_passed:
                description += f"; the {len(idx)} highest are used"
            description += "."
    elif n_passed == 0:
        hint = "; try the top-k or quantile rule" if rule == "global" else ""
        description = f"No image has {cond}{hint}."
    else:
        verb = "has" if n_passed == 1 else "have"
        use = "it is used" if n_passed == 1 else "all are used"
        if len(idx) < n_passed:
            use = f"the {len(idx)} highest are used"
        description = f"{count_images(n_passed)} {verb} {cond}; {use}."

    return Selection(
        indices=idx.astype(np.int64),
        activations=act.astype(np.float64),
        rule=rule,
        threshold=threshold,
        n_passed=n_passed,
        description=description,
        feature_thresholds=feature_thresholds,
    )
