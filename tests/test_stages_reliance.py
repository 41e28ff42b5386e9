"""The concept-conditional reliance test (issue 12): DeLong's AUCs and covariance, means and
difference of two models' features, worked out by hand on four images."""

import numpy as np
import pytest

from falcon_core.stages.reliance import conditional_reliance, delong, simultaneous_z

# four images: the first two name the companion (positives), the last two do not
Y = np.array([True, True, False, False])
A1 = np.array([3.0, 1.0, 2.0, 0.0])  # positives 3, 1; negatives 2, 0
A2 = np.array([1.0, 1.0, 1.0, 0.0])  # a tie between a positive and a negative
B1 = np.array([0.0, 1.0, 2.0, 3.0])  # every positive below every negative


def test_delong_by_hand():
    auc, cov = delong(np.vstack([A1, A2, B1]), Y)
    # A1: pairs (3>2, 3>0, 1<2, 1>0) -> 3/4. A2: each positive 1 vs 1 (1/2) and vs 0 (1) -> 3/4.
    # B1: 0.
    assert auc == pytest.approx([0.75, 0.75, 0.0])
    # structural components: A1 V10 = [1, 1/2] (negatives below each positive), V01 = [1/2, 1]
    # (positives above each negative); A2 V10 = [3/4, 3/4], V01 = [1/2, 1]; B1 all 0.
    # var(A1) = var([1, .5])/2 + var([.5, 1])/2 = 0.125/2 + 0.125/2 = 0.125 (sample variances)
    # var(A2) = 0 + 0.125/2 = 0.0625; cov(A1, A2) = 0 + cov([.5, 1], [.5, 1])/2 = 0.0625
    assert cov == pytest.approx(np.array([[0.125, 0.0625, 0.0],
                                          [0.0625, 0.0625, 0.0],
                                          [0.0, 0.0, 0.0]]))


def test_two_models_compared_by_hand():
    r = conditional_reliance(np.stack([A1, A2], axis=1), B1[:, None], Y)
    assert (r.auc_a, r.auc_b, r.diff) == pytest.approx((0.75, 0.0, 0.75))
    # var(mean of A1, A2) = (0.125 + 0.0625 + 2 * 0.0625) / 4 = 0.078125; B1 adds nothing
    assert r.se_a == pytest.approx(np.sqrt(0.078125))
    assert r.se_b == pytest.approx(0.0)
    assert r.se_diff == pytest.approx(np.sqrt(0.078125))
    assert (r.positives, r.negatives) == (2, 2)
    lo, hi = r.interval("diff", 2.0)
    assert (lo, hi) == pytest.approx((0.75 - 2 * np.sqrt(0.078125), 0.75 + 2 * np.sqrt(0.078125)))
    # the sides swap: the difference changes sign, the errors stay
    s = conditional_reliance(B1[:, None], np.stack([A1, A2], axis=1), Y)
    assert s.diff == pytest.approx(-0.75) and s.se_diff == pytest.approx(r.se_diff)
    # correlated features on the two sides: var(A1 - A2) = 0.125 + 0.0625 - 2 * 0.0625
    t = conditional_reliance(A1[:, None], A2[:, None], Y)
    assert t.diff == pytest.approx(0.0) and t.se_diff == pytest.approx(0.25)


def test_bonferroni_z_and_bad_input():
    assert simultaneous_z(1) == pytest.approx(1.959964, abs=1e-5)
    assert simultaneous_z(500) == pytest.approx(3.8906, abs=1e-3)  # norm.ppf(1 - 0.05 / 1000)
    with pytest.raises(ValueError):
        delong(A1[None], np.array([True, False, False, False]))  # one positive
    with pytest.raises(ValueError):
        conditional_reliance(np.zeros((4, 0)), B1[:, None], Y)
