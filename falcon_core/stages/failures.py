"""Stage 9: which features drive a linear head's (wrong) decision.

With a linear head ``logits = H · Uᵀ + b``, the contribution of feature ``f`` to class ``c`` for
an image with representation ``h`` is ``h[f] · U[c, f]`` (``h ∘ U[c]``). ``h`` must be the
representation the head sees (un-normalised ``H``, not ``Hn``). Rankings are by contribution,
descending, ties by lower feature index; the predicted class is the argmax of the logits (ties:
lower class index). Labels below 0 mean "unknown" and are skipped.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import FalconError


def _head(U, b=None):
    U = np.asarray(U, dtype=np.float64)
    if U.ndim != 2:
        raise FalconError(f"The head's weight must be 2-D (classes x features); got {U.shape}.")
    if b is None:
        b = np.zeros(U.shape[0])
    b = np.asarray(b, dtype=np.float64).reshape(-1)
    if b.shape[0] != U.shape[0]:
        raise FalconError(f"The head has {U.shape[0]} classes but {b.shape[0]} biases.")
    return U, b


def _check_class(cls, o):
    cls = int(cls)
    if cls < 0 or cls >= o:
        raise FalconError(f"Class {cls} is out of range; the head has classes 0 to {o - 1}.")
    return cls


def contributions(h: np.ndarray, U: np.ndarray, cls: int) -> np.ndarray:
    """``h ∘ U[cls]``: each feature's contribution to the logit of ``cls`` (shape (r,))."""
    h = np.asarray(h, dtype=np.float64).reshape(-1)
    U, _ = _head(U)
    if U.shape[1] != h.shape[0]:
        raise FalconError(f"The head expects {U.shape[1]} features but the representation has {h.shape[0]}.",
                          "Explain the layer the head reads (the pooled layer before the classifier).")
    return h * U[_check_class(cls, U.shape[0])]


def top_features(h: np.ndarray, U: np.ndarray, cls: int, k: int | None = None) -> list[tuple[int, float]]:
    """Features ranked by contribution to ``cls``, descending; the first ``k`` (all if None/<=0)."""
    c = contributions(h, U, cls)
    order = np.lexsort((np.arange(len(c)), -c))
    if k is not None and k > 0:
        order = order[:k]
    return [(int(f), float(c[f])) for f in order]


def predict(H: np.ndarray, U: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    H = np.asarray(H, dtype=np.float64)
    U, b = _head(U, b)
    if H.ndim == 1:
        H = H[None, :]
    if H.shape[1] != U.shape[1]:
        raise FalconError(f"The head expects {U.shape[1]} features but the representation has {H.shape[1]}.",
                          "Explain the layer the head reads (the pooled layer before the classifier).")
    return np.argmax(H @ U.T + b, axis=1)


def misclassified(H: np.ndarray, U: np.ndarray, b: np.ndarray | None, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(indices, predictions)`` of the images with a known label (>= 0) that the head gets wrong."""
    labels = np.asarray(labels).reshape(-1).astype(np.int64)
    pred = predict(H, U, b)
    if labels.shape[0] != pred.shape[0]:
        raise FalconError(f"{labels.shape[0]} labels for {pred.shape[0]} images.")
    o = np.asarray(U).shape[0]
    if (labels >= o).any():
        raise FalconError(
            f"Some labels ({int(labels.max())}) are beyond the head's {o} classes.",
            "The probe set's classes must be the classes of the head (e.g. ImageNet labels for an ImageNet head).",
        )
    wrong = (labels >= 0) & (pred != labels)
    idx = np.flatnonzero(wrong).astype(np.int64)
    return idx, pred[idx].astype(np.int64)


@dataclass
class FailureDrivers:
    index: int
    true_class: int
    predicted_class: int
    toward_predicted: list[tuple[int, float]]
    toward_true: list[tuple[int, float]]
    logits: np.ndarray | None = field(default=None, repr=False)


def failure_drivers(h: np.ndarray, U: np.ndarray, b: np.ndarray | None, true_class: int,
                    k: int = 5, index: int = -1) -> FailureDrivers:
    """The top ``k`` features toward the predicted class and toward the true class of one image."""
    h = np.asarray(h, dtype=np.float64).reshape(-1)
    U2, b2 = _head(U, b)
    true_class = _check_class(true_class, U2.shape[0])
    logits = U2 @ h + b2 if U2.shape[1] == h.shape[0] else None
    if logits is None:
        contributions(h, U2, 0)  # raises the clear error
    pred = int(np.argmax(logits))
    return FailureDrivers(
        index=int(index),
        true_class=true_class,
        predicted_class=pred,
        toward_predicted=top_features(h, U2, pred, k),
        toward_true=top_features(h, U2, true_class, k),
        logits=logits,
    )
