"""Two representations of the same probe images, related (issue 12: comparing two models).

The paper transfers concepts from one representation space to another through a linear map
fitted on the probe set. Here, arrays in and arrays out:

- :func:`fit_map`: ridge regression ``Y ≈ X W + b`` (X: one model's representation, N×r_x; Y:
  the other's, N×r_y), both centred on the fitting images (so ``b`` is the intercept, never
  penalised). λ is chosen on held-out images and the result is scored on others it never saw:
  the valid images are split at random (fixed seed) into 60 % fit, 20 % choice of λ, 20 % test;
  for each λ of a grid relative to the scale of X (``λ = a · mean squared singular value of the
  centred fitting X``, a ∈ :data:`LAMBDA_GRID`, so the grid means the same whatever X's units)
  the map is fitted on the fit split and scored on the choice split; the best λ is refitted on
  fit + choice and its R² on the test split is the one reported (overall and per output
  feature).
- :func:`r2`: coefficient of determination, ``1 − Σ residual² / Σ (y − ȳ)²`` over every output
  (variance-weighted), and per output column.
- :func:`correlation`: Pearson correlation of every column of one matrix with every column of
  the other (0 for a constant column).
- :func:`map_weights`: how much each input feature drives each output feature in a fitted map:
  ``|W_ji| · std(X_j) / std(Y_i)`` (the standardised coefficient: units do not matter).
- :func:`top_matches`: for each row of a score matrix, the columns of the highest scores.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LAMBDA_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)
SPLIT = (0.6, 0.2, 0.2)  # fit, choice of λ, test


@dataclass
class RidgeMap:
    W: np.ndarray  # (r_x, r_y)
    b: np.ndarray  # (r_y,)
    lam: float  # the λ chosen (absolute)
    lam_relative: float  # a: λ / mean squared singular value of the centred fitting X
    r2_choice: dict[float, float]  # relative λ -> R² on the choice split
    r2_test: float  # R² on the test split (images never used to fit or choose)
    r2_test_per_feature: np.ndarray  # (r_y,) R² of each output feature on the test split
    n_fit: int
    n_choice: int
    n_test: int

    def predict(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(X, dtype=np.float64) @ self.W + self.b


def split(n: int, seed: int = 0, fractions: tuple[float, float, float] = SPLIT
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices 0..n-1 shuffled with ``seed`` and cut into (fit, choice, test) parts."""
    order = np.random.default_rng(seed).permutation(n)
    n_fit = int(round(fractions[0] * n))
    n_choice = int(round(fractions[1] * n))
    return order[:n_fit], order[n_fit:n_fit + n_choice], order[n_fit + n_choice:]


def ridge(X: np.ndarray, Y: np.ndarray, lam: float) -> tuple[np.ndarray, np.ndarray]:
    """``(W, b)`` minimising ``‖Y − X W − b‖² + λ‖W‖²`` (the intercept b is not penalised)."""
    X = np.asarray(X, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    mx, my = X.mean(axis=0), Y.mean(axis=0)
    U, s, Vt = np.linalg.svd(X - mx, full_matrices=False)
    W = _ridge_from_svd(U, s, Vt, Y - my, lam)
    return W, my - mx @ W


def _ridge_from_svd(U, s, Vt, Yc, lam: float) -> np.ndarray:
    """W of the centred ridge problem from the SVD ``U s Vt`` of centred X (λ = 0: the
    minimum-norm least-squares solution)."""
    if lam > 0:
        d = s / (s * s + lam)
    else:
        tol = 1e-12 * (float(s.max()) if len(s) else 0.0)
        d = np.divide(1.0, s, out=np.zeros_like(s), where=s > tol)
    return Vt.T @ (d[:, None] * (U.T @ Yc))


def r2(Y: np.ndarray, P: np.ndarray) -> tuple[float, np.ndarray]:
    """(overall R², R² per column) of predictions ``P`` of ``Y``. A constant column's R² is 0
    when predicted exactly, else −inf is avoided by reporting NaN."""
    Y = np.asarray(Y, dtype=np.float64).reshape(len(Y), -1)
    P = np.asarray(P, dtype=np.float64).reshape(len(P), -1)
    res = ((Y - P) ** 2).sum(axis=0)
    tot = ((Y - Y.mean(axis=0)) ** 2).sum(axis=0)
    overall = 1.0 - res.sum() / tot.sum() if tot.sum() > 0 else float("nan")
    with np.errstate(divide="ignore", invalid="ignore"):
        per = np.where(tot > 0, 1.0 - res / np.where(tot > 0, tot, 1), np.nan)
    return float(overall), per


def fit_map(X: np.ndarray, Y: np.ndarray, seed: int = 0,
            grid: tuple[float, ...] = LAMBDA_GRID) -> RidgeMap:
    """The ridge map from X to Y, λ chosen on held-out images, scored on others (module doc)."""
    X = np.asarray(X, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    if len(X) != len(Y):
        raise ValueError(f"{len(X)} rows of X for {len(Y)} rows of Y")
    if len(X) < 10:
        raise ValueError(f"{len(X)} images are too few to fit and test a map (need 10)")
    fit, choice, test = split(len(X), seed)
    mx, my = X[fit].mean(axis=0), Y[fit].mean(axis=0)
    U, s, Vt = np.linalg.svd(X[fit] - mx, full_matrices=False)
    scale = float((s * s).mean()) if len(s) and (s * s).mean() > 0 else 1.0
    scores = {}
    for a in grid:
        W = _ridge_from_svd(U, s, Vt, Y[fit] - my, a * scale)
        scores[float(a)] = r2(Y[choice], (X[choice] - mx) @ W + my)[0]
    best = max(scores, key=lambda a: (scores[a], a))  # ties: the stronger penalty
    both = np.concatenate([fit, choice])
    W, b = ridge(X[both], Y[both], best * scale)
    overall, per = r2(Y[test], X[test] @ W + b)
    return RidgeMap(W, b, best * scale, best, scores, overall, per, len(fit), len(choice),
                    len(test))


def correlation(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """(r_a, r_b) Pearson correlations of the columns of A with those of B (rows: the same
    images); 0 where a column is constant."""
    A = np.asarray(A, dtype=np.float64)
    B = np.asarray(B, dtype=np.float64)
    Ac, Bc = A - A.mean(axis=0), B - B.mean(axis=0)
    na, nb = np.sqrt((Ac * Ac).sum(axis=0)), np.sqrt((Bc * Bc).sum(axis=0))
    C = Ac.T @ Bc
    den = np.outer(na, nb)
    return np.where(den > 0, C / np.where(den > 0, den, 1), 0.0)


def map_weights(m: RidgeMap, X: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """(r_y, r_x): ``|W_ji| · std(X_j) / std(Y_i)`` — row i: how much each input feature j
    drives output feature i in the map (0 for a constant output)."""
    sx = np.asarray(X, dtype=np.float64).std(axis=0)
    sy = np.asarray(Y, dtype=np.float64).std(axis=0)
    S = np.abs(m.W) * sx[:, None]
    return np.where(sy[None, :] > 0, S / np.where(sy > 0, sy, 1)[None, :], 0.0).T


def top_matches(scores: np.ndarray, n: int = 3) -> np.ndarray:
    """(rows, n): for each row, the columns of its n highest scores, best first (ties: the lower
    column first)."""
    scores = np.asarray(scores, dtype=np.float64)
    n = min(int(n), scores.shape[1])
    return np.argsort(-scores, axis=1, kind="stable")[:, :n]
