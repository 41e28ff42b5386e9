"""Issue 9, a seen feature in ≤ 0.3 s: choosing a feature explained before reruns the explorer
without the explainer, without building its figures again, and without computing what a closed
tab holds (the images' crops, the counterfactuals, the histogram, the feature table). Calls are
counted, never timed (the figures come from ``python -m benchmarks.app_latency``)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app.py")
TIMEOUT = 900


@pytest.fixture(scope="module")
def demo():
    """Two demo features with highly activating images, both explained (FALCON_CACHE: conftest)."""
    from falcon_core import Falcon, WorkspaceConfig

    fb = Falcon.from_config(WorkspaceConfig.demo())
    n_high = np.asarray(fb.feature_stats()["n_high"])
    feats = [int(f) for f in np.argsort(-n_high, kind="stable") if n_high[f] >= 2][:2]
    exps = {f: fb.explain(f) for f in feats}
    return SimpleNamespace(features=feats, exps=exps)


@pytest.fixture()
def counts(monkeypatch):
    """Counts the explainer's calls (any Falcon of the process: the app's own is kept by
    st.cache_resource), the figure builders' and the closed tabs' pieces."""
    from falcon_core.pipeline import Falcon
    from ui import charts, views

    n = {"explain": 0, "select_high": 0, "concept_bars": 0, "histogram": 0, "low_images": 0,
         "crop_images": 0, "activation_histogram": 0, "feature_list": 0}

    def counting(owner, name, key=None):
        original = getattr(owner, name)

        def wrapped(*a, **k):
            n[key or name] += 1
            return original(*a, **k)
        monkeypatch.setattr(owner, name, wrapped)

    counting(Falcon, "explain")
    counting(Falcon, "select_high")
    for name in ("concept_bars", "histogram"):
        counting(charts, name)
    for name in ("low_images", "crop_images", "activation_histogram"):
        counting(views, name)
    return n


def _explorer(feature: int):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.query_params["feature"] = str(feature)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _shows(at, feature: int, exp) -> None:
    """The page shows this feature's explanation: heading, both concept charts drawn from its
    own concepts, its highly activating images."""
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    assert any(s.value.startswith(f"Feature {feature}:") for s in at.subheader)
    specs = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    bars = [s for s in specs if s["data"] and s["data"][0].get("orientation") == "h"]
    shown = {tuple(s["data"][0]["y"]) for s in bars}
    for items in (exp.words, exp.phrases):
        if items:
            assert tuple(c.text for c in items)[::-1] in shown
    assert len(at.get("image")) >= 1


def test_a_seen_feature_reruns_without_the_explainer_or_new_figures(demo, counts):
    f, g = demo.features
    at = _explorer(f)
    _shows(at, f, demo.exps[f])
    at.number_input(key="w:feature").set_value(g).run()
    _shows(at, g, demo.exps[g])
    for k in counts:
        counts[k] = 0
    at.number_input(key="w:feature").set_value(f).run()  # seen: explained and drawn before
    _shows(at, f, demo.exps[f])
    assert counts["explain"] == 0 and counts["select_high"] == 0, counts
    assert counts["concept_bars"] == 0, counts  # the figures of f were built once, on its first view
    # the closed tabs' content is neither computed nor sent
    assert counts["low_images"] == counts["crop_images"] == counts["activation_histogram"] == 0
    assert counts["histogram"] == 0
    assert len(at.dataframe) == 0  # the feature table's tab is closed


def _images(at) -> int:
    """How many pictures the page shows (one st.image element may hold a list)."""
    return sum(len(e.value) for e in at.get("image"))


def test_each_tab_shows_its_part_when_opened(demo, counts):
    """The parts moved into tabs are one click away: opening a tab runs and shows its part."""
    f = demo.features[0]
    exp = demo.exps[f]
    at = _explorer(f)
    first = _images(at)
    assert first >= min(12, len(exp.high))
    assert len(at.get("plotly_chart")) == sum(bool(x) for x in (exp.words, exp.phrases))
    at.session_state["explorer_tab"] = "Counterfactuals (L)"
    at.run()
    assert counts["low_images"] == 1 and not at.exception
    if exp.low:
        assert any(f"#{exp.low[0].index}" in str(c) for c in _captions(at))
    at.session_state["explorer_tab"] = "Activation histogram"
    at.run()
    assert counts["activation_histogram"] == 1 and not at.exception
    specs = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    assert any(s["layout"].get("title", {}).get("text") == f"Activations of feature {f}"
               for s in specs)
    at.session_state["explorer_tab"] = "Their crops"
    at.run()
    assert counts["crop_images"] == 1 and not at.exception
    at.session_state["explorer_tab"] = "Every feature explained so far"
    at.run()
    assert not at.exception
    assert any(f in list(d.value["feature"]) for d in at.dataframe)


def _captions(at) -> list[str]:
    return [str(c) for e in at.get("image") for c in e.captions]


def test_a_changed_explanation_gets_its_own_figure(demo):
    """The figure cache is keyed by what a figure shows: other scores, another figure."""
    from ui import views

    exp = demo.exps[demo.features[0]]
    items = list(exp.words)
    assert items, "the test needs a feature with words"
    a = views.concept_figure(items, "Words")
    assert views.concept_figure(items, "Words") is a  # built once
    changed = [dataclasses.replace(items[0], score=items[0].score + 0.25)] + items[1:]
    b = views.concept_figure(changed, "Words")
    assert b is not a
    assert list(b.data[0].x)[::-1][0] == pytest.approx(items[0].score + 0.25)


def test_concept_bars_have_fixed_margins_that_hold_their_labels():
    """Plotly's automatic margins lay a chart out twice on every draw: the margins are set from
    the labels instead (12 px tick font, 6 px a character + 16 px of tick gap, at most 320)."""
    from falcon_core.explanation import Concept
    from ui import charts

    fig = charts.concept_bars([Concept("ab", 0.5, 0.1), Concept("a longer label", 0.4, 0.0)],
                              "Words")
    assert fig.layout.margin.autoexpand is False and fig.layout.yaxis.automargin is False
    assert fig.layout.margin.l == 16 + 6 * 14
    assert fig.layout.legend.xref == "container"  # the legend starts at the figure's left edge
    long = charts.concept_bars([Concept("x" * 100, 0.5, 0.1)], "Words")
    assert long.layout.margin.l == 320
