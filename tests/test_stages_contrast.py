"""Stage 6 (contrast.py): Eq. 2 and spurious concepts, by hand (dyadic numbers: exact arithmetic)."""

import numpy as np
import pytest

from falcon_core.errors import FalconError
from falcon_core.stages.contrast import select_low, split_spurious

H = np.array(
    [
        [1.0, 0.5, 0.25, 0.0, 0.0],    # 0  high on f0
        [0.75, 0.0, 0.25, 0.5, 0.0],   # 1  high on f0
        [0.0, 0.5, 0.5, 0.0, 1.0],     # 2
        [0.0, 1.0, 0.5, 0.5, 0.0],     # 3
        [0.125, 0.25, 0.0, 0.0, 0.5],  # 4
        [0.5, 1.0, 1.0, 1.0, 0.0],     # 5  not low on f0 (most similar of all, never chosen)
    ]
)
HIGH = [0, 1]


def test_single_feature_by_hand():
    # V = columns 1..4; h_mu = mean of rows 0, 1 on V = [0.25, 0.25, 0.25, 0.0]
    # candidates (f0 < 0.25, not in T): rows 2, 3, 4 -> n_candidates = 3
    # sim row 2 = 0.5*.25 + 0.5*.25 + 0*.25 + 1*0 = 0.25   (exactly beta: kept)
    # sim row 3 = 1*.25 + .5*.25 + .5*.25 + 0   = 0.5
    # sim row 4 = .25*.25 + 0 + 0 + .5*0          = 0.0625 (< beta)
    # had f0 been kept, row 4 would get + 0.125*0.875 = 0.171875 (still < .25 but shows exclusion)
    low = select_low(H, [0], HIGH, low_threshold=0.25, beta=0.25, max_images=10)
    assert low.indices.tolist() == [3, 2]
    assert low.similarity.tolist() == [0.5, 0.25]
    assert low.activations.tolist() == [0.0, 0.0]
    assert low.n_candidates == 3
    assert low.low_threshold == 0.25 and low.beta == 0.25
    assert "2 of 3 images" in low.description


def test_feature_itself_excluded_from_similarity():
    # beta = 0.125: with f0 excluded row 4 has 0.0625 -> out; with f0 included it would be
    # 0.171875 -> in. It must be out.
    low = select_low(H, [0], HIGH, low_threshold=0.25, beta=0.125)
    assert 4 not in low.indices.tolist()
    assert low.indices.tolist() == [3, 2]


def test_cap_keeps_best():
    low = select_low(H, [0], HIGH, low_threshold=0.25, beta=0.25, max_images=1)
    assert low.indices.tolist() == [3]
    assert "the 1 most similar" in low.description


def test_group_removes_both_dims_and_needs_every_feature_low():
    # group {0, 3}: V = columns 1, 2, 4; h_mu = [0.25, 0.25, 0.0]
    # candidates: f0 < .25 and f3 < .25 -> row 2 (0, 0) and row 4 (.125, 0); row 3 has f3 = 0.5
    # sim row 2 = .5*.25 + .5*.25 + 1*0 = 0.25 ; sim row 4 = .25*.25 = 0.0625
    low = select_low(H, [0, 3], HIGH, low_threshold=0.25, beta=0.25)
    assert low.n_candidates == 2
    assert low.indices.tolist() == [2]
    assert low.similarity.tolist() == [0.25]


def test_default_low_threshold_is_global_mean():
    # row sums: 1.75, 1.5, 2.0, 2.0, 0.875, 3.5 -> 11.625 over 30 entries
    low = select_low(H, [0], HIGH, beta=0.25)
    assert low.low_threshold == pytest.approx(11.625 / 30)
    # without row 5: 8.125 / 25
    valid = np.array([True, True, True, True, True, False])
    low = select_low(H, [0], HIGH, beta=0.25, valid=valid)
    assert low.low_threshold == pytest.approx(8.125 / 25)


def test_invalid_rows_never_chosen():
    valid = np.array([True, True, True, False, True, True])
    low = select_low(H, [0], HIGH, low_threshold=0.25, beta=0.25, valid=valid)
    assert low.indices.tolist() == [2]
    assert low.n_candidates == 2


def test_empty_cases_do_not_crash():
    low = select_low(H, [0], [], low_threshold=0.25)
    assert len(low.indices) == 0 and "no highly activating" in low.description
    low = select_low(H, [1], HIGH, low_threshold=0.0)  # nothing is < 0
    assert len(low.indices) == 0 and low.n_candidates == 0
    assert low.description.startswith("No counterfactual images")
    low = select_low(H, [0], HIGH, low_threshold=0.25, beta=10.0)
    assert len(low.indices) == 0 and low.n_candidates == 3
    assert "none has a similarity" in low.description


def test_bad_input():
    with pytest.raises(FalconError):
        select_low(H, [0, 0], HIGH)
    with pytest.raises(FalconError):
        select_low(H, [0], [99])


def test_split_spurious_threshold_edge():
    t = {"dog": 0.3, "grass": 0.25, "leash": 0.2, "sky": 0.1}
    l_scores = {"grass": 0.1, "leash": 0.0999, "cat": 0.5}
    kept, removed = split_spurious(t, l_scores, threshold=0.1)
    assert kept == {"dog": 0.3, "leash": 0.2, "sky": 0.1}  # absent from L -> L-score 0
    assert removed == {"grass": (0.25, 0.1)}  # 0.1 >= 0.1: removed (inclusive)
    assert list(kept) == ["dog", "leash", "sky"]  # order kept


def test_split_spurious_ratio_by_hand():
    """The ratio rule: spurious when L-score > 0 and L-score >= share x T-score."""
    t = {"star": 0.6, "grass": 0.3, "grassy": 0.2, "dot": 0.1, "sky": 0.04}
    l_scores = {"star": 0.29, "grass": 0.15, "grassy": 0.12, "sky": 0.02, "cat": 0.5}
    kept, removed = split_spurious(t, l_scores, threshold=None, share=0.5)
    # star 0.29 < 0.30 kept; grass 0.15 >= 0.15 removed (inclusive); grassy 0.12 >= 0.10 removed;
    # dot absent from L (0) kept; sky 0.02 >= 0.02 removed although far below any absolute 0.1
    assert kept == {"star": 0.6, "dot": 0.1}
    assert removed == {"grass": (0.3, 0.15), "grassy": (0.2, 0.12), "sky": (0.04, 0.02)}
    # with a share of 0 only the concepts L names at all are removed
    kept0, removed0 = split_spurious(t, l_scores, threshold=None, share=0.0)
    assert set(kept0) == {"dot"} and set(removed0) == {"star", "grass", "grassy", "sky"}
    # the share wins over the threshold; neither given is an error
    assert split_spurious(t, l_scores, threshold=0.0, share=0.5) == (kept, removed)
    with pytest.raises(FalconError):
        split_spurious(t, l_scores, threshold=None)


# ------------------------------------------------------------------ counterfactual rules (issue 7)
# f1 is f0's redundant twin: row 3 shows the concept on f1 only. f2 is another concept of T.
#        f0   f1    f2   f3
TW = np.array([
    [1.0, 1.0, 1.0, 0.0],    # 0  T
    [1.0, 1.0, 0.0, 0.0],    # 1  T
    [0.0, 0.0, 1.0, 0.0],    # 2  shares f2 with T, no concept
    [0.0, 1.0, 0.0, 0.0],    # 3  the concept, on the twin only
    [0.0, 0.25, 0.0, 1.0],   # 4  a little of the twin (below eps)
    [0.0, 0.0, 1.0, 1.0],    # 5  shares f2 with T, no concept
])
# Pearson r with f0 = (1,1,0,0,0,0) (mean 1/3, var 2/9):
#   f1 = (1,1,0,1,1/4,0): mean 13/24, var 49/96 - (13/24)^2 = 125/576, cov = 1/3 - 13/72 = 11/72
#        -> r = (11/72) / sqrt(2/9 * 125/576) = 88 / sqrt(16000) = 2.2 / sqrt(10)
#   f2 = (1,0,1,0,0,1): cov = 1/6 - 1/3 * 1/2 = 0 -> r = 0
#   f3 = (0,0,0,0,1,1): cov = 0 - 1/9, var 2/9 -> r = -1/2
R01 = 2.2 / 10 ** 0.5


def test_column_correlations_by_hand():
    from falcon_core.stages.contrast import column_correlations

    r = column_correlations(TW, TW[:, 0])
    assert r == pytest.approx([1.0, R01, 0.0, -0.5])
    # a constant column correlates 0 with everything (not nan)
    assert column_correlations(TW, np.ones(6)).tolist() == [0.0, 0.0, 0.0, 0.0]
    # invalid rows are left out: without rows 4 and 5, f3 is constant (0) -> 0
    valid = np.array([True, True, True, True, False, False])
    assert column_correlations(TW, TW[:, 0], valid)[3] == 0.0


def test_find_twins_by_hand():
    from falcon_core.stages.contrast import find_twins

    twins, corr = find_twins(TW, 0, 0.5)
    assert twins == (1,) and corr == pytest.approx((R01,))
    twins, corr = find_twins(TW, 0, -0.6)  # most correlated first; the feature itself never
    assert twins == (1, 2, 3) and corr == pytest.approx((R01, 0.0, -0.5))
    # a group: correlation with the summed activation s = f0 + f3 = (1,1,0,0,1,1) (mean 2/3,
    # var 2/9): with f1, cov = E[s f1] - 2/3 * 13/24 = 3/8 - 13/36 = 1/72 -> r = 1/sqrt(250);
    # with f2, cov = 1/3 - 2/3 * 1/2 = 0; f0 and f3 are the group, never twins
    twins, corr = find_twins(TW, [0, 3], -0.6)
    assert twins == (1, 2) and corr == pytest.approx((250 ** -0.5, 0.0))
    assert find_twins(TW, [0, 3], 0.5) == ((), ())


def test_authors_rule_picks_the_image_whose_concept_is_on_the_twin():
    # V = f1, f2, f3; h_mu = (1, 0.5, 0); candidates f0 < 0.5: rows 2, 3, 4, 5
    # sims: row 2 = 0.5, row 3 = 1 (through the twin f1), row 4 = 0.25, row 5 = 0.5
    low = select_low(TW, [0], [0, 1], low_threshold=0.5, beta=0.25, rule="global")
    assert low.indices.tolist() == [3, 2, 5, 4]
    assert low.similarity.tolist() == [1.0, 0.5, 0.5, 0.25]
    assert low.n_candidates == 4 and low.twins == () and low.rule == "global"


def test_twins_rule_keeps_the_concept_out_of_L():
    # W = {f0, f1} (r = 0.696 >= 0.5), both below 0.5: rows 2, 4, 5 (row 3 has f1 = 1)
    # V = f2, f3; h_mu = (0.5, 0): sims row 2 = 0.5, row 4 = 0 (its f1 = 0.25 no longer
    # counts: it would give 0.25 >= beta), row 5 = 0.5
    low = select_low(TW, [0], [0, 1], low_threshold=0.5, beta=0.25, rule="twins",
                     twin_correlation=0.5)
    assert low.indices.tolist() == [2, 5]
    assert low.similarity.tolist() == [0.5, 0.5]
    assert low.n_candidates == 3
    assert low.twins == (1,) and low.twin_correlations == pytest.approx((R01,))
    assert low.feature_thresholds == (0.5, 0.5)
    assert "twin" in low.description and "feature 0" in low.description
    # with a bar no feature reaches, "twins" is the authors' rule
    same = select_low(TW, [0], [0, 1], low_threshold=0.5, beta=0.25, rule="twins",
                      twin_correlation=0.9)
    assert same.indices.tolist() == [3, 2, 5, 4] and same.twins == ()
    assert "no twin" in same.description


# A dense feature: f0's own 0.4-quantile is 0.375 (sorted 1/8, 1/4, 3/8, 1/2, 3/4, 1: position
# 0.4 * 5 = 2 -> 3/8). V = f1, h_mu = 0.5 (rows 0, 1).
#        f0     f1
DQ = np.array([
    [1.0, 0.5],     # 0 T
    [0.75, 0.5],    # 1 T
    [0.125, 0.5],   # 2 sim 0.25
    [0.5, 1.0],     # 3 sim 0.5  (below a global 0.6, not in f0's lower 0.4)
    [0.25, 0.25],   # 4 sim 0.125
    [0.375, 0.0],   # 5 sim 0    (exactly at the quantile: a candidate, "at or below")
])


def test_quantile_rule_by_hand():
    glob = select_low(DQ, [0], [0, 1], low_threshold=0.6, beta=0.125, rule="global")
    assert glob.indices.tolist() == [3, 2, 4] and glob.n_candidates == 4
    low = select_low(DQ, [0], [0, 1], beta=0.125, rule="quantile", low_quantile=0.4)
    assert low.feature_thresholds == (0.375,) and low.low_threshold == 0.375
    assert low.n_candidates == 3  # rows 2, 4 and 5 (0.375 <= 0.375)
    assert low.indices.tolist() == [2, 4]  # row 5 has similarity 0 < beta
    assert low.similarity.tolist() == [0.25, 0.125]
    assert low.rule == "quantile" and "0.4-quantile" in low.description
    # invalid rows neither count in the quantile nor get chosen: without row 2, f0's valid
    # values are 1, 3/4, 1/2, 1/4, 3/8 -> sorted 1/4, 3/8, 1/2, 3/4, 1; 0.4 * 4 = 1.6 ->
    # 3/8 + 0.6 * (1/2 - 3/8) = 0.45
    valid = np.array([True, True, False, True, True, True])
    low = select_low(DQ, [0], [0, 1], beta=0.125, rule="quantile", low_quantile=0.4, valid=valid)
    assert low.feature_thresholds == pytest.approx((0.45,))
    assert low.indices.tolist() == [4] and low.n_candidates == 2


def test_unknown_rules():
    from falcon_core.stages.contrast import spurious_threshold

    with pytest.raises(FalconError):
        select_low(TW, [0], [0, 1], rule="nope")
    with pytest.raises(FalconError):
        select_low(TW, [0], [0, 1], rule="quantile", low_quantile=1.0)
    with pytest.raises(FalconError):
        spurious_threshold("nope")


def test_spurious_threshold_absolute_and_relative():
    from falcon_core.stages.contrast import caption_scale, spurious_threshold

    # the mean of every top-k score: (0.5 + 0.25 + 1.0 + 0.25) / 4
    assert caption_scale(np.array([[0.5, 0.25], [1.0, 0.25]])) == 0.5
    assert np.isnan(caption_scale(np.zeros((0, 5))))
    assert spurious_threshold("absolute", 0.1, scale=0.8) == 0.1
    # 0.1 on a scale of 0.3 = named by a third of L; on a scale of 0.75: 0.1 * 0.75 / 0.3
    assert spurious_threshold("relative", 0.1, scale=0.75, reference_scale=0.3) == pytest.approx(0.25)
    assert spurious_threshold("relative", 0.1, scale=0.3, reference_scale=0.3) == pytest.approx(0.1)
    with pytest.raises(FalconError):
        spurious_threshold("relative", 0.1, scale=None)
    with pytest.raises(FalconError):
        spurious_threshold("relative", 0.1, scale=float("nan"))


def test_spurious_ratio_info():
    from falcon_core.stages.contrast import (spurious_share, spurious_threshold,
                                             spurious_threshold_info)

    assert spurious_share(0.1, 0.3) == pytest.approx(1 / 3)
    assert spurious_share(0.2, 0.4) == 0.5
    info = spurious_threshold_info("ratio", 0.2, reference_scale=0.4)
    assert info["rule"] == "ratio" and info["threshold"] is None and info["share"] == 0.5
    assert "0.5 × its T-score" in info["description"]
    with pytest.raises(FalconError):  # one number per concept, not one threshold
        spurious_threshold("ratio", 0.1, scale=0.5)
    with pytest.raises(FalconError):
        spurious_share(0.1, 0.0)


# the "clip" rule: the candidates of "quantile", ranked in the CLIP's image space
# views (k = 2): rows 2 and 4 point at 3:4 and 4:3 (cosine 1.4 / sqrt 2 with the diagonal), row 3
# straight up (1 / sqrt 2), row 5 exactly on the diagonal (cosine 1, but not low on f0)
VIEWS = np.array([[1.0, 0.0], [0.0, 1.0], [3.0, 4.0], [0.0, 5.0], [4.0, 3.0], [1.0, 1.0]])
# T's crops: (2, 0) and (0, 1); each row counts the same, so their direction is the diagonal
# (the unnormalised mean (1, 0.5) would rank row 4 above row 2)
CROPS = np.array([[2.0, 0.0], [0.0, 1.0]])


def test_clip_rule_by_hand():
    # f0 = [1, .75, 0, 0, .125, .5]; its 0.5-quantile: sorted 0, 0, .125, .5, .75, 1 ->
    # (.125 + .5) / 2 = 0.3125: candidates rows 2, 3, 4 (row 5 is not low, rows 0, 1 are T)
    low = select_low(H, [0], HIGH, beta=0.99, rule="clip", low_quantile=0.5, views=VIEWS,
                     reference=CROPS)
    assert low.feature_thresholds == (0.3125,) and low.n_candidates == 3
    # rows 2 and 4 tie (lower index first); beta (a bound on the backbone's dot product) is not
    # used: every candidate is ranked, none dropped
    assert low.indices.tolist() == [2, 4, 3]
    assert low.similarity == pytest.approx([1.4 / np.sqrt(2), 1.4 / np.sqrt(2), 1 / np.sqrt(2)])
    assert low.activations.tolist() == [0.0, 0.125, 0.0]
    assert low.rule == "clip" and "CLIP" in low.description
    # the cap keeps the nearest
    capped = select_low(H, [0], HIGH, rule="clip", low_quantile=0.5, views=VIEWS,
                        reference=CROPS, max_images=1)
    assert capped.indices.tolist() == [2] and capped.n_candidates == 3
    # the reference is T's crops, not anything else: crops pointing straight up put row 3 first
    up = select_low(H, [0], HIGH, rule="clip", low_quantile=0.5, views=VIEWS,
                    reference=np.array([0.0, 2.0]))
    assert up.indices.tolist() == [3, 2, 4]


def test_clip_rule_needs_its_embeddings():
    with pytest.raises(FalconError, match="clip"):
        select_low(H, [0], HIGH, rule="clip", low_quantile=0.5)
    with pytest.raises(FalconError):
        select_low(H, [0], HIGH, rule="clip", low_quantile=0.5, views=VIEWS[:4], reference=CROPS)
    with pytest.raises(FalconError):
        select_low(H, [0], HIGH, rule="clip", low_quantile=0.5, views=VIEWS,
                   reference=np.ones((2, 3)))
    # no candidate (the two rows at f0's 0.01-quantile, 0, are T): said, not a crash
    none = select_low(H, [0], [2, 3], rule="clip", low_quantile=0.01, views=VIEWS,
                      reference=CROPS)
    assert len(none) == 0 and "No counterfactual" in none.description


# ---- the conditional rule (issue 7): per-concept AUCs given the anchor, worked out by hand ------

from falcon_core.stages.contrast import (Naming, choose_anchor, conditional_split,  # noqa: E402
                                         conditional_test, spurious_threshold_info)

# ten probe images: the anchor "star" is named in 0-5, the companion "grass" in 0-2 and 6-7
STAR = np.array([1, 1, 1, 1, 1, 1, 0, 0, 0, 0], bool)
GRASS = np.array([1, 1, 1, 0, 0, 0, 1, 1, 0, 0], bool)
# the feature's activation; images 3-5 (star, no grass) are 4, 2, 0; images 8, 9 (neither) -1, 1
ENCODED = np.array([5, 3, 1, 4, 2, 0, 9, 9, -1, 1], float)
IGNORED = np.array([5, 0.5, -0.5, 4, 2, 0, 9, 9, -1, 1], float)


def _naming(**cols):
    return Naming(images=np.arange(10), words={k: np.flatnonzero(v) for k, v in cols.items()},
                  phrases={})


def test_conditional_test_by_hand():
    # given star (images 0-5): grass {5, 3, 1} vs no grass {4, 2, 0}: pairs won 3 + 2 + 1 = 6/9
    # control, no grass (3, 4, 5, 8, 9): star {4, 2, 0} vs {-1, 1}: 2 + 2 + 1 = 5/6
    # bound = 0.5 + (1/3)(5/6 - 1/2) = 0.5 + 1/9 = 0.6111; 6/9 = 0.6667 >= bound: kept
    t = conditional_test(ENCODED, STAR, GRASS, 1 / 3)
    assert t["auc"] == pytest.approx(6 / 9, abs=1e-4)
    assert t["auc_anchor"] == pytest.approx(5 / 6, abs=1e-4)
    assert t["bound"] == pytest.approx(0.5 + 1 / 9, abs=1e-4)
    assert t["spurious"] is False
    assert (t["both"], t["anchor_only"], t["neither"]) == (3, 3, 2)
    lo, hi = t["interval"]
    assert lo < 6 / 9 < hi
    # grass images 1, 2 now lowest: {5, 0.5, -0.5} vs {4, 2, 0}: 3 + 1 + 0 = 4/9 < bound
    t = conditional_test(IGNORED, STAR, GRASS, 1 / 3)
    assert t["auc"] == pytest.approx(4 / 9, abs=1e-4) and t["spurious"] is True
    # images 6 and 7 (grass without star) play no part: the activation there is ignored
    other = IGNORED.copy()
    other[[6, 7]] = -100
    assert conditional_test(other, STAR, GRASS, 1 / 3) == t
    # {5, 3, -0.5} vs {4, 2, 0}: 3 + 2 + 0 = 5/9 = 0.556: above 0.5, yet below the bound (the
    # feature responds to grass, but less than a third as much as to star): spurious
    weak = ENCODED.copy()
    weak[2] = -0.5
    t = conditional_test(weak, STAR, GRASS, 1 / 3)
    assert t["auc"] == pytest.approx(5 / 9, abs=1e-4) and t["spurious"] is True
    assert conditional_test(weak, STAR, GRASS, 0.1)["spurious"] is False  # bound 0.5333
    # a share of 0 puts the bound at 0.5: 4/9 is still below; at share 0 with 6/9 it is kept
    assert conditional_test(ENCODED, STAR, GRASS, 0.0)["bound"] == 0.5


def test_conditional_test_ties_count_half():
    # given star: grass {1, 1, 1} vs {1, 0, 0}: each positive beats two and ties one: 2.5/3
    act = np.array([1, 1, 1, 1, 0, 0, 5, 5, -1, -1], float)
    t = conditional_test(act, STAR, GRASS, 1 / 3)
    assert t["auc"] == pytest.approx(2.5 / 3, abs=1e-4)


def test_conditional_test_too_few_images_is_undecided():
    # grass named in only one star image: no AUC, no decision
    one = np.array([1, 0, 0, 0, 0, 0, 1, 1, 0, 0], bool)
    t = conditional_test(IGNORED, STAR, one, 1 / 3)
    assert t["spurious"] is None and t["auc"] is None and t["both"] == 1
    # named in every star image but one: the same
    nearly = np.array([1, 1, 1, 1, 1, 0, 0, 0, 0, 0], bool)
    assert conditional_test(IGNORED, STAR, nearly, 1 / 3)["spurious"] is None


def test_choose_anchor_by_hand():
    # over all ten images: star {5, 0.5, -0.5, 4, 2, 0} vs {9, 9, -1, 1}:
    # 5 > -1, 1 (2); 0.5 > -1 (1); -0.5 > -1 (1); 4 (2); 2 (2); 0 (1) -> 9 / 24
    # grass {5, 0.5, -0.5, 9, 9} vs {4, 2, 0, -1, 1}: 5 (5) + 0.5 (2) + -0.5 (1) + 9 (5) + 9 (5)
    # = 18 / 25 -> grass is the anchor even though star is the first candidate
    naming = _naming(star=STAR, grass=GRASS, lonely=np.eye(10, dtype=bool)[0])
    assert choose_anchor(IGNORED, naming, ["star", "grass"]) == ("grass", pytest.approx(18 / 25))
    assert choose_anchor(IGNORED, naming, ["star"]) == ("star", pytest.approx(9 / 24))
    # a word named once (or never) cannot anchor
    assert choose_anchor(IGNORED, naming, ["lonely", "unnamed"]) is None


def test_conditional_split_keeps_the_anchor_and_the_undecided():
    naming = _naming(star=STAR, grass=GRASS, rare=np.eye(10, dtype=bool)[1])
    t = {"star": 0.5, "grass": 0.75, "rare": 0.25, "unnamed": 0.125}
    l_scores = {"grass": 0.0625}
    kept, removed, tests = conditional_split(t, l_scores, IGNORED, naming, "star", 1 / 3)
    # grass (4/9 < 0.6111) removed although it has the higher T-score; the anchor is never
    # tested; rare (named once) and unnamed (never) are undecided and kept
    assert removed == {"grass": (0.75, 0.0625)}
    assert list(kept) == ["star", "rare", "unnamed"]
    assert set(tests) == {"grass", "rare", "unnamed"}
    assert tests["rare"]["spurious"] is None and tests["unnamed"]["spurious"] is None
    kept, removed, _ = conditional_split(t, {}, ENCODED, naming, "star", 1 / 3)
    assert removed == {} and list(kept) == list(t)
    # no anchor: nothing is tested or removed
    assert conditional_split(t, {}, IGNORED, naming, None, 1 / 3) == (t, {}, {})


def test_conditional_split_stops_testing_once_top_are_kept():
    naming = _naming(star=STAR, grass=GRASS)
    t = {"star": 0.5, "grass": 0.75, "rare": 0.25, "unnamed": 0.125}
    # best T-score first: grass (tested, removed), star (anchor, kept: 1), rare (tested, kept:
    # 2) -> stop; unnamed is kept untested
    kept, removed, tests = conditional_split(t, {}, IGNORED, naming, "star", 1 / 3, top=2)
    assert set(tests) == {"grass", "rare"} and set(removed) == {"grass"}
    assert set(kept) == {"star", "rare", "unnamed"}


def test_conditional_rule_info():
    info = spurious_threshold_info("conditional", 0.1, 0.3)
    assert info["threshold"] is None and info["share"] == pytest.approx(1 / 3)
    assert "anchor" in info["description"]
