"""Does a concept's features' activation rise with a second concept? The concept-conditional test
the model comparison uses (issue 12), arrays in, numbers out.

For a concept *c* (the features whose explanation holds *c*) and a candidate companion *d*: among
the probe images CLIP names *c* (*d* named too: positives; not named: negatives), each feature's
effect size is the ROC AUC of its activation for "*d* is named" (0.5: the feature ignores *d*; 1:
it is always higher with *d*). One model's reliance on *d* is the mean AUC over its *c*-features;
two models are compared by the difference of their means, on the same images. The intervals
come from DeLong's covariance of correlated AUCs (DeLong, DeLong & Clarke-Pearson, Biometrics
1988): every feature of both models is scored on the same images, so the covariance of all the
AUCs is estimated at once from the structural components and the variance of any weighted sum
(a mean, a difference of means) is ``wᵀ S w`` — no resampling, exact for ties (a tie counts ½).

Nothing here knows about ground truth: on real data the positives are whatever CLIP names, and
the comparison across models on the same images cancels what the images themselves do (CLIP's
naming errors, concepts that co-occur): only how each model's features respond differs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import norm, rankdata


def delong(scores: np.ndarray, positive: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ROC AUCs of the rows of ``scores`` (K, n) for the boolean labels ``positive`` (n) and
    DeLong's estimate of their (K, K) covariance. Needs at least two positives and two negatives
    (a covariance from one image is undefined)."""
    S = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    y = np.asarray(positive, dtype=bool)
    m, n = int(y.sum()), int((~y).sum())
    if m < 2 or n < 2:
        raise ValueError(f"DeLong needs at least 2 positives and 2 negatives (got {m} and {n})")
    r_all = rankdata(S, axis=1)  # mid-ranks: a tie counts 1/2
    r_pos = rankdata(S[:, y], axis=1)
    r_neg = rankdata(S[:, ~y], axis=1)
    v10 = (r_all[:, y] - r_pos) / n  # per positive: share of negatives below it
    v01 = 1.0 - (r_all[:, ~y] - r_neg) / m  # per negative: share of positives above it
    auc = v10.mean(axis=1)
    cov = np.atleast_2d(np.cov(v10)) / m + np.atleast_2d(np.cov(v01)) / n
    return auc, cov


@dataclass
class Reliance:
    """One model pair's test of one (concept, companion): the mean AUC of each model's
    concept features, their difference (A − B), and the standard errors (DeLong)."""
    auc_a: float
    auc_b: float
    se_a: float
    se_b: float
    diff: float
    se_diff: float
    positives: int  # images naming both concepts
    negatives: int  # images naming the concept without the companion

    def interval(self, what: str, z: float = 1.96) -> tuple[float, float]:
        est, se = {"a": (self.auc_a, self.se_a), "b": (self.auc_b, self.se_b),
                   "diff": (self.diff, self.se_diff)}[what]
        return est - z * se, est + z * se


def conditional_reliance(acts_a: np.ndarray, acts_b: np.ndarray, positive: np.ndarray
                         ) -> Reliance:
    """``acts_a`` (n, Ka) and ``acts_b`` (n, Kb): the concept features' activations of models A
    and B on the n images that name the concept; ``positive`` (n): the images that also name the
    companion. See the module."""
    A = np.asarray(acts_a, dtype=np.float64).reshape(len(positive), -1)
    B = np.asarray(acts_b, dtype=np.float64).reshape(len(positive), -1)
    ka, kb = A.shape[1], B.shape[1]
    if ka == 0 or kb == 0:
        raise ValueError("each model needs at least one feature of the concept")
    auc, cov = delong(np.hstack([A, B]).T, positive)
    wa = np.r_[np.full(ka, 1.0 / ka), np.zeros(kb)]
    wb = np.r_[np.zeros(ka), np.full(kb, 1.0 / kb)]

    def se(w):
        return float(np.sqrt(max(float(w @ cov @ w), 0.0)))

    y = np.asarray(positive, dtype=bool)
    return Reliance(auc_a=float(wa @ auc), auc_b=float(wb @ auc), se_a=se(wa), se_b=se(wb),
                    diff=float((wa - wb) @ auc), se_diff=se(wa - wb),
                    positives=int(y.sum()), negatives=int((~y).sum()))


def simultaneous_z(tests: int, alpha: float = 0.05) -> float:
    """The two-sided normal quantile that keeps the family-wise error of ``tests`` intervals at
    ``alpha`` (Bonferroni): 1.96 for one test, about 3.9 for 500."""
    return float(norm.ppf(1.0 - alpha / (2.0 * max(int(tests), 1))))
