"""Stages 7, 8 and 9: coherence, groups, failures, by hand."""

import math

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
from falcon_core.stages.groups import (coactivation, coactivation_for, discover_groups, jaccard,
                                       membership)
from falcon_core.stages.high_rules import GlobalThreshold, HighRule, Quantile, TopK
from falcon_core.stages.selection import select_high


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


def test_discover_groups_at_scale_finds_a_planted_pair():
    # (how long it takes is measured by the timings benchmark, not here)
    rng = np.random.default_rng(0)
    X = rng.random((50_000, 256), dtype=np.float32)
    X[:300, 5] = X[:300, 9] = 2.0  # a planted pair
    gs = discover_groups(X, 1.5, min_images=11)
    assert [g.features for g in gs] == [(5, 9)] and gs[0].n_images == 300
    assert sorted(gs[0].indices.tolist()) == list(range(300))


# Signatures under each rule of Stage 2 (the workspace's rule), worked out by hand on H.
#  column values (row: value)                         top-3 (ties: lower row)  top-2
#  f0: 0:.9 1:.6 2:.7 3:0  4:0  5:.9 6:.9 7:.5         {0, 5, 6}               {0, 5}
#  f1: 0:.8 1:.7 2:.9 3:0  4:.1 5:0  6:.9 7:.6         {2, 6, 0}               {2, 6}
#  f2: 0:.1 1:0  2:0  3:.9 4:.8 5:0  6:.9 7:.7         {3, 6, 4}               {3, 6}
#  f3: 0:0  1:0  2:.2 3:.6 4:.9 5:0  6:0  7:0          {4, 3, 2}               {4, 3}
# medians (np.quantile 0.5 of 8 values: the mean of the 4th and 5th smallest):
#  f0 (.6+.7)/2 = .65 -> {0, 2, 5, 6}; f1 (.6+.7)/2 = .65 -> {0, 1, 2, 6};
#  f2 (.1+.7)/2 = .4 -> {3, 4, 6, 7};  f3 (0+0)/2 = 0 -> {2, 3, 4}


def _sets(mask):
    return [set(np.flatnonzero(mask[:, f]).tolist()) for f in range(mask.shape[1])]


def test_membership_topk_by_hand():
    assert _sets(membership(H, "topk", top_k=3)) == [{0, 5, 6}, {0, 2, 6}, {3, 4, 6}, {2, 3, 4}]
    # ties at the k-th value: the lower rows (f0 has 0.9 on rows 0, 5 and 6)
    assert _sets(membership(H, "topk", top_k=2)) == [{0, 5}, {2, 6}, {3, 6}, {3, 4}]
    assert _sets(TopK(2).members(H, np.ones(8, dtype=bool))) == [{0, 5}, {2, 6}, {3, 6}, {3, 4}]
    # an unreadable row is never in T; the next one takes its place (f0: 0.7 on row 2)
    valid = np.ones(8, dtype=bool)
    valid[6] = False
    assert _sets(membership(H, "topk", top_k=3, valid=valid))[0] == {0, 2, 5}
    # k beyond the valid rows: every valid row
    assert membership(H, "topk", top_k=50, valid=valid).sum(axis=0).tolist() == [7, 7, 7, 7]


def test_membership_quantile_and_global_by_hand():
    assert _sets(membership(H, "quantile", quantile=0.5)) == [
        {0, 2, 5, 6}, {0, 1, 2, 6}, {3, 4, 6, 7}, {2, 3, 4}]
    # the global alpha = 0.5 (strict): f0 {0, 1, 2, 5, 6}; 0.5 on row 7 is not above it
    assert _sets(membership(H, "global", alpha=0.5)) == [
        {0, 1, 2, 5, 6}, {0, 1, 2, 6, 7}, {3, 4, 6, 7}, {3, 4}]
    # a cap on |T| keeps each feature's best images: f0's best two of {0,1,2,5,6} are 0 and 5
    assert _sets(membership(H, "global", alpha=0.5, max_images=2)) == [
        {0, 5}, {2, 6}, {3, 6}, {3, 4}]
    with pytest.raises(FalconError):
        membership(H, "best")


def test_groups_follow_the_rule_by_hand():
    # top-3 signatures: row0 {0,1}, row1 {}, row2 {1,3}, row3 {2,3}, row4 {2,3}, row5 {0},
    # row6 {0,1,2}, row7 {} -> one group of two images, {2, 3}: rows 4 (0.8+0.9) then 3 (0.9+0.6)
    top3 = membership(H, "topk", top_k=3)
    gs = discover_groups(H, mask=top3, min_images=2)
    assert [(g.features, g.indices.tolist()) for g in gs] == [((2, 3), [4, 3])]
    gs = discover_groups(H, mask=top3, min_images=1)
    assert [(g.features, g.n_images) for g in gs] == [((2, 3), 2), ((0, 1), 1), ((0, 1, 2), 1),
                                                     ((1, 3), 1)]
    # quantile 0.5 signatures: row0 {0,1}, row1 {1}, row2 {0,1,3}, row3 {2,3}, row4 {2,3},
    # row5 {0}, row6 {0,1,2}, row7 {2}
    gs = discover_groups(H, mask=membership(H, "quantile", quantile=0.5), min_images=1)
    assert [(g.features, g.indices.tolist()) for g in gs] == [
        ((2, 3), [4, 3]), ((0, 1), [0]), ((0, 1, 2), [6]), ((0, 1, 3), [2])]
    # the mask and the threshold give the same groups under the global rule
    by_mask = discover_groups(H, mask=membership(H, "global", alpha=0.5), min_images=2)
    assert [(g.features, g.indices.tolist()) for g in by_mask] == [
        ((0, 1), [0, 2, 1]), ((2, 3), [4, 3])]
    # an invalid row leaves its group even when the mask says otherwise
    valid = np.ones(8, dtype=bool)
    valid[4] = False
    assert discover_groups(H, mask=top3, min_images=2, valid=valid) == []
    with pytest.raises(FalconError):
        discover_groups(H, mask=top3[:, :3])


def test_coactivation_follows_the_rule_by_hand():
    # top-3 sets: f0 {0,5,6}, f1 {0,2,6}, f2 {3,4,6}, f3 {2,3,4}
    J = coactivation(H, mask=membership(H, "topk", top_k=3))
    assert J[0, 1] == pytest.approx(2 / 4)  # {0, 6} of {0, 2, 5, 6}
    assert J[0, 2] == pytest.approx(1 / 5)  # {6}
    assert J[2, 3] == pytest.approx(2 / 4)  # {3, 4}
    assert J[0, 3] == 0.0
    assert J[1, 3] == pytest.approx(1 / 5)  # {2}
    np.testing.assert_allclose(np.diag(J), 1.0)
    np.testing.assert_array_equal(jaccard(membership(H, "topk", top_k=3)), J)


@pytest.mark.parametrize("rule, kw", [("global", dict(alpha=0.55)), ("topk", dict(top_k=7)),
                                      ("quantile", dict(quantile=0.9)),
                                      ("global", dict(alpha=0.3, max_images=5)),
                                      ("topk", dict(top_k=9, max_images=4))])
def test_membership_is_stage_2s_T_of_every_feature(rule, kw):
    """The signatures use the same sets as the explanations: column f of the mask is
    select_high(Hn, f) under the same rule, ties and unreadable rows included."""
    rng = np.random.default_rng(3)
    X = np.round(rng.random((60, 12)), 1)  # one decimal: many ties
    valid = rng.random(60) > 0.1
    mask = membership(X, rule, valid=valid, **kw)
    for f in range(12):
        sel = select_high(X, f, rule=rule, valid=valid, **kw)
        assert set(np.flatnonzero(mask[:, f]).tolist()) == set(sel.indices.tolist()), f


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


@pytest.mark.parametrize("rule", [GlobalThreshold(alpha=0.55), GlobalThreshold(k_std=0.5),
                                  TopK(7), Quantile(0.9)])
def test_each_rules_members_is_its_passed_one_feature_at_a_time(rule):
    """The built-in rules compute every feature's T at once; it is the base class's
    one-feature-at-a-time loop over passed()."""
    rng = np.random.default_rng(5)
    X = np.round(rng.random((50, 9)), 1)
    valid = rng.random(50) > 0.2
    np.testing.assert_array_equal(rule.members(X, valid), HighRule.members(rule, X, valid))
