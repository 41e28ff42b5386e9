"""Stages 7, 8 and 9: coherence, groups, failures, by hand."""

import math
import time

import numpy as np
import pytest

from falcon_core.errors import FalconError
from falcon_core.stages.coherence import coherence, is_interpretable
from falcon_core.stages.failures import (
    contributions,
    failure_drivers,
    misclassified,
    top_features,
)
from falcon_core.stages.groups import coactivation, coactivation_for, discover_groups


# ---- Stage 7
def test_coherence_off_diagonal():
    # rows normalise to e0, e0, e1; pairs (0,1)=1, (0,2)=0, (1,2)=0 -> (1+0+0)/3 = 1/3
    B = np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 3.0]])
    assert coherence(B) == pytest.approx(1.0 / 3)
    # identical rows: 1 (the diagonal is not what makes it 1)
    assert coherence(np.ones((4, 3))) == pytest.approx(1.0)


def test_coherence_small_and_threshold():
    assert math.isnan(coherence(np.ones((1, 3))))
    assert math.isnan(coherence(np.zeros((0, 3))))
    assert not is_interpretable(float("nan"))
    assert not is_interpretable(0.8)  # strict ">"
    assert is_interpretable(0.81)
    assert is_interpretable(0.5, threshold=0.4)


# ---- Stage 8
H = np.array(
    [
        [0.9, 0.8, 0.1, 0.0],  # 0 sig (0, 1), sum 1.7
        [0.6, 0.7, 0.0, 0.0],  # 1 sig (0, 1), sum 1.3
        [0.7, 0.9, 0.0, 0.2],  # 2 sig (0, 1), sum 1.6
        [0.0, 0.0, 0.9, 0.6],  # 3 sig (2, 3), sum 1.5
        [0.0, 0.1, 0.8, 0.9],  # 4 sig (2, 3), sum 1.7
        [0.9, 0.0, 0.0, 0.0],  # 5 sig (0,): too small
        [0.9, 0.9, 0.9, 0.0],  # 6 sig (0, 1, 2): one image
        [0.5, 0.6, 0.7, 0.0],  # 7 sig (1, 2) (0.5 is not > 0.5): one image
    ]
)


def test_discover_groups_by_hand():
    gs = discover_groups(H, 0.5, min_images=2, min_size=2)
    assert [g.features for g in gs] == [(0, 1), (2, 3)]
    assert gs[0].indices.tolist() == [0, 2, 1]  # by summed activation 1.7, 1.6, 1.3
    assert gs[1].indices.tolist() == [4, 3]
    assert gs[0].n_images == 3
    assert [g.features for g in discover_groups(H, 0.5, min_images=3)] == [(0, 1)]
    # default min_images = 11: nothing here
    assert discover_groups(H, 0.5) == []


def test_discover_groups_valid_and_ties_and_min_size():
    valid = np.ones(8, dtype=bool)
    valid[0] = False
    gs = discover_groups(H, 0.5, min_images=2, valid=valid)
    # both groups now have 2 images: tie broken by features
    assert [(g.features, g.indices.tolist()) for g in gs] == [((0, 1), [2, 1]), ((2, 3), [4, 3])]
    gs = discover_groups(H, 0.5, min_images=1, min_size=1)
    assert [g.features for g in gs] == [(0, 1), (2, 3), (0,), (0, 1, 2), (1, 2)]


def test_discover_groups_per_feature_thresholds():
    # lowering f0's threshold to 0.4 turns row 7's signature into (0, 1, 2), like row 6
    thr = np.array([0.4, 0.5, 0.5, 0.5])
    gs = discover_groups(H, thr, min_images=2)
    assert [g.features for g in gs] == [(0, 1), (0, 1, 2), (2, 3)]
    assert gs[1].indices.tolist() == [6, 7]  # 2.7 then 1.8


def test_discover_groups_scale():
    rng = np.random.default_rng(0)
    X = rng.random((50_000, 256), dtype=np.float32)
    X[:300, 5] = X[:300, 9] = 2.0  # a planted pair
    t = time.perf_counter()
    gs = discover_groups(X, 1.5, min_images=11)
    assert time.perf_counter() - t < 10
    assert [g.features for g in gs] == [(5, 9)] and gs[0].n_images == 300


def test_coactivation_jaccard():
    # high sets at 0.5: f0 {0,1,2,5,6}, f1 {0,1,2,6,7}, f2 {3,4,6,7}, f3 {3,4}
    J = coactivation(H, 0.5)
    assert J.shape == (4, 4)
    assert J[0, 1] == pytest.approx(4 / 6)  # {0,1,2,6} / {0,1,2,5,6,7}
    assert J[2, 3] == pytest.approx(2 / 4)
    assert J[1, 2] == pytest.approx(2 / 7)  # {6,7} / {0,1,2,3,4,6,7}
    assert J[0, 3] == 0.0
    np.testing.assert_allclose(np.diag(J), 1.0)
    np.testing.assert_allclose(J, J.T)
    np.testing.assert_allclose(coactivation_for(H, [3, 2], 0.5), [[1.0, 0.5], [0.5, 1.0]])
    # a feature never high: 0 on its row, diagonal included
    J = coactivation(H, np.array([0.5, 0.5, 0.5, 5.0]))
    assert J[3].tolist() == [0.0, 0.0, 0.0, 0.0]


# ---- Stage 9: a 2-class head
U = np.array([[1.0, 0.0, 2.0], [0.0, 1.0, -1.0]])
b = np.array([0.0, 1.0])
h = np.array([1.0, 2.0, 0.5])
# logits: class 0 = 1 + 0 + 1 = 2; class 1 = 0 + 2 - 0.5 + 1 = 2.5 -> predicted 1


def test_contributions_and_ranking():
    assert contributions(h, U, 0).tolist() == [1.0, 0.0, 1.0]
    assert contributions(h, U, 1).tolist() == [0.0, 2.0, -0.5]
    assert top_features(h, U, 1, 2) == [(1, 2.0), (0, 0.0)]
    assert top_features(h, U, 0) == [(0, 1.0), (2, 1.0), (1, 0.0)]  # tie -> lower feature
    with pytest.raises(FalconError):
        contributions(h, U, 2)
    with pytest.raises(FalconError):
        contributions(np.ones(4), U, 0)


def test_misclassified():
    Hs = np.array([[1, 2, 0.5], [3, 0, 0], [0, 0, 1], [1, 1, 1]])
    labels = np.array([0, 0, 1, -1])
    # logits: row0 [2, 2.5] -> 1 (label 0: wrong); row1 [3, 1] -> 0 (right);
    # row2 [2, 0] -> 0 (label 1: wrong); row3 [3, 1] -> 0 (label unknown: skipped)
    idx, pred = misclassified(Hs, U, b, labels)
    assert idx.tolist() == [0, 2] and pred.tolist() == [1, 0]
    with pytest.raises(FalconError):
        misclassified(Hs, U, b, np.array([0, 0, 5, 0]))


def test_failure_drivers():
    d = failure_drivers(h, U, b, true_class=0, k=2, index=7)
    assert (d.index, d.true_class, d.predicted_class) == (7, 0, 1)
    assert d.toward_predicted == [(1, 2.0), (0, 0.0)]
    assert d.toward_true == [(0, 1.0), (2, 1.0)]
    np.testing.assert_allclose(d.logits, [2.0, 2.5])
