"""What the stages over the representation matrix share.

- checking their inputs: the matrix (:func:`as_matrix`), the mask of its usable rows
  (:func:`valid_mask`: unreadable images are never selected and never enter a statistic) and a
  feature or group (:func:`validate_features`);
- the global statistics of ``Hn`` over the valid rows: Stage 2's ``α = mean + k·std``
  (:func:`global_alpha`, the authors' threshold) and Stage 6's default ``ε`` (:func:`global_mean`);
- ordering images best first (:func:`best_first`) and naming features and counts in the
  descriptions the app and the command line show.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..errors import FalconError


def as_matrix(Hn: np.ndarray) -> np.ndarray:
    """``Hn`` as a 2-D array (images x features), or a clear error."""
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
            raise FalconError(f"Feature {f} is out of range: this layer has {num_features} "
                              f"features, numbered 0 to {num_features - 1}.",
                              "Pick a feature number in that range.")
        out.append(f)
    if len(set(out)) != len(out):
        dup = sorted({f for f in out if out.count(f) > 1})
        raise FalconError(
            f"A group with a repeated index: {', '.join(map(str, dup))} appears more than once.",
            "List each feature of a group once.",
        )
    return tuple(out)


def unit_rows(X: np.ndarray) -> np.ndarray:
    """The rows of ``X`` (or the vector ``X``) L2-normalised in float64; an all-zero row stays
    zero (its similarity with anything is 0)."""
    X = np.asarray(X, dtype=np.float64)
    n = np.linalg.norm(X, axis=-1, keepdims=True)
    return np.divide(X, n, out=np.zeros_like(X), where=n > 0)


def global_alpha(Hn: np.ndarray, k_std: float = 5.0, valid: np.ndarray | None = None) -> float:
    """``mean + k_std * std`` over every entry of the valid rows of ``Hn`` (authors' alpha)."""
    Hn = as_matrix(Hn)
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
    Hn = as_matrix(Hn)
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


def column_blocks(Hn: np.ndarray) -> list[slice]:
    """Slices of columns of about 4 M entries each, so that per-feature work over every feature
    (Stage 8's signatures) makes no float64 copy of a large matrix."""
    step = max(1, 2**22 // max(1, Hn.shape[0]))
    return [slice(c, min(c + step, Hn.shape[1])) for c in range(0, Hn.shape[1], step)]


def above(Hn: np.ndarray, thresholds: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Boolean (N, r): ``Hn[j, f] > thresholds[f]`` compared in float64 (as Stage 2 compares),
    False on the rows that are not valid."""
    thr = np.asarray(thresholds, dtype=np.float64).reshape(-1)
    mask = np.zeros(Hn.shape, dtype=bool)
    for b in column_blocks(Hn):
        mask[:, b] = Hn[:, b].astype(np.float64) > thr[None, b]
    mask &= np.asarray(valid, dtype=bool)[:, None]
    return mask


def best_first(indices: np.ndarray, values: np.ndarray) -> np.ndarray:
    """The permutation sorting by ``values`` descending, ties by lower index."""
    return np.lexsort((indices, -values))


def name_features(feats: tuple[int, ...], every: bool = True) -> str:
    """How a description names a feature or group: "feature 3", "every feature of {3, 9}"."""
    if len(feats) == 1:
        return f"feature {feats[0]}"
    joined = "{" + ", ".join(map(str, feats)) + "}"
    return f"every feature of {joined}" if every else f"features {joined}"


def count_images(n: int) -> str:
    """"1 image", "5 images"."""
    return "1 image" if n == 1 else f"{n} images"
