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


def _as_matrix(Hn: np.ndarray) -> np.ndarray:
    Hn = np.asarray(Hn)
    if Hn.ndim != 2:
        raise FalconError(
            f"The representation matrix must be 2-D (images x features); got shape {Hn.shape}."
        )
    return Hn


def valid_mask(valid: np.ndarray | None, n: int) -> np.ndarray:
    """A boolean mask of the usable rows (all rows when ``valid`` is None)."""
    if valid is None:
        return np.ones(n, dtype=bool)
    v = np.asarray(valid, dtype=bool).reshape(-1)
    if v.shape[0] != n:
        raise FalconError(
            f"The validity mask has {v.shape[0]} entries but the matrix has {n} rows."
        )
    return v


def validate_features(features: Sequence[int] | int, num_features: int) -> tuple[int, ...]:
    """Check a feature or group of features against a layer of ``num_features`` features.

    Returns the group as a tuple of Python ints, in the order given.
    """
    if isinstance(features, (int, np.integer)) and not isinstance(features, (bool, np.bool_)):
        features = [int(features)]
    try:
        items = list(features)
    except TypeError:
        raise FalconError(
            f"A feature must be an index or a list of indices; got {features!r}.",
            f"Use integers from 0 to {num_features - 1}.",
        ) from None
    rng = f"the valid range is 0 to {num_features - 1} (this layer has {num_features} features)"
    if not items:
        raise FalconError("No feature was given (an empty group).", f"Pick at least one feature; {rng}.")
    out: list[int] = []
    for f in items:
        if isinstance(f, (bool, np.bool_)) or not isinstance(f, (int, np.integer)):
            # accept integral floats/strings only if they are exact integers
            try:
                g = int(str(f).strip()) if isinstance(f, str) else None
            except ValueError:
                g = None
            if g is None and isinstance(f, (float, np.floating)) and float(f).is_integer():
                g = int(f)
            if g is None:
                raise FalconError(f"Feature {f!r} is not an integer index.", f"Use integers; {rng}.")
            f = g
        f = int(f)
        if f < 0 or f >= num_features:
            raise FalconError(f"Feature {f} is out of range.", f"Pick features from 0 to {num_features - 1}; {rng}.")
        out.append(f)
    if len(set(out)) != len(out):
        dup = sorted({f for f in out if out.count(f) > 1})
        raise FalconError(
            f"A group with a repeated index: {', '.join(map(str, dup))} appears more than once.",
            "List each feature of a group once.",
        )
    return tuple(out)


def global_alpha(Hn: np.ndarray, k_std: float = 5.0, valid: np.ndarray | None = None) -> float:
    """``mean + k_std * std`` over every entry of the valid rows of ``Hn`` (authors' alpha)."""
    Hn = _as_matrix(Hn)
    v = valid_mask(valid, Hn.shape[0])
    mean, std = _mean_std(Hn, v)
    return float(mean + k_std * std)


def _blocks(Hn: np.ndarray, v: np.ndarray) -> list[np.ndarray]:
    rows = np.flatnonzero(v)
    if rows.size == 0 or Hn.shape[1] == 0:
        raise FalconError("There are no usable images to compute the threshold from.",
                          "Check that the probe set has readable images.")
    step = max(1, 2**22 // Hn.shape[1])
    return [rows[i:i + step] for i in range(0, rows.size, step)]


def global_mean(Hn: np.ndarray, valid: np.ndarray | None = None) -> float:
    """The mean of every entry of the valid rows (Stage 6's default epsilon)."""
    Hn = _as_matrix(Hn)
    return _mean_std(Hn, valid_mask(valid, Hn.shape[0]), with_std=False)[0]


def _mean_std(Hn: np.ndarray, v: np.ndarray, with_std: bool = True) -> tuple[float, float]:
    """Mean and population std over row blocks in float64 (no float64 copy of a large matrix)."""
    blocks = _blocks(Hn, v)
    count = int(v.sum()) * Hn.shape[1]
    mean = sum(float(np.sum(Hn[b], dtype=np.float64)) for b in blocks) / count
    if not with_std:
        return mean, float("nan")
    sq = sum(float(np.sum((Hn[b].astype(np.float64) - mean) ** 2)) for b in blocks)
    return mean, float(np.sqrt(sq / count))


def _order(indices: np.ndarray, act: np.ndarray) -> np.ndarray:
    """Permutation sorting by activation descending, then index ascending."""
    return np.lexsort((indices, -act))


def _name(feats: tuple[int, ...], every: bool = True) -> str:
    if len(feats) == 1:
        return f"feature {feats[0]}"
    joined = "{" + ", ".join(map(str, feats)) + "}"
    return f"every feature of {joined}" if every else f"features {joined}"


def _images(n: int) -> str:
    return "1 image" if n == 1 else f"{n} images"


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
    Hn = _as_matrix(Hn)
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
    who = _name(feats)
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
        order = _order(cand, summed[cand])[: int(top_k)]
        passed = np.zeros(N, dtype=bool)
        passed[cand[order]] = True
        threshold = None
        label = "activation" if len(feats) == 1 else "summed activation"
        cond = None
        topk_text = f"the {_images(int(passed.sum()))} with the highest {label} of {_name(feats, every=False)} (top-{int(top_k)} rule, no threshold)"
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
    o = _order(idx, act)
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
        description = f"{_images(n_passed)} {verb} {cond}; {use}."

    return Selection(
        indices=idx.astype(np.int64),
        activations=act.astype(np.float64),
        rule=rule,
        threshold=threshold,
        n_passed=n_passed,
        description=description,
        feature_thresholds=feature_thresholds,
    )
