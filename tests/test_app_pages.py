"""Every page of the app on the demo world, through Streamlit's AppTest (no browser).

The demo world and its caches are built once per test session (tests/conftest.py gives the whole
session one fresh FALCON_CACHE); the app's Falcon is shared by all AppTest runs of the process
(st.cache_resource), so only the first run pays for loading.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app.py")
TIMEOUT = 900  # seconds for one script run (the first explanation of a feature on 2 CPU cores)

PAGES = ["pages/feature_explorer.py", "pages/pairs_and_groups.py", "pages/spurious_concepts.py",
         "pages/failures.py", "pages/concept_search.py", "pages/setup.py"]


def _demo_falcon():
    from falcon_core import Falcon, WorkspaceConfig

    return Falcon.from_config(WorkspaceConfig.demo())


@pytest.fixture(scope="module")
def demo():
    """The demo world, warmed: three features with highly activating images, two explained."""
    fb = _demo_falcon()
    n_high = np.asarray(fb.feature_stats()["n_high"])
    order = [int(f) for f in np.argsort(-n_high, kind="stable") if n_high[f] >= 2]
    assert len(order) >= 3, "the demo world should have features with highly activating images"
    feats = order[:3]
    exps = {f: fb.explain(f) for f in feats[:2]}
    from benchmarks.app_latency import demo_pair

    return SimpleNamespace(falcon=fb, features=feats, exps=exps, pair=demo_pair(falcon=fb),
                           num_features=fb.num_features)


def run_page(page: str | None = None, params: dict | None = None, first: dict | None = None):
    """AppTest of app.py, on ``page`` with the URL query ``params``."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    for k, v in (first or {}).items():
        at.query_params[k] = v
    at.run()  # registers the pages of st.navigation
    assert not at.exception, at.exception[0].value if at.exception else ""
    if page is None and not params:
        return at
    if page is not None:
        at.switch_page(page)
    for k, v in (params or {}).items():
        at.query_params[k] = v
    at.run()
    return at


def no_traceback(at) -> None:
    assert not at.exception, [e.value for e in at.exception]
    for e in at.error:  # the unexpected-error box says "Something went wrong" / "could not be"
        assert "Traceback" not in e.value


def texts(elements) -> list[str]:
    return [str(e.value) for e in elements]


def plotly_charts(at) -> list:
    return list(at.get("plotly_chart"))


# ---- the app opens on the demo world ------------------------------------------------------------

def test_app_opens_on_the_demo_world(demo):
    at = run_page()
    no_traceback(at)
    assert texts(at.title) == ["Feature explorer"]
    sidebar = " ".join(texts(at.sidebar.caption))
    assert "offline demo world" in sidebar


@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders_without_a_traceback(demo, page):
    at = run_page(page)
    no_traceback(at)
    assert len(at.title) == 1


# ---- feature explorer -----------------------------------------------------------------------------

def test_explorer_shows_a_features_concepts_images_and_exports(demo):
    f = demo.features[0]
    exp = demo.exps[f]
    at = run_page(first={"feature": str(f)})
    no_traceback(at)
    assert at.number_input(key="w:feature").value == f
    assert any(s.startswith(f"Feature {f}:") for s in texts(at.subheader))
    for word in exp.top_concepts(3):
        assert word in " ".join(texts(at.subheader))
    assert len(plotly_charts(at)) >= 2  # the words chart and the histogram
    assert at.selectbox(key="w:concept") is not None  # the concept list beside the chart
    labels = [b.label for b in at.get("download_button")]
    assert any("JSON" in l for l in labels) and any("CSV" in l for l in labels)
    assert any("PNG" in l for l in labels)
    assert len(at.get("image")) >= 1  # the image grid


def test_explorer_bad_feature_number_gives_a_message(demo):
    at = run_page(first={"feature": str(demo.num_features + 1000)})
    no_traceback(at)
    msg = " ".join(texts(at.error))
    assert str(demo.num_features + 1000) in msg
    assert any(f"between 0 and {demo.num_features - 1}" in t for t in texts(at.info))


def test_explorer_typed_feature_and_a_bad_link(demo):
    f0, f1 = demo.features[:2]
    at = run_page(first={"feature": "not-a-number"})
    no_traceback(at)
    assert any("Ignored 'feature=not-a-number'" in w for w in texts(at.warning))
    at.number_input(key="w:feature").set_value(f1).run()
    no_traceback(at)
    assert any(s.startswith(f"Feature {f1}:") for s in texts(at.subheader))
    assert at.query_params.get("feature") == str(f1)  # the URL follows the selection
    at.number_input(key="w:feature").set_value(-3).run()
    no_traceback(at)
    assert at.error


def test_query_params_restore_the_explorer_view_with_a_concept(demo):
    f = demo.features[0]
    exp = demo.exps[f]
    concept = (exp.words or exp.phrases)[0].text
    at = run_page(first={"feature": str(f), "concept": concept})
    no_traceback(at)
    assert at.number_input(key="w:feature").value == f
    assert at.selectbox(key="w:concept").value == concept
    assert f"“{concept}”" in " ".join(texts(at.markdown))
    assert len(at.dataframe) >= 1  # the captions it came from
    # choosing another concept in the list updates the URL
    other = [c.text for c in exp.words + exp.phrases if c.text != concept]
    if other:
        at.selectbox(key="w:concept").set_value(other[0]).run()
        no_traceback(at)
        assert at.query_params.get("concept") == other[0]


def test_feature_list_sorted_by_coherence(demo):
    at = run_page()
    box = at.selectbox(key="w:feature:list")
    options = list(box.options)
    assert len(options) >= 2
    cohs = []
    for o in options:
        part = o.split("·")[1].strip()
        cohs.append(float(part.split()[1]) if part.split()[1] != "–" else -1)
    assert cohs == sorted(cohs, reverse=True)
    # picking from the list selects that feature
    pick = int(options[-1].split("·")[0])
    box.set_value(pick).run()
    no_traceback(at)
    assert at.number_input(key="w:feature").value == pick


# ---- pairs and groups -----------------------------------------------------------------------------

def test_pair_page_compares_the_group_with_each_feature(demo):
    a, b = demo.pair
    at = run_page("pages/pairs_and_groups.py", {"features": f"{a},{b}"})
    no_traceback(at)
    assert at.text_input(key="w:features").value == f"{a},{b}"
    assert any(s.startswith(f"Features {a} + {b}:") for s in texts(at.subheader))
    table = at.dataframe[0].value
    assert {"concept", "group", f"feature {a}", f"feature {b}"} <= set(table.columns)
    assert len(plotly_charts(at)) >= 3
    assert any("overlap" in s.lower() for s in texts(at.markdown))


def test_pair_page_bad_input_gives_a_message(demo):
    at = run_page("pages/pairs_and_groups.py", {"features": f"1,{demo.num_features + 5}"})
    no_traceback(at)
    assert at.error and str(demo.num_features + 5) in " ".join(texts(at.error))
    at.text_input(key="w:features").set_value("3, x").run()
    no_traceback(at)
    assert any("whole number" in e for e in texts(at.error))


# ---- spurious concepts ----------------------------------------------------------------------------

def test_spurious_page_sliders_restore_and_update(demo):
    f = demo.features[0]
    at = run_page("pages/spurious_concepts.py", {"feature": str(f), "beta": "0.25",
                                                 "max_low_images": "6"})
    no_traceback(at)
    assert at.slider(key="w:beta").value == pytest.approx(0.25)
    assert at.slider(key="w:max_low_images").value == 6
    assert at.slider(key="w:spurious_threshold").value == pytest.approx(0.1)
    assert at.toggle(key="w:low_threshold:auto").value is True
    assert any(m.startswith("**Kept**") for m in texts(at.markdown))
    assert any(m.startswith("**Removed as spurious**") for m in texts(at.markdown))
    # a threshold above every L score removes nothing
    at.slider(key="w:spurious_threshold").set_value(1.0).run()
    no_traceback(at)
    assert any("Nothing was removed" in i for i in texts(at.info)) or \
        any(m == "**Removed as spurious** (0)" for m in texts(at.markdown))
    assert at.query_params.get("spurious_threshold") == "1"
    at.slider(key="w:max_low_images").set_value(1).run()
    no_traceback(at)
    assert at.query_params.get("max_low_images") == "1"


# ---- failures -------------------------------------------------------------------------------------

def test_failures_page_explains_a_misclassified_image(demo):
    fails = demo.falcon.failures()
    params = {"image": str(fails[0]["index"])} if fails else {}
    at = run_page("pages/failures.py", params)
    no_traceback(at)
    if not fails:
        assert any("every probe image right" in s for s in texts(at.success))
        return
    assert at.selectbox(key="w:image").value == fails[0]["index"]
    md = " ".join(texts(at.markdown))
    assert "True:" in md and "predicted:" in md
    assert "Toward the predicted class" in md
    assert "Feature " in md


def test_failures_page_unknown_image_in_the_link(demo):
    at = run_page("pages/failures.py", {"image": "99999999"})
    no_traceback(at)
    if demo.falcon.failures():
        assert any("not among the misclassified" in w for w in texts(at.warning))


def test_failures_upload_of_a_broken_file(demo):
    at = run_page("pages/failures.py")
    at.radio(key="fail_source").set_value("Upload an image").run()
    no_traceback(at)
    assert at.get("file_uploader")


# ---- concept search -------------------------------------------------------------------------------

def test_concept_search_finds_the_features_of_a_word(demo):
    f = demo.features[0]
    word = demo.exps[f].words[0].text
    at = run_page("pages/concept_search.py", {"word": word})
    no_traceback(at)
    assert at.text_input(key="w:word").value == word
    df = at.dataframe[0].value
    assert f in set(df["feature"]) and set(df["concept"]) >= {word}
    assert list(df["score"]) == sorted(df["score"], reverse=True)
    at.text_input(key="w:word").set_value("zzzz-no-such-word").run()
    no_traceback(at)
    assert any("No explained feature" in i for i in texts(at.info))


# ---- setup ----------------------------------------------------------------------------------------

def test_setup_page_lists_presets_status_and_precompute(demo):
    at = run_page("pages/setup.py")
    no_traceback(at)
    labels = [s.label for s in at.selectbox]
    for want in ("Backbone", "CLIP model", "Probe images", "Vocabulary (captions)"):
        assert want in labels
    backbone = at.selectbox(key="setup:backbone")
    opts = " | ".join(backbone.options)
    assert "ResNet-18" in opts and "ResNet-50" in opts and "DINO" in opts and "SimCLR" in opts
    assert "timm" in opts
    metrics = {m.label: m.value for m in at.metric}
    assert "Features explained" in metrics and "Cache size" in metrics
    assert int(metrics["Features explained"].split("/")[0]) >= 2
    assert any(b.label.startswith("Start / resume") for b in at.button)


def test_setup_missing_folder_says_what_to_do(demo):
    at = run_page("pages/setup.py")
    at.selectbox(key="setup:probe").set_value(len(at.selectbox(key="setup:probe").options) - 1)
    at.run()
    at.text_input(key=f"setup:probe:path:{len(at.selectbox(key='setup:probe').options) - 1}") \
        .set_value("/no/such/folder/of/images").run()
    at.button(key="setup_open").click().run()
    no_traceback(at)
    assert at.error, "a missing folder must give a message"
    assert "/no/such/folder" in " ".join(texts(at.error)) or at.info
    # the workspace did not change
    assert "offline demo world" in " ".join(texts(at.sidebar.caption))


def test_setup_precompute_resumes(demo):
    at = run_page("pages/setup.py")
    todo = [f for f in demo.features[::-1] + list(range(demo.num_features))
            if demo.falcon.cached_explanation(f) is None]
    f = todo[0]
    at.number_input(key="pre_first").set_value(f)
    at.number_input(key="pre_count").set_value(1)
    at.run()
    at.button(key="pre_start").click().run()
    no_traceback(at)
    assert any(s.startswith("Explained") for s in texts(at.success))
    reason = demo.falcon.try_explain(f)[1]
    assert demo.falcon.cached_explanation(f) is not None or reason  # done, or said why not
    # resuming: this feature is now done, so nothing is left to do
    at.run()
    no_traceback(at)
    assert at.button(key="pre_start").disabled or reason
    assert any("1 of these 1 are already explained" in c for c in texts(at.caption)) or reason


def test_setup_offline_download_says_so_plainly(demo):
    """CLIP weights that must be downloaded (HF_HUB_OFFLINE=1 in the tests): a plain message,
    what to do, and the demo world kept."""
    at = run_page("pages/setup.py")
    clip = at.selectbox(key="setup:clip")
    openai = next(i for i in clip.options if "OpenAI" in str(i))
    clip.set_value(list(clip.options).index(openai) if isinstance(openai, str) else openai).run()
    at.button(key="setup_open").click().run()
    no_traceback(at)
    if at.error:  # offline (the normal case here): said plainly, with what to do
        assert any("download" in e.lower() for e in texts(at.error))
        assert any("demo world" in i or "local" in i for i in texts(at.info))
        assert "offline demo world" in " ".join(texts(at.sidebar.caption))
