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
