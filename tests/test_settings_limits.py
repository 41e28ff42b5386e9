"""Every setting is checked once, in FalconSettings, against one table (LIMITS): a range or
choices, a message that says what is wrong and a hint that says what the setting is."""

from __future__ import annotations

import dataclasses
import math

import pytest

from falcon_core.errors import FalconError
from falcon_core.settings import LIMITS, FalconSettings, Limit, check_setting


@pytest.mark.parametrize("name, value, words", [
    ("top_k", 0, "Setting top_k=0 is out of range: it must be between 1 and 1000."),
    ("beta", 5.0, "Setting beta=5.0 is out of range: it must be between -1 and 1."),
    ("beta", -1.5, "between -1 and 1"),
    ("spurious_threshold", 7.0, "between 0 and 1"),
    ("quantile", 1.0, "between 0.5 and 0.9999"),
    ("cam_threshold", -0.1, "between 0 and 0.99"),
    ("cam_box_margin", -1.0, "between 0 and 8"),
    ("low_threshold", math.nan, "low_threshold=nan is not a finite number"),
    ("alpha_std", math.inf, "alpha_std=inf is not a finite number"),
    ("alpha_std", -math.inf, "not a finite number"),
    ("beta", math.nan, "not a finite number"),
    ("top_k", 2.5, "must be a whole number"),
    ("top_k", True, "must be a whole number"),
    ("contrast", 1, "must be true or false"),
    ("beta", "0.3", "must be a number"),
    ("high_rule", "best", "must be one of global, topk, quantile"),
    ("batch_size", 100000, "between 1 and 512"),
])
def test_a_value_out_of_its_range_gets_a_message_and_a_hint(name, value, words):
    with pytest.raises(FalconError) as e:
        FalconSettings(**{name: value})
    assert words in e.value.message
    hint = e.value.hint or ""
    assert hint.startswith(f"{name}: {LIMITS[name].what}")  # what the setting is
    assert "default" in hint  # and what to fall back on


def test_replace_and_from_dict_check_too():
    s = FalconSettings()
    with pytest.raises(FalconError, match="beta=2.0 is out of range"):
        s.replace(beta=2.0)
    with pytest.raises(FalconError, match="Unknown setting"):
        s.replace(betta=0.2)
    with pytest.raises(FalconError, match="Unknown setting"):
        FalconSettings.from_dict({"betta": 0.2})
    with pytest.raises(FalconError, match="not a finite number"):
        FalconSettings.from_dict({"low_threshold": float("nan")})


def test_values_inside_the_ranges_pass_and_ints_become_floats():
    s = FalconSettings(beta=0, low_threshold=-1, alpha_std=50, top_k=1000, max_low_images=0,
                       top_words=0, quantile=0.5)
    assert s.beta == 0.0 and isinstance(s.beta, float)
    assert s.low_threshold == -1.0 and isinstance(s.low_threshold, float)
    assert FalconSettings(low_threshold=None).low_threshold is None
    assert FalconSettings() == FalconSettings(**FalconSettings().to_dict())


def test_a_new_setting_without_a_row_is_still_checked_for_type_and_finiteness(monkeypatch):
    """A field someone adds to FalconSettings fits the generic checks at once (the table row,
    with its range, is asked for by test_links.test_every_setting_has_a_range...)."""

    @dataclasses.dataclass(frozen=True)
    class Extended(FalconSettings):
        new_weight: float = 1.0
        new_count: int = 3

    import falcon_core.settings as mod

    monkeypatch.setattr(mod, "FalconSettings", Extended)
    assert Extended(new_weight=2.0).new_weight == 2.0
    with pytest.raises(FalconError, match="new_weight=nan is not a finite number"):
        Extended(new_weight=float("nan"))
    with pytest.raises(FalconError, match="new_count=1.5 must be a whole number"):
        Extended(new_count=1.5)
    monkeypatch.setitem(LIMITS, "new_count", Limit(0, 10, what="a new count"))
    with pytest.raises(FalconError, match="between 0 and 10"):
        Extended(new_count=11)
