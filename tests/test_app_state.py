"""The app's helpers that need no Streamlit session: URL <-> state, presets, progress text,
pictures and charts."""

import numpy as np
import pytest
from PIL import Image

from falcon_core.errors import FalconError
from falcon_core.settings import FalconSettings
from falcon_core.workspace import WorkspaceConfig
from ui import charts, images, presets, state
from ui.progress import EtaTracker, ProgressRouter, format_seconds


# ---- URL <-> state ---------------------------------------------------------------------------

def test_demo_defaults_give_an_empty_url():
    demo = WorkspaceConfig.demo()
    assert state.encode(demo, state.base_settings(demo), {}, []) == {}


def test_settings_in_the_url_are_relative_to_the_workspace_defaults():
    demo = WorkspaceConfig.demo()
    base = state.base_settings(demo)
    assert base == demo.default_settings()  # the demo world's own rule (top-k)
    other = demo.replace(backbone="resnet18", weights="imagenet")
    assert state.base_settings(other) == FalconSettings()
    s = base.replace(beta=0.2)
    assert state.encode(demo, s, {}, []) == {"beta": "0.2"}
    assert state.settings_from(state.decode({"beta": "0.2"}).settings, base) == s


def test_encode_keeps_only_what_differs_and_the_page_keys():
    ws = WorkspaceConfig.demo().replace(backbone="resnet18", weights="imagenet", probe="cifar10")
    s = FalconSettings(beta=0.25, max_low_images=5, low_threshold=0.02)
    sel = {"feature": 7, "features": [3, 9], "word": "dog"}
    params = state.encode(ws, s, sel, ["feature"])
    assert params == {"backbone": "resnet18", "weights": "imagenet", "probe": "cifar10",
                      "beta": "0.25", "max_low_images": "5", "low_threshold": "0.02",
                      "feature": "7"}


@pytest.mark.parametrize("sel,keys", [({"feature": 12}, ["feature"]),
                                      ({"features": [3, 9, 4]}, ["features"]),
                                      ({"image": 5}, ["image"]),
                                      ({"word": "red car"}, ["word"]),
                                      ({"feature": 2, "concept": "grass"}, ["feature", "concept"])])
def test_round_trip(sel, keys):
    ws = WorkspaceConfig.demo().replace(layer="layer3", probe="/data/imgs", seed=3)
    s = FalconSettings(high_rule="topk", top_k=30, spurious_threshold=0.2, contrast=False)
    dec = state.decode(state.encode(ws, s, sel, keys))
    assert dec.problems == []
    assert WorkspaceConfig.demo().replace(**dec.workspace) == ws
    assert state.settings_from(dec.settings, state.base_settings(ws)) == s
    assert dec.selection == sel


def test_decode_reports_bad_values_and_ignores_unknown_keys():
    dec = state.decode({"feature": "abc", "beta": "high", "features": "3,x", "utm_source": "mail",
                        "image": "4"})
    assert dec.selection == {"image": 4}
    assert dec.settings == {}
    assert len(dec.problems) == 3
    assert all("Ignored" in p for p in dec.problems)


def test_decode_ignores_each_out_of_range_setting_alone():
    dec = state.decode({"quantile": "2", "beta": "0.2"})
    assert dec.settings == {"beta": 0.2}
    assert len(dec.problems) == 1
    assert "Ignored 'quantile=2' in the link" in dec.problems[0]
    assert "between 0.5 and 0.9999" in dec.problems[0]


def test_decode_takes_last_value_of_a_repeated_key_and_default_epsilon():
    dec = state.decode({"feature": ["1", "4"], "low_threshold": "default"})
    assert dec.selection["feature"] == 4
    assert dec.settings == {"low_threshold": None}


def test_parsers():
    assert state.parse_int(" 7 ") == 7
    assert state.parse_int("7.0") == 7
    with pytest.raises(FalconError):
        state.parse_int("7.5")
    with pytest.raises(FalconError):
        state.parse_int(True)
    assert state.parse_ints("3, 9;3 12") == [3, 9, 12]
    with pytest.raises(FalconError):
        state.parse_ints(" , ")
    assert state.parse_setting("normalize_rows", "false") is False
    assert state.parse_setting("alpha_std", "4") == 4.0
    with pytest.raises(FalconError):
        state.parse_setting("beta", "nan")
    with pytest.raises(FalconError):
        state.parse_setting("nonsense", "1")


def test_config_key_is_hashable_and_distinguishes_workspaces():
    a = state.config_key(WorkspaceConfig.demo())
    b = state.config_key(WorkspaceConfig.demo().replace(probe="cifar10"))
    assert hash(a) != hash(b) and a != b
    assert state.settings_key(FalconSettings()) == state.settings_key(FalconSettings())


# ---- presets ---------------------------------------------------------------------------------

def test_every_group_finds_the_demo_world():
    demo = WorkspaceConfig.demo()
    for group, plist in presets.GROUPS.items():
        assert presets.find(group, demo) == 0, group
        assert presets.apply(plist[0]) and presets.missing(plist[0], presets.apply(plist[0])) is None


def test_path_presets_round_trip():
    laion = presets.VOCABULARIES[2]
    fields = presets.apply(laion, "/data/laion")
    assert fields == {"vocabulary": "laion:/data/laion"}
    cfg = WorkspaceConfig.demo().replace(**fields)
    assert presets.find("vocabulary", cfg) == 2
    assert presets.current_path(laion, cfg) == "/data/laion"
    folder = presets.PROBES[-1]
    assert presets.missing(folder, presets.apply(folder, "  ")) is not None
    cfg = WorkspaceConfig.demo().replace(**presets.apply(folder, "/imgs"))
    assert presets.find("probe", cfg) == len(presets.PROBES) - 1
    dino = presets.BACKBONES[3]
    cfg = WorkspaceConfig.demo().replace(**presets.apply(dino, "/ckpt/dino.pth"))
    assert cfg.backbone == "resnet50" and cfg.weights == "/ckpt/dino.pth"
    assert presets.find("backbone", WorkspaceConfig.demo().replace(
        backbone="resnet18", weights="imagenet")) == 1


# ---- progress --------------------------------------------------------------------------------

def test_eta_tracker_estimates_time_left():
    now = [0.0]
    t = EtaTracker(clock=lambda: now[0])
    frac, text = t.update(0, 100, "features")
    assert frac == 0.0 and "left" not in text
    now[0] = 10.0
    frac, text = t.update(10, 100, "features")
    assert frac == pytest.approx(0.1)
    assert "about 1 min 30 s left" in text
    assert t.update(100, 100, "features")[1].endswith("done")
    assert format_seconds(3725) == "1 h 02 min"


def test_progress_router_sends_reports_to_the_current_target_only():
    router = ProgressRouter()
    got = []
    router(1, 2, "ignored")
    with router.route(lambda d, t, s: got.append((d, t, s))):
        router(1, 2, "GradCAM")
    router(2, 2, "ignored")
    assert got == [(1, 2, "GradCAM")]


# ---- pictures and charts ---------------------------------------------------------------------

def test_overlay_box_crop_and_grid():
    im = Image.new("RGB", (64, 48), (10, 20, 30))
    cam = np.zeros((7, 7), np.float32)
    cam[3, 3] = 1.0
    ov = images.overlay(im, cam)
    assert ov.size == im.size and ov.getpixel((32, 24)) != im.getpixel((32, 24))
    boxed = images.draw_box(ov, (8, 8, 40, 30))
    assert boxed.getpixel((8, 20)) != ov.getpixel((8, 20))
    assert images.crop(im, (8, 8, 40, 30)).size == (32, 22)
    assert images.crop(im, (60, 40, 200, 200)).size == (4, 8)  # clipped to the image
    assert images.crop(im, None).size == im.size
    g = images.grid([im, boxed, ov], ["a", "b", "c"], cols=2, cell=50, title="t")
    assert g.size[0] == 6 + 2 * 56
    assert images.png_bytes(g)[:8] == b"\x89PNG\r\n\x1a\n"
    assert images.grid([], []).size[0] > 0


def test_cam_overlay_is_grad_cams_own():
    """The heatmap blend is pytorch-grad-cam's show_cam_on_image (jet, the image weighted
    1 - alpha), not a colour map of our own."""
    from pytorch_grad_cam.utils.image import show_cam_on_image

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (8, 12, 3), dtype=np.uint8)
    im = Image.fromarray(pixels)
    cam = rng.random((8, 12)).astype(np.float32)
    want = show_cam_on_image(pixels.astype(np.float32) / 255.0, cam, use_rgb=True,
                             image_weight=0.55)
    assert np.array_equal(np.asarray(images.overlay(im, cam, alpha=0.45)), want)
    # a CAM of another size is resized to the image first; no CAM: the image itself
    assert images.overlay(im, np.ones((3, 3), np.float32)).size == im.size
    assert np.array_equal(np.asarray(images.overlay(im, None)), pixels)


def test_histogram_shows_every_bar_and_labels_lines_in_the_legend():
    """The tallest bar fits under the top of the log axis, ticks are powers of ten (not
    "2, 100, 5, 2, 10"), and α, ε and the T threshold are named in the legend, not written
    over the bars."""
    values = np.r_[np.zeros(1500), np.linspace(0.0, 1.0, 500), np.nan]
    h = charts.histogram(values, 0.5, 0.1, high_threshold=0.3, high_label="T threshold (topk)")
    counts = np.asarray(h.data[0].y)
    assert counts.max() == 1500 + 9  # the first bin: the zeros and linspace's first values
    lo, hi = h.layout.yaxis.range
    assert h.layout.yaxis.type == "log" and hi >= np.log10(counts.max()) + 0.1 and lo < 0
    assert list(h.layout.yaxis.ticktext) == ["1", "10", "100", "1000", "10000"]
    assert len(h.layout.annotations) == 0
    names = [t.name for t in h.data if t.showlegend is not False]
    assert names == ["α = 0.5 (global)", "T threshold (topk)", "ε = 0.1"]
    assert len(h.layout.shapes) == 3  # the three lines
    assert h.layout.legend.y < 0  # under the plot, clear of the title


def test_removal_threshold_is_a_legend_entry_not_a_label_under_the_legend():
    from falcon_core.explanation import Concept

    cs = [Concept("dog", 0.3, 0.12), Concept("grass", 0.2, 0.15)]
    fig = charts.concept_bars(cs, "Removed", threshold=0.1)
    assert len(fig.layout.annotations) == 0
    assert "removal threshold 0.1" in [t.name for t in fig.data]
    assert [s.x0 for s in fig.layout.shapes] == [0.1]


def test_charts_build():
    from falcon_core.explanation import Concept

    cs = [Concept("dog", 0.3, 0.02), Concept("grass", 0.2, 0.15)]
    fig = charts.concept_bars(cs, "Words", threshold=0.1)
    assert [t.name for t in fig.data][:2] == ["T score (high images)", "L score (counterfactuals)"]
    assert list(fig.data[0].customdata) == ["grass", "dog"]  # best on top
    h = charts.histogram(np.r_[np.random.default_rng(0).random(100), np.nan], 0.5, 0.1)
    assert len(h.layout.shapes) == 2 and sum(np.asarray(h.data[0].y)) == 100
    m = charts.coactivation_heatmap(np.eye(3), [4, 5, 6])
    assert list(m.data[0].x) == ["4", "5", "6"]
    c = charts.contributions([{"feature": 3, "contribution": 1.5}], "t")
    assert list(c.data[0].customdata) == [3]


def test_spurious_tables_show_the_conditional_tests():
    """The Spurious page's tables: under the conditional rule every tested concept shows its AUC
    given the anchor, the interval and the bound; the anchor and the untested say so; other
    rules have no such column."""
    from types import SimpleNamespace

    from falcon_core.explanation import Concept
    from ui import contrast

    tests = {"words": {"grass": {"auc": 0.55, "interval": [0.5, 0.6], "bound": 0.61,
                                 "spurious": True},
                       "huge": {"auc": None, "interval": None, "bound": None, "spurious": None}},
             "phrases": {}}
    exp = SimpleNamespace(
        settings={"top_words": 8, "top_phrases": 8}, faithfulness=None,
        words=[Concept("star", 0.8, 0.0), Concept("huge", 0.3, 0.1)], phrases=[],
        more_words=[Concept("tiny", 0.01, 0.0)], more_phrases=[],
        spurious_words=[Concept("grass", 0.6, 0.2)], spurious_phrases=[],
        low_selection={"spurious": {"rule": "conditional", "anchor": "star", "tests": tests}})
    kept, removed = contrast.kept_and_removed(exp)
    col = "AUC given the anchor vs bound"
    got = kept.set_index("concept")[col]
    assert got[["star", "huge"]].to_dict() == {"star": "the anchor (never removed)",
                                              "huge": "too few images: kept"}
    assert got.isna()["tiny"]  # below the top words: not tested
    assert removed.set_index("concept")[col].to_dict() == {
        "grass": "0.550 [0.500, 0.600] vs 0.610"}
    exp.low_selection = {"spurious": {"rule": "ratio"}}
    kept, removed = contrast.kept_and_removed(exp)
    assert col not in kept.columns and col not in removed.columns
