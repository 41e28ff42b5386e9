"""Issue 9: opening a workspace shows a progress bar with the step, its stage and the time left
(the bar is the page's: nothing that touches a widget runs inside ``st.cache_resource``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ui.progress import StepTracker

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app.py")


def test_step_tracker_says_the_step_its_stage_and_the_time_left():
    now = [100.0]
    t = StepTracker(["the models", "Stage 1", "the text embeddings", "spaCy"],
                    clock=lambda: now[0])
    frac, text = t.begin(0)
    assert frac == 0.0 and text.startswith("step 1 of 4: the models")
    now[0] = 104.0
    frac, text = t.begin(1)
    assert frac == pytest.approx(0.25)
    assert "step 2 of 4: Stage 1" in text and "4 s so far" in text
    frac, text = t.update(0, 1000, "representations")
    assert "left" not in text  # no throughput measured yet
    now[0] = 114.0  # 250 images in 10 s: 750 left take 30 s
    frac, text = t.update(250, 1000, "representations")
    assert frac == pytest.approx((1 + 0.25) / 4)
    assert "representations: 250 / 1000 — about 30 s left" in text
    assert "14 s so far" in text
    now[0] = 124.0  # a new step measures its own throughput
    frac, text = t.begin(2)
    assert frac == pytest.approx(0.5) and "left" not in text
    t.update(0, 100, "text embeddings")
    now[0] = 126.0
    frac, text = t.update(50, 100, "text embeddings")
    assert frac == pytest.approx(2.5 / 4) and "about 2 s left" in text
    frac, text = t.begin(4)
    assert frac == 1.0 and text == "done in 26 s"


@pytest.fixture
def recorded_bars(monkeypatch):
    """Every value and text a progress bar showed during the test (AppTest runs the page in
    this process: the bar's first draw goes through st.progress, its updates through
    DeltaGenerator.progress)."""
    import streamlit
    from streamlit.delta_generator import DeltaGenerator

    shown: list[tuple[float, str]] = []
    original = DeltaGenerator.progress

    def progress(self, value, text=None):
        shown.append((float(value), str(text)))
        return original(self, value, text=text)

    monkeypatch.setattr(DeltaGenerator, "progress", progress)
    monkeypatch.setattr(streamlit, "progress",
                        lambda value, text=None: progress(streamlit._main, value, text))
    return shown


def test_a_cold_workspace_opens_under_a_progress_bar_then_never_again(tmp_path, monkeypatch,
                                                                     recorded_bars):
    """A workspace never opened (a fresh cache, nothing shipped: Stage 1 and the text embeddings
    are computed) is opened under a bar that names each step and the library's reports within
    it, and the page says what it did; the next run of the page opens nothing again."""
    from streamlit.testing.v1 import AppTest

    from makers import make_tiny_world, tiny_config

    world = make_tiny_world(tmp_path / "w")
    monkeypatch.setenv("FALCON_CACHE", str(tmp_path / "cache"))
    at = AppTest.from_file(APP, default_timeout=600)
    at.session_state["workspace"] = tiny_config(world).to_dict()
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    # the opening's bar (the explorer's first explanation has its own bar after it)
    opening = [(v, t) for v, t in recorded_bars if t.startswith("Opening backbone resnet18")]
    assert opening, f"no progress bar was shown while the workspace was opened: {recorded_bars}"
    texts = [t for _, t in opening]
    for step in ("the models, the probe set and the vocabulary",
                 "Stage 1, the representations of the probe images",
                 "the CLIP text embeddings of the vocabulary"):
        assert any(step in t for t in texts), (step, texts)
    # the library's own reports, within their step (which of them is drawn depends on timing:
    # the bar redraws at most every 0.15 s, and always at the end of a step's report)
    assert any("step 1 of" in t and "opening the workspace: 4 / 4" in t for t in texts), texts
    n = len(list(Path(world["images"]).rglob("*.png")))
    assert any("Stage 1" in t and f"representations: {n} / {n}" in t for t in texts), texts
    values = [v for v, _ in opening]
    assert values == sorted(values) and values[-1] == 1.0  # the bar only moves forward
    assert any(c.value.startswith("Opened backbone resnet18") for c in at.caption)
    # it was prepared: the page did not compute Stage 1 again (the explorer shows a feature)
    assert at.number_input, "the feature explorer did not get past the opening"

    recorded_bars.clear()
    at.run()  # the next run: opened already, no bar, no "Opened ..." line
    assert not at.exception and not at.error
    assert not [t for _, t in recorded_bars if t.startswith("Opening ")], recorded_bars
    assert not any(c.value.startswith("Opened ") for c in at.caption)
