"""Every page of the app on the demo world, through Streamlit's AppTest (no browser).

The demo world and its caches are built once per test session (tests/conftest.py gives the whole
session one fresh FALCON_CACHE); the app's Falcon is shared by all AppTest runs of the process
(st.cache_resource), so only the first run pays for loading.
"""

from __future__ import annotations

import re
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


def no_error(at) -> None:
    """The page rendered with no exception and no error box at all (an unexpected error inside
    a page is caught and shown as an error box, so no "Traceback" is not enough)."""
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, texts(at.error)


def only_expected_error(at, *needles: str) -> None:
    """No exception, at least one error box, and every error box says what is expected (not the
    catch-all box of an unexpected error)."""
    assert not at.exception, [e.value for e in at.exception]
    errs = texts(at.error)
    assert errs, "an error message was expected"
    for e in errs:
        assert any(n in e for n in needles), (e, needles)
        assert "Something went wrong" not in e and "could not be shown" not in e, e


def texts(elements) -> list[str]:
    return [str(e.value) for e in elements]


def plotly_charts(at) -> list:
    return list(at.get("plotly_chart"))


# ---- the app opens on the demo world ------------------------------------------------------------

def test_app_opens_on_the_demo_world(demo):
    at = run_page()
    no_error(at)
    assert texts(at.title) == ["Feature explorer"]
    sidebar = " ".join(texts(at.sidebar.caption))
    assert "offline demo world" in sidebar


@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders_with_no_error_at_all(demo, page):
    at = run_page(page)
    no_error(at)
    assert len(at.title) == 1


# ---- feature explorer -----------------------------------------------------------------------------

def test_explorer_shows_a_features_concepts_images_and_exports(demo):
    f = demo.features[0]
    exp = demo.exps[f]
    at = run_page(first={"feature": str(f)})
    no_error(at)
    assert at.number_input(key="w:feature").value == f
    assert any(s.startswith(f"Feature {f}:") for s in texts(at.subheader))
    for word in exp.top_concepts(3):
        assert word in " ".join(texts(at.subheader))
    assert len(plotly_charts(at)) >= 2  # the words and the phrases charts (the histogram: a tab)
    assert at.selectbox(key="w:concept") is not None  # the concept list beside the chart
    labels = [b.label for b in at.get("download_button")]
    assert any("JSON" in l for l in labels) and any("CSV" in l for l in labels)
    assert any("PNG" in l for l in labels)
    assert len(at.get("image")) >= 1  # the image grid


def test_explorer_bad_feature_number_gives_a_message(demo):
    """?feature=N+1000: a link value out of range is a notice, the range said once (not three
    times), and the page shows its default."""
    bad = demo.num_features + 1000
    at = run_page(first={"feature": str(bad)})
    no_error(at)
    msg = " ".join(texts(at.warning))
    assert f"Ignored 'feature={bad}' in the link" in msg
    assert f"{demo.num_features} features (0 to {demo.num_features - 1}), not {bad}" in msg
    said = " ".join(texts(at.error) + texts(at.info) + texts(at.warning) + texts(at.caption))
    assert said.count(f"0 to {demo.num_features - 1}") == 1, said
    assert at.number_input(key="w:feature").value != bad


def test_explorer_typed_feature_and_a_bad_link(demo):
    f0, f1 = demo.features[:2]
    at = run_page(first={"feature": "not-a-number"})
    no_error(at)
    assert any("Ignored 'feature=not-a-number'" in w for w in texts(at.warning))
    at.number_input(key="w:feature").set_value(f1).run()
    no_error(at)
    assert any(s.startswith(f"Feature {f1}:") for s in texts(at.subheader))
    assert at.query_params.get("feature") == str(f1)  # the URL follows the selection
    at.number_input(key="w:feature").set_value(-3).run()
    only_expected_error(at, "Feature -3 is out of range")


def test_query_params_restore_the_explorer_view_with_a_concept(demo):
    f = demo.features[0]
    exp = demo.exps[f]
    concept = (exp.words or exp.phrases)[0].text
    at = run_page(first={"feature": str(f), "concept": concept})
    no_error(at)
    assert at.number_input(key="w:feature").value == f
    assert at.selectbox(key="w:concept").value == concept
    assert f"“{concept}”" in " ".join(texts(at.markdown))
    assert len(at.dataframe) >= 1  # the captions it came from
    # choosing another concept in the list updates the URL
    other = [c.text for c in exp.words + exp.phrases if c.text != concept]
    assert other, "the explanation should have more than one concept"
    at.selectbox(key="w:concept").set_value(other[0]).run()
    no_error(at)
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
    no_error(at)
    assert at.number_input(key="w:feature").value == pick


# ---- pairs and groups -----------------------------------------------------------------------------

def test_pair_page_compares_the_group_with_each_feature(demo):
    a, b = demo.pair
    at = run_page("pages/pairs_and_groups.py", {"features": f"{a},{b}"})
    no_error(at)
    assert at.text_input(key="w:features").value == f"{a},{b}"
    assert any(s.startswith(f"Features {a} + {b}:") for s in texts(at.subheader))
    table = at.dataframe[0].value
    assert {"concept", "group", f"feature {a}", f"feature {b}"} <= set(table.columns)
    assert len(plotly_charts(at)) >= 3
    assert any("overlap" in s.lower() for s in texts(at.markdown))


def test_pair_page_bad_input_gives_a_message(demo):
    at = run_page("pages/pairs_and_groups.py", {"features": f"1,{demo.num_features + 5}"})
    no_error(at)  # a feature the backbone does not have, in a link: a notice
    assert any(f"Ignored 'features=1,{demo.num_features + 5}' in the link" in w and
               f"not {demo.num_features + 5}" in w for w in texts(at.warning))
    at.text_input(key="w:features").set_value("3, x").run()
    only_expected_error(at, "whole number")


def plotly_z(at, key: str) -> tuple[list[str], np.ndarray]:
    """The x labels and the z matrix of the page's plotly chart ``key`` (plotly may encode z as
    base64 bytes)."""
    import base64
    import json

    chart = next(c for c in plotly_charts(at) if c.key == key)
    trace = json.loads(chart.proto.spec)["data"][0]
    z = trace["z"]
    if isinstance(z, dict):
        shape = [int(t) for t in str(z["shape"]).split(",")]
        z = np.frombuffer(base64.b64decode(z["bdata"]), dtype=z["dtype"]).reshape(shape)
    return list(trace["x"]), np.asarray(z, dtype=np.float64)


def test_pair_page_offers_the_groups_of_the_demo_world(demo):
    """Stage 8 on the demo world uses the workspace's rule (top-k): each feature's T and the
    signatures worked out here with plain numpy; the page offers exactly those groups, and its
    co-activation heatmap is the Jaccard index of the same sets."""
    fb = demo.falcon
    s = fb.settings
    assert s.high_rule == "topk"
    Hn = np.asarray(fb.normalized(), dtype=np.float64)
    _, valid = fb.representations()
    rows = np.flatnonzero(valid)
    member = np.zeros(Hn.shape, dtype=bool)
    for f in range(Hn.shape[1]):
        member[rows[np.lexsort((rows, -Hn[rows, f]))][: s.top_k], f] = True
    sigs: dict[tuple[int, ...], int] = {}
    for j in np.flatnonzero(member.sum(axis=1) >= 2):
        sig = tuple(int(f) for f in np.flatnonzero(member[j]))
        sigs[sig] = sigs.get(sig, 0) + 1
    expected = sorted(((sig, n) for sig, n in sigs.items() if n >= s.group_min_images),
                      key=lambda g: (-g[1], g[0]))
    assert expected, "the demo world should have groups"

    at = run_page("pages/pairs_and_groups.py")
    no_error(at)
    box = at.selectbox(key="w:group")
    assert list(box.options) == [f"features {','.join(map(str, sig))} · {n} images"
                                 for sig, n in expected]
    assert f"({len(expected)} found: images among the top {s.top_k} images of exactly" in box.label
    a, b = expected[0][0][:2]
    assert any(t.startswith(f"Features {a} + {b}") for t in texts(at.subheader))  # the first
    # the heatmap: Jaccard of the same sets; every feature shown is high together with another
    labels, Z = plotly_z(at, "coact")
    feats = [int(x) for x in labels]
    assert len(feats) == 48
    m = member[:, feats]
    inter = m.T.astype(np.int64) @ m.astype(np.int64)
    union = m.sum(axis=0)[:, None] + m.sum(axis=0)[None, :] - inter
    np.testing.assert_allclose(Z, inter / union)
    off = Z - np.diag(np.diag(Z))
    assert (off > 0).any(axis=1).all()
    # picking another group from the list makes it the features shown
    sig = expected[1][0]
    box.set_value(1).run()
    no_error(at)
    assert at.text_input(key="w:features").value == ",".join(map(str, sig))
    assert any(t.startswith("Features " + " + ".join(map(str, sig)) + ":")
               for t in texts(at.subheader))


# ---- spurious concepts ----------------------------------------------------------------------------

def test_spurious_page_sliders_restore_and_update(demo):
    f = demo.features[0]
    # the absolute threshold (the authors'): the slider's value is the L score itself
    at = run_page("pages/spurious_concepts.py", {"feature": str(f), "beta": "0.25",
                                                 "max_low_images": "6",
                                                 "spurious_rule": "absolute"})
    no_error(at)
    assert at.radio(key="w:spurious_rule").value == "absolute"
    assert at.slider(key="w:beta").value == pytest.approx(0.25)
    assert at.slider(key="w:max_low_images").value == 6
    assert at.slider(key="w:spurious_threshold").value == pytest.approx(0.1)
    assert at.toggle(key="w:low_threshold:auto").value is True
    assert any(m.startswith("**Kept**") for m in texts(at.markdown))
    assert any(m.startswith("**Removed as spurious**") for m in texts(at.markdown))
    # a threshold above every L score removes nothing
    at.slider(key="w:spurious_threshold").set_value(1.0).run()
    no_error(at)
    # an L score is a mean of cosines below 1: nothing reaches 1.0
    assert "**Removed as spurious** (0)" in texts(at.markdown)
    assert any("Nothing was removed with these settings" in i for i in texts(at.info))
    assert at.query_params.get("spurious_threshold") == "1"
    at.slider(key="w:max_low_images").set_value(1).run()
    no_error(at)
    assert at.query_params.get("max_low_images") == "1"


def test_spurious_page_rules_from_a_link_and_what_they_did(demo):
    """The counterfactual rule and the threshold rule come from the link, the explanation is
    made with them (its L description names the quantile rule, not the default twins), the threshold actually used is said
    with where it comes from, and concept hygiene lists what it dropped (the demo's caption
    fillers) with each one's share of the captions."""
    f = demo.features[0]
    at = run_page("pages/spurious_concepts.py", {"feature": str(f), "low_rule": "quantile",
                                                 "spurious_rule": "relative"})
    no_error(at)
    assert at.selectbox(key="w:low_rule").value == "quantile"
    assert at.radio(key="w:spurious_rule").value == "relative"
    exp = demo.falcon.explain(f, demo.falcon.settings.replace(low_rule="quantile",
                                                              spurious_rule="relative"))
    captions = texts(at.caption)
    assert f"**L:** {exp.low_selection['description']}" in captions
    assert "quantile" in exp.low_selection["description"]
    threshold = exp.low_selection["spurious"]["threshold"]
    assert threshold != pytest.approx(0.1)  # the demo CLIP's scale is not ViT-B/32's
    assert any(c.startswith("**Threshold:** A concept is spurious when its L-score is ≥ "
                            f"{threshold:.3g} = 0.1 × ") for c in captions), captions
    dropped = exp.hygiene["dropped_words"] + exp.hygiene["dropped_phrases"]
    assert any(e.label == f"Dropped by concept hygiene ({len(dropped)})" for e in at.expander)
    # back to the authors' rules: the link says so and the threshold is 0.1 as is
    at.selectbox(key="w:low_rule").set_value("global").run()
    at.radio(key="w:spurious_rule").set_value("absolute").run()
    no_error(at)
    assert at.query_params.get("low_rule") in (None, "global")
    assert any(c.startswith("**Threshold:** A concept is spurious when its L-score is ≥ 0.1 ")
               for c in texts(at.caption))


# ---- failures -------------------------------------------------------------------------------------

def head_by_hand(demo):
    """The demo classifier's predictions worked out from its checkpoint file with plain numpy:
    logits = H @ U.T + b, with U and b read from the state dict (not through the library)."""
    import torch

    fb = demo.falcon
    sd = torch.load(fb.backbone.weights, map_location="cpu", weights_only=True)
    U = sd["fc.weight"].numpy().astype(np.float64)
    b = sd["fc.bias"].numpy().astype(np.float64)
    H, valid = fb.representations()
    H = np.asarray(H, dtype=np.float64)
    logits = H @ U.T + b
    labels = np.asarray(fb.probe.labels)
    assert list(fb.probe.class_names) == list(fb.backbone.class_names)
    pred = logits.argmax(axis=1)
    wrong = np.flatnonzero(valid & (labels >= 0) & (pred != labels))
    return SimpleNamespace(U=U, b=b, H=H, logits=logits, labels=labels, pred=pred, wrong=wrong,
                           names=list(fb.backbone.class_names),
                           accuracy=float((pred[labels >= 0] == labels[labels >= 0]).mean()))


def top_features(h, u, k):
    c = h * u
    order = sorted(range(len(c)), key=lambda f: (-c[f], f))[:k]
    return order, c


def shown_features(md: list[str]) -> list[int]:
    import re

    out = []
    for m in md:
        hit = re.match(r"\*\*Feature (\d+)\*\* · contribution (-?[0-9.]+)", m)
        if hit:
            out.append(int(hit.group(1)))
    return out


def test_failures_page_explains_a_misclassified_image(demo):
    hand = head_by_hand(demo)
    assert len(hand.wrong) > 0, "the demo classifier is expected to make mistakes"
    i = int(hand.wrong[0])
    at = run_page("pages/failures.py", {"image": str(i)})
    no_error(at)
    assert at.selectbox(key="w:image").value == i
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Misclassified"] == str(len(hand.wrong))
    assert metrics["Accuracy"] == f"{hand.accuracy:.1%}"
    md = texts(at.markdown)
    true, pred = hand.labels[i], hand.pred[i]
    assert f"### True: **{hand.names[true]}** → predicted: **{hand.names[pred]}**" in md
    assert f"#### Toward the predicted class: {hand.names[pred]}" in md
    # the features shown: the top 3 of h * U[pred], then the top 3 of h * U[true]
    to_pred, _ = top_features(hand.H[i], hand.U[pred], 3)
    to_true, _ = top_features(hand.H[i], hand.U[true], 3)
    assert shown_features(md) == to_pred + to_true


def test_failures_page_unknown_image_in_the_link(demo):
    hand = head_by_hand(demo)
    at = run_page("pages/failures.py", {"image": "99999999"})
    no_error(at)
    assert any("Ignored 'image=99999999' in the link: this workspace has "
               f"{demo.falcon.num_images} images" in w for w in texts(at.warning))
    assert at.selectbox(key="w:image").value == int(hand.wrong[0])  # the first one instead
    right = next(j for j in range(demo.falcon.num_images) if j not in set(hand.wrong.tolist()))
    at = run_page("pages/failures.py", {"image": str(right)})  # an image classified right
    no_error(at)
    assert any(f"Probe image {right} is not among the misclassified" in w
               for w in texts(at.warning))
    assert at.selectbox(key="w:image").value == int(hand.wrong[0])


def _png(image) -> bytes:
    import io

    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def test_failures_upload_of_an_image_explains_its_prediction(demo):
    """Upload a misclassified probe image as a PNG and give its true class: the page shows the
    prediction and the features toward each class, as worked out from the checkpoint."""
    hand = head_by_hand(demo)
    top2 = np.sort(hand.logits[hand.wrong], axis=1)[:, -2:]
    i = int(hand.wrong[int(np.argmax(top2[:, 1] - top2[:, 0]))])  # the clearest mistake
    true, pred = int(hand.labels[i]), int(hand.pred[i])
    at = run_page("pages/failures.py")
    at.radio(key="fail_source").set_value("Upload an image").run()
    no_error(at)
    at.file_uploader(key="fail_upload").set_value(
        (f"probe-{i}.png", _png(demo.falcon.probe.load(i)), "image/png"))
    at.selectbox(key="fail_true").set_value(true)
    at.run()
    no_error(at)
    md = texts(at.markdown)
    assert f"### True: **{hand.names[true]}** → predicted: **{hand.names[pred]}**" in md
    to_pred, c_pred = top_features(hand.H[i], hand.U[pred], 3)
    to_true, _ = top_features(hand.H[i], hand.U[true], 3)
    assert shown_features(md) == to_pred + to_true
    first = next(m for m in md if m.startswith(f"**Feature {to_pred[0]}**"))
    assert float(first.rsplit(" ", 1)[1]) == pytest.approx(c_pred[to_pred[0]], abs=2e-3)


def test_failures_upload_of_a_broken_file(demo):
    at = run_page("pages/failures.py")
    at.radio(key="fail_source").set_value("Upload an image").run()
    at.file_uploader(key="fail_upload").set_value(("broken.png", b"\x89PNG not really",
                                                   "image/png")).run()
    # the library's image rules (load_image_bytes), not the page's own
    only_expected_error(at, "The upload cannot be used: Cannot read image “broken.png”: not a "
                            "recognised image file")
    assert not any(m.startswith("### True:") for m in texts(at.markdown))


# ---- concept search -------------------------------------------------------------------------------

def test_concept_search_finds_the_features_of_a_word(demo):
    f = demo.features[0]
    word = demo.exps[f].words[0].text
    at = run_page("pages/concept_search.py", {"word": word})
    no_error(at)
    assert at.text_input(key="w:word").value == word
    df = at.dataframe[0].value
    assert f in set(df["feature"]) and set(df["concept"]) >= {word}
    assert list(df["score"]) == sorted(df["score"], reverse=True)
    at.text_input(key="w:word").set_value("zzzz-no-such-word").run()
    no_error(at)
    assert any("No explained feature" in i for i in texts(at.info))


# ---- setup ----------------------------------------------------------------------------------------

def test_setup_page_lists_presets_status_and_precompute(demo):
    at = run_page("pages/setup.py")
    no_error(at)
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


def test_setup_missing_folder_says_what_to_do(demo, monkeypatch):
    monkeypatch.setenv("FALCON_ALLOW_PATHS", "1")  # typed paths (off by default when served)
    at = run_page("pages/setup.py")
    at.selectbox(key="setup:probe").set_value(len(at.selectbox(key="setup:probe").options) - 1)
    at.run()
    at.text_input(key=f"setup:probe:path:{len(at.selectbox(key='setup:probe').options) - 1}") \
        .set_value("/no/such/folder/of/images").run()
    at.button(key="setup_open").click().run()
    only_expected_error(at, "/no/such/folder/of/images")
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
    assert any("0 of these 1 are already explained; 1 to go" in c for c in texts(at.caption))
    at.button(key="pre_start").click().run()
    no_error(at)
    # the top-k rule gives every feature T
    assert any(t.startswith("Explained 1 feature in ") for t in texts(at.success))
    assert demo.falcon.cached_explanation(f) is not None  # saved as soon as it was done
    # resuming: this feature is now done, so nothing is left to do
    at.run()
    no_error(at)
    assert at.button(key="pre_start").disabled
    assert any("1 of these 1 are already explained; 0 to go" in c for c in texts(at.caption))


def test_setup_offline_download_says_so_plainly(demo, monkeypatch):
    """CLIP weights that must be downloaded, with the network down: a plain message, what to do,
    and the demo world kept."""
    import open_clip.factory

    def unreachable(*a, **k):
        raise OSError("network is unreachable")

    monkeypatch.setattr(open_clip.factory, "download_pretrained", unreachable)
    at = run_page("pages/setup.py")
    clip = at.selectbox(key="setup:clip")
    openai = next(i for i in clip.options if "OpenAI" in str(i))
    clip.set_value(list(clip.options).index(openai) if isinstance(openai, str) else openai).run()
    at.button(key="setup_open").click().run()
    only_expected_error(at, "Cannot download what this workspace needs")
    assert any("download" in e.lower() for e in texts(at.error))
    assert any("demo world" in i or "local" in i for i in texts(at.info))
    assert "offline demo world" in " ".join(texts(at.sidebar.caption))

# ---- what a first visit tripped on ----------------------------------------------------------------

def test_feature_list_counts_the_feature_just_explained(demo):
    """The list's label used to be one step behind (0 while a feature was on screen)."""
    fb = demo.falcon
    fresh = next(f for f in range(demo.num_features) if fb.cached_explanation(f) is None)
    before = len(fb.explained())
    at = run_page(first={"feature": str(fresh)})
    no_error(at)
    assert any(s.startswith(f"Feature {fresh}:") for s in texts(at.subheader))
    label = at.selectbox(key="w:feature:list").label
    assert f"one of the {before + 1} features explained so far" in label, label
    assert any(o.startswith(f"{fresh} · ") for o in at.selectbox(key="w:feature:list").options)


def test_spurious_page_names_its_feature(demo):
    f = demo.features[0]
    at = run_page("pages/spurious_concepts.py", {"feature": str(f)})
    no_error(at)
    assert any(s.startswith(f"Feature {f}:") for s in texts(at.subheader))
    assert at.number_input(key="w:feature").value == f


def test_spurious_lists_lose_no_concept_when_the_threshold_moves(demo):
    """Raising the removal threshold moves concepts from "Removed" to "Kept" (the kept list
    used to be cut at the top 8, so they vanished from both); each removed concept lists the
    L images whose captions hold it as a whole concept."""
    f = demo.features[0]
    at = run_page("pages/spurious_concepts.py", {"feature": str(f)})
    no_error(at)

    def lists():
        kept = set(at.dataframe[0].value["concept"])
        removed = set(at.dataframe[1].value["concept"]) if len(at.dataframe) > 1 else set()
        return kept, removed

    kept1, removed1 = lists()
    assert removed1, "the test needs a feature with removed concepts"
    exp = demo.falcon.cached_explanation(f)
    for c in exp.spurious_words + exp.spurious_phrases:
        n = sum(any(c.text in cap.words or c.text in cap.phrases for cap in rec.captions)
                for rec in exp.low)
        assert any(e.label.startswith(f"“{c.text}”") and f"captions of {n} L image" in e.label
                   for e in at.expander), c.text
    at.slider(key="w:spurious_threshold").set_value(0.5).run()
    no_error(at)
    kept2, removed2 = lists()
    back = removed1 - removed2
    assert back, "a higher threshold should let some concepts back"
    assert back <= kept2
    assert (kept1 | removed1) <= (kept2 | removed2), "a concept vanished from both lists"


def test_upload_mode_drops_the_probe_image_from_the_link(demo):
    fails = demo.falcon.failures()
    at = run_page("pages/failures.py", {"image": str(fails[0]["index"])})
    no_error(at)
    assert at.query_params.get("image") == str(fails[0]["index"])
    at.radio(key="fail_source").set_value("Upload an image").run()
    no_error(at)
    assert "image" not in at.query_params


def test_pairs_table_shows_a_dash_not_none_and_says_so(demo):
    """The grid draws a missing number as "None" (a Styler's na_rep does not reach it): the
    cells hold the text shown, a dash where a concept is missing, as the caption says."""
    a, b = demo.pair
    at = run_page("pages/pairs_and_groups.py", {"features": f"{a},{b}"})
    no_error(at)
    table = at.dataframe[0].value
    assert not at.dataframe[0].proto.arrow_data.HasField("styler")
    cells = table.drop(columns=["concept"]).to_numpy().ravel().tolist()
    assert all(isinstance(c, str) for c in cells), cells
    assert "–" in cells  # some concept is missing from some explanation
    assert all(c == "–" or re.fullmatch(r"\d\.\d{3}", c) for c in cells), cells
    scores = [float(c) for c in table["group"] if c != "–"]
    assert scores == sorted(scores, reverse=True)
    assert any(c.startswith("–: the concept is not among") for c in texts(at.caption))


def test_no_group_says_what_to_change(demo):
    a, b = demo.pair
    at = run_page("pages/pairs_and_groups.py", {"features": f"{a},{b}",
                                                "group_min_images": "4000"})
    no_error(at)
    hints = [i for i in texts(at.info) if "No set of two or more features is high" in i]
    assert hints and ("To find some, change one setting" in hints[0]
                      or "No single setting change gives a group" in hints[0])


def test_a_bug_inside_the_page_shows_as_a_bug_with_its_details(demo, monkeypatch):
    """``ui/errors.attempt`` swallowed every exception; now only expected problems are, and a
    bug in a call the page makes is shown as one, with the details for a report."""
    from falcon_core.pipeline import Falcon

    def broken(self, *args, **kwargs):
        raise KeyError("injected bug")

    monkeypatch.setattr(Falcon, "alpha_for", broken)
    at = run_page(first={"feature": str(demo.features[0])})
    at.session_state["explorer_tab"] = "Activation histogram"  # the tab that draws α
    at.run()
    assert not at.exception
    assert any("KeyError" in e and "injected bug" in e for e in texts(at.error))
    assert any(e.label == "Details for a bug report" for e in at.expander)


def test_report_button_in_the_sidebar(demo):
    at = run_page()
    no_error(at)
    buttons = [b for b in at.sidebar.get("download_button")]
    assert [b.label for b in buttons] == ["Download the report (HTML)"]
    assert any("features explained so far" in c for c in texts(at.sidebar.caption))
