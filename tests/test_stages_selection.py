"""Stage 2 (selection.py) against values worked out by hand."""

import numpy as np
import pytest

from falcon_core.errors import FalconError
from falcon_core.stages.common import global_alpha, validate_features
from falcon_core.stages.selection import select_high

# 5 images x 3 features
H = np.array(
    [
        [0.9, 0.1, 0.5],   # row 0
        [0.2, 0.8, 0.6],   # row 1
        [0.7, 0.7, 0.0],   # row 2
        [0.6, 0.3, 0.1],   # row 3
        [0.95, 0.9, 0.2],  # row 4
    ]
)


def test_global_alpha_by_hand():
    # entries 0, 2, 2, 0: mean 1, (population) std 1 -> alpha = 1 + 5*1 = 6
    X = np.array([[0.0, 2.0], [2.0, 0.0]])
    assert global_alpha(X) == pytest.approx(6.0)
    assert global_alpha(X, k_std=2.0) == pytest.approx(3.0)
    # an invalid row is left out of the statistics
    Xv = np.array([[0.0, 2.0], [2.0, 0.0], [100.0, 100.0]])
    assert global_alpha(Xv, valid=np.array([True, True, False])) == pytest.approx(6.0)


def test_global_single_feature_sorted_desc():
    s = select_high(H, [0], rule="global", alpha=0.5)
    # feature 0 > 0.5: rows 0 (0.9), 2 (0.7), 3 (0.6), 4 (0.95); sorted: 4, 0, 2, 3
    assert s.indices.tolist() == [4, 0, 2, 3]
    assert s.activations.tolist() == pytest.approx([0.95, 0.9, 0.7, 0.6])
    assert s.n_passed == 4 and s.rule == "global" and s.threshold == 0.5
    assert "4 images have feature 0 > α = 0.5" in s.description
    assert "all are used" in s.description


def test_global_is_strict():
    # feature 2: row 0 is exactly 0.5 (not > 0.5); only row 1 (0.6) passes
    s = select_high(H, 2, rule="global", alpha=0.5)
    assert s.indices.tolist() == [1]
    assert "1 image has feature 2" in s.description


def test_global_group_every_feature():
    # group {0, 1} > 0.5 on both: row 2 (0.7, 0.7; sum 1.4) and row 4 (0.95, 0.9; sum 1.85)
    # row 0 fails (f1 = 0.1), row 1 fails (f0 = 0.2)
    s = select_high(H, [0, 1], rule="global", alpha=0.5)
    assert s.indices.tolist() == [4, 2]
    assert s.activations.tolist() == pytest.approx([1.85, 1.4])
    assert "every feature of {0, 1}" in s.description


def test_global_cap_and_valid():
    s = select_high(H, [0], alpha=0.5, max_images=2)
    assert s.indices.tolist() == [4, 0]
    assert s.n_passed == 4  # counted before the cap
    assert "the 2 highest are used" in s.description
    valid = np.array([True, True, True, True, False])
    s = select_high(H, [0], alpha=0.5, valid=valid)
    assert s.indices.tolist() == [0, 2, 3]  # row 4 is never selected


def test_global_alpha_computed_when_missing():
    # H's 15 entries sum to 7.55: mean 0.503333; sum of squares 5.3025, so the population
    # variance is 5.3025 / 15 - 0.503333^2 = 0.100156, std 0.316474 -> alpha = 2.085701
    s = select_high(H, [0])
    assert s.threshold == pytest.approx(2.085701, abs=1e-6)
    assert len(s.indices) == 0  # nothing in H is above 2.09
    assert "mean + 5·std" in s.description


def test_no_image_above_alpha():
    s = select_high(H, [0], rule="global", alpha=0.99)
    assert len(s.indices) == 0 and s.n_passed == 0
    assert s.indices.dtype == np.int64
    assert s.description.startswith("No image has feature 0 > α = 0.99")
    assert "top-k" in s.description  # suggests another rule


def test_topk():
    # summed activation of {0, 1}: row0 0.9+0.1 = 1.0, row1 0.2+0.8 = 1.0, row2 1.4, row3 0.9,
    # row4 1.85 -> top 2: 4, 2; top 3: 4, 2, then the tie 1.0 (rows 0 and 1) -> lower index 0
    s = select_high(H, [0, 1], rule="topk", top_k=2)
    assert s.indices.tolist() == [4, 2]
    assert s.threshold is None and s.n_passed == 2
    s = select_high(H, [0, 1], rule="topk", top_k=3)
    assert s.indices.tolist() == [4, 2, 0]
    s = select_high(H, [0, 1], rule="topk", top_k=100)
    assert s.indices.tolist() == [4, 2, 0, 1, 3]
    assert "top-100" in s.description


def test_quantile():
    # medians (q = 0.5) over the 5 rows: f0 sorted 0.2 0.6 0.7 0.9 0.95 -> 0.7;
    # f1 sorted 0.1 0.3 0.7 0.8 0.9 -> 0.7
    s = select_high(H, [0], rule="quantile", quantile=0.5)
    assert s.indices.tolist() == [4, 0]  # 0.95, 0.9 > 0.7 (row 2 = 0.7 is not above)
    assert s.feature_thresholds == pytest.approx((0.7,))
    # group: f0 > 0.7 -> rows 0, 4; f1 > 0.7 -> rows 1, 4; both -> row 4
    s = select_high(H, [0, 1], rule="quantile", quantile=0.5)
    assert s.indices.tolist() == [4]
    assert s.threshold == pytest.approx(0.7)
    assert s.feature_thresholds == pytest.approx((0.7, 0.7))
    assert "quantile" in s.description


def test_unknown_rule():
    with pytest.raises(FalconError):
        select_high(H, [0], rule="best")


@pytest.mark.parametrize(
    "features, words",
    [
        ([0, 0], "repeated"),
        ([3], "out of range"),
        ([-1], "out of range"),
        ([], "empty"),
        ([1.5], "not an integer"),
    ],
)
def test_bad_features(features, words):
    with pytest.raises(FalconError) as e:
        select_high(H, features, alpha=0.5)
    assert words in e.value.message
    if words == "out of range":  # the range is said once, in the message (issue 10)
        assert "0 to 2" in e.value.message and "0 to 2" not in e.value.hint


def test_validate_features():
    assert validate_features(7, 10) == (7,)
    assert validate_features([np.int64(3), 1], 10) == (3, 1)
    with pytest.raises(FalconError):
        validate_features([10], 10)
