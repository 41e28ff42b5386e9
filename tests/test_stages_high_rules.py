"""Stage 2's rules as classes (stages/high_rules/), each against values worked out by hand, and
the registry that makes a rule a setting."""

import numpy as np
import pytest

from falcon_core.errors import FalconError
from falcon_core.settings import HIGH_RULES, FalconSettings
from falcon_core.stages.common import name_features
from falcon_core.stages.high_rules import RULES, GlobalThreshold, HighRule, Quantile, TopK
from falcon_core.stages.selection import select_high

# 5 images x 3 features (as in test_stages_selection.py)
H = np.array([[0.9, 0.1, 0.5], [0.2, 0.8, 0.6], [0.7, 0.7, 0.0], [0.6, 0.3, 0.1], [0.95, 0.9, 0.2]])
ALL = np.ones(5, dtype=bool)


def test_global_threshold_passed_and_describe():
    rule = GlobalThreshold(alpha=0.5)
    # feature 0 > 0.5: rows 0, 2, 3, 4; row 4 marked unreadable is never passed
    assert rule.passed(H, (0,), ALL).tolist() == [True, False, True, True, True]
    assert rule.passed(H, (0,), ALL & [1, 1, 1, 1, 0]).tolist() == [True, False, True, True, False]
    assert rule.threshold == 0.5 and rule.feature_thresholds == (0.5,)
    assert rule.describe((0,), 4, 4) == ("4 images have feature 0 > α = 0.5 (the global "
                                          "threshold); all are used.")
    assert rule.describe((0,), 4, 2).endswith("; the 2 highest are used.")
    assert rule.describe((0,), 0, 0) == ("No image has feature 0 > α = 0.5 (the global "
                                          "threshold); try the top-k or quantile rule.")
    # group {0, 1}: both > 0.5 on rows 2 and 4 only
    assert rule.passed(H, (0, 1), ALL).tolist() == [False, False, True, False, True]
    # alpha from the matrix: mean + 1·std of the 15 entries
    auto = GlobalThreshold(k_std=1.0)
    auto.passed(H, (0,), ALL)
    assert auto.threshold == pytest.approx(H.mean() + H.std())
    assert "mean + 1·std" in auto.condition((0,))


def test_top_k_passed_and_describe():
    rule = TopK(top_k=3)
    # summed {0, 1}: 1.0, 1.0, 1.4, 0.9, 1.85 -> 4, 2, then the tie 1.0 -> lower index 0
    assert np.flatnonzero(rule.passed(H, (0, 1), ALL)).tolist() == [0, 2, 4]
    assert rule.threshold is None and rule.feature_thresholds is None
    assert rule.describe((0, 1), 3, 3) == ("Using the 3 images with the highest summed activation "
                                            "of features {0, 1} (top-3 rule, no threshold).")
    assert rule.describe((0,), 3, 1).endswith("(top-3 rule, no threshold); the 1 highest are used.")
    none = np.zeros(5, dtype=bool)
    assert not rule.passed(H, (0,), none).any()
    assert rule.describe((0,), 0, 0).startswith("No usable image")
    with pytest.raises(FalconError, match="at least 1"):
        TopK(top_k=0)


def test_quantile_passed_and_describe():
    rule = Quantile(quantile=0.5)
    # medians: f0 0.7, f1 0.7 -> f0 > 0.7: rows 0, 4; f1 > 0.7: rows 1, 4; both: row 4
    assert np.flatnonzero(rule.passed(H, (0, 1), ALL)).tolist() == [4]
    assert rule.feature_thresholds == pytest.approx((0.7, 0.7)) and rule.threshold == pytest.approx(0.7)
    assert rule.describe((0, 1), 1, 1) == ("1 image has every feature of {0, 1} above its own 0.5 "
                                            "quantile (0: 0.7, 1: 0.7); it is used.")
    # an unreadable row is neither passed nor part of the quantile: f0 over rows 0-3 is
    # 0.9, 0.2, 0.7, 0.6 -> median 0.65 -> rows 0 (0.9) and 2 (0.7)
    readable = np.array([True, True, True, True, False])
    assert np.flatnonzero(rule.passed(H, (0,), readable)).tolist() == [0, 2]
    assert rule.threshold == pytest.approx(0.65)
    with pytest.raises(FalconError, match="between 0 and 1"):
        Quantile(quantile=1.0)


def test_the_rules_are_registered_by_name_once():
    assert RULES.names() == ["global", "topk", "quantile"]
    assert HIGH_RULES == tuple(RULES.names())
    for name in RULES.names():
        assert RULES.factory(name).name == name


def test_a_registered_rule_is_a_setting_and_a_selection(monkeypatch):
    class Bottom(HighRule):
        """The two images with the lowest summed activation (a rule the tests make)."""
        name = "bottom"

        def passed(self, Hn, feats, valid):
            summed = Hn[:, list(feats)].sum(axis=1)
            mask = np.zeros(len(Hn), dtype=bool)
            mask[np.argsort(summed)[:2]] = True
            return mask & valid

        def condition(self, feats):
            return f"{name_features(feats)} among the 2 lowest"

    RULES.register("bottom", Bottom)
    try:
        assert FalconSettings(high_rule="bottom").high_rule == "bottom"
        s = select_high(H, [2], rule="bottom")
        # feature 2: 0.5, 0.6, 0.0, 0.1, 0.2 -> rows 2 and 3; best first: 3 (0.1), 2 (0.0)
        assert s.indices.tolist() == [3, 2]
        assert s.description == "2 images have feature 2 among the 2 lowest; all are used."
    finally:
        RULES.unregister("bottom")
    with pytest.raises(FalconError):
        FalconSettings(high_rule="bottom")
